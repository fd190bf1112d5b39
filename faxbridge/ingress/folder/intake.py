"""Folder intake, the I/O shell: from a file in a watched folder to a committed job, exactly once.

One :class:`FolderIntake` per ``[[watch]]``, used from ONE thread (the watcher's worker thread,
with its own :class:`~faxbridge.store.Store` connection): it is told which paths changed, keeps
each file's stability with the injected clock (:mod:`faxbridge.ingress.folder.settle`), and on each
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

Then it is claimed (renamed into the processing area, :mod:`faxbridge.ingress.folder.claims`: the working
area ``.faxbridge`` is ours, 0700, checked at every use; see :mod:`faxbridge.ingress.folder.safedir`) and
only then read for faxing, through one descriptor opened without following links and checked with
fstat, copied into the store's staging folder (under ``state_dir``): the destination is chosen
(:mod:`faxbridge.ingress.folder.control`) and the document prepared from that copy; any input that cannot
be faxed becomes a ``rejected`` job through ``store.reject`` with its reason. Either way the job
owes a result file (outbox kind "sidecar"), written by :mod:`faxbridge.notify.sidecar`, which also
moves the original out of the processing area. Trouble on our side (disk full, database busy) leaves
the claim where it is; it is tried again later (and at every start-up, by
:meth:`FolderIntake.reconcile`).

A tick takes its due files as one round, so that a burst costs a few fsyncs per round rather than
per file: every file is checked and claimed (each document starts staging at once), then every
folder the claims touched is fsynced once, then rejections are committed and the round's staged
jobs are committed together in ONE transaction (``intake.commit_many``). No job is committed before
its claim is durable; a failed commit leaves the claims, tried again later. The pure content work
(:mod:`faxbridge.ingress.folder.content`: completeness checks, document copies) runs in the ``pool`` of
worker processes when there is one, in this thread otherwise.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import structlog

from faxbridge import crashpoints
from faxbridge.clock import Clock
from faxbridge.config import NumbersConfig, WatchConfig
from faxbridge.documents import DEFAULT_MAX_DECOMPRESSED
from faxbridge.errors import InputError, NumberError, StoreError
from faxbridge.ingress.folder import claimed, claims, safedir
from faxbridge.ingress.folder.content import incomplete, stage
from faxbridge.ingress.folder.control import (
    Control,
    choose_number,
    control_names,
    is_control,
    is_ignored,
    no_number_reason,
    relevant,
    stem,
)
from faxbridge.ingress.folder.results import FolderOrigin
from faxbridge.ingress.folder.settle import Due, SettleTracker, Signature
from faxbridge.ingress.folder.tree import walk
from faxbridge.intake import commit_many, destination
from faxbridge.models import FaxOptions, NewJob, PreparedDocument, Source
from faxbridge.store import DOC_NAME, Store, new_job_id

log = structlog.get_logger("faxbridge.folder")

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RETRY_S = 5.0
LOOK_BATCH = 500             # tracked files lstat'ed again per tick, in turn
MAX_TRIES = 5


def fair(due: list[Due], limit: int) -> list[Due]:
    """The files a round takes: all when they fit, else half from the oldest first seen and half
    from the newest, so that neither a flood dropped earlier starves a file dropped after it, nor
    a flood that keeps coming starves the files already waiting."""
    if len(due) <= limit:
        return due
    newest = limit // 2
    return due[:limit - newest] + due[len(due) - newest:]


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


@dataclass(frozen=True)
class _Pick:
    """A file chosen in a tick: to be claimed (and made a job, or rejected with ``reject``)."""
    rel: PurePosixPath
    controls: list[PurePosixPath]
    reject: str | None = None
    check: bool = False      # its content must be checked complete first


@dataclass(frozen=True)
class _Started:
    """A claim under way: rejected (``reject``), failed on our side (``error``), or its document
    being staged (``result`` waits for it)."""
    claim_id: str
    new: NewJob | None
    document: PurePosixPath | None
    reject: str | None = None
    error: BaseException | None = None
    job_id: str | None = None
    result: Callable[[], PreparedDocument | str | BaseException] | None = None


def _call(fn: Callable[..., T], args: tuple[Any, ...]) -> T | BaseException:
    try:
        return fn(*args)
    except Exception as exc:
        return exc


class FolderIntake:
    def __init__(self, watch: WatchConfig, store: Store, clock: Clock, numbers: NumbersConfig, *,
                 incomplete_after: float | None = None, pool: Executor | None = None,
                 max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> None:
        self.watch = watch
        self.root = watch.path
        self.area = claims.processing_dir(watch.path)
        self.store = store
        self.clock = clock
        self.numbers = numbers
        self.pool = pool             # content checks and document copies run here (None: in this thread)
        self.max_decompressed = max_decompressed      # limits.max_decompressed
        self.tracker = SettleTracker(watch.settle, incomplete_after or default_incomplete_after(watch.settle))
        self._retry_at: float | None = None
        self._tries: dict[str, int] = {}
        self.on_result: Callable[[str], None] = lambda result: None   # metrics: "accepted" | "rejected"
        self.on_folder: Callable[[Path], None] = lambda folder: None  # a folder a sweep visited
        self.on_swept: Callable[[set[Path]], None] = lambda folders: None   # every folder, after a full sweep
        self._deep: set[Path] = set()
        self._look_at = 0

    def retry_soon(self) -> None:
        """Something failed on our side: the processing area is reconciled again in a moment."""
        self._retry_at = self.clock.monotonic() + RETRY_S

    # ---- discovery ------------------------------------------------------------------------

    def prepare_folders(self) -> None:
        for folder in (self.root, self.watch.results, self.watch.done, self.watch.failed):
            folder.mkdir(parents=True, exist_ok=True)
        os.close(safedir.open_area(self.root, repair=True))     # made 0700, checked (claims.py)

    def sweep(self, under: Path | None = None) -> int:
        """Look at every file in the folder (or a subfolder just moved in). Returns files seen.
        Iterative and bounded (:func:`faxbridge.ingress.folder.tree.walk`): folders deeper than
        ``watch.max_depth`` are not entered, links are never followed, and a folder that cannot
        be listed is logged and skipped."""
        start = under or self.root
        rel = self._rel(start)
        if rel is None:
            return 0
        depth = len(rel.parts)
        max_depth = self.watch.max_depth if self.watch.recursive else 0
        if depth > max_depth:
            self._too_deep(start)
            return 0
        found: list[Path] = []
        folders: set[Path] = set()
        for folder in walk(start, max_depth, skip=is_ignored, on_deep=self._too_deep,
                           on_error=self._unlisted, start_depth=depth):
            folders.add(folder.path)
            self.on_folder(folder.path)
            found += [folder.path / f for f in folder.files]
        self.observe(found)
        if under is None:
            self.on_swept(folders)
        return len(found)

    def _too_deep(self, path: Path) -> None:
        if path not in self._deep and len(self._deep) < 1000:
            self._deep.add(path)
            log.warning("folder.too_deep", watch=str(self.root), folder=str(path),
                        max_depth=self.watch.max_depth, note="ignored: deeper than watch.max_depth")

    def _unlisted(self, path: Path, exc: OSError) -> None:
        if path != self.root and isinstance(exc, FileNotFoundError):
            return                                # removed meanwhile
        log.warning("folder.unlisted", watch=str(self.root), folder=str(path), error=str(exc))

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
            if rel is None or not relevant(rel, self.watch.recursive) or len(rel.parts) > self.watch.max_depth + 1:
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
        """Take the files that are due, as one round: every file is checked and claimed, the
        claims are made durable together, the documents staged, and the jobs committed in one
        transaction (:meth:`_finish_many`)."""
        self.observe(changed)
        now = self.clock.monotonic()
        for rel in self._to_look_at():
            self._look(rel, now)
        finished = 0
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            finished += self.reconcile()
        due = self.tracker.due(now)
        picks: list[_Pick] = []
        for item in fair(due, limit):
            pick = self._consider(item, now)
            if pick is not None:
                if not pick.check:
                    self._forget(pick)
                picks.append(pick)
        finished += self._take(picks)
        return TickResult(finished, len(due) > limit, self.tracker.next_due_in(self.clock.monotonic()))

    def _to_look_at(self) -> list[PurePosixPath]:
        """The tracked files to lstat again this tick (events may have been missed): all of them
        when there are few, else the next ``LOOK_BATCH`` in turn, so that a flood of files costs
        each tick a bounded amount. A file is lstat'ed again before it is taken anyway."""
        paths = self.tracker.paths()
        if len(paths) <= LOOK_BATCH:
            return paths
        start = self._look_at % len(paths)
        self._look_at = start + LOOK_BATCH
        return (paths[start:] + paths[:start])[:LOOK_BATCH]

    def _later(self, fn: Callable[..., T], *args: Any) -> Callable[[], T | BaseException]:
        """Start ``fn(*args)`` in the pool (at once, in this thread, without one); the returned
        function waits for its result, or the exception it raised."""
        if self.pool is not None:
            try:
                future = self.pool.submit(fn, *args)
            except (BrokenExecutor, RuntimeError) as exc:      # broken, or shut down at exit
                self._lose_pool(exc)
            else:
                def result() -> T | BaseException:
                    try:
                        return future.result()
                    except BrokenExecutor as exc:
                        self._lose_pool(exc)
                        return _call(fn, args)
                    except Exception as exc:
                        return exc
                return result
        value = _call(fn, args)
        return lambda: value

    def _lose_pool(self, exc: BaseException) -> None:
        if self.pool is not None:
            log.error("folder.pool_broken", watch=str(self.root), error=repr(exc))
            self.pool = None                      # from now on in this thread

    def _consider(self, due: Due, now: float) -> _Pick | None:
        rel = due.rel
        if rel not in self.tracker:
            return None                           # taken with its document earlier in this round
        if is_control(rel.name):
            if self._document_for(rel) is None and self.tracker.park(rel):
                log.info("folder.control_waiting", control=str(rel), watch=str(self.root))
            return None
        try:
            st = os.lstat(self.root / rel)
        except OSError:
            self.tracker.forget(rel)
            return None
        if stat.S_ISLNK(st.st_mode):
            return _Pick(rel, [], f"{rel.name} is a symbolic link; faxbridge takes only regular files")
        if not stat.S_ISREG(st.st_mode):
            return _Pick(rel, [], f"{rel.name} is not a regular file")
        if Signature(st.st_size, st.st_mtime_ns, st.st_ino) != self.tracker.signature(rel):
            self.tracker.see(rel, Signature(st.st_size, st.st_mtime_ns, st.st_ino), now)
            return None                           # changed since it was last looked at: settle again
        if st.st_size > self.watch.max_size:
            return _Pick(rel, [], f"{rel.name} is {_size_words(st.st_size)}; the limit is "
                                  f"{_size_words(self.watch.max_size)} (watch.max_size)")
        controls = [rel.parent / c for c in control_names(rel.name) if os.path.lexists(self.root / rel.parent / c)]
        if st.st_size == 0 and not controls and not due.expired:
            if self.tracker.wait(rel, f"{rel.name} is empty"):     # no content check needed to say so
                log.info("folder.waiting", file=str(rel), watch=str(self.root), reason=f"{rel.name} is empty")
            return None
        for control in controls:
            if not self.tracker.stable(control, now):
                self._look(control, now)          # a control file still being written: wait for it
                return None
        if not controls:
            if due.expired:
                return _Pick(rel, [], due.reason or f"{rel.name} is incomplete")
            return _Pick(rel, [], check=True)
        return _Pick(rel, controls)

    def _forget(self, pick: _Pick) -> None:
        for path in (pick.rel, *pick.controls):
            self.tracker.forget(path)

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

    def _take(self, picks: list[_Pick]) -> int:
        """Claim the picked files (those still being written wait), start staging each claim's
        document at once (in the pool, while the next file is claimed), make the claims durable
        (each folder fsynced once), then commit. No job is committed before its claim is durable."""
        checks = {p.rel: self._later(incomplete, self.root / p.rel, p.rel.name) for p in picks if p.check}
        taken: list[tuple[str, PurePosixPath]] = []
        started: list[_Started] = []
        for pick in picks:
            if pick.check:
                found = checks[pick.rel]()
                why = f"{pick.rel.name} cannot be read: {found}" if isinstance(found, BaseException) else found
                if why is not None:
                    if self.tracker.wait(pick.rel, why):
                        log.info("folder.waiting", file=str(pick.rel), watch=str(self.root), reason=why)
                    continue
                self._forget(pick)
            claim_id = new_job_id()
            try:
                if not claims.claim(self.root, claim_id, pick.rel, pick.controls, sync=False):
                    continue                      # renamed or removed meanwhile: its new name is seen anew
            except OSError as exc:
                log.error("folder.claim_failed", file=str(pick.rel), watch=str(self.root), error=str(exc))
                self._retry_at = self.clock.monotonic() + RETRY_S     # reconcile gives back a half claim
                for path in (pick.rel, *pick.controls):
                    self._look(path, self.clock.monotonic())          # and the files are looked at again
                continue
            taken.append((claim_id, pick.rel))
            started.append(self._start(claim_id, pick.reject))
        if not taken:
            return 0
        try:
            claims.sync_claims(self.root, taken)
        except OSError as exc:
            log.error("folder.claim_failed", files=len(taken), watch=str(self.root), error=str(exc))
            self._retry_at = self.clock.monotonic() + RETRY_S         # reconcile syncs and finishes them
            for item in started:
                if item.result is not None:
                    item.result()                 # wait for it: its staging folder is removed next
                if item.job_id is not None:
                    self.store.discard_stage(item.job_id)
                    self.store.discard_stage(item.job_id + ".in")
            return 0
        crashpoints.hit("folder.claimed")
        return self._complete(started)

    # ---- from a claim to a job ----------------------------------------------------------------

    def _finish_many(self, claim_ids: list[str]) -> int:
        """Make durable claims jobs. Returns claims finished (made jobs or rejected)."""
        return self._complete([self._start(claim_id, None) for claim_id in claim_ids])

    def _start(self, claim_id: str, reject: str | None) -> _Started:
        """Plan a claim and start staging its document; commits nothing. Whatever the claim
        holds, this returns: a claim our own code fails on is rejected (or, when not even that
        is possible, quarantined), never raised past the round."""
        try:
            new, document, reject = self._plan(claim_id, reject)
            if reject is not None:
                return _Started(claim_id, new, document, reject=reject)
            job_id = new_job_id()
            out = self.store.stage(job_id) / DOC_NAME
            try:
                copy = self._copy_claimed(claim_id, document, job_id)
            except InputError as exc:
                self.store.discard_stage(job_id)
                self.store.discard_stage(job_id + ".in")
                return _Started(claim_id, new, document, reject=exc.reason)
        except (StoreError, OSError) as exc:
            return _Started(claim_id, None, None, error=exc)
        except Exception as exc:
            return self._unexpected(claim_id, exc)
        result = self._later(stage, copy, document.name, out, self.numbers.max_pages, new.options.paper,
                             self.max_decompressed)
        return _Started(claim_id, new, document, job_id=job_id, result=result)

    def _unexpected(self, claim_id: str, exc: Exception) -> _Started:
        """Our own code failed on this claim: rejected with the error's kind, or quarantined."""
        log.error("folder.claim_unreadable", claim=claim_id, watch=str(self.root),
                  error=f"{type(exc).__name__}: {exc}"[:500], exc_info=exc)
        try:
            document, _controls = claims.list_claim(self.root, claim_id)
            if document is None:
                raise OSError(f"claim {claim_id} holds no document")
            base = NewJob(source=Source.FOLDER, to="", document=document.name,
                          meta=self._meta(claim_id, document), dedup_key=claims.dedup_key(claim_id))
        except Exception as again:
            self._quarantine(claim_id, f"{type(exc).__name__}: {exc}; then {type(again).__name__}: {again}")
            return _Started(claim_id, None, None)
        return _Started(claim_id, base, document,
                        reject=f"{document.name} could not be taken ({type(exc).__name__}); see the daemon's log")

    def _quarantine(self, claim_id: str, reason: str) -> None:
        """Move a claim nothing can be made of out of the processing area, with its reason."""
        try:
            where = claims.quarantine(self.root, claim_id, reason)
        except OSError as exc:
            log.error("folder.quarantine_failed", claim=claim_id, watch=str(self.root), error=str(exc))
            return
        self._tries.pop(claim_id, None)
        log.error("folder.claim_quarantined", claim=claim_id, watch=str(self.root), moved_to=str(where),
                  reason=reason[:500])

    def _complete(self, started: list[_Started]) -> int:
        """Rejections are committed one by one; the staged documents' jobs together, in ONE
        transaction. Returns claims finished."""
        finished = 0
        staged: list[tuple[_Started, PreparedDocument]] = []
        for item in started:
            outcome: PreparedDocument | str | BaseException | None = item.error or item.reject
            if item.result is not None:
                outcome = item.result()
            if item.job_id is not None:
                self.store.discard_stage(item.job_id + ".in")
            if isinstance(outcome, PreparedDocument):
                staged.append((item, outcome))
                continue
            if item.job_id is not None:
                self.store.discard_stage(item.job_id)
            try:
                if isinstance(outcome, str) and item.new is not None:
                    self._reject(item.claim_id, item.new, outcome)
                    self._tries.pop(item.claim_id, None)
                    finished += 1
                elif isinstance(outcome, (StoreError, OSError)):
                    self._failed(item.claim_id, outcome)
                elif isinstance(outcome, Exception):       # our bug on this document: it alone fails
                    found = self._unexpected(item.claim_id, outcome)
                    if found.reject is not None and found.new is not None:
                        self._reject(item.claim_id, found.new, found.reject)
                        finished += 1
                elif isinstance(outcome, BaseException):
                    raise outcome
            except (StoreError, OSError) as exc:
                self._failed(item.claim_id, exc)
        if not staged:
            return finished
        try:
            jobs = commit_many(self.store, self.clock, [(i.job_id or "", i.new, doc) for i, doc in staged
                                                        if i.new is not None])
        except (StoreError, OSError) as exc:
            for item, _ in staged:
                self._failed(item.claim_id, exc)
            return finished
        crashpoints.hit("folder.committed")
        for (item, _), job in zip(staged, jobs, strict=True):
            self._tries.pop(item.claim_id, None)
            self.on_result("accepted")
            log.info("folder.taken", job_id=job.id, claim=item.claim_id, file=str(item.document),
                     watch=str(self.root), to=job.to, pages=job.pages)
        return finished + len(staged)

    def _failed(self, claim_id: str, exc: BaseException) -> None:
        tries = self._tries[claim_id] = self._tries.get(claim_id, 0) + 1
        log.error("folder.intake_failed", claim=claim_id, watch=str(self.root), error=str(exc), tries=tries)
        self._retry_at = self.clock.monotonic() + RETRY_S

    def _meta(self, claim_id: str, rel: PurePosixPath) -> dict[str, dict[str, str]]:
        return FolderOrigin.taken(self.watch, claim_id, rel).meta()

    def _plan(self, claim_id: str, reject: str | None) -> tuple[NewJob, PurePosixPath, str | None]:
        """Everything about a claim but its document: (the job, the document, why it is rejected
        or None). Reads the claim; commits nothing."""
        document, controls = claims.list_claim(self.root, claim_id)
        if document is None:
            raise OSError(f"claim {claim_id} holds no document")
        meta = self._meta(claim_id, document)
        base = NewJob(source=Source.FOLDER, to="", document=document.name, meta=meta,
                      dedup_key=claims.dedup_key(claim_id))
        if reject is None and self._tries.get(claim_id, 0) >= MAX_TRIES:
            reject = f"{document.name} could not be read after {MAX_TRIES} tries; see the daemon's log"
        if reject is not None:
            return base, document, reject
        try:
            control = self._control(claim_id, controls)
            st = self._claimed_stat(claim_id, document)
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
        except InputError as exc:
            return base, document, exc.reason
        new = NewJob(source=Source.FOLDER, to=number.e164, document=document.name,
                     options=control.options() if control else FaxOptions(), meta=meta,
                     dedup_key=claims.dedup_key(claim_id))
        return new, document, None

    def _claimed_stat(self, claim_id: str, document: PurePosixPath) -> os.stat_result:
        return claimed.stat_of(self.root, claim_id, document)

    def _copy_claimed(self, claim_id: str, document: PurePosixPath, job_id: str) -> Path:
        copy = self.store.stage(job_id + ".in") / "document"
        claimed.copy_out(self.root, claim_id, document, copy, self.watch.max_size)
        return copy

    def _control(self, claim_id: str, controls: list[PurePosixPath]) -> Control | None:
        return claimed.control(self.root, claim_id, controls)

    def _reject(self, claim_id: str, new: NewJob, reason: str) -> None:
        self.store.reject(claim_id, new, reason, self.clock.now())
        self.on_result("rejected")
        log.warning("folder.rejected", job_id=claim_id, file=new.document, watch=str(self.root),
                    reason=reason)

    # ---- after a crash ------------------------------------------------------------------------

    def reconcile(self, batch: int = 100) -> int:
        """Settle every claim left in the processing area. Returns claims that became jobs now."""
        try:
            entries = sorted(os.listdir(self.area))
        except FileNotFoundError:
            return 0
        resumed: list[tuple[str, PurePosixPath]] = []
        for claim_id in entries:
            folder = self.area / claim_id
            if claim_id.startswith(".") or not folder.is_dir() or folder.is_symlink():
                continue
            if self.store.find_duplicate(claims.dedup_key(claim_id), EPOCH) is not None:
                continue                      # it has its job: the result writer finishes it
            try:
                document, controls = claims.list_claim(self.root, claim_id)
                if document is None:
                    returned = claims.give_back(self.root, claim_id) if controls else []
                    if not controls:
                        claims.remove_claim(self.root, claim_id)
                    log.info("folder.claim_undone", claim=claim_id, watch=str(self.root),
                             returned=[str(r) for r in returned])
                    continue
            except Exception as exc:                  # start-up goes on without this claim
                self._quarantine(claim_id, f"{type(exc).__name__}: {exc}")
                continue
            log.info("folder.claim_resumed", claim=claim_id, file=str(document), watch=str(self.root))
            resumed.append((claim_id, document))
        finished = 0
        for at in range(0, len(resumed), batch):
            round_ = resumed[at:at + batch]
            try:
                claims.sync_claims(self.root, round_)     # a claim left unsynced is made durable first
            except OSError as exc:
                log.error("folder.claim_failed", files=len(round_), watch=str(self.root), error=str(exc))
                self._retry_at = self.clock.monotonic() + RETRY_S
                continue
            finished += self._finish_many([claim_id for claim_id, _ in round_])
        return finished
