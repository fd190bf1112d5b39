"""Disk full: the state folder on a small tmpfs, filled up under the running daemon.

SMTP answers 451 4.3.0 (the client keeps the mail), a dropped file is not lost and gets no
result yet, nothing is half-recorded; when space returns, work resumes by itself: the mail sent
again is faxed once, the file is faxed once, and the store passes its integrity check.

Needs root to mount a tmpfs (CI runs as root); skipped elsewhere, never under CI=true. The
fixture (``small_disk``) is in tests/torture/conftest.py, the helpers in tests/torture/statefs.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config
from tests.torture import statefs


def mail(port: int, n: int, pdf: bytes) -> tuple[int, bytes]:
    return statefs.mail(port, f"<disk-full-{n}@example.com>", pdf, f"disk {n}")


def test_disk_full_then_space_returns(tmp_path: Path, small_disk: Path) -> None:
    port = free_port()
    outbox = tmp_path / "outbox"
    s = base_settings(tmp_path)
    s["state_dir"] = str(small_disk / "var")
    # A fax the provider accepted while its record could not be written (the disk filled just then)
    # is held and reconciled after the grace: short here, so the test need not wait minutes.
    s["provider"]["reconcile_grace"] = "1s"
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "cover_page": "never"}
    s["watch"] = [{"path": str(outbox), "results": str(tmp_path / "results"), "done": str(tmp_path / "done"),
                   "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    config = write_config(tmp_path / "faxbridge.toml", s)
    pdf = make_pdf(tmp_path / "a.pdf").read_bytes()
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        assert mail(port, 0, pdf)[0] == 250  # works while there is room
        filler = statefs.fill(small_disk)

        code, text = mail(port, 1, pdf)
        assert (code, text[:5]) == (451, b"4.3.0"), (code, text)
        outbox.mkdir(exist_ok=True)
        (outbox / "15555551213.pdf").write_bytes(pdf)
        # the file is seen and its intake fails for want of space: it is kept, not failed, no result
        [trouble, *_] = wait_until(lambda: [e for e in daemon.events() if e.get("event") == "folder.intake_failed"],
                                   timeout=30, what="the folder intake reporting the full disk")
        assert "No space left on device" in trouble["error"]
        assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())
        assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").iterdir())

        filler.unlink()  # space returns: everything resumes by itself
        assert mail(port, 1, pdf)[0] == 250  # the client's retry

        def jobs() -> list[dict[str, object]]:
            return [json.loads(x) for x in cli("jobs", "--json", config=config).stdout.splitlines()]

        wait_until(lambda: len(jobs()) == 3 and all(j["final"] for j in jobs()), timeout=90, interval=0.3,
                   what="three final jobs after space returned")
        assert {j["state"] for j in jobs()} == {"delivered"}
        assert sorted(str(j["subject"] or j["document"]) for j in jobs()) == ["15555551213.pdf", "disk 0", "disk 1"]
        wait_until(lambda: (tmp_path / "results" / "15555551213.result.json").exists(), timeout=30)
    finally:
        assert daemon.stop() == 0
    db = sqlite3.connect(small_disk / "var" / "faxbridge.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
