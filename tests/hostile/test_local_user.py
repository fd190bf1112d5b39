"""Contract section 9, files: a local user who can write the watched folder (and the folders beside
it) never gets faxbridge to fax, overwrite or place a file with its rights.

The test runs as root, creates an unprivileged user, and runs each attacker's step AS THAT USER (a
shell in a subprocess with that uid and gid) against a world-writable outbox; faxbridge's side is
the real intake, claim, result writer and, end to end, the real daemon."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog.testing

from faxbridge.ingress.folder import claims
from faxbridge.models import Job, JobState
from faxbridge.store import new_job_id, open_store
from tests.conftest import async_wait_until
from tests.ingress.folder_kit import Folder, open_folder, sha
from tests.ingress.test_folder_results import _final, deliver
from tests.ingress.test_folder_watch import config, daemon, results, sends
from tests.support import make_pdf

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd to create the unprivileged attacker")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        """The attacker's step: ``sh -c script`` as this user (no other groups)."""
        return subprocess.run(["/bin/sh", "-c", script], user=self.uid, group=self.gid, extra_groups=[],
                              capture_output=True, text=True, timeout=30, check=False, cwd="/")


@pytest.fixture(scope="module")
def attacker() -> Iterator[User]:
    name = "fbx" + secrets.token_hex(4)
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "--user-group", name],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"useradd could not create a user: {made.stderr.strip()}")
    import pwd

    entry = pwd.getpwnam(name)
    try:
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the attacker can reach (0755 up to /tmp), with a world-writable outbox, results,
    done and failed beside each other in a world-writable folder, and a root-only secret."""
    top = Path(tempfile.mkdtemp(prefix="fbx-", dir="/tmp"))
    try:
        os.chmod(top, 0o777)
        for name in ("outbox", "results"):
            (top / name).mkdir()
            os.chmod(top / name, 0o777)
        secret = top / "secret"
        secret.mkdir(mode=0o700)
        make_pdf(secret / "secret.pdf", text="TOP SECRET")
        os.chmod(secret / "secret.pdf", 0o600)
        (secret / "target.txt").write_text("root's own file\n")
        os.chmod(secret / "target.txt", 0o600)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def folder(base: Path) -> Iterator[Folder]:
    yield from open_folder(base)


def _secret_state(base: Path) -> tuple[list[str], str, str]:
    s = base / "secret"
    return sorted(os.listdir(s)), sha(s / "secret.pdf"), sha(s / "target.txt")


def _attacker_pdf(base: Path, user: User, name: str) -> Path:
    """A PDF the attacker drops: made readable, copied in by the attacker (so the attacker owns it)."""
    made = make_pdf(base / f"{secrets.token_hex(4)}.src.pdf", text=name)
    os.chmod(made, 0o644)
    part = base / "outbox" / f".{name}.part"
    out = user.run(f"cp '{made}' '{part}' && mv '{part}' '{base}/outbox/{name}'")
    assert out.returncode == 0, out.stderr
    return made


def test_the_working_area_is_ours_and_private(folder: Folder, attacker: User) -> None:
    area = folder.root / ".faxbridge"
    st = os.lstat(area)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    listing = attacker.run(f"ls '{area}/processing'")
    assert listing.returncode != 0 and "Permission denied" in listing.stderr


def test_a_swapped_working_area_is_refused_and_a_good_file_still_goes_through(
        folder: Folder, attacker: User, base: Path) -> None:
    """The attacker renames .faxbridge away (the outbox is 0777) and makes their own, with a planted
    claim whose document is a link to a root-only file: the planted area is refused (moved aside),
    nothing in it is used, and the attacker's good file is taken into a fresh area of ours."""
    before = _secret_state(base)
    planted = new_job_id()
    out = attacker.run(
        f"cd '{folder.root}' && mv .faxbridge .gone && mkdir -m 777 .faxbridge .faxbridge/processing "
        f"&& mkdir -m 777 .faxbridge/processing/{planted} "
        f"&& ln -s '{base}/secret/secret.pdf' .faxbridge/processing/{planted}/15555551212_secret.pdf")
    assert out.returncode == 0, out.stderr
    good = _attacker_pdf(base, attacker, "15555551213_good.pdf")
    folder.intake.sweep()
    with structlog.testing.capture_logs() as logged:
        assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert (job.state, job.to, job.doc_sha256) == (JobState.QUEUED, "+15555551213", sha(good))
    assert [e["event"] for e in logged if e["event"] == "folder.area_refused"] == ["folder.area_refused"]
    st = os.lstat(folder.root / ".faxbridge")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    refused = [n for n in os.listdir(folder.root) if n.startswith(".faxbridge.refused-")]
    assert len(refused) == 1 and os.path.islink(folder.root / refused[0] / "processing" / planted
                                                / "15555551212_secret.pdf")
    folder.intake.reconcile()                           # the planted claim is never taken, even now
    assert [j.id for j in folder.jobs()] == [job.id]
    assert _secret_state(base) == before


def test_a_claimed_file_swapped_for_a_link_is_never_followed(folder: Folder, attacker: User, base: Path) -> None:
    """The document checked as a regular file is a link to a root-only file by the time it is
    renamed into the claim (the swap between the check and the rename): the claim is rejected as
    not a regular file, and the root-only file is neither read nor faxed. The claimed file itself
    cannot be swapped afterwards: the attacker cannot enter the working area."""
    before = _secret_state(base)
    _attacker_pdf(base, attacker, "15555551212_swap.pdf")
    out = attacker.run(f"cd '{folder.root}' && ln -s '{base}/secret/secret.pdf' .l && mv -f .l 15555551212_swap.pdf")
    assert out.returncode == 0, out.stderr
    claim_id = new_job_id()
    assert claims.claim(folder.root, claim_id, claims.PurePosixPath("15555551212_swap.pdf"), [])
    assert folder.intake.commit.finish([claim_id]) == 1
    [job] = folder.jobs()
    assert (job.state, job.reason) == (JobState.REJECTED, "15555551212_swap.pdf is not a regular file")
    swap = attacker.run(f"ln -sf '{base}/secret/secret.pdf' '{folder.area}/{claim_id}/x.pdf'")
    assert swap.returncode != 0 and "Permission denied" in swap.stderr
    good = _attacker_pdf(base, attacker, "15555551213_good.pdf")
    folder.intake.sweep()
    assert folder.settle(2) == 1
    queued = [j for j in folder.jobs() if j.state is JobState.QUEUED]
    assert [(j.to, j.doc_sha256) for j in queued] == [("+15555551213", sha(good))]
    assert _secret_state(base) == before


async def test_links_planted_at_result_names_are_never_written_through(
        folder: Folder, attacker: User, base: Path) -> None:
    """The results folder is world-writable: the attacker plants links to a root-only file at the
    name the result's temporary file used to have (a hash of the job id) and at the result's own
    name. Neither is written through; the result is written beside them."""
    good = _attacker_pdf(base, attacker, "15555551212_letter.pdf")
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    results_dir = folder.cfg.watch[0].results
    old_tmp = f".{hashlib.sha256(job.id.encode()).hexdigest()[:20]}.result.json.tmp"
    target = base / "secret" / "target.txt"
    out = attacker.run(f"cd '{results_dir}' && ln -s '{target}' '{old_tmp}' "
                       f"&& ln -s '{target}' 15555551212_letter.result.json")
    assert out.returncode == 0, out.stderr
    before = _secret_state(base)
    await deliver(folder, await _delivered(folder, job))
    assert _secret_state(base) == before
    # the planted temporary name is removed as a stale temporary of this job (the entry, not its target)
    assert not os.path.lexists(results_dir / old_tmp)
    assert os.path.islink(results_dir / "15555551212_letter.result.json")
    assert [n for n in os.listdir(results_dir) if n.endswith(".tmp")] == []
    written = results_dir / "15555551212_letter-2.result.json"
    assert not written.is_symlink() and '"state": "delivered"' in written.read_text()
    assert sha(folder.cfg.watch[0].done / "15555551212_letter.pdf") == sha(good)


async def _delivered(folder: Folder, job: Job) -> Job:
    """The job driven to delivered through the daemon's kind of store (as tests/ingress/test_folder_results does)."""
    store = await open_store(folder.cfg.state_dir, "simulator")
    try:
        return await _final(store, folder, job, delivered=True)
    finally:
        await store.close()


@pytest.mark.parametrize("which", ["done", "failed"])
async def test_done_or_failed_replaced_by_a_link_is_refused(
        folder: Folder, attacker: User, base: Path, which: str) -> None:
    """The attacker replaces done/ (or failed/) by a link to a folder they cannot write: the
    original is not moved there but kept in .faxbridge/kept, the result is still written, and a
    good file afterwards still goes through."""
    w = folder.cfg.watch[0]
    name = "15555551212_mine.pdf" if which == "done" else "nonumber.pdf"
    _attacker_pdf(base, attacker, name)
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    folder_path = getattr(w, which)
    out = attacker.run(f"cd '{base}' && mv {which} {which}.old && ln -s '{base}/secret' {which}")
    assert out.returncode == 0, out.stderr
    before = _secret_state(base)
    final = await _delivered(folder, job) if which == "done" else folder.store.get(job.id)
    with structlog.testing.capture_logs() as logged:
        await deliver(folder, final)
    assert _secret_state(base) == before
    refused = [e for e in logged if e["event"] == "sidecar.folder_refused"]
    assert [(e["folder"], e["reason"]) for e in refused] == [(str(folder_path), f"{folder_path}: a symbolic link")]
    kept = folder.root / ".faxbridge" / "kept"
    assert os.listdir(kept) == [name]
    assert (stat.S_IMODE(os.lstat(kept).st_mode), os.lstat(kept).st_uid) == (0o700, 0)
    result = results_dir_result(w.results, name)
    assert result == ("delivered" if which == "done" else "rejected")
    assert os.path.islink(folder_path)                       # left as it is, never followed


def results_dir_result(folder: Path, document: str) -> str:
    return str(json.loads((folder / (document.rsplit(".", 1)[0] + ".result.json")).read_text())["state"])


async def test_end_to_end_the_daemon_faxes_only_the_attackers_own_files(tmp_path: Path, attacker: User) -> None:
    """The real daemon on a 0777 outbox: the attacker swaps the working area, drops a link to a
    root-only file and replaces done/ by a link; only the attacker's own good file is faxed."""
    top = Path(tempfile.mkdtemp(prefix="fbx-", dir="/tmp"))
    try:
        os.chmod(top, 0o777)
        secret = top / "secret"
        secret.mkdir(mode=0o700)
        make_pdf(secret / "secret.pdf", text="TOP SECRET")
        cfg = config(top)
        outbox = cfg.watch[0].path
        outbox.mkdir()
        os.chmod(outbox, 0o777)
        async with daemon(cfg) as d:
            out = attacker.run(f"cd '{outbox}' && mv .faxbridge .gone && mkdir -m 777 .faxbridge "
                               f"&& ln -s '{secret}/secret.pdf' 15555551212_link.pdf "
                               f"&& mv '{top}/done' '{top}/done.old' && ln -s '{secret}' '{top}/done'")
            assert out.returncode == 0, out.stderr
            good = make_pdf(top / "src.pdf", text="the attacker's own")
            os.chmod(good, 0o644)
            assert attacker.run(f"cp '{good}' '{outbox}/.g' && mv '{outbox}/.g' '{outbox}/15555551213_good.pdf'"
                                ).returncode == 0
            await async_wait_until(lambda: len(results(cfg)) == 2 and all(r["final"] for r in results(cfg).values()),
                                   timeout=60, what="both results")
            sent = sends(d)
        got = results(cfg)
        assert (got["15555551212_link.result.json"]["state"], got["15555551212_link.result.json"]["reason"]) == \
            ("rejected", "15555551212_link.pdf is a symbolic link; faxbridge takes only regular files")
        assert got["15555551213_good.result.json"]["state"] == "delivered"
        assert [(s.to, s.pdf_sha256) for s in sent] == [("+15555551213", sha(good))]
        assert sorted(os.listdir(secret)) == ["secret.pdf"]
        assert os.listdir(outbox / ".faxbridge" / "kept") == ["15555551213_good.pdf"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
