"""Two daemons on one PostgreSQL, one of them killed with SIGKILL at random and started again, while
mail and files arrive at both and the provider misbehaves (contract section 10).

Each round: new mails to either daemon (and the ones that got no answer or a 4xx again, as a relay
would), files into either daemon's own folder, a provider fault or two; after a random delay one
daemon, chosen at random, is killed. The other takes its work over: the test waits until no job
still to be sent is leased to the dead daemon (the takeover, printed per kill; ``store.lease`` is
3 s here), then starts the dead one again. At the end both run until every job is final and every
notification delivered.

Invariants (printed as figures): 0 lost (every recipient answered 250 ends in exactly one final
job, every file in exactly one result file in its own folder, every job final); 0 sent twice
(each job reaches the provider at most once, counted at the simulator); each mail job gets one
reply mail (or two with one Message-ID: the window between the smarthost's 250 and our record of
it, counted and printed, as in the one-daemon torture test); every kill taken over.

Short by default (``--torture-rounds``, default 4 kills); ``--torture-rounds 40`` for a long run,
``--torture-seed N`` replays one.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from faxbridge.config import load
from faxbridge.models import Job
from faxbridge.store import open_store
from tests.conftest import free_port, wait_until
from tests.ingress.mailkit import MailSink
from tests.support import DaemonProcess, SimProcess, base_settings, make_pdf, write_config
from tests.torture.kit import needs_resend, replies_per_job, send_mail, sends_per_job
from tests.torture.test_torture import World, drop_file

LEASE_S = 3.0
FAULTS: list[dict[str, Any]] = [
    {"kind": "status", "status": 503, "count": 2},
    {"kind": "status", "status": 429, "retry_after": 0.3, "count": 1},
    {"kind": "hang", "seconds": 2.5, "count": 1},
    {"kind": "accept_then_hang", "seconds": 2.5, "count": 1},
    {"kind": "accept_then_500", "count": 1},
]
SIDES = ("a", "b")


def side_config(root: Path, side: str, url: str, sim: SimProcess, sink: MailSink) -> Path:
    folder = root / side
    folder.mkdir()
    s = base_settings(folder)
    s["provider"].update(sim.phaxio_settings(), request_timeout="2s", reconcile_grace="1s")
    s["store"] = {"url": url, "node": side, "lease": f"{LEASE_S:g}s"}
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}", "cover_page": "never"}
    s["limits"] = {"per_sender_per_hour": 0, "per_client_per_hour": 0}   # one client sends it all
    s["notify"] = {"smarthost": f"127.0.0.1:{sink.port}"}
    s["watch"] = [{"path": str(folder / "outbox"), "results": str(folder / "results"),
                   "done": str(folder / "done"), "failed": str(folder / "failed"), "settle": "300ms"}]
    (folder / "outbox").mkdir()
    (folder / "results").mkdir()
    return write_config(folder / "faxbridge.toml", s)


def holders(url: str) -> list[str]:
    """The nodes holding leases of jobs still to be sent."""
    with psycopg.connect(url) as db:
        return [str(r[0]) for r in db.execute(
            "SELECT DISTINCT lease_node FROM jobs WHERE lease_node IS NOT NULL AND lease_until > now() "
            "AND state IN ('queued', 'submitting') ORDER BY 1")]


def held_by(url: str, node: str) -> int:
    """Jobs still to be sent that are leased to ``node``."""
    with psycopg.connect(url) as db:
        row = db.execute("SELECT COUNT(*) FROM jobs WHERE lease_node = %s AND lease_until IS NOT NULL "
                         "AND state IN ('queued', 'submitting')", (node,)).fetchone()
    return int(row[0]) if row else 0


def every_job(url: str, state_dir: Path) -> tuple[list[Job], int, str]:
    async def read() -> tuple[list[Job], int, str]:
        store = await open_store(state_dir, "phaxio", url=url, readonly=True)
        try:
            return await store.jobs(), await store.outbox_backlog(), await store.integrity_check()
        finally:
            await store.close()
    return asyncio.run(read())


def test_two_daemons_killed_at_random(tmp_path: Path, request: pytest.FixtureRequest, pg_url: str) -> None:
    seed = request.config.getoption("--torture-seed") or random.randrange(1 << 30)
    rounds = request.config.getoption("--torture-rounds")
    print(f"\ncluster torture seed {seed}, {rounds} kills (replay: --torture-seed {seed})")
    world = World(tmp_path, random.Random(seed), make_pdf(tmp_path / "doc.pdf").read_bytes())
    sim = SimProcess(free_port(), tmp_path / "sim.log").start()
    sink = MailSink().up()
    configs = {side: side_config(tmp_path, side, pg_url, sim, sink) for side in SIDES}
    ports = {side: load(configs[side], {}).smtp.listen.port for side in SIDES}
    files: dict[str, list[str]] = {side: [] for side in SIDES}
    daemons: dict[str, DaemonProcess] = {}
    takeovers: list[float] = []
    starts = 0

    def start(side: str) -> None:
        nonlocal starts
        starts += 1
        daemons[side] = DaemonProcess(configs[side], tmp_path / f"{side}-{starts}.log").start()
        daemons[side].wait_ready()

    writers: list[threading.Thread] = []
    try:
        for side in SIDES:
            start(side)
        for _ in range(rounds):
            for _ in range(world.rng.randint(0, 2)):
                sim.fault(**world.rng.choice(FAULTS))
                world.faults += 1
            sim.fault(kind="hang", seconds=2.5, method="POST")     # a submission of the round under way 2 s
            world.faults += 1
            pending = [m for m in world.mails if needs_resend(m)]
            new = [world.new_mail(len(world.mails) + n) for n in range(world.rng.randint(2, 5))]
            world.mails += new
            for _ in range(world.rng.randint(1, 4)):
                side = world.rng.choice(SIDES)
                if (writer := drop_file(world, tmp_path / side / "outbox")) is not None:
                    writers.append(writer)
                files[side].append(world.files[-1])
            senders = [threading.Thread(target=send_mail, args=(ports[world.rng.choice(SIDES)], m))
                       for m in pending + new]
            for t in senders:
                t.start()
            time.sleep(world.rng.uniform(0.05, 1.5))   # the moment of the kill is the point of the test
            # mostly a daemon in the middle of work (holding leases), else either
            busy = holders(pg_url) if world.rng.random() < 0.75 else []
            victim = world.rng.choice(busy or list(SIDES))
            had_work = held_by(pg_url, victim) > 0
            daemons[victim].kill()
            killed = time.monotonic()
            world.kills += 1
            wait_until(lambda v=victim: held_by(pg_url, v) == 0, timeout=LEASE_S + 60, interval=0.1,
                       what=f"the other daemon taking {victim}'s jobs over")
            if had_work:
                takeovers.append(time.monotonic() - killed)
            for t in senders:
                t.join(30)
            start(victim)
        for writer in writers:
            writer.join(10)
        for _ in range(5):
            for m in [m for m in world.mails if needs_resend(m)]:
                send_mail(ports[world.rng.choice(SIDES)], m)
            if not [m for m in world.mails if needs_resend(m)]:
                break

        def settled() -> bool:
            jobs, backlog, _ = every_job(pg_url, tmp_path / "reader")
            return bool(jobs) and all(j.final for j in jobs) and backlog == 0 and all(
                len(list((tmp_path / side / "results").glob("*.result.json"))) >= len(files[side])
                for side in SIDES)

        wait_until(settled, timeout=180, interval=0.5, what="every job final and every notification delivered")
    finally:
        codes = [d.stop() for d in daemons.values()]
        try:
            sends = sim.sends()
        finally:
            sim.stop()
            replies = sink.received
            sink.down()
    assert codes == [0, 0]
    jobs, _, integrity = every_job(pg_url, tmp_path / "reader")

    by_message: dict[str, list[Job]] = {}
    for job in jobs:
        if job.source.value == "smtp":
            by_message.setdefault(str(job.meta.get("message_id") or "").strip("<>"), []).append(job)
    answered = [m for m in world.mails if m.answer == 250]
    refused = [m for m in world.mails if m.answer is not None and m.answer >= 500]
    unanswered = [m for m in world.mails if needs_resend(m)]
    sent_per_job = sends_per_job(sends)
    replies_by_job = replies_per_job(replies)
    ids_by_job: dict[str, set[str]] = {}
    for m in replies:
        ids_by_job.setdefault(str(m.message["X-Faxbridge-Job"]), set()).add(str(m.message["Message-ID"]))
    repeated = [job for job, n in replies_by_job.items() if n == 2 and len(ids_by_job[job]) == 1]
    repeated_otherwise = [job for job, n in replies_by_job.items() if n > 1 and job not in repeated]
    results = {side: sorted(p.name for p in (tmp_path / side / "results").glob("*.result.json")) for side in SIDES}
    lost_mail = sum(1 for m in answered if len(by_message.get(m.message_id.strip("<>"), []))
                    != len({r for r in m.recipients if r.endswith("@fax.local")}))
    print(f"kills: {world.kills}, {len(takeovers)} of a daemon holding work; takeover after such a kill, s: "
          f"max {max(takeovers, default=0):.1f}, all {[round(t, 1) for t in takeovers]} (store.lease {LEASE_S:g} s); "
          f"faults: {world.faults}; mails: {len(world.mails)} (250: {len(answered)}, refused: {len(refused)}, "
          f"never answered: {len(unanswered)}); files: {sum(len(f) for f in files.values())}; jobs: {len(jobs)} "
          f"(by node: {dict(Counter(j.node for j in jobs))}); provider sends: {len(sends)}; replies: {len(replies)}")
    print(f"lost: mail recipients {lost_mail}, jobs not final {sum(1 for j in jobs if not j.final)}, files without "
          f"one result {sum(abs(len(results[s]) - len(files[s])) for s in SIDES)}; sent twice: "
          f"{sum(1 for n in sent_per_job.values() if n > 1)}; replies twice (same Message-ID, the smarthost window): "
          f"{len(repeated)}; replies twice otherwise: {len(repeated_otherwise)}; integrity: {integrity}")
    assert integrity == "ok"
    assert all(n == 1 for n in sent_per_job.values()), sent_per_job.most_common(3)
    assert all(j.final for j in jobs)
    assert lost_mail == 0, seed
    for m in refused:
        assert not by_message.get(m.message_id.strip("<>")), (seed, m.message_id)
    assert not unanswered, (seed, [m.message_id for m in unanswered])
    assert {j.id for j in jobs if j.source.value == "smtp"} == set(replies_by_job), seed
    assert not repeated_otherwise, (seed, repeated_otherwise)
    for side in SIDES:
        assert len(results[side]) == len(files[side]), (seed, side, results[side], files[side])
