"""The SQLite store behind the :class:`~faxbridge.store.protocol.JobStore` protocol: one store thread.

A :class:`~faxbridge.store.sqlite.SqliteStore` is synchronous and belongs to the thread that opened
it. :class:`ThreadedStore` opens it on a thread of its own and runs every call there, one at a
time, so a coroutine awaiting a commit (an fsync, or SQLite's busy wait while an intake worker
holds the write lock) leaves the event loop free for everything else.

The one error chokepoint of this backend is :meth:`ThreadedStore._run`: whatever escapes the
SQLite store and is not already a :class:`~faxbridge.errors.FaxbridgeError` (a raw ``sqlite3``
error on a path ``_translate`` did not wrap, a row that does not decode, an ``OSError`` of the
spool) comes out as :class:`~faxbridge.errors.StoreError`, chained with ``from``: a caller handles
store trouble, never a foreign exception that would end its loop.

Observers are called on the event loop (not the store thread), before the call that made the
change returns to its caller.

Group commit: the calls that write (enqueue, reject, apply, claims and leases, outbox marks, kv)
wait in a list; the store thread takes every write waiting when it gets to them and runs them in
one transaction (:meth:`SqliteStore.grouped`), so mails and status changes arriving together share
one COMMIT and one fsync instead of one each. A call still returns only once its change is
committed, and a write that fails is undone alone (a savepoint). Reads run one at a time as before.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from faxbridge.errors import FaxbridgeError, StoreBusy, StoreError
from faxbridge.models import Job, JobEvent, JobState, NewJob, PreparedDocument
from faxbridge.states import Transition
from faxbridge.store.protocol import JobFilter, Notice, Observer, OutboxItem, Staged
from faxbridge.store.spool import FileSpool
from faxbridge.store.sqlite import SqliteStore

T = TypeVar("T")
log = structlog.get_logger("faxbridge.store")


def translate(exc: BaseException) -> BaseException:
    """The project's error for anything a store call raised (the chokepoint's rule)."""
    if isinstance(exc, FaxbridgeError) or not isinstance(exc, Exception):
        return exc                                   # ours already, or KeyboardInterrupt/Cancelled...
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc).lower()
        if "locked" in msg or "busy" in msg or "full" in msg or "disk i/o" in msg:
            return StoreBusy(f"job store busy: {exc}")
        return StoreError(f"job store error: {exc}")
    if isinstance(exc, OSError):
        return StoreBusy(f"job store: {exc.strerror or exc}")
    return StoreError(f"job store error: {type(exc).__name__}: {exc}")


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """On the loop: a write's outcome to its caller (gone already if the caller was cancelled)."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class ThreadedStore:
    """A :class:`JobStore` over SQLite; open it with :meth:`open` (or :func:`faxbridge.store.open_store`)."""

    def __init__(self, state_dir: Path, provider: str, *, readonly: bool = False,
                 notices: Collection[str] = ()) -> None:
        self.state_dir = state_dir
        self.provider = provider
        self.readonly = readonly
        self._spool = FileSpool(state_dir)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._sync: SqliteStore | None = None    # None once closing: no new call is taken
        self._conn: SqliteStore | None = None    # ... while the writes already taken still run
        self._observers: list[Observer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []   # waiting for the thread
        self._writes_lock = threading.Lock()
        self._flush_due = False              # a _flush is queued on the thread and has not started

    @classmethod
    async def open(cls, state_dir: Path, provider: str, *, readonly: bool = False,
                   notices: Collection[str] = ()) -> ThreadedStore:
        store = cls(state_dir, provider, readonly=readonly, notices=notices)
        store._loop = asyncio.get_running_loop()
        try:
            store._sync = await store._on_thread(lambda: SqliteStore(state_dir, provider, readonly=readonly,
                                                                     notices=notices))
        except BaseException:
            store._thread.shutdown(wait=False)
            raise
        store._sync.observers.append(store._observed)
        store._conn = store._sync
        return store

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn)
        except BaseException as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _run(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a method of the SQLite store on the store thread; its errors through :func:`translate`."""
        if self._sync is None:
            raise StoreError("the job store is closed")
        return await self._on_thread(functools.partial(method, *args, **kwargs))

    async def _write(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`_run` for a call that writes: committed with the other writes waiting (one
        transaction, see the module's docstring); its errors through :func:`translate`."""
        if self._sync is None:
            raise StoreError("the job store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._writes_lock:
            self._writes.append((functools.partial(method, *args, **kwargs), future))
            start = not self._flush_due
            self._flush_due = True
        if start:
            try:
                self._thread.submit(self._flush)
            except RuntimeError as exc:          # the thread was shut down meanwhile (closing)
                raise StoreError("the job store is closed") from exc
        try:
            return await future
        except BaseException as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _flush(self) -> None:
        """On the store thread: every write waiting, in one transaction (one alone: as it is)."""
        with self._writes_lock:
            batch, self._writes, self._flush_due = self._writes, [], False
        results: list[tuple[bool, Any]]
        sync = self._conn
        if sync is None:
            results = [(False, StoreError("the job store is closed"))] * len(batch)
        elif len(batch) == 1:
            try:
                results = [(True, batch[0][0]())]
            except BaseException as exc:
                results = [(False, exc)]
        else:
            try:
                results = sync.grouped([call for call, _ in batch])
            except BaseException as exc:
                results = [(False, exc)] * len(batch)
        assert self._loop is not None
        for (_, future), (ok, value) in zip(batch, results, strict=True):
            self._loop.call_soon_threadsafe(_settle, future, ok, value)

    def _observed(self, before: Job | None, after: Job, event: str) -> None:
        """On the store thread: hand the change to the observers on the event loop."""
        if self._loop is not None and self._observers:
            self._loop.call_soon_threadsafe(self._tell, before, after, event)

    def _tell(self, before: Job | None, after: Job, event: str) -> None:
        for observer in self._observers:
            try:
                observer(before, after, event)
            except Exception as exc:   # an observer (metrics) must never undo or break the work
                log.error("store.observer_failed", error=repr(exc), event_name=event)

    @property
    def spool(self) -> FileSpool:
        return self._spool

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    async def close(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            await self._on_thread(sync.close)    # after the writes already taken (the thread is FIFO)
            self._conn = None
        self._thread.shutdown(wait=True)

    @property
    def _db(self) -> SqliteStore:
        if self._sync is None:
            raise StoreError("the job store is closed")
        return self._sync

    # ---- writes
    async def enqueue(self, job_id: str, new: NewJob, doc: PreparedDocument, now: datetime, *,
                      state: JobState = JobState.QUEUED, reason: str | None = None,
                      dedup_since: datetime | None = None, sender_limit: tuple[datetime, int] | None = None) -> Job:
        return await self._write(self._db.enqueue, job_id, new, doc, now, state=state, reason=reason,
                                 dedup_since=dedup_since, sender_limit=sender_limit)

    async def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        return await self._write(self._db.enqueue_many, list(items), now)

    async def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        return await self._write(self._db.reject, job_id, new, reason, now)

    async def apply(self, job: Job, t: Transition, now: datetime, detail: dict[str, Any] | None = None, *,
                    release: str | None = None) -> Job:
        return await self._write(self._db.apply, job, t, now, detail, release=release)

    # ---- claims and leases
    async def claim_due(self, owner: str, now: datetime, limit: int, lease_s: float, *,
                        reconcile: bool = False, per_destination: int = 0, max_in_flight: int = 0) -> list[Job]:
        return await self._write(self._db.claim_due, owner, now, limit, lease_s, reconcile=reconcile,
                                 per_destination=per_destination, max_in_flight=max_in_flight)

    async def renew(self, owner: str, job_ids: Collection[str], now: datetime, lease_s: float) -> set[str]:
        if not job_ids:
            return set()
        return await self._write(self._db.renew, owner, sorted(job_ids), now, lease_s)

    async def abandoned(self, now: datetime, owner: str) -> list[Job]:
        return await self._run(self._db.abandoned, now, owner)

    async def release(self, job_id: str, owner: str) -> None:
        await self._write(self._db.release, job_id, owner)

    async def defer(self, job_id: str, until: datetime) -> None:
        await self._write(self._db.defer, job_id, until)

    async def recover(self) -> list[Job]:
        return await self._run(self._db.recover)

    async def clean_spool(self) -> int:
        return await self._run(self._db.clean_spool)

    # ---- reads
    async def get(self, job_id: str) -> Job:
        return await self._run(self._db.get, job_id)

    async def jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        return await self._run(self._db.jobs, state, limit)

    async def events(self, job_id: str) -> list[JobEvent]:
        return await self._run(self._db.events, job_id)

    async def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None:
        return await self._run(self._db.find_duplicate, dedup_key, since)

    async def count_by_sender(self, sender: str, since: datetime) -> int:
        return await self._run(self._db.count_by_sender, sender, since)

    async def count_by_client(self, peer: str, since: datetime) -> int:
        return await self._run(self._db.count_by_client, peer, since)

    async def in_flight(self) -> int:
        return await self._run(self._db.in_flight)

    async def overdue(self, submitted_before: datetime) -> int:
        return await self._run(self._db.overdue, submitted_before)

    async def counts(self) -> dict[str, int]:
        return await self._run(self._db.counts)

    async def submitted(self, provider: str | None = None) -> list[Job]:
        return await self._run(self._db.submitted, provider)

    async def cancel_requested(self) -> list[Job]:
        return await self._run(self._db.cancel_requested)

    async def by_provider_id(self, provider_id: str, provider: str | None = None) -> Job | None:
        return await self._run(self._db.by_provider_id, provider_id, provider)

    async def known_provider_ids(self, provider: str | None = None) -> frozenset[str]:
        return await self._run(self._db.known_provider_ids, provider)

    async def search(self, wanted: JobFilter, offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
        return await self._run(self._db.search, wanted, offset, limit)

    async def next_due(self, per_destination: int = 0) -> datetime | None:
        return await self._run(self._db.next_due, per_destination)

    async def at_provider(self, to: str) -> int:
        return await self._run(self._db.at_provider, to)

    # ---- outbox
    async def outbox_due(self, now: datetime, kinds: Sequence[str], limit: int = 100) -> list[OutboxItem]:
        return await self._run(self._db.outbox_due, now, list(kinds), limit)

    async def outbox_delivered(self, item_id: int, now: datetime, error: str | None = None) -> None:
        await self._write(self._db.outbox_delivered, item_id, now, error)

    async def outbox_failed(self, item_id: int, error: str, next_at: datetime) -> None:
        await self._write(self._db.outbox_failed, item_id, error, next_at)

    async def outbox_backlog(self) -> int:
        return await self._run(self._db.outbox_backlog)

    async def notices(self, job_id: str) -> list[Notice]:
        return await self._run(self._db.notices, job_id)

    # ---- kv
    async def kv_get(self, key: str) -> str | None:
        return await self._run(self._db.kv_get, key)

    async def kv_set(self, key: str, value: str) -> None:
        await self._write(self._db.kv_set, key, value)

    async def outbox_keep(self, item_id: int, now: datetime) -> bool:
        return True             # one daemon per SQLite store (the state-dir lock): nobody else takes it

    async def lead(self, role: str) -> bool:
        return True             # one daemon per SQLite store: it does every role

    async def integrity_check(self) -> str:
        return await self._run(self._db.integrity_check)
