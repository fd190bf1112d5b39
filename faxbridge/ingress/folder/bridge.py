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
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from faxbridge.errors import StoreBusy
from faxbridge.models import Job, NewJob
from faxbridge.store import DocumentSpool, JobStore, Staged

LOOP_CHECK_S = 1.0           # how often a wait looks whether the loop still runs
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
        """``await method(*args, **kwargs)`` on the loop, waited for in this (worker) thread. A loop
        that stops meanwhile (the daemon going down past its grace) is :class:`StoreBusy`: the
        claim stays, and is taken up again at the next start."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("LoopStore.call on the event loop's own thread would wait for itself")
        if self.loop.is_closed():
            raise StoreBusy("the job store is out of reach: the event loop is closed")
        coro = method(*args, **kwargs)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:               # closed in between
            coro.close()
            raise StoreBusy("the job store is out of reach: the event loop is closed") from exc
        while not future.done():
            concurrent.futures.wait([future], timeout=LOOP_CHECK_S)
            if not future.done() and not self.loop.is_running():
                future.cancel()
                raise StoreBusy("the job store is out of reach: the event loop stopped")
        return future.result()

    # ---- what the folder intake asks of the store

    def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None:
        return self.call(self.store.find_duplicate, dedup_key, since)

    def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        """Several queued jobs in ONE transaction (all or none)."""
        return self.call(self.store.enqueue_many, items, now)

    def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        return self.call(self.store.reject, job_id, new, reason, now)
