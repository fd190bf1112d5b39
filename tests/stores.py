"""Job stores of both backends for the store tests: ``backend`` opens stores through ``open_store``.

A :class:`Backend` opens stores that share one queue, as several daemons (or a daemon and the CLI)
would: on SQLite, connections to the one database in one ``state_dir``; on PostgreSQL, stores on
one database, each with its own ``state_dir`` and node (another daemon, another machine).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbridge.models import NewJob, Paper, PreparedDocument, Source
from faxbridge.store import DOC_NAME, JobStore, new_job_id, open_store

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@dataclass
class Backend:
    name: str
    root: Path
    url: str = ""
    opened: list[JobStore] = field(default_factory=list)

    async def open(self, node: str = "a", *, notices: Collection[str] = (), lease: float = 30.0) -> JobStore:
        """A store on this backend's queue; ``node`` names the daemon (its own state_dir on PostgreSQL)."""
        state_dir = self.root / ("var" if not self.url else f"var-{node}")
        store = await open_store(state_dir, "simulator", url=self.url, node=node, notices=notices, lease=lease)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    b = Backend(request.param, tmp_path, url)
    yield b
    for store in b.opened:
        await store.close()


@pytest.fixture
async def jobstore(backend: Backend) -> JobStore:
    return await backend.open()


def stage_doc(store: JobStore, job_id: str, content: bytes = b"%PDF-1.4 test") -> PreparedDocument:
    path = store.spool.stage(job_id) / DOC_NAME
    path.write_bytes(content)
    return PreparedDocument(path=path, pages=2, paper=Paper.A4, sha256=hashlib.sha256(content).hexdigest(),
                            size=len(content))


async def enqueue(store: JobStore, source: Source = Source.CLI, to: str = "+15555551212",
                  now: datetime = NOW, content: bytes = b"%PDF-1.4 test") -> str:
    job_id = new_job_id()
    await store.enqueue(job_id, NewJob(source=source, to=to, document="a.pdf", sender="alice@example.com"),
                        stage_doc(store, job_id, content), now)
    return job_id
