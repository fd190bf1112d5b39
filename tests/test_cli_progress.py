"""Live progress on the command line (CONTRACT §13): ``faxbridge send --wait`` against the running daemon
and its built-in simulator (exit codes, the lines printed, on a pipe and on a pty), and
``faxbridge jobs --watch`` on a pty."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    config = write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))
    process = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        process.wait_ready()
        yield config
    finally:
        process.stop()


def test_wait_follows_a_fax_to_delivered_and_exits_0(daemon: Path, tmp_path: Path) -> None:
    r = cli("send", "--wait", "--to", "+15555551212", str(make_pdf(tmp_path / "a.pdf", pages=2)),
            config=daemon, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines[0]) == 26                                     # the job id first, as without --wait
    states = [line.split()[3] for line in lines[1:-1]]            # "2026-12-02 14:00:00 UTC  queued  job.queued"
    assert states[0] == "queued" and states[-1] == "delivered"
    assert "submitting" in states and "submitted" in states
    assert lines[-1] == "faxbridge: delivered: 2 pages to +15555551212"


def test_wait_exits_1_with_the_reason_when_the_fax_fails(daemon: Path, tmp_path: Path) -> None:
    r = cli("send", "--wait", "--to", "+15555551219", str(make_pdf(tmp_path / "a.pdf")), config=daemon,
            timeout=120)
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1].split()[3] == "failed"
    assert r.stderr.strip().splitlines()[-1] == "faxbridge: failed: Busy: the line was busy on all 3 attempts"


def run_on_pty(argv: list[str], *, until: bytes, timeout: float = 120.0,
               interrupt: bool = False) -> tuple[int, bytes]:
    """``argv`` with its stdout and stderr on a pseudo-terminal; read until ``until`` is seen (then
    SIGINT with ``interrupt``) and the process ends."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # the other side closed: the process ended
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                output += chunk
            if interrupt and not sent and until in output:
                proc.send_signal(signal.SIGINT)
                sent = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert until in output, output[-2000:]
    return code, output


def test_wait_on_a_terminal_keeps_one_line_current(daemon: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "faxbridge", "send", "-c", str(daemon), "--wait", "--to", "+15555551212",
            str(make_pdf(tmp_path / "a.pdf"))]
    code, output = run_on_pty(argv, until=b"faxbridge: delivered")
    assert code == 0
    text = output.decode()
    assert "\r\x1b[K" in text                               # the status line is rewritten in place
    assert "job.delivered" in text and "faxbridge: delivered: 1 page to +15555551212" in text


def test_wait_on_a_terminal_ends_1_with_the_reason_on_its_own_line(daemon: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "faxbridge", "send", "-c", str(daemon), "--wait", "--to", "+15555551219",
            str(make_pdf(tmp_path / "a.pdf"))]
    code, output = run_on_pty(argv, until=b"faxbridge: failed")
    assert code == 1
    text = output.decode()
    lines = text.replace("\r\n", "\n").split("\n")
    final = [line for line in lines if "faxbridge: failed" in line]
    # the status line was erased before the reason: it starts the line, nothing of the status before it
    assert final == ["\r\x1b[Kfaxbridge: failed: Busy: the line was busy on all 3 attempts"]
    assert "job.failed  Busy: the line was busy on all 3 attempts" in text     # the change, kept above


def test_jobs_watch_redraws_the_table_until_ctrl_c(daemon: Path, tmp_path: Path) -> None:
    job = cli("send", "--to", "+15555551212", str(make_pdf(tmp_path / "a.pdf")), config=daemon).stdout.strip()
    argv = [sys.executable, "-m", "faxbridge", "jobs", "-c", str(daemon), "--watch"]
    code, output = run_on_pty(argv, until=b"(Ctrl-C to stop)", interrupt=True)
    assert code == 0
    text = output.decode()
    assert text.startswith("\x1b[H\x1b[2J") and "STATE" in text and job in text


def test_jobs_watch_needs_a_terminal(daemon: Path) -> None:
    r = cli("jobs", "--watch", config=daemon)
    assert r.returncode == 2
    assert r.stderr == ("faxbridge: error: --watch keeps a table current on a terminal; use `faxbridge jobs` "
                        "(or --json) elsewhere\n")
