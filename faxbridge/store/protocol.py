"""What the rest of faxbridge may ask of a job store: :class:`JobStore` and :class:`DocumentSpool`.

Callers see typed values only (``Job``, ``JobEvent``, ``OutboxItem``, datetimes, ids): no
``sqlite3`` types, no database paths. Every method of :class:`JobStore` is a coroutine, so the
event loop never waits on a commit; a backend does its blocking work elsewhere (the SQLite store on
its one store thread, :mod:`faxbridge.store.threaded`; a PostgreSQL store on an async driver).
Every failure comes out as :class:`~faxbridge.errors.StoreError` (``StoreBusy`` when trying again
may help), translated at one chokepoint per backend.

Documents are the :class:`DocumentSpool`'s: intake writes a job's fax-ready PDF into a staging
folder (``spool.stage(job_id)``; plain files, so an intake worker process may write there too),
and :meth:`JobStore.enqueue` takes it from there into the store before the job row commits.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from faxbridge.models import Job, JobEvent, JobState, NewJob, PreparedDocument, Source
from faxbridge.states import Transition

DOC_NAME = "fax.pdf"
"""The file name of a job's fax-ready document in its staging folder (and in the spool)."""

RECEIVED_DIR = "received"
"""Beside ``DOC_NAME``: the documents as received (a mail's attachments, the dropped file, the files
given to ``faxbridge send``), ``N-name`` in the order given (:func:`faxbridge.intake.keep_received`).
They move into the spool with the document; a PostgreSQL store keeps them on the node that took the
job only (its database holds the fax-ready PDF)."""

Observer = Callable[[Job | None, Job, str], None]
"""Told (before, after, event name) after each committed change; must not raise or block."""


@dataclass(frozen=True)
class OutboxItem:
    """A notification owed for a final job (reply mail, result file)."""

    id: int
    job_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Notice:
    """Where one of a job's outbox rows stands (the console's job page): owed, tried, delivered or
    given up (``delivered_at`` with ``last_error``)."""

    kind: str
    created_at: datetime
    attempts: int
    next_at: datetime
    delivered_at: datetime | None
    last_error: str | None


class JobFilter(NamedTuple):
    """Which jobs a search wants (the console's queue); each given field narrows it, text is a
    case-insensitive substring of the id, number, sender, subject, document or reason."""

    state: JobState | None = None
    source: Source | None = None
    number: str = ""         # a substring of the E.164 number (digits)
    sender: str = ""
    text: str = ""


class Staged(NamedTuple):
    """A job ready to commit: its id, what intake made of it, and its document staged at
    ``spool.stage(job_id) / DOC_NAME``."""

    job_id: str
    new: NewJob
    doc: PreparedDocument


class DocumentSpool(Protocol):
    """Where job documents are staged by intake and read back for sending. Plain paths, picklable
    (intake worker processes stage into it)."""

    def stage(self, job_id: str) -> Path:
        """A fresh private folder for ``job_id``'s documents (taken by ``enqueue``)."""
        ...

    def discard_stage(self, job_id: str) -> None:
        """Remove what was staged for ``job_id`` (never committed); nothing if there is none."""
        ...

    def document_path(self, job_id: str) -> Path:
        """The committed document of a job, as a file the provider adapter can upload. (With
        PostgreSQL the document lives in the database and this is its local cache, filled for the
        jobs that ``claim_due`` and ``outbox_due`` hand out.)"""
        ...

    def received_path(self, job_id: str) -> Path:
        """The folder of a committed job's documents as received (:data:`RECEIVED_DIR`); it may
        not exist (a job from before they were kept, a rejected one, another node's)."""
        ...


class JobStore(Protocol):
    """The job store: jobs, their history, leases, the outbox and small durable settings."""

    provider: str            # the provider name new jobs record

    @property
    def spool(self) -> DocumentSpool:
        """Where intake stages documents for this store."""
        ...

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` after every change committed through this store."""
        ...

    async def close(self) -> None: ...

    # ---- writes
    async def enqueue(self, job_id: str, new: NewJob, doc: PreparedDocument, now: datetime, *,
                      state: JobState = JobState.QUEUED, reason: str | None = None,
                      dedup_since: datetime | None = None, sender_limit: tuple[datetime, int] | None = None) -> Job:
        """Commit one job whose document is staged; with ``dedup_since``, a job with the same
        ``dedup_key`` made since then raises :class:`~faxbridge.errors.DuplicateJob` instead; with
        ``sender_limit`` (since, limit), a sender with ``limit`` jobs made since then raises
        :class:`~faxbridge.errors.SenderOverLimit` (both counted in the committing transaction)."""
        ...

    async def enqueue_many(self, items: Sequence[Staged], now: datetime) -> list[Job]:
        """Commit several queued jobs in one transaction: all or none."""
        ...

    async def reject(self, job_id: str, new: NewJob, reason: str, now: datetime) -> Job:
        """Record input refused at intake: a final ``rejected`` job owing its result."""
        ...

    async def apply(self, job: Job, t: Transition, now: datetime, detail: dict[str, Any] | None = None, *,
                    release: str | None = None) -> Job:
        """Apply a transition decided on ``job``; :class:`Conflict` if the job changed meanwhile.
        ``release``: the owner whose lease of the job ends with this change, in the same write
        (what :meth:`release` would do after it; a lease another owner holds is left as it is)."""
        ...

    # ---- claims and leases
    async def claim_due(self, owner: str, now: datetime, limit: int, lease_s: float, *,
                        reconcile: bool = False, per_destination: int = 0, max_in_flight: int = 0) -> list[Job]:
        """Lease up to ``limit`` due jobs (``reconcile``: held submissions); ``per_destination``
        (0: none): no more than that many jobs to one number at the provider, oldest first;
        ``max_in_flight`` (0: none): no more than that many jobs at the provider or leased to be
        sent, counted in the claiming transaction (across every daemon sharing the store)."""
        ...
    async def renew(self, owner: str, job_ids: Collection[str], now: datetime, lease_s: float) -> set[str]:
        """Extend ``owner``'s leases of these jobs to ``now + lease_s``; the ids still leased to it
        (a lease another daemon took over after it ran out is not renewed)."""
        ...
    async def abandoned(self, now: datetime, owner: str) -> list[Job]: ...
    async def release(self, job_id: str, owner: str) -> None: ...
    async def defer(self, job_id: str, until: datetime) -> None: ...
    async def recover(self) -> list[Job]:
        """At start-up: drop this store's stale leases; the jobs caught mid-submission."""
        ...
    async def clean_spool(self) -> int: ...

    # ---- reads
    async def get(self, job_id: str) -> Job:
        """The job with this id (or unambiguous id prefix); :class:`JobNotFound` otherwise."""
        ...
    async def jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]: ...
    async def events(self, job_id: str) -> list[JobEvent]: ...
    async def search(self, wanted: JobFilter, offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
        """Jobs matching ``wanted``, newest first, ``limit`` of them from ``offset``; and how many match."""
        ...
    async def find_duplicate(self, dedup_key: str, since: datetime) -> Job | None: ...
    async def count_by_sender(self, sender: str, since: datetime) -> int: ...
    async def count_by_client(self, peer: str, since: datetime) -> int: ...
    async def in_flight(self) -> int: ...
    async def overdue(self, submitted_before: datetime) -> int: ...
    async def counts(self) -> dict[str, int]: ...
    async def submitted(self, provider: str | None = None) -> list[Job]: ...
    async def cancel_requested(self) -> list[Job]: ...
    async def by_provider_id(self, provider_id: str, provider: str | None = None) -> Job | None: ...
    async def known_provider_ids(self, provider: str | None = None) -> frozenset[str]: ...
    async def next_due(self, per_destination: int = 0) -> datetime | None: ...
    async def at_provider(self, to: str) -> int:
        """How many jobs to the number ``to`` are at the provider (``limits.per_destination``)."""
        ...

    # ---- outbox
    async def outbox_due(self, now: datetime, kinds: Sequence[str], limit: int = 100) -> list[OutboxItem]: ...
    async def outbox_delivered(self, item_id: int, now: datetime, error: str | None = None) -> None: ...
    async def outbox_failed(self, item_id: int, error: str, next_at: datetime) -> None: ...
    async def outbox_backlog(self) -> int: ...
    async def notices(self, job_id: str) -> list[Notice]:
        """The job's outbox rows, oldest first: what it owes or owed its sender (reply, result file)."""
        ...

    async def outbox_keep(self, item_id: int, now: datetime) -> bool:
        """Just before delivering a row handed out by ``outbox_due``: renew its lease; False when it
        is not this daemon's any more (its lease ran out and another daemon took it, or it was
        delivered meanwhile), so it is not delivered twice."""
        ...

    # ---- one daemon at a time
    async def lead(self, role: str) -> bool:
        """Whether this daemon does ``role`` ("poller", "balance") now: True for the one daemon
        holding it among those sharing the store (taken when free, kept while alive; one daemon
        alone always holds it)."""
        ...

    # ---- small durable settings (poll cursors, the webhook token)
    async def kv_get(self, key: str) -> str | None: ...
    async def kv_set(self, key: str, value: str) -> None: ...

    async def integrity_check(self) -> str: ...
