"""Exactly once across crashes: every state a crash can leave in the processing area, reconciled.

Each test builds the exact files a daemon killed at one moment of a claim leaves behind, then runs
start-up's reconciliation (and the normal rounds) and counts jobs. The end-to-end SIGKILL test is in
test_folder_watch_crash.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from faxbridge.ingress.folder import claims
from faxbridge.ingress.folder.intake import FolderIntake
from faxbridge.models import JobState
from faxbridge.store import new_job_id
from tests.ingress.folder_kit import Folder, claim_of_job, open_folder, sha
from tests.support import make_pdf


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    yield from open_folder(tmp_path)


def restart(folder: Folder) -> FolderIntake:
    """A fresh intake (nothing in memory), as after a restart."""
    return folder.new_intake()


def test_killed_after_the_rename_before_the_job(folder: Folder) -> None:
    claim_id = new_job_id()
    doc = make_pdf(folder.area / claim_id / "15555551212.pdf")
    digest = sha(doc)
    intake = restart(folder)
    assert intake.reconcile() == 1
    [job] = folder.jobs()
    assert (job.state, job.to, job.doc_sha256, claim_of_job(job)) == (JobState.QUEUED, "+15555551212", digest, claim_id)
    assert intake.reconcile() == 0                     # a second start makes nothing new
    assert restart(folder).reconcile() == 0
    intake.sweep()
    assert folder.settle(5) == 0 and len(folder.jobs()) == 1


def test_killed_after_the_job_was_committed(folder: Folder) -> None:
    make_pdf(folder.root / "15555551212.pdf")
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert (folder.claim_of(job) / "15555551212.pdf").exists()   # the result writer has not run yet
    intake = restart(folder)
    assert intake.reconcile() == 0
    intake.sweep()
    assert folder.settle(5) == 0 and len(folder.jobs()) == 1


def test_killed_mid_job_commit_leaves_staging_only(folder: Folder) -> None:
    """Staged document, no committed row: the claim is made into a job on restart, once."""
    claim_id = new_job_id()
    make_pdf(folder.area / claim_id / "15555551213.pdf")
    staged = folder.store.stage(new_job_id())
    (staged / "fax.pdf").write_bytes(b"half a document")
    assert folder.store.clean_spool() == 1
    assert restart(folder).reconcile() == 1
    assert [j.to for j in folder.jobs()] == ["+15555551213"]


def test_killed_after_the_control_before_the_document(folder: Folder) -> None:
    claim_id = new_job_id()
    make_pdf(folder.root / "letter.pdf")
    (folder.area / claim_id).mkdir(parents=True)
    (folder.area / claim_id / "letter.json").write_text('{"to": "15555551214"}')
    intake = restart(folder)
    assert intake.reconcile() == 0
    assert not (folder.area / claim_id).exists()
    assert (folder.root / "letter.json").exists()            # given back: the pair is taken together later
    intake.sweep()
    assert folder.settle(2) == 1
    assert [j.to for j in folder.jobs()] == ["+15555551214"]


def test_killed_right_after_creating_the_claim(folder: Folder) -> None:
    claim_id = new_job_id()
    (folder.area / claim_id).mkdir(parents=True)
    make_pdf(folder.root / "15555551215.pdf")
    intake = restart(folder)
    assert intake.reconcile() == 0 and not (folder.area / claim_id).exists()
    intake.sweep()
    assert folder.settle(2) == 1 and len(folder.jobs()) == 1


def test_a_claim_that_cannot_be_made_a_job_yet_stays_and_is_retried(folder: Folder) -> None:
    """Trouble on our side (here: the spool's staging folder is unusable) keeps the claim."""
    make_pdf(folder.root / "15555551216.pdf")
    folder.intake.sweep()
    staging = folder.store.staging
    staging.rename(staging.with_name("staging.away"))
    staging.write_text("not a folder")
    try:
        assert folder.settle(2) == 0
        assert folder.jobs() == []
        [claim] = list(folder.area.iterdir())
        assert (claim / "15555551216.pdf").exists()
    finally:
        staging.unlink()
        staging.with_name("staging.away").rename(staging)
    assert folder.settle(1) == 0                        # retried after a pause, not at once
    assert folder.settle(5) == 1
    [job] = folder.jobs()
    assert claim_of_job(job) == claim.name and job.state is JobState.QUEUED


def test_claims_use_the_same_filesystem(folder: Folder) -> None:
    assert os.stat(folder.area).st_dev == os.stat(folder.root).st_dev
    assert claims.processing_dir(folder.root).is_relative_to(folder.root)
