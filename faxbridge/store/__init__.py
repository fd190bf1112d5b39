"""The job store: the one place job state changes, behind the :class:`JobStore` protocol.

::

    callers (dispatcher, tracker, web, notify, ingress, CLI)
        │  await store.enqueue / claim_due / apply / outbox_due / get ...   (typed values only)
        ▼
    JobStore (protocol.py) ── opened by open_store(cfg) ──▶ ThreadedStore (threaded.py)
                                                               │ one store thread; errors → StoreError
                                                               ▼
                                                            SqliteStore (sqlite.py): the only SQL
    DocumentSpool (protocol.py) ── FileSpool (spool.py): staging folders and job documents on disk

A PostgreSQL backend will implement the same protocol (contract section 10).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from faxbridge.clock import stamp as ts
from faxbridge.errors import Conflict, UnreadableJob
from faxbridge.models import new_job_id
from faxbridge.store.protocol import DOC_NAME, DocumentSpool, JobFilter, JobStore, Observer, OutboxItem, Staged
from faxbridge.store.spool import FileSpool
from faxbridge.store.sqlite import COPY_KIND, MIGRATIONS, OUTBOX_KINDS, RECEIPT_KIND, SqliteStore, Store
from faxbridge.store.threaded import ThreadedStore

__all__ = ["COPY_KIND", "DOC_NAME", "MIGRATIONS", "OUTBOX_KINDS", "RECEIPT_KIND", "Conflict", "DocumentSpool",
           "FileSpool", "JobFilter", "JobStore", "Observer", "OutboxItem", "SqliteStore", "Staged", "Store",
           "ThreadedStore", "UnreadableJob", "new_job_id", "open_store", "ts"]


async def open_store(state_dir: Path, provider: str, *, readonly: bool = False,
                     notices: Collection[str] = ()) -> JobStore:
    """The job store for ``state_dir`` (the one factory; a ``store.url`` will choose PostgreSQL).
    ``notices``: the optional outbox rows owed: :data:`COPY_KIND` (every job that becomes final owes
    a copy, ``notify.copy_to``), :data:`RECEIPT_KIND` (every mail job, when committed, owes a
    receipt, ``notify.receipt``)."""
    return await ThreadedStore.open(state_dir, provider, readonly=readonly, notices=notices)
