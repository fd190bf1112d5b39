"""The result-file writer: the outbox's "sidecar" rows handed to the folder pipeline's last step.

One ``OutboxWorker(store, clock, "sidecar", deliver)``, always on (a folder job from an earlier
configuration still gets its result). What is written, and where, is the folder pipeline's
(:mod:`faxbridge.ingress.folder.results`: the original moved, ``results/NAME.result.json``
written); this module only runs it off the event loop and maps its answers to the outbox's:
file-system trouble is :class:`NotifyRetry` (tried again with backoff, forever), a result that
can never be written is :class:`NotifyGiveUp`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from faxbridge import crashpoints
from faxbridge.clock import Clock
from faxbridge.ingress.folder import results
from faxbridge.models import Job, JobEvent
from faxbridge.notify.outbox import NotifyGiveUp, NotifyRetry, OutboxWorker
from faxbridge.store import JobStore, OutboxItem

log = structlog.get_logger("faxbridge.sidecar")

KIND = "sidecar"


async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
    """The sidecar ``deliver`` for :class:`~faxbridge.notify.outbox.OutboxWorker`."""
    if results.FolderOrigin.of(job.meta) is None:
        raise NotifyGiveUp(f"job {job.id} did not come from a watched folder")
    try:
        moved, result = await asyncio.to_thread(results.deliver, job, events)
    except results.ResultRefused as exc:
        raise NotifyGiveUp(str(exc)) from exc
    except OSError as exc:
        raise NotifyRetry(f"result file for {job.document}: {exc.strerror or exc}") from exc
    crashpoints.hit("sidecar.written")
    log.info("sidecar.written", job_id=job.id, state=job.state.value, result=str(result),
             original=str(moved) if moved else None)


def build(store: JobStore, clock: Clock) -> OutboxWorker:
    """The result writer; always on, so results owed by folder jobs from an earlier configuration
    are still written."""
    return OutboxWorker(store, clock, KIND, deliver)
