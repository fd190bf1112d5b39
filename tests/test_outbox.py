"""The outbox worker: at-least-once delivery, retries with backoff, give-up, nothing repeated."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from faxbridge.clock import FakeClock
from faxbridge.models import FaxOutcome, Job, JobEvent, NewJob, Paper, PreparedDocument, Source, StatusUpdate
from faxbridge.notify.outbox import NotifyGiveUp, NotifyRetry, OutboxWorker
from faxbridge.states import Accepted, Claimed, Policy, Status
from faxbridge.store import DOC_NAME, OutboxItem, Store, new_job_id
from faxbridge.workflow import advance


def final_job(store: Store, clock: FakeClock, source: Source = Source.FOLDER) -> str:
    job_id = new_job_id()
    path = store.stage(job_id) / DOC_NAME
    path.write_bytes(b"%PDF-1.4")
    doc = PreparedDocument(path, 1, Paper.LETTER, hashlib.sha256(b"%PDF-1.4").hexdigest(), 8)
    store.enqueue(job_id, NewJob(source=source, to="+15555551212", document="a.pdf"), doc, clock.now())
    for outcome in (Claimed(), Accepted("9"), Status(StatusUpdate("simulator", "9", FaxOutcome.DELIVERED))):
        advance(store, job_id, outcome, clock, Policy())
    return job_id


async def test_delivers_once_and_marks_done(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path, "simulator")
    seen: list[tuple[str, str]] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        seen.append((job.id, events[-1].event))

    worker = OutboxWorker(store, clock, "sidecar", deliver)
    job_id = final_job(store, clock)
    final_job(store, clock, Source.CLI)  # owes no sidecar
    assert await worker.run_once() == 1
    assert seen == [(job_id, "job.delivered")]
    assert await worker.run_once() == 0
    # a restart (a new worker on the same store) repeats nothing
    assert await OutboxWorker(store, clock, "sidecar", deliver).run_once() == 0
    assert store.outbox_backlog() == 0
    store.close()


async def test_retries_with_backoff_until_it_works(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path, "simulator")
    calls = 0

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise NotifyRetry("smarthost down")

    worker = OutboxWorker(store, clock, "mail", deliver, retry_initial=10, retry_max=15)
    final_job(store, clock, Source.SMTP)
    assert await worker.run_once() == 0 and calls == 1
    assert await worker.run_once() == 0 and calls == 1  # not due yet
    clock.advance(10)
    assert await worker.run_once() == 0 and calls == 2
    clock.advance(14)
    assert await worker.run_once() == 0 and calls == 2  # second delay is 20 s capped to 15 s
    clock.advance(1)
    assert await worker.run_once() == 1 and calls == 3
    assert store.outbox_backlog() == 0
    store.close()


async def test_give_up_is_recorded_not_retried(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path, "simulator")

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        raise NotifyGiveUp("550 no such user")

    worker = OutboxWorker(store, clock, "mail", deliver)
    final_job(store, clock, Source.SMTP)
    assert await worker.run_once() == 1
    clock.advance(timedelta(days=1).total_seconds())
    assert await worker.run_once() == 0
    row = store._db.execute("SELECT last_error, delivered_at FROM outbox").fetchone()
    assert row[0] == "undeliverable: 550 no such user" and row[1] is not None
    store.close()


async def test_close_runs_a_last_round(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path, "simulator")
    seen: list[str] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        seen.append(job.id)

    worker = OutboxWorker(store, clock, "sidecar", deliver, interval=3600)
    await worker.start()
    job_id = final_job(store, clock)
    await worker.close(5)
    assert seen == [job_id]
    store.close()
