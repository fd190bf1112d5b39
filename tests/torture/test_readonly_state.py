"""Read-only state: the file system holding the state folder turns read-only under the daemon.

What ext4 does with ``errors=remount-ro`` after an I/O error: here a real ext4 error raised in a
loop-device file system (statefs.break_fs). The watched folders are elsewhere and stay writable.
At that moment one job waits to be retried (the provider said 429, Retry-After) and one is in the
middle of its submission (the provider hangs, then accepts it).

While read-only: SMTP answers 451 4.3.0 and makes no job; a dropped file is claimed and stays, whole,
in the processing area, with no result; ``faxbridge send`` fails with exit 1 and one clear line;
``jobs``/``job`` still read; the daemon stays up and logs its trouble at a bounded rate (the
dispatcher does not spin on a due job it cannot lease); ``/healthz`` answers 503 naming the store.

A local file system in that state comes back only through unmount + e2fsck (the kernel refuses
``remount,rw``; and a healthy tmpfs cannot be remounted read-only while the daemon holds its SQLite
files open: EBUSY), so the operator stops the daemon (it exits 0), repairs, and starts it again;
then the mail sent again (same Message-ID) is faxed once, the file once with one result file, the
held submission is found at the provider and not sent again, and the store is sound.

Needs root and a loop device (CI runs as root); skipped elsewhere, never under CI=true.

On a loaded machine: the two windows the set-up needs (the hang must outlast the steps up to the
break, the Retry-After must fall due after it) are found from the daemon's own log, not from
``faxbridge jobs`` (a Python start-up per look), and sized with room to spare (HANG_S, RETRY_AFTER_S);
every wait after them is a condition with a generous deadline.
"""

from __future__ import annotations

import collections
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.clock import FakeClock
from faxbridge.errors import StoreError
from faxbridge.ingress.smtp.replies import OUR_TROUBLE
from faxbridge.models import Job, JobEvent, Source
from faxbridge.notify.outbox import OutboxWorker
from faxbridge.store import OutboxItem, open_store
from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config
from tests.test_outbox import final_job
from tests.torture import statefs

SEND = {"path": "/faxes", "method": "POST"}   # faults for submissions only, not status polls
HANG_S = 20.0        # the held submission's provider answers this long after it started ...
RETRY_AFTER_S = 10   # ... and the refused one may be retried this long after the 429: both after the break


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    """The provider, stopped after the test whatever happened in it (a failed check must not leave it
    running into the next test)."""
    process = SimProcess(free_port(), tmp_path / "sim.log").start()
    try:
        yield process
    finally:
        process.stop()


def logged(daemon: DaemonProcess, event: str, job_id: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in daemon.events()[since:] if e.get("event") == event and e.get("job_id") == job_id]


@pytest.mark.timeout(300)    # two daemons, two waits of HANG_S and some 40 CLI calls; most of it on a busy core
def test_state_turns_read_only_then_repaired(tmp_path: Path, ext4_disk: Path, sim: SimProcess) -> None:
    smtp_port, web_port = free_port(), free_port()
    outbox, results, done = tmp_path / "outbox", tmp_path / "results", tmp_path / "done"
    s = base_settings(tmp_path, **sim.phaxio_settings())
    s["provider"]["request_timeout"] = f"{HANG_S * 2:.0f}s"  # longer than the provider's hang
    s["state_dir"] = str(ext4_disk / "var")
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "cover_page": "never"}
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"}
    s["watch"] = [{"path": str(outbox), "results": str(results), "done": str(done),
                   "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    config = write_config(tmp_path / "faxbridge.toml", s)
    pdf_path = make_pdf(tmp_path / "a.pdf")
    pdf, late_pdf = pdf_path.read_bytes(), make_pdf(tmp_path / "late.pdf", pages=2).read_bytes()
    outbox.mkdir()

    def jobs() -> dict[str, dict[str, Any]]:
        r = cli("jobs", "--json", config=config)
        assert r.returncode == 0, r.stderr
        return {j["id"]: j for j in map(json.loads, r.stdout.splitlines())}

    def send(number: str) -> str:
        r = cli("send", "--to", number, str(pdf_path), config=config)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()[-1].strip(".")

    def health() -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=10)
        return r.status_code, r.json()

    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        # live work first: a mail, a file and a CLI job, all faxed
        assert statefs.mail(smtp_port, "<ro-0@example.com>", pdf, "ro 0")[0] == 250
        (outbox / "15555551213.pdf").write_bytes(pdf)
        send("15555551214")
        wait_until(lambda: len(jobs()) == 3 and all(j["final"] for j in jobs().values()), timeout=90,
                   interval=0.3, what="three jobs final before the file system breaks")
        wait_until(lambda: (results / "15555551213.result.json").exists(), timeout=60)
        assert health()[0] == 200
        # one job in the middle of its submission: the provider answers (accepts) after the break ...
        sim.fault(kind="hang", seconds=HANG_S, **SEND)
        held = send("15555551223")
        wait_until(lambda: logged(daemon, "job.submitting", held), timeout=60, interval=0.05,
                   what="the submission under way")
        # ... and one waiting for its retry, due a few seconds after the break
        # 429: nothing was taken, so a plain retry (a 5xx would be reconciled first)
        sim.fault(kind="status", status=429, retry_after=RETRY_AFTER_S, **SEND)
        waiting = send("15555551222")
        wait_until(lambda: logged(daemon, "job.retry_scheduled", waiting), timeout=60, interval=0.05,
                   what="the first try refused with 429")

        statefs.break_fs(ext4_disk)
        broke_at, mark = time.monotonic(), len(daemon.events())
        refused_once = jobs()[waiting]
        assert (refused_once["state"], refused_once["submit_tries"]) == ("queued", 1)
        due = datetime.fromisoformat(refused_once["next_attempt_at"].replace("Z", "+00:00")).timestamp()
        assert due > time.time(), "the retry must fall due while the store is read-only"
        assert jobs()[held]["state"] == "submitting", "the provider must answer while the store is read-only"

        # SMTP: 451 4.3.0, exactly the contract's answer; no job
        code, text = statefs.mail(smtp_port, "<ro-1@example.com>", pdf, "ro 1")
        assert f"{code} {text.decode()}" == OUR_TROUBLE
        # the folder: the file is claimed (the watched folder is writable) and kept whole, no result
        (outbox / "15555551215.pdf").write_bytes(late_pdf)
        [trouble, *_] = wait_until(lambda: [e for e in daemon.events()[mark:]
                                            if e.get("event") == "folder.intake_failed"],
                                   timeout=60, what="the folder intake reporting the read-only store")
        assert "Read-only file system" in trouble["error"]
        kept = list((outbox / ".faxbridge" / "processing").glob("*/15555551215.pdf"))
        assert [p.read_bytes() for p in kept] == [late_pdf]
        assert sorted(p.name for p in results.iterdir()) == ["15555551213.result.json"]
        # the CLI: send fails with exit 1 and one clear line; reads still work
        refused = cli("send", "--to", "15555551216", str(pdf_path), config=config)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == "faxbridge: error: job store: Read-only file system\n"
        assert len(jobs()) == 5
        one = cli("job", held, "--json", config=config)
        assert one.returncode == 0 and json.loads(one.stdout)["state"] == "submitting", one.stderr
        # health: 503, naming the store
        status, body = health()
        assert status == 503 and any("store" in p for p in body["problems"]), body
        # the held submission's answer cannot be recorded; the retry falls due and cannot be leased
        wait_until(lambda: [e for e in daemon.events()[mark:]
                            if e.get("event") == "dispatcher.store_error" and e.get("job_id") == held],
                   timeout=HANG_S + 60, what="the accepted submission failing to be recorded")
        wait_until(lambda: time.time() > due + 3, timeout=RETRY_AFTER_S + 60,
                   what="three seconds past the retry's due time")
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon must stay up"
        lines = daemon.events()[mark:]
        elapsed = time.monotonic() - broke_at
        per_event = collections.Counter(str(e.get("event")) for e in lines)
        print(f"read-only for {elapsed:.1f}s: {len(lines)} log lines: {dict(per_event)}")
        assert len(lines) / elapsed < 10, per_event            # bounded, not a hot loop
        assert not [e for e in lines if e.get("event") in ("dispatcher.internal_error", "folder.loop_crashed")]
    finally:
        assert daemon.stop() == 0, "a clean stop, even on a read-only store"

    # the operator repairs the file system and starts the daemon again
    statefs.repair(tmp_path / "state.img", ext4_disk)
    daemon = DaemonProcess(config, tmp_path / "daemon-after-repair.log").start()
    try:
        daemon.wait_ready()
        assert health()[0] == 200
        assert statefs.mail(smtp_port, "<ro-1@example.com>", pdf, "ro 1")[0] == 250   # the client's retry
        assert statefs.mail(smtp_port, "<ro-1@example.com>", pdf, "ro 1")[0] == 250   # and once more: a duplicate
        wait_until(lambda: len(jobs()) == 7 and all(j["final"] for j in jobs().values()), timeout=120,
                   interval=0.3, what="seven final jobs after the repair")
        final = jobs()
        assert {j["state"] for j in final.values()} == {"delivered"}, final
        assert sorted(str(j["subject"] or j["document"]) for j in final.values()) == [
            "15555551213.pdf", "15555551215.pdf", "a.pdf", "a.pdf", "a.pdf", "ro 0", "ro 1"]
        wait_until(lambda: (results / "15555551215.result.json").exists(), timeout=60)
        wait_until(lambda: (done / "15555551215.pdf").exists(), timeout=60)
        assert sorted(p.name for p in results.iterdir()) == ["15555551213.result.json", "15555551215.result.json"]
        assert (done / "15555551215.pdf").read_bytes() == late_pdf
        assert not list((outbox / ".faxbridge" / "processing").iterdir())
        # nothing reached the provider twice: one accepted fax per job, the held one adopted, not resent
        sends = collections.Counter(str(x["job_tag"]) for x in sim.sends())
        assert sends == dict.fromkeys(final, 1), sends
        assert any(e.get("event") == "provider.reconcile_result" and e.get("job_id") == held and e.get("found")
                   for e in daemon.events())
    finally:
        assert daemon.stop() == 0
    db = sqlite3.connect(ext4_disk / "var" / "faxbridge.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


async def test_reply_mail_not_repeated_while_its_mark_cannot_be_recorded(tmp_path: Path, ext4_disk: Path) -> None:
    """The file system turns read-only while a reply mail goes out: the mail is sent, marking it
    fails. The worker goes on trying to record the mark, and does not send the mail again."""
    clock = FakeClock()
    store = await open_store(ext4_disk / "var", "simulator")
    job_id = await final_job(store, clock, Source.SMTP)
    sent: list[str] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        sent.append(job.id)
        statefs.break_fs(ext4_disk)  # while the mail is on its way

    worker = OutboxWorker(store, clock, "mail", deliver)
    for _ in range(3):
        with pytest.raises(StoreError):
            await worker.run_once()
    assert sent == [job_id]
    assert worker.delivered == 0 and await store.outbox_backlog() == 1
    await store.close()
