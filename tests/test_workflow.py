"""``advance`` with the copy of a job the caller already has (``job=``): believed only as far as the
store's version check allows. A change decided on a stale copy is refused and decided again on the
store's own; an Ignore decided on a stale copy is decided again too. And ``apply`` hands back the
row exactly as a fresh read gives it."""

from __future__ import annotations

from pathlib import Path

from faxbridge.clock import SystemClock
from faxbridge.models import FaxOutcome, JobState, StatusUpdate
from faxbridge.states import Accepted, CancelRequested, Claimed, Ignore, Status, Transition
from faxbridge.store import open_store
from faxbridge.workflow import advance
from tests.test_states import POLICY
from tests.test_store_threaded import _enqueue

CLOCK = SystemClock()


async def test_apply_returns_the_job_as_it_is_stored(tmp_path: Path) -> None:
    store = await open_store(tmp_path, "simulator")
    try:
        queued = await _enqueue(store, "01JWORKFLOW000000000000001")
        submitting, decision = await advance(store, queued.id, Claimed(), CLOCK, POLICY, job=queued)
        assert isinstance(decision, Transition) and submitting.state is JobState.SUBMITTING
        assert submitting == await store.get(queued.id)
        assert submitting.version == queued.version + 1
    finally:
        await store.close()


async def test_a_change_decided_on_a_stale_copy_is_decided_again_on_the_stored_job(tmp_path: Path) -> None:
    store = await open_store(tmp_path, "simulator")
    try:
        stale = await _enqueue(store, "01JWORKFLOW000000000000002")
        await advance(store, stale.id, CancelRequested("test"), CLOCK, POLICY)   # someone else: canceled
        job, decision = await advance(store, stale.id, Claimed(), CLOCK, POLICY, job=stale)
        assert isinstance(decision, Ignore)               # the stored job is canceled: not submitted
        assert job.state is JobState.CANCELED
        assert [e.event for e in await store.events(stale.id)] == ["job.queued", "job.canceled"]
    finally:
        await store.close()


async def test_an_ignore_decided_on_a_stale_copy_is_decided_again_on_the_stored_job(tmp_path: Path) -> None:
    store = await open_store(tmp_path, "simulator")
    try:
        stale = await _enqueue(store, "01JWORKFLOW000000000000003")          # queued, as the caller saw it
        await advance(store, stale.id, Claimed(), CLOCK, POLICY)
        await advance(store, stale.id, Accepted("42", None), CLOCK, POLICY)
        delivered = Status(StatusUpdate(provider="simulator", provider_id="42", outcome=FaxOutcome.DELIVERED))
        job, decision = await advance(store, stale.id, delivered, CLOCK, POLICY, job=stale)
        assert isinstance(decision, Transition)           # queued would ignore it; submitted takes it
        assert job.state is JobState.DELIVERED
    finally:
        await store.close()
