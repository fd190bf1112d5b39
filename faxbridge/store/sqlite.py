"""The SQLite job store (WAL) in ``state_dir`` plus its document spool: the only SQL.

Synchronous, and bound to the thread that opened it: the daemon and the CLI reach it through
:class:`faxbridge.store.threaded.ThreadedStore` (its one store thread), which implements
:class:`faxbridge.store.protocol.JobStore`. The notes below are this backend's.


- ``jobs``: one row per job; ``version`` makes every change optimistic (apply fails with
  :class:`Conflict` if someone changed the job meanwhile, e.g. the CLI cancelling it).
- ``events``: one row per state change: the history ``faxbridge job ID`` prints.
- ``outbox``: notifications (reply mail, result file) written in the same transaction as
  the final state; delivered at least once by the notifiers, marked delivered after.
- ``kv``: small durable settings (provider poll cursors, the generated webhook token).
- leases (``lease_owner``/``lease_until``) so no job is worked twice.
Schema migrations run by ``PRAGMA user_version``. Documents live in ``spool/<job id>/``;
intake writes them into a staging folder first, and :meth:`Store.enqueue` moves them into
place (rename + fsync) before the job row is committed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from faxbridge.clock import parse_iso as _dt
from faxbridge.clock import stamp as ts
from faxbridge.durable import fsync_dir
from faxbridge.errors import (
    Conflict,
    DuplicateJob,
    JobNotFound,
    SenderOverLimit,
    StoreBusy,
    StoreError,
    UnreadableJob,
)
from faxbridge.models import (
    FaxOptions,
    Hold,
    Job,
    JobEvent,
    JobState,
    NewJob,
    Paper,
    PreparedDocument,
    Source,
)
from faxbridge.states import Transition
from faxbridge.store.protocol import DOC_NAME, JobFilter, Notice, OutboxItem, Staged
from faxbridge.store.search import where_of
from faxbridge.store.spool import FileSpool

log = structlog.get_logger("faxbridge.store")


MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        to_number TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        pages INTEGER NOT NULL,
        paper TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        provider TEXT NOT NULL,
        provider_id TEXT,
        status_code INTEGER,
        duration_s REAL,
        cost REAL,
        sender TEXT,
        subject TEXT,
        document TEXT NOT NULL,
        options TEXT NOT NULL,
        meta TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT,
        doc_sha256 TEXT NOT NULL,
        submit_tries INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        submit_started_at TEXT,
        submitted_at TEXT,
        hold TEXT,
        callback_url TEXT,
        recoveries INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until TEXT
    );
    CREATE INDEX jobs_state_due ON jobs(state, next_attempt_at);
    CREATE INDEX jobs_provider_id ON jobs(provider, provider_id);
    CREATE INDEX jobs_created ON jobs(created_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        at TEXT NOT NULL,
        state TEXT NOT NULL,
        event TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_job ON events(job_id, id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        delivered_at TEXT,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox(delivered_at, next_at);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: duplicate detection for intake (SMTP retries), per-sender rate limits
    """
    ALTER TABLE jobs ADD COLUMN dedup_key TEXT;
    CREATE INDEX jobs_dedup ON jobs(dedup_key, created_at);
    CREATE INDEX jobs_sender ON jobs(sender, created_at);
    """,
    # 3: limits.per_destination counts the jobs at the provider by number
    """
    CREATE INDEX jobs_destination ON jobs(to_number, state);
    """,
]

AT_PROVIDER = "state IN ('submitting', 'submitted')"   # a job the provider has (or may have) in hand

# Which notifications a final job owes, by its source (delivered by later parts).
OUTBOX_KINDS: dict[Source, tuple[str, ...]] = {
    Source.SMTP: ("mail",),
    Source.FOLDER: ("sidecar",),
    Source.CLI: (),
}

COPY_KIND = "copy"        # a copy of the result for notify.copy_to: owed by every job that becomes final
RECEIPT_KIND = "receipt"  # notify.receipt: owed by every mail job when it is committed (before it is final)

_JOB_FIELDS = {
    "reason", "pages", "paper", "attempts", "provider_id", "status_code", "duration_s", "cost",
    "finished_at", "submit_tries", "next_attempt_at", "submit_started_at", "submitted_at", "hold",
    "callback_url", "recoveries", "cancel_requested", "options", "provider",
}



def _newest_with_key(db: sqlite3.Connection, dedup_key: str, since: datetime) -> sqlite3.Row | None:
    """The newest job row with this intake (dedup) key created at or after ``since``."""
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM jobs WHERE dedup_key = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
        (dedup_key, ts(since)),
    ).fetchone()
    return row


@contextmanager
def _translate() -> Iterator[None]:
    """sqlite3 errors → StoreBusy (try again later) or StoreError, at this one boundary."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        msg = str(exc).lower()
        if "locked" in msg or "busy" in msg or "full" in msg or "disk i/o" in msg:
            raise StoreBusy(f"job store busy: {exc}") from exc
        raise StoreError(f"job store error: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"job store error: {exc}") from exc
    except OSError as exc:
        raise StoreBusy(f"job store: {exc.strerror or exc}") from exc


def _private_dirs(*folders: Path) -> None:
    """Folders only we may enter (0700), whatever the umask; an existing one of ours is tightened."""
    for folder in folders:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(folder, 0o700)


def _tighten(path: Path, mode: int) -> None:
    """Give a file or folder of ours exactly ``mode`` (by path: never through a descriptor, see
    :func:`_private_file`); a read-only file system is left as it is."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise


def _private_file(path: Path, *, create: bool = True) -> None:
    """A file only we may read or write (0600), whatever the umask. Created exclusively (never
    through a link) when missing; an existing one is chmod'ed by path. Never opened and closed:
    closing any descriptor of a database file drops every POSIX lock SQLite holds on it in this
    process (another connection could then truncate the -shm under our mapping)."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
    try:
        _tighten(path, 0o600)
    except FileNotFoundError:
        if create:
            raise


def _private_spooled(folder: Path) -> None:
    """A job's spool folder 0700 and its documents 0600, whatever the umask they were made under."""
    os.chmod(folder, 0o700)
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                _private_file(Path(entry.path), create=False)


def _notice(r: sqlite3.Row) -> Notice:
    created, next_at = _dt(r["created_at"]), _dt(r["next_at"])
    if created is None or next_at is None:            # NOT NULL columns
        raise StoreError(f"outbox row of {r['kind']} without its times")
    return Notice(r["kind"], created, r["attempts"], next_at, _dt(r["delivered_at"]), r["last_error"])


def _first_try(new: NewJob, now: datetime) -> datetime:
    """When a new queued job is first due: now, or its ``send_at`` (contract section 11)."""
    at = new.options.send_at
    return now if at is None or at <= now else at


E = TypeVar("E", bound=Enum)
_MEMBERS: dict[type[Any], dict[Any, Any]] = {cls: {m.value: m for m in cls} for cls in (Source, JobState, Paper, Hold)}


def _member(cls: type[E], value: Any) -> E:
    """``cls(value)`` for a stored enum value, by a dict lookup (an Enum call is ten times slower);
    a value that is no member raises the Enum's own ValueError."""
    member = _MEMBERS[cls].get(value)
    return member if member is not None else cls(value)


class SqliteStore:
    def __init__(self, state_dir: Path, provider: str, *, readonly: bool = False,
                 notices: Collection[str] = ()) -> None:
        self.state_dir = state_dir
        self.provider = provider
        unknown = set(notices) - {COPY_KIND, RECEIPT_KIND}
        if unknown:
            raise StoreError(f"unknown notices {sorted(unknown)}")
        self.copies = COPY_KIND in notices          # every job that becomes final also owes a "copy" row
        self.receipts = RECEIPT_KIND in notices     # every mail job owes a "receipt" row when committed
        self.files = FileSpool(state_dir)
        self.spool = self.files.root
        self.staging = self.files.staging
        # Called after each committed change made through this connection: (before, after, event).
        self.observers: list[Callable[[Job | None, Job, str], None]] = []
        self._bad_rows: set[str] = set()         # ids of rows that did not decode (logged once each)
        self._grouped = False                    # inside :meth:`grouped`: each write is a savepoint
        self._held: list[tuple[Job | None, Job, str]] = []   # changes told the observers after COMMIT
        self._moved: list[Path] = []             # documents the group moved into the spool
        with _translate():
            self.db_path = state_dir / "faxbridge.db"
            if not readonly:
                _private_dirs(state_dir, self.spool, self.staging)
                _private_file(self.db_path)
            self._db = sqlite3.connect(self.db_path, isolation_level=None, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                for suffix in ("-wal", "-shm"):       # SQLite gives them the database's mode; made sure
                    with contextlib.suppress(FileNotFoundError):
                        _private_file(Path(f"{self.db_path}{suffix}"), create=False)
            self._migrate()

    # ---- lifecycle ---------------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # re-check under the write lock: another process may have migrated meanwhile
                if int(self._db.execute("PRAGMA user_version").fetchone()[0]) >= number:
                    self._db.execute("COMMIT")
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _translate():
            if self._grouped:                  # one write of a group: undone alone if it fails
                self._db.execute("SAVEPOINT one_write")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:    # (SQLite may have rolled back the whole group)
                        self._db.execute("ROLLBACK TO one_write")
                        self._db.execute("RELEASE one_write")
                    raise
                self._db.execute("RELEASE one_write")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def grouped(self, calls: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run several writing calls (``enqueue``, ``apply``, ``release``...) in ONE transaction: one
        COMMIT, one fsync of the WAL for the lot (a group commit). Each call's own transaction becomes
        a savepoint, so a call that fails is undone alone and the others go on; each call's result is
        ``(True, value)`` or ``(False, exception)``. Observers hear of the changes after the COMMIT,
        and nothing is reported done before it: if the COMMIT fails (or SQLite gives up the whole
        transaction on the way, disk full), every call reports that error, and nothing of the group
        is in the database, nor in the spool: the documents its enqueues moved there are removed.
        The spool and staging folders are fsynced once for the group's documents, before its COMMIT
        (so, as ever, a committed job has its document on disk).
        """
        results: list[tuple[bool, Any]] = []
        with _translate():
            self._db.execute("BEGIN IMMEDIATE")
        self._grouped, self._held = True, []
        try:
            for call in calls:
                try:
                    results.append((True, call()))
                except Exception as exc:
                    results.append((False, exc))
                if not self._db.in_transaction:
                    raise StoreBusy("job store busy: the transaction was rolled back") from (
                        results[-1][1] if not results[-1][0] else None)
            with _translate():
                if self._moved:
                    fsync_dir(self.spool)
                    fsync_dir(self.staging)
                self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            for final_dir in self._moved:          # their jobs were not committed
                shutil.rmtree(final_dir, ignore_errors=True)
            if not isinstance(exc, Exception):
                raise
            return [(False, exc) for _ in calls]
        finally:
            self._grouped, held, self._held, self._moved = False, self._held, [], []
        for before, after, event in held:
            self._observe(before, after, event)
        return results

    # ---- spool ---------------------------------------------------------------------------

    def _spooled(self, moved: Sequence[Path]) -> None:
        """Documents just moved from staging into the spool: both folders fsynced now, or, inside a
        group, once for all the group's documents just before its COMMIT."""
        if self._grouped:
            self._moved.extend(moved)
            return
        fsync_dir(self.spool)
        fsync_dir(self.staging)

    def stage(self, job_id: str) -> Path:
        """A fresh staging folder for a job's documents (moved into the spool by enqueue)."""
        with _translate():
            return self.files.stage(job_id)

    def document_path(self, job_id: str) -> Path:
        return self.files.document_path(job_id)

    def received_path(self, job_id: str) -> Path:
        return self.files.received_path(job_id)

    def discard_stage(self, job_id: str) -> None:
        self.files.discard_stage(job_id)

    # ---- writes ---------------------------------------------------------------------------

    def enqueue(self, job_id: str, new: NewJob, doc: PreparedDocument, now: datetime,
                *, state: JobState = JobState.QUEUED, reason: str | None = None,
                dedup_since: datetime | None = None, sender_limit: tuple[datetime, int] | None = None) -> Job:
        """Commit a job whose document is staged at ``stage(job_id)/fax.pdf``.

        The document is moved into the spool and fsynced before the row is committed, so a
        committed job always has its document on disk. With ``dedup_since``, a job with the same
        ``dedup_key`` made since then is looked for in the same write transaction: if there is
        one, nothing is committed and :class:`DuplicateJob` names it (two intake workers given
        the same mail at once make one job).
        """
        staged = self.staging / job_id
        final_dir = self.spool / job_id
        with _translate():
            if doc.path != staged / DOC_NAME:
                raise StoreError(f"document for {job_id} is not staged at {staged / DOC_NAME}")
            _private_spooled(staged)
            os.replace(staged, final_dir)
            self._spooled([final_dir])
        try:
            with self._write() as db:
                if dedup_since is not None and new.dedup_key:
                    earlier = _newest_with_key(db, new.dedup_key, dedup_since)
                    if earlier is not None:
                        raise DuplicateJob(earlier["id"])
                if sender_limit is not None and new.sender and int(db.execute(
                        "SELECT COUNT(*) FROM jobs WHERE sender = ? AND created_at >= ?",
                        (new.sender, ts(sender_limit[0]))).fetchone()[0]) >= sender_limit[1]:
                    raise SenderOverLimit(new.sender, sender_limit[1])
                row = db.execute(
                    """INSERT INTO jobs (id, source, to_number, state, reason, pages, paper, provider,
                       sender, subject, document, options, meta, created_at, updated_at, doc_sha256,
                       next_attempt_at, finished_at, dedup_key)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *""",
                    (job_id, new.source.value, new.to, state.value, reason, doc.pages,
                     (new.options.paper or doc.paper).value,
                     self.provider, new.sender, new.subject, new.document,
                     json.dumps(new.options.to_json()), json.dumps(dict(new.meta)), ts(now), ts(now),
                     doc.sha256, ts(_first_try(new, now)) if state is JobState.QUEUED else None,
                     ts(now) if state.final else None, new.dedup_key),
                ).fetchall()[0]      # (all: the statement done before the COMMIT)
                self._event(db, job_id, now, state, f"job.{state.value}", reason,
                            {"source": new.source.value, "pages": doc.pages})
                if state.final:
                    self._outbox(db, job_id, now)
                else:
                    self._receipt(db, job_id, new.source, now)
        except BaseException:
            shutil.rmtree(final_dir, ignore_errors=True)
            raise
        job = self._decoded(row)         # the row as the INSERT made it: not read again
        self._observe(None, job, f"job.{state.value}")
        return job

    def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        """Commit several queued jobs, each with its document staged at ``stage(job_id)/fax.pdf``,
        in ONE transaction: all or none.

        Every document is moved into the spool first, then the spool and staging folders are
        fsynced once for the lot, and only then are the rows committed; so, as with
        :meth:`enqueue`, a committed job always has its document on disk. On failure no row is
        committed and the documents moved are removed from the spool (their staging folders are
        the caller's to discard).
        """
        moved: list[Path] = []
        try:
            with _translate():
                for job_id, _, doc in items:
                    staged = self.staging / job_id
                    if doc.path != staged / DOC_NAME:
                        raise StoreError(f"document for {job_id} is not staged at {staged / DOC_NAME}")
                for job_id, _, _ in items:
                    _private_spooled(self.staging / job_id)
                    os.replace(self.staging / job_id, self.spool / job_id)
                    moved.append(self.spool / job_id)
                self._spooled(moved)
            rows = []
            with self._write() as db:
                for job_id, new, doc in items:
                    rows.append(db.execute(
                        """INSERT INTO jobs (id, source, to_number, state, pages, paper, provider, sender,
                           subject, document, options, meta, created_at, updated_at, doc_sha256,
                           next_attempt_at, dedup_key)
                           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *""",
                        (job_id, new.source.value, new.to, JobState.QUEUED.value, doc.pages,
                         (new.options.paper or doc.paper).value,
                         self.provider, new.sender, new.subject, new.document,
                         json.dumps(new.options.to_json()), json.dumps(dict(new.meta)), ts(now), ts(now),
                         doc.sha256, ts(_first_try(new, now)), new.dedup_key),
                    ).fetchall()[0])
                    self._event(db, job_id, now, JobState.QUEUED, "job.queued", None,
                                {"source": new.source.value, "pages": doc.pages})
                    self._receipt(db, job_id, new.source, now)
        except BaseException:
            for final_dir in moved:
                shutil.rmtree(final_dir, ignore_errors=True)
            raise
        jobs = [self._decoded(row) for row in rows]     # as the INSERTs made them: not read again
        for job in jobs:
            self._observe(None, job, "job.queued")
        return jobs

    def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        """Record input refused at intake (no document): a final ``rejected`` job, so its result
        (reply mail, result file) is owed through the outbox like any other final job."""
        with self._write() as db:
            db.execute(
                """INSERT INTO jobs (id, source, to_number, state, reason, pages, paper, provider, sender,
                   subject, document, options, meta, created_at, updated_at, doc_sha256, finished_at,
                   dedup_key)
                   VALUES (?,?,?,?,?,0,?,?,?,?,?,?,?,?,?,'',?,?)""",
                (job_id, new.source.value, new.to, JobState.REJECTED.value, reason, Paper.LETTER.value,
                 self.provider, new.sender, new.subject, new.document, json.dumps(new.options.to_json()),
                 json.dumps(dict(new.meta)), ts(now), ts(now), ts(now), new.dedup_key),
            )
            self._event(db, job_id, now, JobState.REJECTED, "job.rejected", reason, {"source": new.source.value})
            self._outbox(db, job_id, now)
        job = self.get(job_id)
        self._observe(None, job, "job.rejected")
        return job

    def _observe(self, before: Job | None, after: Job, event: str) -> None:
        if self._grouped:
            self._held.append((before, after, event))
            return
        for observer in self.observers:
            try:
                observer(before, after, event)
            except Exception as exc:  # an observer (metrics) must never undo or break the work
                log.error("store.observer_failed", error=repr(exc), event_name=event)

    def apply(self, job: Job, t: Transition, now: datetime, detail: dict[str, Any] | None = None, *,
              release: str | None = None) -> Job:
        """Apply a transition decided on ``job`` (optimistic: Conflict if the job changed);
        ``release``: that owner's lease ends in the same UPDATE (see :meth:`release`)."""
        unknown = set(t.changes) - _JOB_FIELDS
        if unknown:
            raise StoreError(f"cannot change {sorted(unknown)}")
        cols = ["state = ?", "reason = ?", "updated_at = ?", "version = version + 1"]
        vals: list[Any] = [t.state.value, t.reason, ts(now)]
        for key, value in t.changes.items():
            cols.append(f"{key} = ?")
            if isinstance(value, datetime):
                value = ts(value)
            elif isinstance(value, bool):
                value = int(value)
            elif isinstance(value, Paper):
                value = value.value
            elif isinstance(value, FaxOptions):
                value = json.dumps(value.to_json())
            vals.append(value)
        if release is not None:
            cols += ["lease_until = CASE WHEN lease_owner = ? THEN NULL ELSE lease_until END",
                     "lease_owner = CASE WHEN lease_owner = ? THEN NULL ELSE lease_owner END"]
            vals += [release, release]
        with self._write() as db:
            rows = db.execute(
                f"UPDATE jobs SET {', '.join(cols)} WHERE id = ? AND version = ? RETURNING *",
                [*vals, job.id, job.version],
            ).fetchall()
            if len(rows) != 1:
                raise Conflict(f"job {job.id} changed meanwhile")
            detail = dict(detail or {})
            if t.changes.get("provider_id"):
                # kept in the history: a retried job's earlier fax stays known (reconciliation)
                detail["provider_id"] = t.changes["provider_id"]
            if t.changes.get("attempts"):
                detail["attempts"] = t.changes["attempts"]     # each dial attempt shows in the history
            self._event(db, job.id, now, t.state, t.event, t.reason, detail)
            if t.final and not job.final:
                self._outbox(db, job.id, now)
        after = self._decoded(rows[0])       # the row as the UPDATE left it: not read again
        self._observe(job, after, t.event)
        return after

    def _event(self, db: sqlite3.Connection, job_id: str, now: datetime, state: JobState, event: str,
               reason: str | None, detail: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (job_id, at, state, event, reason, detail) VALUES (?,?,?,?,?,?)",
            (job_id, ts(now), state.value, event, reason, json.dumps(detail, default=str)),
        )

    def _outbox(self, db: sqlite3.Connection, job_id: str, now: datetime) -> None:
        row = db.execute("SELECT source FROM jobs WHERE id = ?", (job_id,)).fetchone()
        for kind in (*OUTBOX_KINDS[Source(row["source"])], *((COPY_KIND,) if self.copies else ())):
            db.execute(
                "INSERT INTO outbox (job_id, kind, payload, created_at, next_at) VALUES (?,?,?,?,?)",
                (job_id, kind, "{}", ts(now), ts(now)),
            )

    def _receipt(self, db: sqlite3.Connection, job_id: str, source: Source, now: datetime) -> None:
        """``notify.receipt``: a mail job owes its sender a receipt from the moment it is committed."""
        if self.receipts and source is Source.SMTP:
            db.execute("INSERT INTO outbox (job_id, kind, payload, created_at, next_at) VALUES (?,?,?,?,?)",
                       (job_id, RECEIPT_KIND, "{}", ts(now), ts(now)))

    # ---- claims and leases ----------------------------------------------------------------

    def claim_due(self, owner: str, now: datetime, limit: int, lease_s: float, *,
                  reconcile: bool = False, per_destination: int = 0, max_in_flight: int = 0) -> list[Job]:
        """Lease up to ``limit`` due jobs: queued ones, or (``reconcile``) held submissions.

        ``per_destination`` (``limits.per_destination``; 0: no limit): a queued job is taken only
        while fewer than that many jobs to its number are at the provider or being sent, the
        oldest first (first in, first out per number; other numbers never wait for it).
        ``max_in_flight`` (0: no limit): at most that many jobs at the provider or leased to be sent."""
        if limit <= 0:
            return []
        until = ts(now + timedelta(seconds=lease_s))
        with self._write() as db:
            if max_in_flight > 0 and not reconcile:
                busy = int(db.execute(f"SELECT COUNT(*) FROM jobs WHERE {AT_PROVIDER} OR (state = 'queued' "
                                      "AND lease_until >= ?)", (ts(now),)).fetchone()[0])
                limit = min(limit, max_in_flight - busy)
                if limit <= 0:
                    return []
            if reconcile:
                rows = db.execute(
                    f"""SELECT id FROM jobs
                       WHERE state = 'submitting' AND hold = '{Hold.RECONCILE}'
                         AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)
                       ORDER BY next_attempt_at LIMIT ?""",
                    (ts(now), ts(now), limit),
                ).fetchall()
            elif per_destination <= 0:
                rows = db.execute(
                    """SELECT id FROM jobs
                       WHERE state = 'queued' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)
                       ORDER BY next_attempt_at LIMIT ?""",
                    (ts(now), ts(now), limit),
                ).fetchall()
            else:
                # place: the job's rank among the due jobs to its number, oldest first; busy: the
                # jobs to that number at the provider, or leased to be sent (queued, lease alive).
                # A row that does not decode neither waits its turn nor holds its number.
                bad = sorted(self._bad_rows)
                not_bad = f"AND id NOT IN ({','.join('?' for _ in bad)})" if bad else ""
                rows = db.execute(
                    f"""SELECT id FROM (
                           SELECT id, to_number, next_attempt_at,
                                  ROW_NUMBER() OVER (PARTITION BY to_number ORDER BY created_at, id) AS place
                           FROM jobs
                           WHERE state = 'queued' AND next_attempt_at <= ?
                             AND (lease_until IS NULL OR lease_until < ?) {not_bad}) AS due
                       WHERE place + (SELECT COUNT(*) FROM jobs AS busy WHERE busy.to_number = due.to_number
                                      AND ({AT_PROVIDER} OR (busy.state = 'queued' AND busy.lease_until >= ?))
                                      {not_bad.replace("id NOT IN", "busy.id NOT IN")})
                             <= ?
                       ORDER BY next_attempt_at LIMIT ?""",
                    (ts(now), ts(now), *bad, ts(now), *bad, per_destination, limit),
                ).fetchall()
            ids = [r["id"] for r in rows]
            db.executemany(
                "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(owner, until, i) for i in ids],
            )
        # a row that does not decode stays leased (its back-off): the others go on
        with _translate():
            claimed = self._db.execute(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' for _ in ids)}) ORDER BY next_attempt_at",
                ids).fetchall()
        return self._jobs(claimed)

    def abandoned(self, now: datetime, owner: str) -> list[Job]:
        """Jobs in ``submitting``, not held for reconciliation, with no live lease or a lease of
        ``owner`` (who knows which of its jobs it is working on): left so by a store failure after
        the provider was called. ``recover`` finds the same at start-up; this while running."""
        rows = self._db.execute(
            f"""SELECT * FROM jobs WHERE state = 'submitting' AND (hold IS NULL OR hold != '{Hold.RECONCILE}')
               AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)""", (ts(now), owner)).fetchall()
        return self._jobs(rows)

    def release(self, job_id: str, owner: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                (job_id, owner),
            )

    def renew(self, owner: str, job_ids: Sequence[str], now: datetime, lease_s: float) -> set[str]:
        """Extend ``owner``'s leases of ``job_ids``; the ids still leased to it."""
        marks = ",".join("?" for _ in job_ids)
        with self._write() as db:
            rows = db.execute(f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({marks}) "
                              "RETURNING id", (ts(now + timedelta(seconds=lease_s)), owner, *job_ids)).fetchall()
        return {r["id"] for r in rows}

    def defer(self, job_id: str, until: datetime) -> None:
        """Push a due job's next attempt later without changing its state (no event)."""
        with self._write() as db:
            db.execute("UPDATE jobs SET next_attempt_at = ? WHERE id = ?", (ts(until), job_id))

    def recover(self) -> list[Job]:
        """At start-up (we hold the daemon lock): drop every lease; return jobs caught mid-submission."""
        with self._write() as db:
            db.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE state = 'submitting' AND (hold IS NULL OR hold != '{Hold.RECONCILE}')"
        ).fetchall()
        return self._jobs(rows)

    def clean_spool(self) -> int:
        """Remove staging leftovers and spool folders that belong to no job. Returns the count."""
        removed = 0
        for entry in list(self.staging.iterdir()):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        known = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
        for entry in list(self.spool.iterdir()):
            if entry.name != ".staging" and entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    # ---- reads ----------------------------------------------------------------------------

    def _jobs(self, rows: Sequence[sqlite3.Row]) -> list[Job]:
        """The rows that decode; one that does not is skipped (``store.bad_row``, logged once per id),
        so a corrupt row never stops the loops that list jobs."""
        jobs = []
        for row in rows:
            try:
                jobs.append(self._job(row))
            except (ValueError, TypeError, KeyError) as exc:
                if row["id"] not in self._bad_rows:
                    self._bad_rows.add(row["id"])
                    log.error("store.bad_row", job_id=row["id"], error=repr(exc))
        return jobs

    def _one(self, row: sqlite3.Row | None) -> Job | None:
        """A lookup's row (by provider id, by dedup key): one that does not decode counts as none."""
        jobs = self._jobs([row]) if row is not None else []
        return jobs[0] if jobs else None

    def _job(self, row: sqlite3.Row) -> Job:
        r = dict(zip(row.keys(), row, strict=True))     # a dict's lookups by name are a few times a Row's
        hold = r["hold"]
        return Job(
            id=r["id"], source=_member(Source, r["source"]), to=r["to_number"], state=_member(JobState, r["state"]),
            reason=r["reason"], pages=r["pages"], paper=_member(Paper, r["paper"]), attempts=r["attempts"],
            provider=r["provider"], provider_id=r["provider_id"], status_code=r["status_code"],
            duration_s=r["duration_s"], cost=r["cost"], sender=r["sender"], subject=r["subject"],
            document=r["document"], options=FaxOptions.from_json(orjson.loads(r["options"])),
            meta=orjson.loads(r["meta"]), created_at=_dt(r["created_at"]) or datetime.now(UTC),
            updated_at=_dt(r["updated_at"]) or datetime.now(UTC), finished_at=_dt(r["finished_at"]),
            doc_sha256=r["doc_sha256"], submit_tries=r["submit_tries"],
            next_attempt_at=_dt(r["next_attempt_at"]), submit_started_at=_dt(r["submit_started_at"]),
            submitted_at=_dt(r["submitted_at"]), hold=_member(Hold, hold) if hold else None,
            callback_url=r["callback_url"],
            recoveries=r["recoveries"], cancel_requested=bool(r["cancel_requested"]), version=r["version"],
        )

    def get(self, job_id: str) -> Job:
        with _translate():
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            matches = 0
            if row is None and 4 <= len(job_id) < 26 and job_id.isalnum():
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (job_id.upper() + "%",)
                ).fetchall()
                matches = len(rows) if len(rows) < 2 else int(self._db.execute(
                    "SELECT count(*) FROM jobs WHERE id LIKE ?", (job_id.upper() + "%",)).fetchone()[0])
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise JobNotFound(job_id, matches)
        return self._decoded(row)

    def _decoded(self, row: sqlite3.Row) -> Job:
        """One job's row, or :class:`UnreadableJob` naming it."""
        try:
            return self._job(row)
        except (ValueError, TypeError, KeyError) as exc:
            raise UnreadableJob(row["id"], repr(exc)) from exc

    def jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs"
        args: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state.value)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with _translate():
            rows = self._db.execute(sql, args).fetchall()
        return self._jobs(rows)

    def search(self, wanted: JobFilter, offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
        clause, args = where_of(wanted, "?", "LIKE")
        with _translate():
            total = int(self._db.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()[0])
            rows = self._db.execute(f"SELECT * FROM jobs{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                                    [*args, limit, offset]).fetchall()
        return self._jobs(rows), total

    def events(self, job_id: str) -> list[JobEvent]:
        with _translate():
            rows = self._db.execute(
                "SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,)
            ).fetchall()
        return [
            JobEvent(at=_dt(r["at"]) or datetime.now(UTC), state=JobState(r["state"]), event=r["event"],
                     reason=r["reason"], detail=json.loads(r["detail"]))
            for r in rows
        ]

    def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None:
        """The newest job with this intake key created at or after ``since``."""
        with _translate():
            row = _newest_with_key(self._db, dedup_key, since)
        return self._one(row)

    def count_by_sender(self, sender: str, since: datetime) -> int:
        """Jobs this sender created at or after ``since`` (for per-sender rate limits)."""
        with _translate():
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE sender = ? AND created_at >= ?", (sender, ts(since))
            ).fetchone()
        return int(row[0])

    def count_by_client(self, peer: str, since: datetime) -> int:
        """Jobs that mail from the client address ``peer`` created at or after ``since`` (its rate limit)."""
        with _translate():
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE created_at >= ? AND source = 'smtp' "
                "AND json_extract(meta, '$.peer') = ?", (ts(since), peer)
            ).fetchone()
        return int(row[0])

    def in_flight(self) -> int:
        with _translate():
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('submitting', 'submitted')"
            ).fetchone()
        return int(row[0])

    def overdue(self, submitted_before: datetime) -> int:
        """Jobs overdue at the provider: accepted before ``submitted_before`` and not final yet, or
        held because the provider says it has no record of their fax."""
        with _translate():
            row = self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE state = 'submitted' "
                f"AND (hold = '{Hold.UNKNOWN}' OR submitted_at < ?)",
                (ts(submitted_before),),
            ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        with _translate():
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def submitted(self, provider: str | None = None) -> list[Job]:
        """Jobs the provider accepted and we wait on."""
        with _translate():
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = 'submitted' AND provider = ? ORDER BY submitted_at",
                (provider or self.provider,),
            ).fetchall()
        return self._jobs(rows)

    def cancel_requested(self) -> list[Job]:
        with _translate():
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE cancel_requested = 1 AND state = 'submitted'"
            ).fetchall()
        return self._jobs(rows)

    def by_provider_id(self, provider_id: str, provider: str | None = None) -> Job | None:
        with _translate():
            row = self._db.execute(
                "SELECT * FROM jobs WHERE provider = ? AND provider_id = ? ORDER BY created_at DESC LIMIT 1",
                (provider or self.provider, provider_id),
            ).fetchone()
        return self._one(row)

    def known_provider_ids(self, provider: str | None = None) -> frozenset[str]:
        """Every provider id any job has owned (now or before a retry): not ours to adopt."""
        with _translate():
            rows = self._db.execute(
                """SELECT provider_id FROM jobs WHERE provider = ? AND provider_id IS NOT NULL
                   UNION
                   SELECT json_extract(e.detail, '$.provider_id') FROM events e JOIN jobs j ON j.id = e.job_id
                   WHERE j.provider = ? AND json_extract(e.detail, '$.provider_id') IS NOT NULL""",
                (provider or self.provider, provider or self.provider),
            ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def next_due(self, per_destination: int = 0) -> datetime | None:
        """When the next queued job or reconciliation is due (for the dispatcher's sleep); a leased
        one (being worked, or a row that did not decode) is due when its lease runs out. With
        ``per_destination``, a job whose number has that many at the provider is not due (it is
        taken when one of them leaves: the dispatcher is woken then, or polls)."""
        bad = sorted(self._bad_rows)
        not_bad = f"AND busy.id NOT IN ({','.join('?' for _ in bad)})" if bad else ""
        waits = "" if per_destination <= 0 else (
            f"AND (SELECT COUNT(*) FROM jobs AS busy WHERE busy.to_number = jobs.to_number AND busy.{AT_PROVIDER}"
            f" {not_bad}) < {int(per_destination)}")
        with _translate():
            row = self._db.execute(
                f"""SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, next_attempt_at))) FROM jobs
                   WHERE (state = 'queued' {waits}) OR (state = 'submitting' AND hold = '{Hold.RECONCILE}')""",
                bad if waits else [],
            ).fetchone()
        return _dt(row[0])

    def at_provider(self, to: str) -> int:
        """How many jobs to ``to`` are at the provider now (submitting or submitted)."""
        with _translate():
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE to_number = ? AND {AT_PROVIDER}",
                                        (to,)).fetchone()[0])

    # ---- outbox ---------------------------------------------------------------------------

    def outbox_due(self, now: datetime, kinds: Sequence[str], limit: int = 100) -> list[OutboxItem]:
        marks = ",".join("?" for _ in kinds)
        with _translate():
            rows = self._db.execute(
                f"""SELECT * FROM outbox WHERE delivered_at IS NULL AND next_at <= ? AND kind IN ({marks})
                    ORDER BY id LIMIT ?""",
                (ts(now), *kinds, limit),
            ).fetchall()
        return [OutboxItem(r["id"], r["job_id"], r["kind"], json.loads(r["payload"]), r["attempts"])
                for r in rows]

    def outbox_delivered(self, item_id: int, now: datetime, error: str | None = None) -> None:
        """Done with this notification: delivered, or (``error``) given up as undeliverable (then
        also a ``notify.given_up`` event in the job's history, so ``faxbridge job ID`` shows why)."""
        with self._write() as db:
            db.execute("UPDATE outbox SET delivered_at = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
                       (ts(now), error, item_id))
            row = None if error is None else db.execute(
                "SELECT o.kind, j.id, j.state FROM outbox o JOIN jobs j ON j.id = o.job_id WHERE o.id = ?",
                (item_id,)).fetchone()
            if row is not None and row["state"] in JobState._value2member_map_:
                self._event(db, row["id"], now, JobState(row["state"]), "notify.given_up",
                            f"{row['kind']} notification given up: {error}", {"outbox_id": item_id})

    def outbox_failed(self, item_id: int, error: str, next_at: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
                (error, ts(next_at), item_id),
            )

    def outbox_backlog(self) -> int:
        with _translate():
            return int(self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])

    def notices(self, job_id: str) -> list[Notice]:
        with _translate():
            rows = self._db.execute("SELECT kind, created_at, attempts, next_at, delivered_at, last_error "
                                    "FROM outbox WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [_notice(r) for r in rows]

    # ---- kv -------------------------------------------------------------------------------

    def kv_get(self, key: str) -> str | None:
        with _translate():
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def kv_set(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


Store = SqliteStore   # the name callers used before the JobStore protocol; new code opens a JobStore
