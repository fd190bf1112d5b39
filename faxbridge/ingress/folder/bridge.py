"""The daemon's async :class:`~faxbridge.store.JobStore`, reached from the folder's worker thread.

The folder's file work (``lstat``, renames, fsyncs, copies) runs in one worker thread so the event
loop never waits on it; the job store is async and lives on the loop. :class:`LoopStore` is the
crossing: :meth:`LoopStore.call` hands a store coroutine to the loop
(``asyncio.run_coroutine_threadsafe``) and waits, in the worker thread, for its answer (or its
exception: a :class:`~faxbridge.errors.StoreError`, as from any store call). The loop itself only
schedules the call; the store does its blocking work on its own thread. Called from the loop's
own thread it would wait for itself forever: that is refused (``RuntimeError``).

The document spool is plain files: staging folders are made and removed from the worker thread
directly (``spool``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from faxbridge.models import Job, NewJob
from faxbridge.store import DocumentSpool, JobStore, Staged

P = ParamSpec("P")
T = TypeVar("T")


class LoopStore:
    def __init__(self, store: JobStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    @property
    def spool(self) -> DocumentSpool:
        return self.store.spool

    def call(self, method: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await method(*args, **kwargs)`` on the loop, waited for in this (worker) thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("LoopStore.call on the event loop's own thread would wait for itself")
        return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self.loop).result()

    # ---- what the folder intake asks of the store

    def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None:
        return self.call(self.store.find_duplicate, dedup_key, since)

    def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        """Several queued jobs in ONE transaction (all or none)."""
        return self.call(self.store.enqueue_many, items, now)

    def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        return self.call(self.store.reject, job_id, new, reason, now)
