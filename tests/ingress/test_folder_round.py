"""A round of files taken together: claims made durable at once, documents staged in worker processes
(the daemon's pool), the round's jobs committed in ONE transaction; a failed commit loses nothing."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from faxbridge.ingress.folder.claim import RETRY_S
from faxbridge.models import JobState
from tests.ingress.folder_kit import SAMPLES, Folder, claim_of_job, engine_pool, open_folder, sha
from tests.support import make_pdf

NO_NUMBER = ('no fax number for letter.pdf: name the file after the number (15555551212.pdf or '
             '15555551212_letter.pdf), or put a letter.json control file with "to" beside it')


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    yield from open_folder(tmp_path)


def test_a_round_in_worker_processes_gives_the_same_answers(folder: Folder) -> None:
    with engine_pool(folder.cfg, folder.loop) as pool:
        intake = folder.new_intake(pool)
        good = [make_pdf(folder.root / f"1555555121{n}.pdf", pages=n + 1, text=f"doc {n}") for n in range(3)]
        digests = {f.name: sha(f) for f in good}
        shutil.copy(SAMPLES / "pdf/encrypted-user-password-libreoffice-rc4-128.pdf", folder.root / "15555551219.pdf")
        (folder.root / "15555551219.json").write_text("{}")           # complete by declaration: refused when staged
        make_pdf(folder.root / "letter.pdf")
        whole = make_pdf(folder.root.parent / "whole.pdf", pages=2).read_bytes()
        half = folder.root / "15555551218.pdf"
        half.write_bytes(whole[: len(whole) // 2])
        intake.sweep()
        assert folder.settle(2.0) == 5                               # the cut-off PDF waits
        jobs = {j.document: j for j in folder.jobs()}
        assert sorted(jobs) == ["15555551210.pdf", "15555551211.pdf", "15555551212.pdf", "15555551219.pdf",
                                "letter.pdf"]
        for n, f in enumerate(good):
            job = jobs[f.name]
            assert (job.state, job.pages, job.doc_sha256) == (JobState.QUEUED, n + 1, digests[f.name])
            assert folder.store.document_path(job.id).read_bytes() == (folder.claim_of(job) / f.name).read_bytes()
        assert (jobs["15555551219.pdf"].state, jobs["15555551219.pdf"].reason) == (
            JobState.REJECTED, "15555551219.pdf is password-protected; send it without a password")
        assert (jobs["letter.pdf"].state, jobs["letter.pdf"].reason) == (JobState.REJECTED, NO_NUMBER)
        assert half.exists() and list(folder.store.staging.iterdir()) == []
        half.write_bytes(whole)
        intake.observe([half])
        assert folder.settle(2.5) == 1
        assert len(folder.jobs()) == 6 and folder.settle(5) == 0


def test_a_failed_commit_keeps_every_claim_and_each_becomes_one_job_later(folder: Folder) -> None:
    files = [make_pdf(folder.root / f"1555555121{n}.pdf", text=f"doc {n}") for n in range(4)]
    digests = sorted(sha(f) for f in files)
    db = sqlite3.connect(folder.store.db_path)
    db.execute("CREATE TRIGGER fail BEFORE INSERT ON jobs WHEN NEW.state = 'queued' "
               "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    db.commit()
    folder.intake.sweep()
    assert folder.settle(2.0) == 0
    assert folder.jobs() == [] and not any(f.exists() for f in files)
    assert len(list(folder.area.iterdir())) == 4                    # every claim kept, durable
    assert list(folder.store.staging.iterdir()) == []               # no staged document left behind
    assert [p.name for p in folder.store.spool.iterdir()] == [".staging"]
    db.execute("DROP TRIGGER fail")
    db.commit()
    db.close()
    assert folder.settle(RETRY_S / 2) == 0                          # retried after RETRY_S, not before
    assert folder.settle(RETRY_S / 2) == 4
    jobs = folder.jobs()
    assert sorted(j.doc_sha256 for j in jobs) == digests and {j.state for j in jobs} == {JobState.QUEUED}
    assert len({claim_of_job(j) for j in jobs}) == 4
    assert folder.settle(RETRY_S) == 0 and len(folder.jobs()) == 4
