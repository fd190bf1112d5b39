"""Several bridges on one queue: 1, 2 and 3 daemons on one PostgreSQL, against one SQLite daemon.

Real daemons (``faxbridge run``), each with its own state_dir, SMTP port and ``store.node``, on one
PostgreSQL server this script starts itself (``initdb`` + ``pg_ctl`` in a temporary folder, as the
tests do: ``tests/pg.py``), all sending to one simulator process (Phaxio's protocol over HTTP). The
baseline is one daemon on the default SQLite store, measured in the same run. Figures:

- **submit throughput**: ``--jobs`` jobs committed at once (one transaction) into the running
  daemons' queue; jobs per second until every one of them has been handed to the provider
  (``limits.max_in_flight`` raised to 5000 so the cap does not decide the figure);
- **SMTP intake**: 4 connections per daemon for ``--seconds`` sending a 200 KB scan (as
  ``smtp_ingest.py``), 250 replies per second summed over the daemons; the daemons submit what
  they take meanwhile, as in production;
- **takeover**: two daemons, ``store.lease`` = ``--lease``; the first is SIGKILLed in the middle of
  a provider call (the simulator holds it); seconds until no job is leased to the dead daemon any
  more (target: ``store.lease`` plus one idle poll of the dispatcher, 1 s).

Everything runs on this machine: the daemons, PostgreSQL, the simulator and the SMTP clients share
its cores, so on 2 cores a second daemon adds no CPU, only a second event loop (see README).

    python bench/cluster.py [--jobs 300] [--seconds 10] [--lease 5] [--daemons 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _kit import loadavg
from smtp_ingest import client, make_message

from faxbridge.models import NewJob, Paper, PreparedDocument, Source
from faxbridge.store import DOC_NAME, Staged, new_job_id, open_store
from tests.conftest import free_port, make_pdf, wait_until
from tests.pg import PgServer, local_server
from tests.support import DaemonProcess, SimProcess, base_settings, write_config

AT_PROVIDER_OR_DONE = ("submitted", "delivered", "failed", "rejected", "canceled")


def daemon_config(root: Path, name: str, url: str, sim: SimProcess, lease: float,
                  request_timeout: str = "30s") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    s: dict[str, Any] = base_settings(folder)
    s["provider"].update(sim.phaxio_settings(), request_timeout=request_timeout, poll_interval="1s")
    s["store"] = {"url": url, "node": name, "lease": f"{lease:g}s"}
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}", "cover_page": "never"}
    s["limits"] = {"per_sender_per_hour": 0, "per_client_per_hour": 0, "max_in_flight": 5000}
    s["log"] = {"level": "info"}            # (the production default; daemon.ready is an info line)
    return write_config(folder / "faxbridge.toml", s)


@contextmanager
def daemons(configs: list[Path]) -> Iterator[list[DaemonProcess]]:
    procs = [DaemonProcess(c, c.parent / "daemon.log").start() for c in configs]
    try:
        for p in procs:
            p.wait_ready(120)
        yield procs
    finally:
        for p in procs:
            p.stop(timeout=60)


async def commit_jobs(state_dir: Path, url: str, count: int, pdf: bytes) -> None:
    """``count`` queued jobs in one transaction, as another machine's ``faxbridge send`` would."""
    store = await open_store(state_dir, "phaxio", url=url, node="loader")
    try:
        items = []
        for n in range(count):
            job_id = new_job_id()
            path = store.spool.stage(job_id) / DOC_NAME
            path.write_bytes(pdf)
            doc = PreparedDocument(path=path, pages=1, paper=Paper.LETTER, sha256=hashlib.sha256(pdf).hexdigest(),
                                   size=len(pdf))
            items.append(Staged(job_id, NewJob(source=Source.CLI, to=f"+1555555{n % 6000:04d}", document="b.pdf"),
                                doc))
        await store.enqueue_many(items, datetime.now(UTC))
    finally:
        await store.close()


async def handed_over(state_dir: Path, url: str) -> int:
    store = await open_store(state_dir, "phaxio", url=url, readonly=True)
    try:
        counts = await store.counts()
    finally:
        await store.close()
    return sum(n for state, n in counts.items() if state in AT_PROVIDER_OR_DONE)


def submit_rate(root: Path, url: str, sim: SimProcess, n: int, jobs: int, pdf: bytes, label: str) -> float:
    configs = [daemon_config(root, f"{label}{i}", url, sim, 30.0) for i in range(n)]
    reader = configs[0].parent / "var"       # SQLite: the daemon's own state_dir; PostgreSQL: any
    with daemons(configs):
        start = time.monotonic()
        asyncio.run(commit_jobs(reader if not url else root / f"{label}-loader", url, jobs, pdf))
        wait_until(lambda: asyncio.run(handed_over(reader if not url else root / f"{label}-reader", url)) >= jobs,
                   timeout=900, interval=0.2, what="every job handed to the provider")
        return jobs / (time.monotonic() - start)


def intake_rate(root: Path, url: str, sim: SimProcess, n: int, seconds: float, template: bytes, label: str) -> float:
    from faxbridge.config import load

    configs = [daemon_config(root, f"{label}{i}", url, sim, 30.0) for i in range(n)]
    ports = [load(c, {}).smtp.listen.port for c in configs]
    with daemons(configs):
        async def warm_up() -> None:          # each daemon's intake workers started before the clock runs
            await asyncio.gather(*(client(port, template, 1.0, 1000 + i) for i, port in enumerate(ports)))

        async def all_clients() -> tuple[int, float]:
            start = time.monotonic()
            counts = await asyncio.gather(*(client(port, template, seconds, i * 10 + k)
                                            for i, port in enumerate(ports) for k in range(4)))
            return sum(counts), time.monotonic() - start

        asyncio.run(warm_up())
        accepted, took = asyncio.run(all_clients())
    return accepted / took


def takeover(root: Path, url: str, sim: SimProcess, lease: float, pdf: bytes) -> float:
    import psycopg

    def held_by(node: str) -> int:
        with psycopg.connect(url) as db:
            row = db.execute("SELECT COUNT(*) FROM jobs WHERE lease_node = %s AND lease_until IS NOT NULL "
                             "AND state IN ('queued', 'submitting')", (node,)).fetchone()
        return int(row[0]) if row else 0

    first, second = (daemon_config(root, name, url, sim, lease, request_timeout="120s") for name in ("dies", "lives"))
    sim.fault(kind="hang", seconds=90, method="POST")                # the first daemon's call is held at the provider
    with daemons([first]) as (dying,):
        asyncio.run(commit_jobs(root / "takeover-loader", url, 1, pdf))
        wait_until(lambda: held_by("dies") == 1, timeout=60, interval=0.05, what="a call under way")
        with daemons([second]):
            dying.kill()
            killed = time.monotonic()
            wait_until(lambda: held_by("dies") == 0, timeout=lease + 120, interval=0.05, what="the takeover")
            return time.monotonic() - killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--daemons", default="1,2,3")
    args = parser.parse_args()
    counts = [int(n) for n in args.daemons.split(",")]
    print(f"cluster benchmark: {os.cpu_count()} cores, load {loadavg()}")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faxbridge-cluster-")))
        server: PgServer = stack.enter_context(local_server())
        sim = SimProcess(free_port(), tmp / "sim.log", speed=5000.0).start()
        stack.callback(sim.stop)
        pdf = make_pdf(tmp / "one.pdf").read_bytes()
        template = make_message(200, body=False)
        import psycopg

        def database(name: str) -> str:
            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            return server.url(name)

        submit = {"sqlite": submit_rate(tmp / "s-sqlite", "", sim, 1, args.jobs, pdf, "sqlite")}
        intake = {"sqlite": intake_rate(tmp / "i-sqlite", "", sim, 1, args.seconds, template, "sqlite")}
        print(f"one daemon on SQLite: submit {submit['sqlite']:.1f} jobs/s, SMTP intake {intake['sqlite']:.1f} msg/s")
        for n in counts:
            submit[n] = submit_rate(tmp / f"s-{n}", database(f"submit{n}"), sim, n, args.jobs, pdf, "pg")
            intake[n] = intake_rate(tmp / f"i-{n}", database(f"intake{n}"), sim, n, args.seconds, template, "pg")
            print(f"{n} daemon(s) on PostgreSQL: submit {submit[n]:.1f} jobs/s, SMTP intake {intake[n]:.1f} msg/s "
                  f"(load {loadavg()})")
        taken = takeover(tmp / "takeover", database("takeover"), sim, args.lease, pdf)
        print(f"takeover after SIGKILL: {taken:.1f} s (store.lease {args.lease:g} s)")
    one = counts[0]
    for n in counts:
        print(json.dumps({"figure": f"cluster submit throughput, {n} daemon(s) on PostgreSQL",
                          "target": "report" if n == 1 else f"ratio to 1: {submit[n] / submit[one]:.2f}",
                          "measured_jobs/s": round(submit[n], 1), "baseline_jobs/s": round(submit["sqlite"], 1),
                          "ratio": round(submit[n] / submit["sqlite"], 2)}))
    for n in counts:
        print(json.dumps({"figure": f"cluster SMTP intake, {n} daemon(s), 4 conns each",
                          "target": "report" if n == one else f">= 1.6 x one: {intake[n] / intake[one]:.2f}",
                          "measured_msg/s": round(intake[n], 1), "baseline_msg/s": round(intake["sqlite"], 1),
                          "ratio": round(intake[n] / intake["sqlite"], 2)}))
    print(json.dumps({"figure": "cluster takeover after SIGKILL", "target": f"<= {args.lease + 1:g} s",
                      "measured_s": round(taken, 1), "baseline_s": args.lease, "ratio": round(taken / args.lease, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
