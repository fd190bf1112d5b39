"""The folder protocol's last step: ``results/NAME.result.json``, and the original moved out of the way.

Run for every final folder job (the outbox row "sidecar" is written with the final state; the
generic glue is :mod:`faxbridge.notify.sidecar`, which calls :func:`deliver` off the event loop).
What a folder job needs for it travels with the job as a :class:`FolderOrigin` (the watched folder,
the claim, the file, and the results, done and failed folders), stored in the job's ``meta`` under
one key, ``"folder"``, by :meth:`FolderOrigin.meta` and read back by :meth:`FolderOrigin.of`, the one
place that knows the format; rows written by earlier versions (six flat ``meta`` strings) are read
too, so a store from before still delivers its pending result files. In this order:

1. the original (and its control files) moves from the processing area to ``done/`` (delivered)
   or ``failed/`` (failed, rejected, canceled), under its own name, or with a suffix before the
   extension when that name is taken (``letter-2.pdf``), never overwriting anything;
2. the result file is written: a temporary name starting with a dot in the results folder, fsync,
   rename, fsync of the folder. A reader never sees half a file, and once the result is there the
   original has already moved. The temporary name is random and created exclusively
   (``O_CREAT|O_EXCL|O_NOFOLLOW`` in the folder's descriptor): a link planted under any name is
   never written through. It ends with a tag made from the job id, so a crash before the rename
   leaves nothing behind once the write is repeated (the old temporary file is removed).
   The file holds ``schema_version``, the job object of contract section 7 and its history under
   ``events``.

Every folder is reached by descriptor (:mod:`faxbridge.ingress.folder.safedir`): the working area is
checked before anything is moved out of it (refused: nothing in it is touched), and ``done``,
``failed`` and ``results`` are opened without following a link and must be ours or root's. When
one of them is refused (a symbolic link, another user's folder), the original or the result goes
to ``<watch>/.faxbridge/kept/`` instead (ours, 0700), with an error in the log naming the folder.

Both steps are idempotent, so a crash anywhere repeats nothing: the outbox row is marked only
after delivery returns, so a restart delivers again; a document no longer in the processing
area has already moved; a result file holding this job's id is this job's result, written again
in place. ``letter.result.json`` holding another job's id (the same name dropped twice) is never
overwritten: the next free ``letter-2.result.json`` is used. Result names are made from the
document's name by :func:`faxbridge.ingress.folder.control.result_name` and can never leave the folder.

File-system trouble (results folder not writable, disk full) is an ``OSError`` (the outbox tries
again, with backoff, forever; nothing is dropped); a result that can never be written (a job not
from a watched folder, an unsafe result name) is :class:`ResultRefused` (given up, with the reason).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from faxbridge import crashpoints
from faxbridge.config import WatchConfig
from faxbridge.errors import FaxbridgeError
from faxbridge.ingress.folder import claims, safedir
from faxbridge.ingress.folder.control import result_name, stem
from faxbridge.jobview import job_object
from faxbridge.models import Job, JobEvent, JobState

log = structlog.get_logger("faxbridge.sidecar")

SCHEMA_VERSION = 1
MAX_RESULT_READ = 4 * 1024 * 1024
META_KEY = "folder"          # the job's meta key holding its FolderOrigin
_FIELDS = ("watch", "claim", "file", "results", "done", "failed")


class ResultRefused(FaxbridgeError):
    """This job's result can never be written (not from a watched folder, an unsafe result name)."""


@dataclass(frozen=True)
class FolderOrigin:
    """Where a folder job came from, and where its original and result go: the watched folder, the
    claim in its processing area, the file's path relative to the watched folder, and the results,
    done and failed folders of its ``[[watch]]`` (as they were when the file was taken)."""

    watch: Path
    claim: str
    file: PurePosixPath
    results: Path
    done: Path
    failed: Path

    @classmethod
    def taken(cls, watch: WatchConfig, claim: str, file: PurePosixPath) -> FolderOrigin:
        return cls(watch.path, claim, file, watch.results, watch.done, watch.failed)

    def meta(self) -> dict[str, dict[str, str]]:
        """The job's ``meta`` for this origin (what :meth:`of` reads back)."""
        return {META_KEY: {"watch": str(self.watch), "claim": self.claim, "file": str(self.file),
                           "results": str(self.results), "done": str(self.done), "failed": str(self.failed)}}

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> FolderOrigin | None:
        """The origin a job's ``meta`` carries; None for a job not from a watched folder. Reads both
        this version's ``{"folder": {...}}`` and the six flat strings rows written before it carry."""
        fields = meta.get(META_KEY)
        if not isinstance(fields, Mapping):
            fields = meta                         # a row from an earlier version: flat keys
        values = [fields.get(k) for k in _FIELDS]
        if not all(isinstance(v, str) and v for v in values):
            return None
        watch, claim, file, results, done, failed = (str(v) for v in values)
        return cls(Path(watch), claim, PurePosixPath(file), Path(results), Path(done), Path(failed))

    def target(self, state: JobState) -> Path:
        """Where the original goes for a job final in ``state``."""
        return self.done if state is JobState.DELIVERED else self.failed


def origin_of(job: Job) -> FolderOrigin:
    origin = FolderOrigin.of(job.meta)
    if origin is None:
        raise ResultRefused(f"job {job.id} did not come from a watched folder")
    return origin


def result_document(job: Job, events: Sequence[JobEvent]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, **job_object(job, events)}


def _holds_job(dir_fd: int, name: str, job_id: str) -> bool:
    """Is ``name`` (in ``dir_fd``) a result file of this job? Read without following a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(os.dup(fd), "rb") as fh:
            return bool(json.loads(fh.read(MAX_RESULT_READ)).get("id") == job_id)
    except (OSError, ValueError, AttributeError):
        return False
    finally:
        os.close(fd)


def read_result(job: Job) -> tuple[Path, str] | None:
    """The result file written for ``job`` and its text (at most ``MAX_RESULT_READ`` bytes), or
    None: not written yet, removed by whoever reads the results, or not a folder job. Found the way
    :func:`_write_result_at` picks its name (the first ``NAME[-n].result.json`` that is missing or
    holds this job's id), read without following a link."""
    origin = FolderOrigin.of(job.meta)
    if origin is None:
        return None
    try:
        fd = os.open(origin.results, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for n in range(1, 10_000):
            name = result_name(job.document, n)
            try:
                file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                return None                        # the writer would have taken this name
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(file).st_mode):
                    continue
                with os.fdopen(os.dup(file), "rb") as fh:
                    data = fh.read(MAX_RESULT_READ)
            finally:
                os.close(file)
            try:
                if json.loads(data).get("id") == job.id:
                    return origin.results / name, data.decode("utf-8", "replace")
            except (ValueError, AttributeError):
                continue
        return None
    finally:
        os.close(fd)


def write_result(folder: Path, job: Job, events: Sequence[JobEvent], *, folder_fd: int | None = None) -> Path:
    """Write (or write again) this job's result file; returns its path. The folder is opened
    without following a link and must be ours or root's (:func:`safedir.open_target`; else
    :class:`~faxbridge.ingress.folder.safedir.UnsafeFolder`), unless the caller gives its descriptor."""
    fd = safedir.open_target(folder) if folder_fd is None else os.dup(folder_fd)
    try:
        return _write_result_at(fd, folder, job, events)
    finally:
        os.close(fd)


def _write_result_at(fd: int, folder: Path, job: Job, events: Sequence[JobEvent]) -> Path:
    data = (json.dumps(result_document(job, events), indent=2) + "\n").encode()
    for n in range(1, 10_000):
        name = result_name(job.document, n)
        if "/" in name or name in (".", ".."):
            raise ResultRefused(f"unsafe result name for {job.document!r}")
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not _holds_job(fd, name, job.id):
                continue
        except FileNotFoundError:
            pass
        # A dot: readers skip it. Random and exclusive: nothing planted can be written through.
        # The job's tag after the random part: a write repeated after a crash removes the old one.
        tail = f".{hashlib.sha256(job.id.encode()).hexdigest()[:20]}.result.json.tmp"
        for stale in os.listdir(fd):
            if stale.startswith(".") and stale.endswith(tail):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stale, dir_fd=fd)          # the entry only: a link is never followed
        tmp, out = safedir.create_exclusive(fd, tail)
        try:
            safedir.write_all(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        crashpoints.hit("sidecar.temp_written")
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
        return folder / name
    raise OSError(f"no free result name for {job.document} in {folder}")


def move_original(job: Job) -> Path | None:
    """Move what the claim still holds to done/ or failed/; None when nothing was left to move.
    By descriptor from the checked working area (:mod:`faxbridge.ingress.folder.safedir`); a refused
    ``done``/``failed`` keeps the original in ``.faxbridge/kept`` instead; a refused working area
    is left alone (nothing in it is touched)."""
    origin = origin_of(job)
    watch = origin.watch
    try:
        area = safedir.open_area(watch)
    except FileNotFoundError:
        return None
    except safedir.UnsafeFolder as exc:
        log.error("sidecar.area_refused", job_id=job.id, reason=exc.reason, note="the original is not moved")
        return None
    try:
        try:
            claim = safedir.open_child(area, origin.claim, watch / claims.AREA)
        except FileNotFoundError:
            return None
        try:
            moved = _move_out(job, origin, area, claim)
        finally:
            os.close(claim)
        shutil.rmtree(origin.claim, dir_fd=area, ignore_errors=True)
        os.fsync(area)
        return moved
    finally:
        os.close(area)


def _move_out(job: Job, origin: FolderOrigin, area: int, claim: int) -> Path | None:
    document, controls = claims.claim_files(safedir.fd_path(claim))
    target, where = _target(job, origin.target(job.state), area, origin.watch)
    try:
        moved: Path | None = None
        if document is not None:
            moved = where / _move_one(claim, document, target, document.name)
        base = stem(moved.name) if moved is not None else stem(origin.file.name)
        for control in controls:
            suffix = control.name[len(stem(control.name)):]
            _move_one(claim, control, target, base + suffix)
        return moved
    finally:
        os.close(target)


def _move_one(claim: int, rel: PurePosixPath, target: int, name: str) -> str:
    folder = safedir.open_path(claim, rel.parent, Path(str(rel.parent)))
    try:
        return claims.move_no_clobber(folder, rel.name, target, name)
    finally:
        os.close(folder)


def _target(job: Job, want: Path, area: int, watch: Path) -> tuple[int, Path]:
    """(descriptor, path) of the folder a job's original or result goes to: ``want``, or
    ``.faxbridge/kept`` when ``want`` is refused (a link, not ours)."""
    try:
        return safedir.open_target(want), want
    except safedir.UnsafeFolder as exc:
        kept = watch / claims.AREA / safedir.KEPT
        log.error("sidecar.folder_refused", job_id=job.id, folder=str(want), reason=exc.reason, kept_in=str(kept))
        return safedir.open_kept(area, kept), kept


def _write_somewhere_safe(job: Job, origin: FolderOrigin, events: Sequence[JobEvent]) -> Path:
    results = origin.results
    try:
        return write_result(results, job, events)
    except safedir.UnsafeFolder as exc:
        watch = origin.watch
        kept = watch / claims.AREA / safedir.KEPT
        log.error("sidecar.folder_refused", job_id=job.id, folder=str(results), reason=exc.reason, kept_in=str(kept))
        area = safedir.open_area(watch)
        try:
            fd = safedir.open_kept(area, kept)
        finally:
            os.close(area)
        try:
            return write_result(kept, job, events, folder_fd=fd)
        finally:
            os.close(fd)


def deliver(job: Job, events: Sequence[JobEvent]) -> tuple[Path | None, Path]:
    """The original moved, then the result written: (where the original went, or None when it had
    gone already; the result file). Blocking file work: called off the event loop. Raises
    :class:`ResultRefused` (it can never be written) or ``OSError`` (try again later)."""
    origin = origin_of(job)
    moved = move_original(job)
    return moved, _write_somewhere_safe(job, origin, events)
