"""Time to healthy after a restart with 100,000 jobs in the store.

Fills a job store with ``--jobs`` jobs (mostly final, some queued and in flight, each with its
events and outbox rows, written straight into SQLite: going through intake would take minutes
and measure intake), then starts the real daemon (`faxbridge run` in a subprocess) and times
from the process start until ``GET /healthz`` answers 200. Baseline in the same run: the same
daemon on an empty store. Target: < 2 s with 100,000 jobs. Prints figures; asserts nothing.

    python bench/restart_healthy.py [--jobs 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbridge.store import Store, new_job_id, ts
from tests.conftest import free_port
from tests.support import DaemonProcess, base_settings, write_config


def fill(state_dir: Path, count: int) -> None:
    Store(state_dir, "simulator").close()  # create and migrate
    db = sqlite3.connect(state_dir / "faxbridge.db")
    now = datetime.now(UTC)
    jobs, events, outbox = [], [], []
    for i in range(count):
        job_id = new_job_id()
        created = now - timedelta(minutes=count - i)
        # 97 % final, 2 % queued (due later, so the restart does not turn into a submit burst), 1 % submitted
        state = "delivered" if i % 100 < 97 else ("queued" if i % 100 < 99 else "submitted")
        source = ("smtp", "folder", "cli")[i % 3]
        final = state == "delivered"
        jobs.append((job_id, source, f"+1555555{i % 10000:04d}", state, 1, "letter", "simulator",
                     str(100000 + i) if state != "queued" else None, "doc.pdf", "{}", "{}", ts(created),
                     ts(created), ts(created + timedelta(seconds=50)) if final else None, "x",
                     ts(now + timedelta(hours=1)) if state == "queued" else None))
        events.append((job_id, ts(created), "queued", "job.queued"))
        if final:
            events.append((job_id, ts(created + timedelta(seconds=50)), "delivered", "job.delivered"))
            if source != "cli":
                outbox.append((job_id, "mail" if source == "smtp" else "sidecar", ts(created), ts(created),
                               ts(created)))
    with db:
        db.executemany("""INSERT INTO jobs (id, source, to_number, state, pages, paper, provider, provider_id,
                          document, options, meta, created_at, updated_at, finished_at, doc_sha256,
                          next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", jobs)
        db.executemany("INSERT INTO events (job_id, at, state, event) VALUES (?,?,?,?)", events)
        db.executemany("""INSERT INTO outbox (job_id, kind, payload, created_at, next_at, delivered_at)
                          VALUES (?, ?, '{}', ?, ?, ?)""", outbox)
    db.close()


def time_to_healthy(root: Path, name: str) -> float:
    port = free_port()
    settings = base_settings(root)
    settings["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}",
                           "public_url": f"http://127.0.0.1:{port}"}
    config = write_config(root / f"{name}.toml", settings)
    daemon = DaemonProcess(config, root / f"{name}.log")
    start = time.perf_counter()
    daemon.start()
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            assert daemon.proc is not None and daemon.proc.poll() is None, (root / f"{name}.log").read_text()
            if time.perf_counter() - start > 120:
                raise SystemExit("not healthy after 120 s")
            time.sleep(0.01)
    finally:
        daemon.stop()


def main(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        empty.mkdir()
        full.mkdir()
        t0 = time.perf_counter()
        fill(full / "var", count)
        print(f"filled a store with {count} jobs in {time.perf_counter() - t0:.1f}s")
        base = [time_to_healthy(empty, f"empty{n}") for n in range(runs)]
        loaded = [time_to_healthy(full, f"full{n}") for n in range(runs)]
    b, m = statistics.median(base), statistics.median(loaded)
    print(f"time to healthy, empty store (baseline): median {b:.2f}s of {runs} ({', '.join(f'{x:.2f}' for x in base)})")
    print(f"time to healthy, {count} jobs: median {m:.2f}s ({', '.join(f'{x:.2f}' for x in loaded)}); "
          f"target < 2 s: {'met' if m < 2 else 'MISSED'}")
    print(f"ratio to baseline: {m / b:.2f}")
    print(json.dumps({"figure": f"time to healthy after restart, {count} jobs", "target": "< 2 s",
                      "measured_s": round(m, 2), "baseline_s": round(b, 2), "ratio": round(m / b, 2)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    main(args.jobs, args.runs)
