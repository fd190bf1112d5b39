"""Result files for folder jobs: ``results/NAME.result.json``, and the original moved out of the way.

The ``deliver`` function of ``OutboxWorker(store, clock, "sidecar", deliver)``; one call per final
folder job (the outbox row is written with the final state). In this order:

1. the original (and its control files) moves from the processing area to ``done/`` (delivered)
   or ``failed/`` (failed, rejected, canceled), under its own name, or with a suffix before the
   extension when that name is taken (``letter-2.pdf``), never overwriting anything;
2. the result file is written: a temporary name starting with a dot in the results folder, fsync,
   rename, fsync of the folder. A reader never sees half a file, and once the result is there the
   original has already moved. The temporary name is made from (a hash of) the job id, so a crash before the
   rename leaves nothing behind once the write is repeated. The file holds ``schema_version``, the
   job object of contract section 7 and its history under ``events``.

Both steps are idempotent, so a crash anywhere repeats nothing: the outbox row is marked only
after ``deliver`` returns, so a restart calls it again; a document no longer in the processing
area has already moved; a result file holding this job's id is this job's result, written again
in place. ``letter.result.json`` holding another job's id (the same name dropped twice) is never
overwritten: the next free ``letter-2.result.json`` is used. Result names are made from the
document's name by :func:`faxbridge.ingress.control.result_name` and can never leave the folder.

File-system trouble (results folder not writable, disk full) is :class:`NotifyRetry`: tried again
with backoff, forever; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from faxbridge import crashpoints
from faxbridge.durable import fsync_dir
from faxbridge.ingress import claims
from faxbridge.ingress.control import result_name, stem
from faxbridge.jobview import job_object
from faxbridge.models import Job, JobEvent, JobState
from faxbridge.notify.outbox import NotifyGiveUp, NotifyRetry, OutboxWorker
from faxbridge.runtime import Runtime
from faxbridge.store import OutboxItem

log = structlog.get_logger("faxbridge.sidecar")

SCHEMA_VERSION = 1
KIND = "sidecar"


def result_document(job: Job, events: Sequence[JobEvent]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, **job_object(job, events)}


def _holds_job(path: Path, job_id: str) -> bool:
    try:
        with path.open("rb") as fh:
            return bool(json.load(fh).get("id") == job_id)
    except (OSError, ValueError, AttributeError):
        return False


def write_result(folder: Path, job: Job, events: Sequence[JobEvent]) -> Path:
    """Write (or write again) this job's result file; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(result_document(job, events), indent=2) + "\n").encode()
    for n in range(1, 10_000):
        target = folder / result_name(job.document, n)
        if target.parent != folder:
            raise NotifyGiveUp(f"unsafe result name for {job.document!r}")
        if os.path.lexists(target) and not _holds_job(target, job.id):
            continue
        # A dot: readers skip it. Named by the job: a write repeated after a crash replaces it.
        tmp = folder / f".{hashlib.sha256(job.id.encode()).hexdigest()[:20]}.result.json.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        crashpoints.hit("sidecar.temp_written")
        os.replace(tmp, target)
        fsync_dir(folder)
        return target
    raise OSError(f"no free result name for {job.document} in {folder}")


def move_original(job: Job) -> Path | None:
    """Move what the claim still holds to done/ or failed/; None when nothing was left to move."""
    meta = job.meta
    claim = claims.processing_dir(Path(meta["watch"])) / meta["claim"]
    if not claim.is_dir():
        return None
    target = Path(meta["done"] if job.state is JobState.DELIVERED else meta["failed"])
    document, controls = claims.claim_files(claim)
    moved: Path | None = None
    if document is not None:
        moved = claims.move_no_clobber(claim / document, target, document.name)
    base = stem(moved.name) if moved is not None else stem(PurePosixPath(meta["file"]).name)
    for control in controls:
        suffix = control.name[len(stem(control.name)):]
        claims.move_no_clobber(claim / control, target, base + suffix)
    shutil.rmtree(claim, ignore_errors=True)
    fsync_dir(claim.parent)
    return moved


def _deliver_sync(job: Job, events: Sequence[JobEvent]) -> tuple[Path | None, Path]:
    moved = move_original(job)
    return moved, write_result(Path(job.meta["results"]), job, events)


async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
    """The sidecar ``deliver`` for :class:`~faxbridge.notify.outbox.OutboxWorker`."""
    if not all(isinstance(job.meta.get(k), str) for k in ("watch", "claim", "file", "results", "done", "failed")):
        raise NotifyGiveUp(f"job {job.id} did not come from a watched folder")
    try:
        moved, result = await asyncio.to_thread(_deliver_sync, job, events)
    except OSError as exc:
        raise NotifyRetry(f"result file for {job.document}: {exc.strerror or exc}") from exc
    crashpoints.hit("sidecar.written")
    log.info("sidecar.written", job_id=job.id, state=job.state.value, result=str(result),
             original=str(moved) if moved else None)


def build(runtime: Runtime) -> OutboxWorker:
    """The result writer; always on, so results owed by folder jobs from an earlier configuration
    are still written."""
    return OutboxWorker(runtime.store, runtime.clock, KIND, deliver)
