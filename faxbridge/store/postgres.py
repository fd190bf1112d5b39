"""The PostgreSQL job store (contract section 10): several daemons, one queue.

A :class:`PostgresStore` implements :class:`~faxbridge.store.protocol.JobStore` with psycopg 3's
async driver and a ``psycopg_pool.AsyncConnectionPool`` (connections in autocommit; every write is
an explicit transaction). Same semantics as the SQLite store (``sqlite.py`` + ``threaded.py``);
what differs because several daemons share the database:

- **Claims** are ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING *``: two
  daemons claiming at once never get one job twice, and neither waits on the other's rows.
  ``per_destination`` holds across daemons inside the claiming transaction: the numbers with room
  are locked (``pg_advisory_xact_lock`` per number, in sorted order so claimers never deadlock)
  before their busy jobs are counted, so two claimers cannot both fill the last place.
- ``max_in_flight`` holds across daemons the same way: one advisory lock for it, taken before any
  number's, under which the jobs at the provider or leased to be sent are counted.
- **Leases** carry the node (``store.node``) beside the owner. :meth:`recover` drops only this
  node's leases and expired ones: another daemon's live claims are never wiped by a start-up. A
  live daemon renews the leases of the jobs it works on (:meth:`renew`, the dispatcher's
  heartbeat), so only a dead one's run out (``store.lease``) and are taken over.
- **One daemon at a time** (:meth:`lead`): the poller and the balance check run where a
  session-level advisory lock is held, on a connection of its own; it goes when that connection
  does (the daemon died, or the database restarted) and the next daemon to ask takes it.
- **Dedup**: ``enqueue(..., dedup_since=)`` takes ``pg_advisory_xact_lock`` on the dedup key before
  it looks, so two daemons given the same mail at once make one job (what ``BEGIN IMMEDIATE`` gave
  SQLite; READ COMMITTED alone does not).
- **Outbox** rows are leased when :meth:`outbox_due` hands them out (the store's ``lease``), so two
  daemons do not both send one reply; delivered/failed clears the lease, a dead daemon's runs out.
  A folder job's result file ("sidecar") goes only to the node that took the job in: the daemon
  watching that folder (so ``store.node`` must stay the same across its restarts).
- **Documents** live in the database (:mod:`faxbridge.store.pg_documents`); the local spool is
  staging plus a cache that :meth:`claim_due` and :meth:`outbox_due` fill for the jobs they return,
  so ``spool.document_path(job_id)`` names a local file the provider adapter can upload.

The one error chokepoint is :func:`translate` (applied to every public method by
:func:`_chokepoint`): connection trouble, lock and serialization failures, a full disk or too many
connections are :class:`~faxbridge.errors.StoreBusy` (try again: SMTP answers 451 4.3.0); every other
psycopg error, and a bug, :class:`~faxbridge.errors.StoreError`, chained with ``from``.

Times in SQL are the caller's (``now`` arguments), as in the SQLite store; :meth:`recover`, which
has none, uses the database's clock.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from faxbridge.errors import (
    Conflict,
    DuplicateJob,
    FaxbridgeError,
    JobNotFound,
    SenderOverLimit,
    StoreBusy,
    StoreError,
    UnreadableJob,
)
from faxbridge.models import FaxOptions, Hold, Job, JobEvent, JobState, NewJob, Paper, PreparedDocument, Source
from faxbridge.states import Transition
from faxbridge.store import pg_documents as documents
from faxbridge.store.pg_schema import MIGRATIONS, migrate, schema_version
from faxbridge.store.protocol import DOC_NAME, JobFilter, Notice, Observer, OutboxItem, Staged
from faxbridge.store.search import where_of
from faxbridge.store.spool import FileSpool
from faxbridge.store.sqlite import (
    _JOB_FIELDS,
    COPY_KIND,
    OUTBOX_KINDS,
    RECEIPT_KIND,
    _first_try,
    _private_dirs,
)

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger("faxbridge.store")

AT_PROVIDER = "state IN ('submitting', 'submitted')"
SIDECAR_KIND = OUTBOX_KINDS[Source.FOLDER][0]   # a folder job's result file: written by the daemon that took it in
RECONCILE = Hold.RECONCILE.value
BUSY_TYPES: tuple[type[Exception], ...] = (
    psycopg.OperationalError,            # connection lost or refused, the pool's timeout, admin shutdown...
    pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled, pg_errors.DiskFull, pg_errors.InsufficientResources,
    pg_errors.TooManyConnections, pg_errors.CannotConnectNow, pg_errors.ReadOnlySqlTransaction,
)


def translate(exc: BaseException) -> BaseException:
    """The project's error for anything a PostgreSQL store call raised (this backend's chokepoint)."""
    if isinstance(exc, FaxbridgeError) or not isinstance(exc, Exception):
        return exc                                   # ours already, or KeyboardInterrupt/Cancelled...
    if isinstance(exc, BUSY_TYPES):
        return StoreBusy(f"job store busy: {type(exc).__name__}: {exc}")
    if isinstance(exc, psycopg.Error):
        return StoreError(f"job store error: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return StoreBusy(f"job store: {exc.strerror or exc}")
    return StoreError(f"job store error: {type(exc).__name__}: {exc}")


def _chokepoint(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc
    return call


def _sql_value(value: Any) -> Any:
    """A value for a parameter: enums as their values (psycopg would send an Enum's name), options
    as jsonb."""
    if isinstance(value, FaxOptions):
        return Jsonb(value.to_json())
    return value.value if isinstance(value, Enum) else value


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _lock_key(kind: str, value: str) -> str:
    return f"faxbridge:{kind}:{value}"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


class PostgresStore:
    """A :class:`JobStore` on PostgreSQL; open it with :meth:`open` (or :func:`faxbridge.store.open_store`)."""

    def __init__(self, pool: AsyncConnectionPool[Any], state_dir: Path, provider: str, *, node: str,
                 lease_s: float, notices: Collection[str], url: str = "") -> None:
        unknown = set(notices) - {COPY_KIND, RECEIPT_KIND}
        if unknown:
            raise StoreError(f"unknown notices {sorted(unknown)}")
        self.provider = provider
        self.node = node
        self.lease_s = lease_s
        self.copies = COPY_KIND in notices
        self.receipts = RECEIPT_KIND in notices
        self._pool: AsyncConnectionPool[Any] | None = pool
        self._spool = FileSpool(state_dir)
        self._observers: list[Observer] = []
        self._bad_rows: set[str] = set()
        self._url = url
        self._leads: dict[str, psycopg.AsyncConnection[Any]] = {}   # role -> the connection holding it
        self._closed = False

    @classmethod
    async def open(cls, url: str, state_dir: Path, provider: str, *, node: str, lease_s: float = 30.0,
                   readonly: bool = False, notices: Collection[str] = (), max_size: int = 4,
                   timeout: float = 10.0) -> PostgresStore:
        """Connect, and create or migrate the schema (waiting while another daemon does)."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, min_size=1, max_size=max_size, timeout=timeout, open=False, configure=_configure,
            check=AsyncConnectionPool.check_connection,     # a connection a database restart broke is replaced
            kwargs={"autocommit": True, "row_factory": dict_row}, name="faxbridge-store")
        try:
            await pool.open(wait=True, timeout=timeout)
            async with pool.connection() as conn:
                if readonly:
                    version = await schema_version(conn)
                    if version < len(MIGRATIONS):
                        raise StoreError("no job store in this database: no daemon has run with this store.url")
                else:
                    _private_dirs(state_dir, state_dir / "spool", state_dir / "spool" / ".staging")
                    version = await migrate(conn)
            if version > len(MIGRATIONS):
                raise StoreError(f"the job store's schema (version {version}) is newer than this faxbridge "
                                 f"knows ({len(MIGRATIONS)}): upgrade faxbridge")
        except BaseException as exc:
            await pool.close()
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return cls(pool, state_dir, provider, node=node, lease_s=lease_s, notices=notices, url=url)

    @property
    def _db(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise StoreError("the job store is closed")
        return self._pool

    @property
    def spool(self) -> FileSpool:
        return self._spool

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def _tell(self, before: Job | None, after: Job, event: str) -> None:
        for observer in self._observers:
            try:
                observer(before, after, event)
            except Exception as exc:   # an observer (metrics) must never undo or break the work
                log.error("store.observer_failed", error=repr(exc), event_name=event)

    async def close(self) -> None:
        self._closed = True
        leads, self._leads = list(self._leads.values()), {}
        for conn in leads:
            await conn.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _rows(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        async with self._db.connection() as conn:
            cur = await conn.execute(sql, args)
            return list(await cur.fetchall())

    async def _row(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> dict[str, Any] | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        row = await self._row(sql, args)
        return 0 if row is None else int(next(iter(row.values())))

    # ---- writes ---------------------------------------------------------------------------

    async def _insert_job(self, conn: Any, job_id: str, new: NewJob, doc: PreparedDocument | None, now: datetime,
                          state: JobState, reason: str | None) -> None:
        paper = Paper.LETTER.value if doc is None else (new.options.paper or doc.paper).value
        await conn.execute(
            """INSERT INTO jobs (id, source, to_number, state, reason, pages, paper, provider, sender, subject,
               document, options, meta, created_at, updated_at, doc_sha256, next_attempt_at, finished_at,
               dedup_key, node, intake_node)
               VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s::jsonb,%s,%s,%s,%s,%s,%s,%s,%s)""",
            (job_id, new.source.value, new.to, state.value, reason, doc.pages if doc else 0, paper,
             self.provider, new.sender, new.subject, new.document, json.dumps(new.options.to_json()),
             json.dumps(dict(new.meta)), now, now, doc.sha256 if doc else "",
             _first_try(new, now) if state is JobState.QUEUED else None, now if state.final else None,
             new.dedup_key, self.node, self.node))

    def _check_staged(self, job_id: str, doc: PreparedDocument) -> Path:
        staged = self._spool.staging / job_id / DOC_NAME
        if doc.path != staged:
            raise StoreError(f"document for {job_id} is not staged at {staged}")
        return staged

    @_chokepoint
    async def enqueue(self, job_id: str, new: NewJob, doc: PreparedDocument, now: datetime, *,
                      state: JobState = JobState.QUEUED, reason: str | None = None,
                      dedup_since: datetime | None = None, sender_limit: tuple[datetime, int] | None = None) -> Job:
        """Commit one job and its document (streamed into the database in the same transaction).
        With ``dedup_since``, the dedup key is locked across daemons before it is looked for; with
        ``sender_limit``, the sender, before its jobs are counted."""
        staged = self._check_staged(job_id, doc)
        try:
            async with self._db.connection() as conn, conn.transaction():
                if dedup_since is not None and new.dedup_key:
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                       (_lock_key("dedup", new.dedup_key),))
                    earlier = await (await conn.execute(
                        "SELECT id FROM jobs WHERE dedup_key = %s AND created_at >= %s "
                        "ORDER BY created_at DESC LIMIT 1", (new.dedup_key, dedup_since))).fetchone()
                    if earlier is not None:
                        raise DuplicateJob(earlier["id"])
                if sender_limit is not None and new.sender:
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                       (_lock_key("sender", new.sender),))
                    row = await (await conn.execute(
                        "SELECT COUNT(*) AS n FROM jobs WHERE sender = %s AND created_at >= %s",
                        (new.sender, sender_limit[0]))).fetchone()
                    if row is not None and int(row["n"]) >= sender_limit[1]:
                        raise SenderOverLimit(new.sender, sender_limit[1])
                await self._insert_job(conn, job_id, new, doc, now, state, reason)
                await documents.write(conn, job_id, staged)
                await self._event(conn, job_id, now, state, f"job.{state.value}", reason,
                                  {"source": new.source.value, "pages": doc.pages})
                if state.final:
                    await self._outbox(conn, job_id, new.source, now)
                else:
                    await self._receipt(conn, job_id, new.source, now)
        except BaseException:
            self._spool.discard_stage(job_id)
            raise
        documents.settle(self._spool, job_id)
        job = await self._get(job_id)
        self._tell(None, job, f"job.{state.value}")
        return job

    @_chokepoint
    async def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        """Commit several queued jobs and their documents in ONE transaction: all or none."""
        staged = [self._check_staged(job_id, doc) for job_id, _, doc in items]
        try:
            async with self._db.connection() as conn, conn.transaction():
                for (job_id, new, doc), path in zip(items, staged, strict=True):
                    await self._insert_job(conn, job_id, new, doc, now, JobState.QUEUED, None)
                    await documents.write(conn, job_id, path)
                    await self._event(conn, job_id, now, JobState.QUEUED, "job.queued", None,
                                      {"source": new.source.value, "pages": doc.pages})
                    await self._receipt(conn, job_id, new.source, now)
        except BaseException:
            for job_id, _, _ in items:
                self._spool.discard_stage(job_id)
            raise
        for job_id, _, _ in items:
            documents.settle(self._spool, job_id)
        jobs = [await self._get(job_id) for job_id, _, _ in items]
        for job in jobs:
            self._tell(None, job, "job.queued")
        return jobs

    @_chokepoint
    async def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        async with self._db.connection() as conn, conn.transaction():
            await self._insert_job(conn, job_id, new, None, now, JobState.REJECTED, reason)
            await self._event(conn, job_id, now, JobState.REJECTED, "job.rejected", reason,
                              {"source": new.source.value})
            await self._outbox(conn, job_id, new.source, now)
        job = await self._get(job_id)
        self._tell(None, job, "job.rejected")
        return job

    @_chokepoint
    async def apply(self, job: Job, t: Transition, now: datetime, detail: dict[str, Any] | None = None, *,
                    release: str | None = None) -> Job:
        """Apply a transition decided on ``job`` (optimistic: Conflict if the job changed);
        ``release``: that owner's lease ends in the same UPDATE (see :meth:`release`)."""
        unknown = set(t.changes) - _JOB_FIELDS
        if unknown:
            raise StoreError(f"cannot change {sorted(unknown)}")
        cols = ["state = %s", "reason = %s", "updated_at = %s", "version = version + 1"]
        vals: list[Any] = [t.state.value, t.reason, now]
        for key, value in t.changes.items():
            cols.append(f"{key} = %s")
            vals.append(_sql_value(value))
        if release is not None:     # every SET expression reads the row as it was before the UPDATE
            cols += [f"lease_{name} = CASE WHEN lease_owner = %s THEN NULL ELSE lease_{name} END"
                     for name in ("until", "node", "owner")]
            vals += [release, release, release]
        async with self._db.connection() as conn, conn.transaction():
            cur = await conn.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id = %s AND version = %s",
                                     [*vals, job.id, job.version])
            if cur.rowcount != 1:
                raise Conflict(f"job {job.id} changed meanwhile")
            detail = dict(detail or {})
            if t.changes.get("provider_id"):
                detail["provider_id"] = t.changes["provider_id"]
            if t.changes.get("attempts"):
                detail["attempts"] = t.changes["attempts"]
            await self._event(conn, job.id, now, t.state, t.event, t.reason, detail)
            if t.final and not job.final:
                await self._outbox(conn, job.id, job.source, now)
        after = await self._get(job.id)
        self._tell(job, after, t.event)
        return after

    async def _event(self, conn: Any, job_id: str, now: datetime, state: JobState, event: str,
                     reason: str | None, detail: dict[str, Any]) -> None:
        await conn.execute("INSERT INTO events (job_id, at, state, event, reason, detail) "
                           "VALUES (%s,%s,%s,%s,%s,%s::jsonb)",
                           (job_id, now, state.value, event, reason, json.dumps(detail, default=str)))

    async def _outbox(self, conn: Any, job_id: str, source: Source, now: datetime) -> None:
        for kind in (*OUTBOX_KINDS[source], *((COPY_KIND,) if self.copies else ())):
            await conn.execute("INSERT INTO outbox (job_id, kind, payload, created_at, next_at) "
                               "VALUES (%s,%s,'{}',%s,%s)", (job_id, kind, now, now))

    async def _receipt(self, conn: Any, job_id: str, source: Source, now: datetime) -> None:
        if self.receipts and source is Source.SMTP:
            await conn.execute("INSERT INTO outbox (job_id, kind, payload, created_at, next_at) "
                               "VALUES (%s,%s,'{}',%s,%s)", (job_id, RECEIPT_KIND, now, now))

    # ---- claims and leases ----------------------------------------------------------------

    @_chokepoint
    async def claim_due(self, owner: str, now: datetime, limit: int, lease_s: float, *,
                        reconcile: bool = False, per_destination: int = 0, max_in_flight: int = 0) -> list[Job]:
        """Lease up to ``limit`` due jobs (see the module docstring), their documents fetched into
        the local cache before they are returned."""
        if limit <= 0:
            return []
        until = now + timedelta(seconds=lease_s)
        free = "(lease_until IS NULL OR lease_until < %(now)s)"
        args: dict[str, Any] = {"owner": owner, "node": self.node, "until": until, "now": now, "limit": limit,
                                "per": per_destination, "reconcile": RECONCILE, "bad": sorted(self._bad_rows)}
        lease = ("UPDATE jobs SET lease_owner = %(owner)s, lease_until = %(until)s, lease_node = %(node)s, "
                 "node = %(node)s")
        async with self._db.connection() as conn, conn.transaction():
            if max_in_flight > 0 and not reconcile:
                # every claimer counts under one lock (taken before any number's): two daemons
                # cannot both fill the last place; jobs leased to be sent count as in flight
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                   (_lock_key("in_flight", "all"),))
                row = await (await conn.execute(
                    f"SELECT COUNT(*) AS n FROM jobs WHERE ({AT_PROVIDER} OR (state = 'queued' AND lease_until >= "
                    "%(now)s)) AND NOT (id = ANY(%(bad)s::text[]))", args)).fetchone()
                args["limit"] = limit = min(limit, max_in_flight - (int(row["n"]) if row else 0))
                if limit <= 0:
                    return []
            if reconcile or per_destination <= 0:
                where = ("state = 'submitting' AND hold = %(reconcile)s" if reconcile else "state = 'queued'")
                cur = await conn.execute(
                    f"""{lease} WHERE id IN (
                           SELECT id FROM jobs WHERE {where} AND next_attempt_at <= %(now)s AND {free}
                           ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                        RETURNING *""", args)
            else:
                # a row that does not decode neither waits its turn nor holds its number
                good = "NOT (id = ANY(%(bad)s::text[]))"
                busy = (f"(SELECT COUNT(*) FROM jobs AS busy WHERE busy.to_number = due.to_number AND "
                        f"(busy.{AT_PROVIDER} OR (busy.state = 'queued' AND busy.lease_until >= %(now)s)) "
                        f"AND NOT (busy.id = ANY(%(bad)s::text[])))")
                numbers = [r["to_number"] for r in await (await conn.execute(
                    f"""SELECT to_number FROM jobs AS due
                        WHERE state = 'queued' AND next_attempt_at <= %(now)s AND {free} AND {good}
                          AND {busy} < %(per)s
                        GROUP BY to_number ORDER BY MIN(next_attempt_at), MIN(seq) LIMIT %(limit)s""",
                    args)).fetchall()]
                if not numbers:
                    return []
                for number in sorted(numbers):        # one order for every claimer: no deadlock
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                       (_lock_key("number", number),))
                args["numbers"] = numbers
                # under the locks (a new snapshot): place among the number's due jobs + its busy ones
                ids = [r["id"] for r in await (await conn.execute(
                    f"""SELECT id FROM (
                           SELECT id, to_number, next_attempt_at, seq,
                                  ROW_NUMBER() OVER (PARTITION BY to_number ORDER BY created_at, id) AS place
                           FROM jobs WHERE state = 'queued' AND next_attempt_at <= %(now)s AND {free}
                             AND {good} AND to_number = ANY(%(numbers)s)) AS due
                        WHERE place + {busy} <= %(per)s
                        ORDER BY next_attempt_at, seq LIMIT %(limit)s""", args)).fetchall()]
                args["ids"] = ids
                cur = await conn.execute(
                    f"{lease} WHERE id = ANY(%(ids)s) AND state = 'queued' AND {free} RETURNING *", args)
            rows = sorted(await cur.fetchall(), key=lambda r: (r["next_attempt_at"], r["seq"]))
        return await self._fetch_documents(self._jobs(rows), owner)

    async def _fetch_documents(self, jobs: Sequence[Job], owner: str | None) -> list[Job]:
        """Make sure each job's document is in the local cache; the jobs whose document is there.
        A document that does not match its SHA-256 costs only its job (``store.bad_document``; a
        claim stays leased, its back-off, as a row that does not decode); trouble reaching the
        database gives every claim back and raises."""
        ready = []
        try:
            for job in jobs:
                if job.doc_sha256 and not documents.cached(self._spool, job.id):
                    try:
                        async with self._db.connection() as conn:
                            await documents.materialize(conn, self._spool, job.id, job.doc_sha256)
                    except StoreError as exc:
                        log.error("store.bad_document", job_id=job.id, error=str(exc))
                        if owner is not None:
                            continue
                ready.append(job)
        except BaseException:
            if owner is not None:
                for job in jobs:
                    try:
                        await self.release(job.id, owner)
                    except Exception as exc:   # the lease runs out by itself
                        log.warning("store.release_failed", job_id=job.id, error=repr(exc))
            raise
        return ready

    @_chokepoint
    async def abandoned(self, now: datetime, owner: str) -> list[Job]:
        rows = await self._rows(
            "SELECT * FROM jobs WHERE state = 'submitting' AND hold IS DISTINCT FROM %s "
            "AND (lease_until IS NULL OR lease_until < %s OR lease_owner = %s) ORDER BY seq",
            (RECONCILE, now, owner))
        return self._jobs(rows)

    @_chokepoint
    async def release(self, job_id: str, owner: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_node = NULL "
                               "WHERE id = %s AND lease_owner = %s", (job_id, owner))

    @_chokepoint
    async def renew(self, owner: str, job_ids: Collection[str], now: datetime, lease_s: float) -> set[str]:
        if not job_ids:
            return set()
        rows = await self._rows("UPDATE jobs SET lease_until = %s WHERE lease_owner = %s AND id = ANY(%s) "
                                "RETURNING id", (now + timedelta(seconds=lease_s), owner, sorted(job_ids)))
        return {r["id"] for r in rows}

    @_chokepoint
    async def defer(self, job_id: str, until: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute("UPDATE jobs SET next_attempt_at = %s WHERE id = %s", (until, job_id))

    @_chokepoint
    async def recover(self) -> list[Job]:
        """At start-up: drop this node's leases and expired ones (never another daemon's live
        claims); the jobs caught mid-submission that no live lease covers."""
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL, lease_node = NULL "
                               "WHERE lease_owner IS NOT NULL AND (lease_node = %s OR lease_until < now())",
                               (self.node,))
            await conn.execute("UPDATE outbox SET lease_until = NULL, lease_node = NULL "
                               "WHERE lease_until IS NOT NULL AND (lease_node = %s OR lease_until < now())",
                               (self.node,))
        rows = await self._rows(
            "SELECT * FROM jobs WHERE state = 'submitting' AND hold IS DISTINCT FROM %s "
            "AND lease_until IS NULL ORDER BY seq", (RECONCILE,))
        return self._jobs(rows)

    @_chokepoint
    async def clean_spool(self) -> int:
        """Remove staging leftovers, and cached documents of jobs that are gone or final with no
        notification owed (the database keeps them; a claim or a notification fetches them again)."""
        removed = 0
        for entry in list(self._spool.staging.iterdir()):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        keep = {r["id"] for r in await self._rows(
            "SELECT id FROM jobs WHERE state NOT IN ('delivered', 'failed', 'rejected', 'canceled') "
            "OR id IN (SELECT job_id FROM outbox WHERE delivered_at IS NULL)")}
        for entry in list(self._spool.root.iterdir()):
            if entry.name != ".staging" and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    # ---- reads ----------------------------------------------------------------------------

    def _jobs(self, rows: Sequence[dict[str, Any]]) -> list[Job]:
        jobs = []
        for row in rows:
            try:
                jobs.append(self._job(row))
            except (ValueError, TypeError, KeyError) as exc:
                if row["id"] not in self._bad_rows:
                    self._bad_rows.add(row["id"])
                    log.error("store.bad_row", job_id=row["id"], error=repr(exc))
        return jobs

    def _one(self, row: dict[str, Any] | None) -> Job | None:
        jobs = self._jobs([row]) if row is not None else []
        return jobs[0] if jobs else None

    @staticmethod
    def _job(r: dict[str, Any]) -> Job:
        return Job(
            id=r["id"], source=Source(r["source"]), to=r["to_number"], state=JobState(r["state"]),
            reason=r["reason"], pages=r["pages"], paper=Paper(r["paper"]), attempts=r["attempts"],
            provider=r["provider"], provider_id=r["provider_id"], status_code=r["status_code"],
            duration_s=r["duration_s"], cost=r["cost"], sender=r["sender"], subject=r["subject"],
            document=r["document"], options=FaxOptions.from_json(r["options"]), meta=dict(r["meta"]),
            created_at=r["created_at"].astimezone(UTC), updated_at=r["updated_at"].astimezone(UTC),
            finished_at=_utc(r["finished_at"]), doc_sha256=r["doc_sha256"], submit_tries=r["submit_tries"],
            next_attempt_at=_utc(r["next_attempt_at"]), submit_started_at=_utc(r["submit_started_at"]),
            submitted_at=_utc(r["submitted_at"]), hold=Hold(r["hold"]) if r["hold"] else None,
            callback_url=r["callback_url"], recoveries=r["recoveries"],
            cancel_requested=bool(r["cancel_requested"]), version=r["version"], node=r.get("node"),
        )

    async def _get(self, job_id: str) -> Job:
        row = await self._row("SELECT * FROM jobs WHERE id = %s", (job_id,))
        matches = 0
        if row is None and 4 <= len(job_id) < 26 and job_id.isalnum():
            pattern = job_id.upper() + "%"
            rows = await self._rows("SELECT * FROM jobs WHERE id LIKE %s LIMIT 2", (pattern,))
            matches = len(rows) if len(rows) < 2 else await self._count(
                "SELECT count(*) FROM jobs WHERE id LIKE %s", (pattern,))
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise JobNotFound(job_id, matches)
        try:
            return self._job(row)
        except (ValueError, TypeError, KeyError) as exc:
            raise UnreadableJob(row["id"], repr(exc)) from exc

    @_chokepoint
    async def get(self, job_id: str) -> Job:
        return await self._get(job_id)

    @_chokepoint
    async def jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs", list[Any]()
        if state is not None:
            sql += " WHERE state = %s"
            args.append(state.value)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        return self._jobs(await self._rows(sql, args))

    @_chokepoint
    async def events(self, job_id: str) -> list[JobEvent]:
        rows = await self._rows("SELECT * FROM events WHERE job_id = %s ORDER BY id", (job_id,))
        return [JobEvent(at=r["at"].astimezone(UTC), state=JobState(r["state"]), event=r["event"],
                         reason=r["reason"], detail=dict(r["detail"])) for r in rows]

    @_chokepoint
    async def search(self, wanted: JobFilter, offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
        """Jobs matching ``wanted`` (substrings case-insensitive), newest first; and how many match."""
        clause, args = where_of(wanted, "%s", "ILIKE")
        total = await self._count(f"SELECT COUNT(*) FROM jobs{clause}", args)
        rows = await self._rows(f"SELECT * FROM jobs{clause} ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s",
                                [*args, limit, offset])
        return self._jobs(rows), total

    @_chokepoint
    async def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None:
        return self._one(await self._row(
            "SELECT * FROM jobs WHERE dedup_key = %s AND created_at >= %s ORDER BY created_at DESC LIMIT 1",
            (dedup_key, since)))

    @_chokepoint
    async def count_by_sender(self, sender: str, since: datetime) -> int:
        return await self._count("SELECT COUNT(*) FROM jobs WHERE sender = %s AND created_at >= %s", (sender, since))

    @_chokepoint
    async def count_by_client(self, peer: str, since: datetime) -> int:
        return await self._count("SELECT COUNT(*) FROM jobs WHERE created_at >= %s AND source = 'smtp' "
                                 "AND meta->>'peer' = %s", (since, peer))

    @_chokepoint
    async def in_flight(self) -> int:
        return await self._count(f"SELECT COUNT(*) FROM jobs WHERE {AT_PROVIDER}")

    @_chokepoint
    async def overdue(self, submitted_before: datetime) -> int:
        return await self._count("SELECT COUNT(*) FROM jobs WHERE state = 'submitted' "
                                 "AND (hold = %s OR submitted_at < %s)", (Hold.UNKNOWN.value, submitted_before))

    @_chokepoint
    async def counts(self) -> dict[str, int]:
        rows = await self._rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    @_chokepoint
    async def submitted(self, provider: str | None = None) -> list[Job]:
        return self._jobs(await self._rows(
            "SELECT * FROM jobs WHERE state = 'submitted' AND provider = %s ORDER BY submitted_at, seq",
            (provider or self.provider,)))

    @_chokepoint
    async def cancel_requested(self) -> list[Job]:
        return self._jobs(await self._rows(
            "SELECT * FROM jobs WHERE cancel_requested AND state = 'submitted' ORDER BY seq"))

    @_chokepoint
    async def by_provider_id(self, provider_id: str, provider: str | None = None) -> Job | None:
        return self._one(await self._row(
            "SELECT * FROM jobs WHERE provider = %s AND provider_id = %s ORDER BY created_at DESC LIMIT 1",
            (provider or self.provider, provider_id)))

    @_chokepoint
    async def known_provider_ids(self, provider: str | None = None) -> frozenset[str]:
        name = provider or self.provider
        rows = await self._rows(
            """SELECT provider_id AS p FROM jobs WHERE provider = %s AND provider_id IS NOT NULL
               UNION
               SELECT e.detail->>'provider_id' FROM events e JOIN jobs j ON j.id = e.job_id
               WHERE j.provider = %s AND e.detail->>'provider_id' IS NOT NULL""", (name, name))
        return frozenset(str(r["p"]) for r in rows)

    @_chokepoint
    async def next_due(self, per_destination: int = 0) -> datetime | None:
        waits = "" if per_destination <= 0 else (
            f"AND (SELECT COUNT(*) FROM jobs AS busy WHERE busy.to_number = jobs.to_number AND busy.{AT_PROVIDER}"
            f" AND NOT (busy.id = ANY(%(bad)s::text[]))) < {int(per_destination)}")
        row = await self._row(
            f"""SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at))) AS at FROM jobs
                WHERE (state = 'queued' {waits}) OR (state = 'submitting' AND hold = %(reconcile)s)""",
            {"reconcile": RECONCILE, "bad": sorted(self._bad_rows)})
        return None if row is None else _utc(row["at"])

    @_chokepoint
    async def at_provider(self, to: str) -> int:
        return await self._count(f"SELECT COUNT(*) FROM jobs WHERE to_number = %s AND {AT_PROVIDER}", (to,))

    # ---- outbox ---------------------------------------------------------------------------

    @_chokepoint
    async def outbox_due(self, now: datetime, kinds: Sequence[str], limit: int = 100) -> list[OutboxItem]:
        """Due notifications, each leased to this daemon for ``lease`` (another daemon skips them);
        a folder job's result file only to the daemon that took the job in (its node: the one
        watching that folder); a reply mail's or copy's job document is fetched into the local cache
        first."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                """UPDATE outbox SET lease_until = %(until)s, lease_node = %(node)s WHERE id IN (
                       SELECT id FROM outbox WHERE delivered_at IS NULL AND next_at <= %(now)s
                         AND kind = ANY(%(kinds)s) AND (lease_until IS NULL OR lease_until < %(now)s)
                         AND (kind <> %(sidecar)s
                              OR job_id IN (SELECT id FROM jobs WHERE intake_node = %(node)s))
                       ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                   RETURNING *""",
                {"until": now + timedelta(seconds=self.lease_s), "node": self.node, "now": now,
                 "kinds": list(kinds), "limit": limit, "sidecar": SIDECAR_KIND})
            rows = sorted(await cur.fetchall(), key=lambda r: r["id"])
        wanted = {r["job_id"] for r in rows if r["kind"] in ("mail", COPY_KIND)}
        if wanted:
            jobs = self._jobs(await self._rows("SELECT * FROM jobs WHERE id = ANY(%s)", (list(wanted),)))
            await self._fetch_documents(jobs, None)
        return [OutboxItem(r["id"], r["job_id"], r["kind"], dict(r["payload"]), r["attempts"]) for r in rows]

    @_chokepoint
    async def outbox_delivered(self, item_id: int, now: datetime, error: str | None = None) -> None:
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute("UPDATE outbox SET delivered_at = %s, last_error = COALESCE(%s, last_error), "
                               "lease_until = NULL, lease_node = NULL WHERE id = %s", (now, error, item_id))
            if error is None:
                return
            row = await (await conn.execute(
                "SELECT o.kind, j.id, j.state FROM outbox o JOIN jobs j ON j.id = o.job_id WHERE o.id = %s",
                (item_id,))).fetchone()
            if row is not None and row["state"] in JobState._value2member_map_:
                await self._event(conn, row["id"], now, JobState(row["state"]), "notify.given_up",
                                  f"{row['kind']} notification given up: {error}", {"outbox_id": item_id})

    @_chokepoint
    async def outbox_failed(self, item_id: int, error: str, next_at: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_at = %s, "
                               "lease_until = NULL, lease_node = NULL WHERE id = %s", (error, next_at, item_id))

    @_chokepoint
    async def outbox_backlog(self) -> int:
        return await self._count("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")

    @_chokepoint
    async def notices(self, job_id: str) -> list[Notice]:
        rows = await self._rows("SELECT kind, created_at, attempts, next_at, delivered_at, last_error "
                                "FROM outbox WHERE job_id = %s ORDER BY id", (job_id,))
        return [Notice(r["kind"], r["created_at"], r["attempts"], r["next_at"], r["delivered_at"], r["last_error"])
                for r in rows]

    @_chokepoint
    async def outbox_keep(self, item_id: int, now: datetime) -> bool:
        row = await self._row("UPDATE outbox SET lease_until = %s WHERE id = %s AND lease_node = %s "
                              "AND delivered_at IS NULL RETURNING id",
                              (now + timedelta(seconds=self.lease_s), item_id, self.node))
        return row is not None

    # ---- one daemon at a time -------------------------------------------------------------

    @_chokepoint
    async def lead(self, role: str) -> bool:
        """A session-level advisory lock per role, held on a connection of its own (outside the
        pool) for as long as this daemon lives: the first daemon to ask takes it, the others get
        False until its connection ends (the daemon died or stopped, or the database restarted)."""
        conn = self._leads.get(role)
        if conn is not None:
            try:
                await conn.execute("SELECT 1")
                return True
            except psycopg.Error:                   # the connection (and the lock with it) is gone
                del self._leads[role]
                await conn.close()
        if self._closed:
            return False
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
        try:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                            (_lock_key("lead", role),))).fetchone()
        except BaseException:
            await conn.close()
            raise
        if row is None or not row[0]:
            await conn.close()
            return False
        self._leads[role] = conn
        log.info("store.lead_taken", role=role, node=self.node)
        return True

    # ---- kv -------------------------------------------------------------------------------

    @_chokepoint
    async def kv_get(self, key: str) -> str | None:
        row = await self._row("SELECT value FROM kv WHERE key = %s", (key,))
        return None if row is None else str(row["value"])

    @_chokepoint
    async def kv_set(self, key: str, value: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("INSERT INTO kv (key, value) VALUES (%s, %s) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    @_chokepoint
    async def integrity_check(self) -> str:
        """"ok", or how many jobs still to be sent have no document in the database."""
        missing = await self._count(
            "SELECT COUNT(*) FROM jobs j WHERE j.state IN ('queued', 'submitting') AND j.doc_sha256 <> '' "
            "AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.job_id = j.id)")
        return "ok" if missing == 0 else f"{missing} jobs to be sent have no document"
