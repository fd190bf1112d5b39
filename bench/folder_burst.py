"""Folder burst: 2,000 one-page PDFs dropped at once into a watched folder of the real daemon.

The daemon (``faxbridge run``) and the simulator (``faxbridge simulate``, spoken to as Phaxio) run in
their own processes. Prints the seconds from the drop until every file is a committed job (read from
the job store), until every fax reached the simulator, the daemon's peak RSS, and checks that every
file was sent exactly once. Baselines measured in the same run on the same disk: listing and
stat-ing the 2,000 files, and copying them with an fsync each (the least work a durable intake
must do). Target: all queued within ``settle`` + 10 s. The simulator runs at nice 19 (see
:func:`background`). Prints figures; asserts nothing.

    python bench/folder_burst.py [--files 2000] [--settle 2s]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbridge.config_parse import parse_duration
from faxbridge.store import Store
from tests.conftest import free_port
from tests.support import DaemonProcess, SimProcess, base_settings, make_pdf, write_config


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def background(pid: int) -> None:
    """Every thread of ``pid`` at nice 19: the simulator spends about 50 ms of CPU a fax (more than the
    daemon), which a real provider spends on its own machines; niced, it takes the cores only when
    the daemon and its workers leave them, so the figure is the intake's, not the simulator's."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), 19)


def baseline(files: list[Path], into: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    for entry in os.scandir(files[0].parent):
        entry.stat()
    listing = time.perf_counter() - t0
    into.mkdir()
    t0 = time.perf_counter()
    for f in files:
        target = into / f.name
        shutil.copyfile(f, target)
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(into, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return listing, time.perf_counter() - t0


def main(count: int, settle: str) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        made = root / "made"
        t0 = time.perf_counter()
        files = [make_pdf(made / f"1555555{n % 10_000:04d}_{n}.pdf", text=f"burst file {n}") for n in range(count)]
        print(f"made {count} one-page PDFs in {time.perf_counter() - t0:.1f}s")
        digests = Counter(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
        listing, copying = baseline(files, root / "copied")

        sim = SimProcess(free_port(), root / "sim.log", speed=10_000.0).start()
        assert sim.proc is not None
        background(sim.proc.pid)
        settings = base_settings(root, **sim.phaxio_settings())
        settings["limits"] = {"max_in_flight": 200}
        settings["watch"] = [{"path": str(root / "outbox"), "results": str(root / "results"),
                              "done": str(root / "done"), "failed": str(root / "failed"), "settle": settle}]
        config = write_config(root / "faxbridge.toml", settings)
        (root / "outbox").mkdir()
        daemon = DaemonProcess(config, root / "daemon.log").start()
        try:
            daemon.wait_ready()
            assert daemon.proc is not None
            rss_idle = peak_rss_mb(daemon.proc.pid)
            store = Store(root / "var", "phaxio", readonly=True)
            t0 = time.perf_counter()
            for f in files:
                f.rename(root / "outbox" / f.name)
            dropped = time.perf_counter() - t0
            queued_at = sent_at = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if queued_at is None and sum(store.counts().values()) >= count:
                    queued_at = time.perf_counter() - t0
                if queued_at is not None and len(sim.sends()) >= count:
                    sent_at = time.perf_counter() - t0
                    break
                time.sleep(0.05)
            rss = peak_rss_mb(daemon.proc.pid)
            store.close()
        finally:
            daemon.stop()
            sends = sim.sends()
            sim.stop()
        sent = Counter(s["pdf_sha256"] for s in sends)
        lost = sum((digests - sent).values())
        twice = sum(n - 1 for n in sent.values() if n > 1)
        target = parse_duration(settle) + 10
        print(f"files: {count}, settle {settle}, dropped (renamed in) in {dropped:.2f}s")
        print(f"baseline: list+stat {listing * 1000:.0f} ms; copy+fsync each {copying:.2f}s "
              f"({count / copying:.0f} files/s)")
        if queued_at is None:
            print("NOT all queued before the deadline")
            return
        work = max(queued_at - parse_duration(settle), 1e-9)
        print(f"all queued (committed jobs) after {queued_at:.2f}s from the drop "
              f"(target {target:.0f}s: {'met' if queued_at <= target else 'MISSED'}); "
              f"after settle: {work:.2f}s = {count / work:.0f} files/s")
        print(f"ratio to baseline copy+fsync: {work / copying:.1f}x")
        print(f"all sent to the simulator after {sent_at:.2f}s" if sent_at else "not all sent before the deadline")
        print(f"lost: {lost}, sent twice: {twice}")
        print(f"daemon peak RSS: {rss:.0f} MB (idle after start {rss_idle:.0f} MB)")
        print(json.dumps({"figure": f"folder burst, {count} files, all queued", "target": f"<= {target:.0f} s",
                          "measured_s": round(queued_at, 2), "baseline_s": round(copying, 2),
                          "ratio": round(work / copying, 1), "lost": lost, "twice": twice, "peak_rss_mb": round(rss)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--settle", default="2s")
    args = parser.parse_args()
    main(args.files, args.settle)
