"""Where the daemon's CPU per message goes: py-spy on the daemon and its worker processes under the
cpu_per_message load (the faxbridge half of it: the same config, client, warm-up, window and drain;
the same ``--provider`` choice, null_provider.py by default).

The daemon is started under ``py-spy record --subprocesses -f speedscope -r RATE -- python -m faxbridge
run -c CONFIG`` (attaching to a running pid does not work on this machine's Python: py-spy cannot find
its version; launching under py-spy does; ``pip install -e '.[bench]'`` installs it). py-spy samples
every thread of the daemon and of each descendant ``--rate`` times a second. Two views:

- default: the samples of threads the kernel shows running (state R or D). That includes threads
  waiting for the disk (fsync, SQLite's COMMIT) and, on a loaded machine, runnable threads
  waiting for a core: "where the threads are when they are not asleep", waits included;
- ``--gil``: only the thread holding the GIL, i.e. where the Python CPU goes. C code called with
  the GIL held (base64, pypdf's regexes, strptime) is charged to the Python line that called it;
  C code that releases the GIL (SQLite's steps, fsync, hashing large buffers, socket I/O) is not
  in this view.
Stacks under ``importlib._bootstrap`` are left out (start-up and first-use imports). The samples
cover the whole life of the processes: start-up, the warm-up, the window and the drain, so they
are the steady state plus a little of the rest.

Prints, for the daemon process and for the worker processes (all other descendants) separately:
the share of the samples by module (self time, the leaf frame's file), the top functions by self
time and by inclusive time (a function counted once per sample however deep it recurs). Asserts
nothing; not in run_all (it is a diagnosis, not a figure).

    python bench/profile_intake.py [--seconds 30] [--rate 100] [--top 25] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import command, loadavg
from cpu_per_message import PROVIDERS, Provider, daemon_config, drive, show
from smtp_ingest import make_message

from tests.conftest import free_port
from tests.support import DaemonProcess, process_tree

PYSPY = Path(sys.executable).parent / "py-spy"
CONNECTIONS, WARMUP = 4, 5          # as cpu_per_message's defaults


class ProfiledDaemon(DaemonProcess):
    """``faxbridge run`` as the child of ``py-spy record``; ``pid`` is the daemon's own."""

    def __init__(self, config: Path, log_path: Path, out: Path, rate: int, gil: bool) -> None:
        super().__init__(config, log_path)
        self.out, self.rate, self.gil = out, rate, gil
        self.pid = 0

    def start(self) -> ProfiledDaemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(PYSPY), "record", "--subprocesses", "-f", "speedscope", "-r", str(self.rate), "-o", str(self.out),
             *(["--gil"] if self.gil else []), "--", sys.executable, "-m", "faxbridge", "run", "-c", str(self.config)],
            stdout=self._log, stderr=self._log, env=self.env)
        deadline = time.monotonic() + 30
        while not self.pid and time.monotonic() < deadline:
            below = process_tree(self.proc.pid)[1:]
            self.pid = below[0] if below else 0
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        """The daemon gets the signal; py-spy writes its file and exits when its child has gone."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            if self.pid and self.proc.poll() is None:
                os.kill(self.pid, sig)
        try:
            return self.proc.wait(timeout)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log.close()


def pid_of(profile_name: str) -> int:
    m = re.match(r"Process (\d+)", profile_name)
    return int(m.group(1)) if m else 0


def module_of(file: str) -> str:
    """A short module name for a frame's file: the package path under site-packages or the repository."""
    for marker in ("site-packages/", "/work/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    file = re.sub(r"^wt/[^/]+/", "", file)
    return file.removesuffix(".py").replace("/", ".")


def table(title: str, counts: Counter[str], total: int, rate: int, messages: int, top: int) -> None:
    print(f"\n{title}\n")
    print("| % CPU | ms/msg | what |\n|------:|-------:|------|")
    for name, n in counts.most_common(top):
        print(f"| {100 * n / total:5.1f} | {1000 * n / rate / messages:6.2f} | `{name}` |")


def analyse(path: Path, daemon_pid: int, messages: int, rate: int, top: int) -> None:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    roles: dict[str, list[list[int]]] = defaultdict(list)
    for profile in data["profiles"]:
        role = "daemon process" if pid_of(profile["name"]) == daemon_pid else "worker processes"
        roles[role].extend(profile["samples"])
    imports = {i for i, f in enumerate(frames) if "importlib._bootstrap" in f["file"]}
    markers = {i for i, f in enumerate(frames) if not f["file"] and f["name"].startswith("process ")}
    for role in ("daemon process", "worker processes"):
        samples = [[i for i in s if i not in markers] for s in roles.get(role, []) if not imports.intersection(s)]
        samples = [s for s in samples if s]
        skipped = len(roles.get(role, [])) - len(samples)
        total = len(samples)
        if not total:
            print(f"\n## {role}: no samples")
            continue
        cpu = total / rate
        print(f"\n## {role}: {total} samples = {cpu:.1f} s CPU = {1000 * cpu / messages:.1f} ms/message over "
              f"{messages} messages ({skipped} import-time samples left out)")
        by_module: Counter[str] = Counter()
        self_time: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        modules: Counter[str] = Counter()
        for stack in samples:
            for name in {module_of(frames[i]["file"]) for i in stack}:
                modules[name] += 1
            leaf = frames[stack[-1]]
            by_module[module_of(leaf["file"])] += 1
            self_time[f"{leaf['name']}  ({module_of(leaf['file'])}:{leaf['line']})"] += 1
            for name in {f"{frames[i]['name']}  ({module_of(frames[i]['file'])})" for i in stack}:
                inclusive[name] += 1

        table(f"### {role}: self time by module (the leaf frame's file)", by_module, total, rate, messages, top)
        table(f"### {role}: self time by line", self_time, total, rate, messages, top)
        table(f"### {role}: inclusive time by function", inclusive, total, rate, messages, top)
        table(f"### {role}: inclusive time by module (any frame of it on the stack)", modules, total, rate, messages,
              top)


def main(seconds: float, rate: int, top: int, keep: Path | None, gil: bool, provider: str) -> None:
    template = make_message(200, body=False)
    print(f"load average {loadavg()}; {seconds:g} s window, py-spy at {rate} Hz{' --gil' if gil else ''}; "
          f"provider: {PROVIDERS[provider]}")
    with tempfile.TemporaryDirectory() as tmp, Provider(provider, Path(tmp)) as prov:
        root = Path(tmp)
        out = root / "profile.json"
        port = free_port()
        daemon = ProfiledDaemon(daemon_config(root, port, prov.settings), root / "daemon.log", out, rate, gil).start()
        try:
            daemon.wait_ready(90)
            result = asyncio.run(drive("faxbridge", daemon.pid, port, template, seconds, CONNECTIONS, WARMUP,
                                       root / "var"))
            tree = {p: command(p) for p in process_tree(daemon.pid)}
        finally:
            daemon.stop()
        show(result)
        print("processes: " + "; ".join(f"{p}: {c[:60]}" for p, c in tree.items()))
        print(f"load average {loadavg()}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, keep / "profile.speedscope.json")
        analyse(out, daemon.pid, result.messages + CONNECTIONS * WARMUP, rate, top)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=100, help="samples a second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep", type=Path, help="copy the speedscope file here")
    ap.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)")
    ap.add_argument("--provider", choices=list(PROVIDERS), default="null")
    a = ap.parse_args()
    main(a.seconds, a.rate, a.top, a.keep, a.gil, a.provider)
