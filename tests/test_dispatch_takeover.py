"""Leases between daemons (contract section 10): two dispatchers on one PostgreSQL, each with its own
store (node) and a short ``store.lease``, the simulator over real HTTP. A live daemon's slow provider
call is never taken over (its lease is renewed); a dead daemon's work is: a queued job is sent by
the other daemon, a job it left in ``submitting`` is reconciled with the provider, never sent again.
And a status update (a webhook) reaching two daemons at once is applied once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from faxbridge.clock import SystemClock
from faxbridge.dispatcher import Dispatcher
from faxbridge.intake import accept
from faxbridge.models import FaxOutcome, InputFile, JobState, NewJob, Source, StatusUpdate, SubmitRequest
from faxbridge.simulator import Fault, Simulator, SimulatorServer
from faxbridge.states import Claimed, Policy
from faxbridge.store import JobStore, open_store
from faxbridge.tracker import Tracker
from faxbridge.workflow import advance
from tests.conftest import async_wait_until
from tests.support import sim_provider

POLICY = Policy(submit_retries=4, retry_initial=0.05, retry_max=0.2, reconcile_grace=0.5)
LEASE = 1.2


@dataclass
class Cluster:
    sim: Simulator
    base: str
    client: httpx.AsyncClient
    stores: list[JobStore]

    async def dispatcher(self, node: str, tmp_path: Path, url: str) -> Dispatcher:
        store = await open_store(tmp_path / f"var-{node}", "phaxio", url=url, node=node, lease=LEASE)
        self.stores.append(store)
        return Dispatcher(store, sim_provider("phaxio", self.client, self.base), SystemClock(), POLICY,
                          max_in_flight=10, owner=f"{node}-1", lease_s=LEASE)

    def sends(self, job_id: str) -> int:
        return sum(1 for s in self.sim.sends if s.job_tag == job_id)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    sim = Simulator(speed=5000.0)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    client = httpx.AsyncClient(timeout=30.0)
    c = Cluster(sim, base, client, [])
    try:
        yield c
    finally:
        for store in c.stores:
            await store.close()
        await client.aclose()
        await server.stop()


async def enqueue(store: JobStore, pdf: Path, to: str = "+15555551211") -> str:
    new = NewJob(source=Source.CLI, to=to, document="doc.pdf")
    return (await accept(store, SystemClock(), new, [InputFile("doc.pdf", pdf)], max_pages=200)).id


async def running(dispatcher: Dispatcher, stop: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(dispatcher.run(stop))


async def test_a_slow_provider_call_of_a_live_daemon_is_never_taken_over(
        cluster: Cluster, tmp_path: Path, pg_url: str, pdf: Callable[..., Path]) -> None:
    a = await cluster.dispatcher("a", tmp_path, pg_url)
    b = await cluster.dispatcher("b", tmp_path, pg_url)
    cluster.sim.inject(Fault(kind="hang", seconds=LEASE * 4))     # the call outlives four leases
    job_id = await enqueue(a.store, pdf("doc.pdf"))
    stop = asyncio.Event()
    task_a = await running(a, stop)

    async def a_is_submitting() -> bool:
        return (await a.store.get(job_id)).state is JobState.SUBMITTING

    await async_wait_until(a_is_submitting, timeout=30, interval=0.05, what="a's call under way")
    task_b = await running(b, stop)                 # b looks on, claiming every second

    async def final() -> bool:
        return (await b.store.get(job_id)).state is JobState.SUBMITTED

    try:
        await async_wait_until(final, timeout=60, interval=0.05, what="a's slow call accepted")
    finally:
        stop.set()
        await asyncio.gather(task_a, task_b)
    assert cluster.sends(job_id) == 1
    events = [e.event for e in await b.store.events(job_id)]
    assert "job.outcome_unknown" not in events and "job.reconciled" not in events, events
    assert (await b.store.get(job_id)).node == "a"


async def test_a_dead_daemons_jobs_are_taken_over_and_its_cut_off_submission_reconciled(
        cluster: Cluster, tmp_path: Path, pg_url: str, pdf: Callable[..., Path]) -> None:
    dead = await cluster.dispatcher("dead", tmp_path, pg_url)
    alive = await cluster.dispatcher("alive", tmp_path, pg_url)
    doc = pdf("doc.pdf")
    cut_off, queued = await enqueue(dead.store, doc), await enqueue(dead.store, doc, "+15555551213")
    clock = SystemClock()
    # the dead daemon claimed both, marked one submitting and called the provider, then died
    assert len(await dead.store.claim_due(dead.owner, clock.now(), 10, LEASE)) == 2
    job, _ = await advance(dead.store, cut_off, Claimed(), clock, POLICY)
    await dead.provider.submit(SubmitRequest(job_id=job.id, to=job.to, pdf=dead.store.spool.document_path(job.id),
                                             filename="doc.pdf", pages=job.pages, paper=job.paper,
                                             options=job.options, callback_url=None))
    died = clock.now()
    stop = asyncio.Event()
    task = await running(alive, stop)

    async def both_submitted() -> bool:
        return [(await alive.store.get(i)).state for i in (cut_off, queued)] == [JobState.SUBMITTED] * 2

    try:
        await async_wait_until(both_submitted, timeout=60, interval=0.05, what="the dead daemon's jobs taken over")
    finally:
        stop.set()
        await task
    taken = clock.now() - died
    assert taken < timedelta(seconds=LEASE + 10)      # the lease, one idle poll, and a loaded machine
    assert cluster.sends(cut_off) == 1 and cluster.sends(queued) == 1
    events = [e.event for e in await alive.store.events(cut_off)]
    assert "job.outcome_unknown" in events and "job.reconciled" in events, events
    assert "job.resend" not in events
    assert (await alive.store.get(queued)).node == "alive"


async def test_a_status_update_reaching_two_daemons_at_once_is_applied_once(
        cluster: Cluster, tmp_path: Path, pg_url: str, pdf: Callable[..., Path]) -> None:
    a = await cluster.dispatcher("a", tmp_path, pg_url)
    b = await cluster.dispatcher("b", tmp_path, pg_url)
    new = NewJob(source=Source.SMTP, to="+15555551211", document="doc.pdf", sender="alice@example.com")
    job_id = (await accept(a.store, SystemClock(), new, [InputFile("doc.pdf", pdf("doc.pdf"))], max_pages=200)).id
    await a.run_until_idle()
    job = await a.store.get(job_id)
    assert job.state is JobState.SUBMITTED and job.provider_id
    update = StatusUpdate("phaxio", job.provider_id, FaxOutcome.DELIVERED, pages=1, attempts=1)
    trackers = [Tracker(d.store, d.provider, SystemClock(), POLICY, interval=60) for d in (a, b, a, b)]
    await asyncio.gather(*(t.apply(update) for t in trackers))      # a webhook and its retry, at two daemons
    events = [e.event for e in await b.store.events(job_id)]
    assert events.count("job.delivered") == 1, events
    assert await b.store.outbox_backlog() == 1                        # one reply owed
