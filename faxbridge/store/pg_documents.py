"""Documents of the PostgreSQL store: in the database, streamed in and out in chunks.

A job's fax-ready PDF is rows of ``documents (job_id, seq, chunk bytea)``, :data:`CHUNK` bytes each,
written in the transaction that commits the job (so any daemon can send any job) and never held
whole in memory. The local :class:`~faxbridge.store.spool.FileSpool` is only for staging and as a
cache: after the commit the staged file is renamed into the cache (``spool/<job id>/fax.pdf``, what
``document_path`` names), and a daemon that claims a job it does not have fetches it there first
(:func:`materialize`: streamed, checked against the job's SHA-256, written to an exclusive
temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import structlog
from psycopg.rows import tuple_row

from faxbridge.errors import StoreError
from faxbridge.store.pg_schema import CHUNK
from faxbridge.store.spool import FileSpool

log = structlog.get_logger("faxbridge.store")


async def write(conn: Any, job_id: str, path: Path) -> int:
    """Store the file at ``path`` as ``job_id``'s document, chunk by chunk, inside the caller's
    transaction on ``conn``. Returns its size."""
    size = 0
    with path.open("rb") as fh:
        seq = 0
        while chunk := fh.read(CHUNK):
            await conn.execute("INSERT INTO documents (job_id, seq, chunk) VALUES (%s, %s, %s)",
                               (job_id, seq, chunk))
            size += len(chunk)
            seq += 1
    return size


def settle(files: FileSpool, job_id: str) -> None:
    """After the commit: the staged folder becomes the job's cached document (a rename). The job is
    committed whatever happens here: if the rename fails the staging is dropped, and the document is
    fetched from the database when it is needed."""
    cached = files.root / job_id
    try:
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(files.staging / job_id, cached)
    except OSError as exc:
        log.warning("store.cache_failed", job_id=job_id, error=exc.strerror or str(exc))
        files.discard_stage(job_id)


def cached(files: FileSpool, job_id: str) -> bool:
    return files.document_path(job_id).is_file()


async def materialize(conn: Any, files: FileSpool, job_id: str, sha256: str) -> Path:
    """Fetch ``job_id``'s document from the database into the local cache (unless it is there)."""
    target = files.document_path(job_id)
    if target.is_file():
        return target
    folder = target.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / f".fetch-{secrets.token_hex(8)}"
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            async with conn.cursor(binary=True, row_factory=tuple_row) as cur:
                async for (chunk,) in cur.stream("SELECT chunk FROM documents WHERE job_id = %s ORDER BY seq",
                                                 (job_id,)):
                    data = bytes(chunk)
                    digest.update(data)
                    out.write(data)
        if sha256 and digest.hexdigest() != sha256:
            raise StoreError(f"the document of job {job_id} in the database does not match its SHA-256")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
