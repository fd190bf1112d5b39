"""The outbox worker: at-least-once delivery, retries with backoff, give-up, nothing repeated."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from faxbridge.clock import FakeClock
from faxbridge.models import FaxOutcome, Job, JobEvent, NewJob, Paper, PreparedDocument, Source, StatusUpdate
from faxbridge.notify.outbox import NotifyGiveUp, NotifyRetry, OutboxWorker
from faxbridge.states import Accepted, Claimed, Policy, Status, backoff
from faxbridge.store import DOC_NAME, JobStore, OutboxItem, new_job_id, open_store
from faxbridge.workflow import advance


async def final_job(store: JobStore, clock: FakeClock, source: Source = Source.FOLDER) -> str:
    job_id = new_job_id()
    path = store.spool.stage(job_id) / DOC_NAME
    path.write_bytes(b"%PDF-1.4")
    doc = PreparedDocument(path, 1, Paper.LETTER, hashlib.sha256(b"%PDF-1.4").hexdigest(), 8)
    await store.enqueue(job_id, NewJob(source=source, to="+15555551212", document="a.pdf"), doc, clock.now())
    for outcome in (Claimed(), Accepted("9"), Status(StatusUpdate("simulator", "9", FaxOutcome.DELIVERED))):
        await advance(store, job_id, outcome, clock, Policy())
    return job_id


async def test_delivers_once_and_marks_done(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")
    seen: list[tuple[str, str]] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        seen.append((job.id, events[-1].event))

    worker = OutboxWorker(store, clock, "sidecar", deliver)
    job_id = await final_job(store, clock)
    await final_job(store, clock, Source.CLI)  # owes no sidecar
    assert await worker.run_once() == 1
    assert seen == [(job_id, "job.delivered")]
    assert await worker.run_once() == 0
    # a restart (a new worker on the same store) repeats nothing
    assert await OutboxWorker(store, clock, "sidecar", deliver).run_once() == 0
    assert await store.outbox_backlog() == 0
    await store.close()


async def test_a_row_s_lease_is_renewed_while_a_slow_delivery_goes_on(tmp_path: Path) -> None:
    """A slow smarthost: the row's lease is renewed every ``keep_every`` during the send (on a shared
    store another daemon would otherwise take it and send the reply too), and no more once it is sent."""
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")
    kept: list[int] = []
    real_keep = store.outbox_keep

    async def counting_keep(item_id: int, now: datetime) -> bool:
        kept.append(item_id)
        return await real_keep(item_id, now)

    store.outbox_keep = counting_keep  # type: ignore[method-assign]
    renewed_during = asyncio.Event()

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        while len(kept) < 3:                          # one before the send, two while it goes on
            await asyncio.sleep(0.01)
        renewed_during.set()

    await final_job(store, clock)
    worker = OutboxWorker(store, clock, "sidecar", deliver, keep_every=0.02)
    assert await asyncio.wait_for(worker.run_once(), 60) == 1
    assert renewed_during.is_set() and len(set(kept)) == 1
    after = len(kept)
    await asyncio.sleep(0.1)                          # five beats later: nothing renews it now
    assert len(kept) == after
    await store.close()


async def test_retries_with_backoff_until_it_works(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")
    calls = 0

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise NotifyRetry("smarthost down")

    worker = OutboxWorker(store, clock, "mail", deliver, retry_initial=10, retry_max=15)
    await final_job(store, clock, Source.SMTP)
    assert await worker.run_once() == 0 and calls == 1
    assert await worker.run_once() == 0 and calls == 1  # not due yet
    # the dispatcher's backoff, jitter and all: 50-100% of 10 s, then of 20 s capped to 15 s
    (item_id,) = [i.id for i in await store.outbox_due(clock.now() + timedelta(days=1), ["mail"])]
    policy = Policy(retry_initial=10, retry_max=15)
    first, second = (backoff(policy, n, f"outbox:{item_id}") for n in (1, 2))
    assert 5 <= first <= 10 and 7.5 <= second <= 15
    clock.advance(first - 0.01)
    assert await worker.run_once() == 0 and calls == 1  # not due yet
    clock.advance(0.02)
    assert await worker.run_once() == 0 and calls == 2
    clock.advance(second - 0.01)
    assert await worker.run_once() == 0 and calls == 2
    clock.advance(0.02)
    assert await worker.run_once() == 1 and calls == 3
    assert await store.outbox_backlog() == 0
    await store.close()


async def test_give_up_is_recorded_not_retried(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        raise NotifyGiveUp("550 no such user")

    worker = OutboxWorker(store, clock, "mail", deliver)
    await final_job(store, clock, Source.SMTP)
    assert await worker.run_once() == 1
    clock.advance(timedelta(days=1).total_seconds())
    assert await worker.run_once() == 0
    raw = sqlite3.connect(tmp_path / "faxbridge.db")
    try:
        row = raw.execute("SELECT last_error, delivered_at FROM outbox").fetchone()
    finally:
        raw.close()
    assert row[0] == "undeliverable: 550 no such user" and row[1] is not None
    await store.close()


async def test_close_runs_a_last_round(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")
    seen: list[str] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        seen.append(job.id)

    worker = OutboxWorker(store, clock, "sidecar", deliver, interval=3600)
    await worker.start()
    job_id = await final_job(store, clock)
    await worker.close(5)
    assert seen == [job_id]
    await store.close()


async def test_a_job_row_that_does_not_decode_waits_and_the_other_rows_go_out(tmp_path: Path) -> None:
    """The outbox row of a job whose row does not decode is this row's trouble, not the store's: it
    is retried with back-off (an operator may repair the row; nothing is dropped), and the rows
    after it are delivered meanwhile."""
    clock = FakeClock()
    store = await open_store(tmp_path, "simulator")
    seen: list[str] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        seen.append(job.id)

    worker = OutboxWorker(store, clock, "sidecar", deliver, retry_initial=10, retry_max=10)
    bad, good = await final_job(store, clock), await final_job(store, clock)
    raw = sqlite3.connect(tmp_path / "faxbridge.db", isolation_level=None)
    try:
        raw.execute("UPDATE jobs SET meta = '{not json' WHERE id = ?", (bad,))
        assert await worker.run_once() == 1 and seen == [good]
        assert await store.outbox_backlog() == 1
        raw.execute("UPDATE jobs SET meta = '{}' WHERE id = ?", (bad,))       # repaired
    finally:
        raw.close()
    clock.advance(10)
    assert await worker.run_once() == 1 and seen == [good, bad]
    assert await store.outbox_backlog() == 0
    await store.close()
