"""Read a job, decide, apply, log: the one path every state change takes.

``advance`` retries on :class:`faxbridge.store.Conflict` (someone changed the job
between our read and our write, e.g. the CLI cancelling it), re-deciding on fresh data.
Every store call is awaited (:class:`faxbridge.store.JobStore`): the event loop never waits
on a commit.
"""

from __future__ import annotations

from typing import Any

import structlog

from faxbridge.clock import Clock
from faxbridge.models import Job
from faxbridge.states import Decision, Ignore, Outcome, Policy, Transition, decide
from faxbridge.store import Conflict, JobStore

log = structlog.get_logger("faxbridge.job")


def log_transition(job: Job, t: Transition) -> None:
    """One log line per state change, with a stable event name."""
    log.info(
        t.event,
        job_id=job.id,
        source=job.source.value,
        provider=job.provider,
        provider_id=job.provider_id,
        state=t.state.value,
        reason=t.reason,
        to=job.to,
    )


async def advance(store: JobStore, job_id: str, outcome: Outcome, clock: Clock, policy: Policy,
                  detail: dict[str, Any] | None = None, *, job: Job | None = None,
                  release: str | None = None) -> tuple[Job, Decision]:
    """Apply ``outcome`` to the job; returns the job as it is now and what was decided.

    ``job``: the job as the caller just had it from the store (claimed, found by its fax id, or
    returned by the previous ``advance``), which saves reading it again. It is trusted only as far
    as the store's version check lets it: a change decided on a stale copy is refused
    (:class:`Conflict`, then the job is read again), and an ``Ignore`` decided on it is decided
    again on the store's own copy before it is believed.

    ``release``: the owner whose lease of the job ends with the change, in the same write
    (:meth:`JobStore.apply`); an ``Ignore`` changes nothing and releases nothing.
    """
    known = job if job is not None and job.id == job_id else None
    for _ in range(5 if known is None else 6):     # the copy handed in is one more try
        if known is not None:
            job, known, fresh = known, None, False
        else:
            job, fresh = await store.get(job_id), True
        decision = decide(job, outcome, clock.now(), policy)
        if isinstance(decision, Ignore):
            if not fresh:
                continue
            return job, decision
        try:
            job = await store.apply(job, decision, clock.now(), detail, release=release)
        except Conflict:
            continue
        log_transition(job, decision)
        return job, decision
    raise Conflict(f"job {job_id} kept changing; gave up applying {type(outcome).__name__}")

