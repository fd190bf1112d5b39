"""Folder intake, the I/O shell: from a file in a watched folder to a committed job, exactly once.

One :class:`FolderIntake` per ``[[watch]]``, used from ONE thread (the watcher's worker thread,
with its own :class:`~faxbridge.store.Store` connection): it is told which paths changed, keeps
each file's stability with the injected clock (:mod:`faxbridge.ingress.settle`), and on each
``tick`` takes the files that are ready.

A file is ready when (in this order; the first that fails decides):

1. it is not a temporary or system name, nor a control file (those go with their document);
2. it is a regular file (a symbolic link is never followed: it is rejected, and the link itself,
   not its target, moves to ``failed``), no larger than ``watch.max_size``;
3. its size, mtime and inode have not changed for ``settle`` (and neither have its control files);
4. with a control file beside it, it is complete by declaration; without one, its content must
   be complete: a PDF parses to its trailer with every page, a TIFF's chain of pages and every
   image frame decode. Peeking at the content happens in place, read-only (a writer may still be
   appending by path); a file still incomplete after ``incomplete_after`` seconds unchanged is
   rejected with the reason it was waiting for.

Then it is claimed (renamed into the processing area, :mod:`faxbridge.ingress.claims`) and only
then read for faxing: the destination is chosen (:mod:`faxbridge.ingress.control`), the document
prepared and the job committed by ``intake.accept``; any input that cannot be faxed becomes a
``rejected`` job through ``store.reject`` with its reason. Either way the job owes a result file
(outbox kind "sidecar"), written by :mod:`faxbridge.notify.sidecar`, which also moves the original
out of the processing area. Trouble on our side (disk full, database busy) leaves the claim where
it is; it is tried again later (and at every start-up, by :meth:`FolderIntake.reconcile`).
"""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import structlog
from PIL import Image, ImageSequence

from faxbridge.clock import Clock
from faxbridge.config import NumbersConfig, WatchConfig
from faxbridge.documents import sniff
from faxbridge.documents._images import _tiff_pages as tiff_pages
from faxbridge.documents._pdf import count_pages, open_pdf, page_papers
from faxbridge.documents._sniff import HEAD_SIZE
from faxbridge.errors import DocumentError, InputError, NumberError, StoreError
from faxbridge.ingress import claims
from faxbridge.ingress.control import (
    Control,
    ControlError,
    choose_number,
    control_names,
    is_control,
    is_ignored,
    no_number_reason,
    parse_control,
    relevant,
    stem,
)
from faxbridge.ingress.settle import Due, SettleTracker, Signature
from faxbridge.intake import accept, destination
from faxbridge.models import FaxOptions, InputFile, NewJob, Source
from faxbridge.store import Store, new_job_id

log = structlog.get_logger("faxbridge.folder")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CONTROL_SIZE = 64 * 1024
RETRY_S = 5.0
MAX_TRIES = 5
_IMAGE_KINDS = {"tiff": "TIFF", "jpeg": "JPEG", "png": "PNG", "gif": "GIF"}


def default_incomplete_after(settle: float) -> float:
    """How long a file may sit unchanged but incomplete before it is rejected."""
    return max(5.0, 10.0 * settle)


@dataclass(frozen=True)
class TickResult:
    finished: int            # claims that became jobs (queued or rejected) in this tick
    more: bool               # files were left due: tick again at once
    next_in: float | None    # seconds until the next file falls due


def _size_words(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def incomplete(path: Path, name: str) -> str | None:
    """Why the file's content is not complete yet, or None. Read-only; never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"{name} cannot be read: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None                                   # refused when it is claimed
        head = fh.read(HEAD_SIZE)
        if not head:
            return f"{name} is empty"
        kind = sniff(head)
        fh.seek(0)
        if kind == "pdf":
            try:
                reader = open_pdf(fh, name=name)
                count_pages(reader, name=name)
                page_papers(reader, name=name)
            except DocumentError as exc:
                return exc.reason
        elif kind in _IMAGE_KINDS:
            return _image_incomplete(cast(BinaryIO, fh), name, kind)
    return None


def _image_incomplete(fh: BinaryIO, name: str, kind: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(fh, formats=[_IMAGE_KINDS[kind]]) as image:
                for frame in ImageSequence.Iterator(image):
                    frame.load()
            if kind == "tiff":
                fh.seek(0)
                tiff_pages(fh, name=name)                 # the chain of pages reads to its end
        except Image.DecompressionBombError:
            return None                                   # complete; refused when prepared
        except DocumentError as exc:
            return exc.reason
        except Exception as exc:  # Pillow raises many kinds for a file cut short; all mean "not yet"
            return f"{name} is an incomplete or damaged {_IMAGE_KINDS[kind]} image ({type(exc).__name__}: {exc})"
    return None


class FolderIntake:
    def __init__(self, watch: WatchConfig, store: Store, clock: Clock, numbers: NumbersConfig, *,
                 incomplete_after: float | None = None) -> None:
        self.watch = watch
        self.root = watch.path
        self.area = claims.processing_dir(watch.path)
        self.store = store
        self.clock = clock
        self.numbers = numbers
        self.tracker = SettleTracker(watch.settle, incomplete_after or default_incomplete_after(watch.settle))
        self._retry_at: float | None = None
        self._tries: dict[str, int] = {}
        self.on_result: Callable[[str], None] = lambda result: None   # metrics: "accepted" | "rejected"

    # ---- discovery ------------------------------------------------------------------------

    def prepare_folders(self) -> None:
        for folder in (self.root, self.area, self.watch.results, self.watch.done, self.watch.failed):
            folder.mkdir(parents=True, exist_ok=True)

    def sweep(self, under: Path | None = None) -> int:
        """Look at every file in the folder (or a subfolder just moved in). Returns files seen."""
        start = under or self.root
        found: list[Path] = []
        for root, dirs, files in os.walk(start, followlinks=False):
            found += [Path(root, f) for f in files]
            # os.walk lists a link to a folder among the folders: to us it is a file (and refused)
            found += [Path(root, d) for d in dirs if os.path.islink(os.path.join(root, d))]
            if not self.watch.recursive:
                break
            dirs[:] = [d for d in dirs if not is_ignored(d)]
        self.observe(found)
        return len(found)

    def _rel(self, path: Path) -> PurePosixPath | None:
        try:
            return PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return None

    def observe(self, paths: Iterable[Path]) -> None:
        """These paths may have changed: look at them now."""
        now = self.clock.monotonic()
        for path in paths:
            rel = self._rel(path)
            if rel is None or not relevant(rel, self.watch.recursive):
                continue
            self._look(rel, now)

    def _look(self, rel: PurePosixPath, now: float) -> None:
        path = self.root / rel
        try:
            st = os.lstat(path)
        except OSError:
            self.tracker.forget(rel)
            return
        if stat.S_ISDIR(st.st_mode):
            if self.watch.recursive:
                self.sweep(path)
            return
        self.tracker.see(rel, Signature(st.st_size, st.st_mtime_ns, st.st_ino), now)

    # ---- the tick ---------------------------------------------------------------------------

    def tick(self, changed: Iterable[Path] = (), limit: int = 100) -> TickResult:
        self.observe(changed)
        now = self.clock.monotonic()
        for rel in self.tracker.paths():
            self._look(rel, now)
        finished = 0
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            finished += self.reconcile()
        due = self.tracker.due(now)
        for item in due[:limit]:
            finished += self._consider(item, now)
        return TickResult(finished, len(due) > limit, self.tracker.next_due_in(self.clock.monotonic()))

    def _consider(self, due: Due, now: float) -> int:
        rel = due.rel
        if rel not in self.tracker:
            return 0                              # taken with its document earlier in this round
        if is_control(rel.name):
            if self._document_for(rel) is None and self.tracker.park(rel):
                log.info("folder.control_waiting", control=str(rel), watch=str(self.root))
            return 0
        try:
            st = os.lstat(self.root / rel)
        except OSError:
            self.tracker.forget(rel)
            return 0
        if stat.S_ISLNK(st.st_mode):
            return self._take(rel, [], f"{rel.name} is a symbolic link; faxbridge takes only regular files")
        if not stat.S_ISREG(st.st_mode):
            return self._take(rel, [], f"{rel.name} is not a regular file")
        if st.st_size > self.watch.max_size:
            return self._take(rel, [], f"{rel.name} is {_size_words(st.st_size)}; the limit is "
                                       f"{_size_words(self.watch.max_size)} (watch.max_size)")
        controls = [rel.parent / c for c in control_names(rel.name) if os.path.lexists(self.root / rel.parent / c)]
        for control in controls:
            if not self.tracker.stable(control, now):
                self._look(control, now)          # a control file still being written: wait for it
                return 0
        if not controls:
            if due.expired:
                return self._take(rel, [], due.reason or f"{rel.name} is incomplete")
            why = incomplete(self.root / rel, rel.name)
            if why is not None:
                if self.tracker.wait(rel, why):
                    log.info("folder.waiting", file=str(rel), watch=str(self.root), reason=why)
                return 0
        return self._take(rel, controls)

    def _document_for(self, control: PurePosixPath) -> PurePosixPath | None:
        folder = self.root / control.parent
        want = stem(control.name)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            if name != control.name and not is_control(name) and stem(name) == want \
                    and relevant(control.parent / name, self.watch.recursive):
                return control.parent / name
        return None

    def _take(self, rel: PurePosixPath, controls: list[PurePosixPath], reject: str | None = None) -> int:
        claim_id = new_job_id()
        for path in (rel, *controls):
            self.tracker.forget(path)
        try:
            if not claims.claim(self.root, claim_id, rel, controls):
                return 0                          # renamed or removed meanwhile: its new name is seen anew
        except OSError as exc:
            log.error("folder.claim_failed", file=str(rel), watch=str(self.root), error=str(exc))
            self._retry_at = self.clock.monotonic() + RETRY_S     # reconcile gives back a half claim
            for path in (rel, *controls):
                self._look(path, self.clock.monotonic())          # and the files are looked at again
            return 0
        return self._finish(claim_id, reject)

    # ---- from a claim to a job ----------------------------------------------------------------

    def _finish(self, claim_id: str, reject: str | None = None) -> int:
        try:
            self._process(claim_id, reject)
            self._tries.pop(claim_id, None)
            return 1
        except (StoreError, OSError) as exc:
            tries = self._tries[claim_id] = self._tries.get(claim_id, 0) + 1
            log.error("folder.intake_failed", claim=claim_id, watch=str(self.root), error=str(exc), tries=tries)
            self._retry_at = self.clock.monotonic() + RETRY_S
            return 0

    def _meta(self, claim_id: str, rel: PurePosixPath) -> dict[str, str]:
        w = self.watch
        return {"watch": str(self.root), "claim": claim_id, "file": str(rel), "results": str(w.results),
                "done": str(w.done), "failed": str(w.failed)}

    def _process(self, claim_id: str, reject: str | None) -> None:
        folder = self.area / claim_id
        document, controls = claims.claim_files(folder)
        if document is None:
            raise OSError(f"claim {claim_id} holds no document")
        meta = self._meta(claim_id, document)
        base = NewJob(source=Source.FOLDER, to="", document=document.name, meta=meta,
                      dedup_key=claims.dedup_key(claim_id))
        if reject is None and self._tries.get(claim_id, 0) >= MAX_TRIES:
            reject = f"{document.name} could not be read after {MAX_TRIES} tries; see the daemon's log"
        if reject is not None:
            self._reject(claim_id, base, reject)
            return
        path = folder / document
        try:
            control = self._control(folder, controls)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{document.name} is not a regular file")
            if st.st_size > self.watch.max_size:
                raise InputError(f"{document.name} is {_size_words(st.st_size)}; the limit is "
                                 f"{_size_words(self.watch.max_size)} (watch.max_size)")
            found = choose_number(document, control, self.watch.pattern, self.watch.recursive)
            if found is None:
                raise InputError(no_number_reason(document.name))
            written, origin = found
            try:
                number = destination(written, self.numbers)
            except NumberError as exc:
                raise InputError(f"{written} (from the {origin}): {exc.reason}") from exc
            base = NewJob(source=Source.FOLDER, to=number.e164, document=document.name,
                          options=control.options() if control else FaxOptions(), meta=meta,
                          dedup_key=claims.dedup_key(claim_id))
            job = accept(self.store, self.clock, base, [InputFile(document.name, path)],
                         max_pages=self.numbers.max_pages)
        except InputError as exc:
            self._reject(claim_id, base, exc.reason)
            return
        self.on_result("accepted")
        log.info("folder.taken", job_id=job.id, claim=claim_id, file=str(document), watch=str(self.root),
                 to=job.to, pages=job.pages)

    def _control(self, folder: Path, controls: list[PurePosixPath]) -> Control | None:
        """The first control file by precedence (.json before .fax), parsed."""
        for rel in sorted(controls, key=lambda c: not c.name.lower().endswith(".json")):
            try:
                fd = os.open(folder / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                raise ControlError(f"{rel.name} cannot be read ({exc.strerror or exc}); "
                                   "a control file must be a regular file") from exc
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ControlError(f"{rel.name} is not a regular file")
                data = fh.read(MAX_CONTROL_SIZE + 1)
            if len(data) > MAX_CONTROL_SIZE:
                raise ControlError(f"{rel.name} is larger than {MAX_CONTROL_SIZE // 1024} KB")
            return parse_control(rel.name, data)
        return None

    def _reject(self, claim_id: str, new: NewJob, reason: str) -> None:
        self.store.reject(claim_id, new, reason, self.clock.now())
        self.on_result("rejected")
        log.warning("folder.rejected", job_id=claim_id, file=new.meta.get("file"), watch=str(self.root),
                    reason=reason)

    # ---- after a crash ------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Settle every claim left in the processing area. Returns claims that became jobs now."""
        finished = 0
        try:
            entries = sorted(os.listdir(self.area))
        except FileNotFoundError:
            return 0
        for claim_id in entries:
            folder = self.area / claim_id
            if claim_id.startswith(".") or not folder.is_dir() or folder.is_symlink():
                continue
            if self.store.find_duplicate(claims.dedup_key(claim_id), EPOCH) is not None:
                continue                      # it has its job: the result writer finishes it
            document, controls = claims.claim_files(folder)
            if document is None:
                returned = claims.give_back(self.root, folder) if controls else []
                if not controls:
                    shutil.rmtree(folder, ignore_errors=True)
                log.info("folder.claim_undone", claim=claim_id, watch=str(self.root),
                         returned=[str(r) for r in returned])
                continue
            log.info("folder.claim_resumed", claim=claim_id, file=str(document), watch=str(self.root))
            finished += self._finish(claim_id)
        return finished
