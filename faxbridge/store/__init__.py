"""The job store: the one place job state changes, behind the :class:`JobStore` protocol.

::

    callers (dispatcher, tracker, web, notify, ingress, CLI)
        │  await store.enqueue / claim_due / apply / outbox_due / get ...   (typed values only)
        ▼
    JobStore (protocol.py) ── opened by open_store(cfg) ──▶ ThreadedStore (threaded.py)
                                                               │ one store thread; errors → StoreError
                                                               ▼
                                                            SqliteStore (sqlite.py): SQLite's SQL
                                      ── store.url = "postgresql://..." ──▶ PostgresStore (postgres.py):
                                                            psycopg 3 async + pool; schema in pg_schema.py,
                                                            documents in the database (pg_documents.py)
    DocumentSpool (protocol.py) ── FileSpool (spool.py): staging folders and job documents on disk
                                   (with PostgreSQL: staging, and a cache of documents fetched to send)
"""

from __future__ import annotations

import os
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
                     notices: Collection[str] = (), url: str = "", node: str = "",
                     lease: float = 30.0) -> JobStore:
    """The job store (the one factory): SQLite in ``state_dir``, or with ``url`` (``store.url``,
    ``postgresql://...``) the PostgreSQL store shared by every daemon with that url, ``state_dir``
    then holding only staging and cached documents; ``node`` (``store.node``; empty: the host name)
    names this daemon in its leases, ``lease`` (``store.lease``) how long its outbox claims hold.
    ``notices``: the optional outbox rows owed: :data:`COPY_KIND` (every job that becomes final owes
    a copy, ``notify.copy_to``), :data:`RECEIPT_KIND` (every mail job, when committed, owes a
    receipt, ``notify.receipt``)."""
    if url:
        from faxbridge.store.postgres import PostgresStore  # psycopg loads only for PostgreSQL

        return await PostgresStore.open(url, state_dir, provider, node=node or os.uname().nodename,
                                        lease_s=lease, readonly=readonly, notices=notices)
    return await ThreadedStore.open(state_dir, provider, readonly=readonly, notices=notices)
