"""Shared pieces of the process-tree benchmarks (footprint, cpu_per_message, large_document_rss).

- ``tree_cpu(pid)``: CPU seconds of a process and all its descendants, exited ones included;
- ``tree_memory(pid)``: PSS and RSS of each process of the tree (``/proc/PID/smaps_rollup``);
- ``BareSmtp``: the baseline server, a bare aiosmtpd ``SMTP`` with a handler that only counts,
  alone in a ``python -c`` process;
- ``cpu_hog()``: a busy loop in its own process, to keep one core busy;
- ``wait_final`` / ``open_jobs``: when the daemon's jobs are final (its CLI, or its database read-only).

The daemon, the simulator, config files and the process walk are the test suite's own helpers
(``tests/support.py``), imported from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import cli, process_tree  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
FINAL = ("delivered", "failed", "rejected", "canceled")


# --- CPU -----------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (index 0 is field 3, the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def tree_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) of ``pid`` and all its descendants, and how many processes they are.

    Each live process counts its own utime + stime (all its threads) plus cutime + cstime, the
    CPU of its children that have exited and been waited for. A child that exits moves its whole
    total into its parent's cutime/cstime when it is reaped, so the sum over the live tree counts
    every process that ever belonged to it exactly once (a process orphaned to init would be lost;
    faxbridge's workers are waited for by their parents). The walk is repeated until the set of
    processes is the same before and after reading, so nothing moves between two counts.
    """
    for _ in range(20):
        pids = process_tree(pid)
        total = 0
        missing = False
        for p in pids:
            fields = _stat(p)
            if fields is None:
                missing = True
                break
            total += sum(int(f) for f in fields[11:15])   # utime stime cutime cstime
        if not missing and process_tree(pid) == pids:
            return total / CLK_TCK, len(pids)
    raise RuntimeError(f"the process tree of {pid} kept changing")


# --- memory --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    name: str
    pss_kib: int
    rss_kib: int


def command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for flag in ("-m", "-c"):        # python -m faxbridge run ..., python -c "from multiprocessing..."
        if flag in words[:-1]:
            words = [flag, *words[words.index(flag) + 1:]]
            break
    text = " ".join(" ".join(words).split())
    return text if len(text) <= 90 else text[:87] + "..."


def rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup as kB values ({} when the process has left)."""
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return out
    for line in lines[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def tree_memory(pid: int) -> list[Proc]:
    procs = []
    for p in process_tree(pid):
        r = rollup(p)
        if r:
            procs.append(Proc(p, command(p), r.get("Pss", 0), r.get("Rss", 0)))
    return procs


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


# --- the bare aiosmtpd server ------------------------------------------------------------------------------------

BARE = """
import asyncio, sys
from aiosmtpd.smtp import SMTP

class Counting:
    count = 0

    async def handle_DATA(self, server, session, envelope):
        Counting.count += 1
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Counting(), hostname="bench"), "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


class BareSmtp:
    """aiosmtpd's own SMTP protocol with a handler that only counts: nothing parsed, nothing stored.
    It runs in a ``python -c`` process of its own and is ended with SIGTERM."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> BareSmtp:
        self.proc = subprocess.Popen([sys.executable, "-c", BARE, str(self.port)], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError("the bare aiosmtpd server did not start")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)


def stop(proc: subprocess.Popen[str], grace: float = 15.0) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns what the process printed (stdout)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is None:
        return ""
    out = proc.stdout.read()
    proc.stdout.close()
    return out.strip()


# --- load ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def cpu_hog() -> Iterator[int]:
    """``python3 -c 'while 1: pass'`` for the time of the block (its pid given); killed by pid after."""
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        yield hog.pid
    finally:
        hog.kill()
        hog.wait()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- jobs ------------------------------------------------------------------------------------------------------


def wait_final(config: Path, jobs: int, timeout: float = 300.0) -> str | None:
    """Until at least ``jobs`` jobs exist and all are final (``faxbridge jobs --json``): the newest one's
    state, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = [json.loads(line) for line in cli("jobs", "--json", config=config).stdout.splitlines()]
        if len(out) >= jobs and all(j["final"] for j in out):
            return str(out[0]["state"])
        time.sleep(0.2)
    return None


def open_jobs(state_dir: Path) -> tuple[int, int]:
    """(jobs, jobs not final), read from the daemon's SQLite database in read-only mode: much cheaper
    than a CLI process per look, for polling while CPU is being measured."""
    db = sqlite3.connect(f"file:{state_dir / 'faxbridge.db'}?mode=ro", uri=True, timeout=10)
    try:
        total, pending = db.execute(
            f"SELECT count(*), count(*) FILTER (WHERE state NOT IN ({','.join('?' * len(FINAL))})) FROM jobs",
            FINAL).fetchone()
    finally:
        db.close()
    return int(total), int(pending)


def wait_drained(state_dir: Path, jobs: int, timeout: float = 600.0, interval: float = 0.1,
                 config: Path | None = None) -> bool:
    """Until at least ``jobs`` jobs are in the store and none of them is still open. Should the
    database not answer for 10 s in a row (busy, or its layout changed), ``config`` given, the
    daemon's own CLI is asked instead (``wait_final``)."""
    deadline = time.monotonic() + timeout
    failing_since: float | None = None
    while time.monotonic() < deadline:
        try:
            total, pending = open_jobs(state_dir)
        except sqlite3.Error:
            failing_since = failing_since or time.monotonic()
            if config is not None and time.monotonic() - failing_since > 10:
                return wait_final(config, jobs, deadline - time.monotonic()) is not None
        else:
            failing_since = None
            if total >= jobs and pending == 0:
                return True
        time.sleep(interval)
    return False
