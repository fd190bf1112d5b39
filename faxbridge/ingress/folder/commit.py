"""Commit: durable claims made jobs, a round at a time.

For each claim, :meth:`Committer.start` plans the job (the number from the control file, the file
name or the subfolder, through the number policy; the control file's options) and copies the
claimed document out through one checked descriptor into the job's staging folder in the job
store's spool (as ``received/0-NAME``: the copy kept as received, for the console); then the
document's fax-ready copy is started on the ``pool`` (the worker engine,
:class:`Offload`: a ``concurrent.futures.Future`` per document, so a round's documents are staged
in parallel while the next file is claimed). :meth:`Committer.complete` waits for each future, then
commits: rejections one by one (``store.reject``: a final ``rejected`` job owing its result file),
the staged documents' jobs together in ONE transaction (``store.enqueue_many``). Any input that
cannot be faxed becomes a rejection with its reason; a claim our own code fails on is rejected
with the error's kind (or, when not even that is possible, quarantined), never raised past the
round.

Trouble on our side (disk full, database busy, a worker process lost) leaves the claim where it
is: counted (:data:`MAX_TRIES`, then it is rejected), and tried again after ``RETRY_S`` by the
intake's reconcile (:class:`~faxbridge.ingress.folder.claim.Retry`). A job store that does not
answer (:class:`~faxbridge.errors.StoreBusy`: a database restarting) is not counted against the
file: its claim waits, however long the outage, and goes once the store is back.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, replace
from datetime import UTC, tzinfo
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import structlog

from faxbridge import crashpoints
from faxbridge import options as fax_options
from faxbridge.clock import Clock
from faxbridge.config import NumbersConfig, WatchConfig
from faxbridge.documents import DEFAULT_MAX_DECOMPRESSED, OfficeSettings
from faxbridge.errors import InputError, NumberError, StoreBusy, StoreError
from faxbridge.ingress.folder import claims
from faxbridge.ingress.folder.bridge import LoopStore
from faxbridge.ingress.folder.claim import Claimer, Retry
from faxbridge.ingress.folder.claimed import size_words
from faxbridge.ingress.folder.content import stage_claimed
from faxbridge.ingress.folder.control import choose_number, no_number_reason
from faxbridge.ingress.folder.results import FolderOrigin
from faxbridge.intake import destination
from faxbridge.models import FaxOptions, Job, NewJob, PreparedDocument, Source
from faxbridge.store import Staged, new_job_id

log = structlog.get_logger("faxbridge.folder")

T = TypeVar("T")
MAX_TRIES = 5


@dataclass(frozen=True)
class Work(Generic[T]):
    """Pure work handed to the pool: its future, and what it was (to run it here if the pool breaks)."""
    future: Future[T]
    fn: Callable[..., T]
    args: tuple[Any, ...]


def _done(fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
    """``fn(*args)`` run now, in this thread, as a finished future."""
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


class Offload:
    """The content work of a round (completeness checks, document copies) on the ``pool`` of worker
    processes when there is one, in this thread otherwise; a broken pool is dropped, and its work
    done here from then on."""

    def __init__(self, pool: Executor | None, root: Path) -> None:
        self.pool = pool
        self.root = root

    def submit(self, fn: Callable[..., T], *args: Any) -> Work[T]:
        """Start ``fn(*args)`` in the pool (at once, in this thread, without one)."""
        if self.pool is not None:
            try:
                return Work(self.pool.submit(fn, *args), fn, args)
            except (BrokenExecutor, RuntimeError) as exc:      # broken, or shut down at exit
                self._lose_pool(exc)
        return Work(_done(fn, args), fn, args)

    def outcome(self, work: Work[T]) -> T | BaseException:
        """Wait for the work: its answer, or the exception it raised."""
        try:
            return work.future.result()
        except BrokenExecutor as exc:
            self._lose_pool(exc)
            return self.outcome(Work(_done(work.fn, work.args), work.fn, work.args))
        except Exception as exc:
            return exc

    def _lose_pool(self, exc: BaseException) -> None:
        if self.pool is not None:
            log.error("folder.pool_broken", watch=str(self.root), error=repr(exc))
            self.pool = None                      # from now on in this thread


@dataclass(frozen=True)
class Started:
    """A claim under way: rejected (``reject``), failed on our side (``error``), or its document
    being staged (``staging`` is its future)."""
    claim_id: str
    new: NewJob | None
    document: PurePosixPath | None
    reject: str | None = None
    error: BaseException | None = None
    job_id: str | None = None
    staging: Work[PreparedDocument | str] | None = None


class Committer:
    """From durable claims to committed jobs, for one ``[[watch]]`` (used from one thread)."""

    def __init__(self, watch: WatchConfig, store: LoopStore, clock: Clock, numbers: NumbersConfig,
                 claimer: Claimer, offload: Offload, retry: Retry, *,
                 max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, office: OfficeSettings | None = None,
                 zone: tzinfo = UTC) -> None:
        self.watch = watch
        self.office = office                          # documents.office: Office files converted (None: refused)
        self.zone = zone                              # time_zone: how a control file's local send_at is read
        self.root = watch.path
        self.store = store
        self.clock = clock
        self.numbers = numbers
        self.claimer = claimer
        self.offload = offload
        self.retry = retry
        self.max_decompressed = max_decompressed      # limits.max_decompressed
        self.on_result: Callable[[str], None] = lambda result: None   # metrics: "accepted" | "rejected"
        self._tries: dict[str, int] = {}
        claimer.on_quarantined = self.forget

    def forget(self, claim_id: str) -> None:
        self._tries.pop(claim_id, None)

    def finish(self, claim_ids: list[str]) -> int:
        """Make durable claims jobs. Returns claims finished (made jobs or rejected)."""
        return self.complete([self.start(claim_id, None) for claim_id in claim_ids])

    # ---- planning and staging -----------------------------------------------------------------

    def start(self, claim_id: str, reject: str | None) -> Started:
        """Plan a claim and start staging its document; commits nothing. Whatever the claim
        holds, this returns: a claim our own code fails on is rejected (or, when not even that
        is possible, quarantined), never raised past the round."""
        try:
            new, document, reject = self._plan(claim_id, reject)
            if reject is not None:
                return Started(claim_id, new, document, reject=reject)
            job_id = new_job_id()
        except (StoreError, OSError) as exc:
            return Started(claim_id, None, None, error=exc)
        except Exception as exc:
            return self._unexpected(claim_id, exc)
        staging = self.offload.submit(stage_claimed, self.store.spool, self.root, claim_id, document, job_id,
                                      self.watch.max_size, self.numbers.max_pages, new.options.paper,
                                      self.max_decompressed, self.office)
        return Started(claim_id, new, document, job_id=job_id, staging=staging)

    def discard(self, started: Sequence[Started]) -> None:
        """A round given up before its commit (its claims are not durable): wait for each staging
        under way (its folder is removed next), and remove what was staged."""
        for item in started:
            if item.staging is not None:
                self.offload.outcome(item.staging)
            if item.job_id is not None:
                self.store.spool.discard_stage(item.job_id)

    def _plan(self, claim_id: str, reject: str | None) -> tuple[NewJob, PurePosixPath, str | None]:
        """Everything about a claim but its document: (the job, the document, why it is rejected
        or None). Reads the claim; commits nothing."""
        document, controls = self.claimer.contents(claim_id)
        base = self._base(claim_id, document)
        if reject is None and self._tries.get(claim_id, 0) >= MAX_TRIES:
            reject = f"{document.name} could not be read after {MAX_TRIES} tries; see the daemon's log"
        if reject is not None:
            return base, document, reject
        try:
            control = self.claimer.control(claim_id, controls)
            st = self.claimer.stat(claim_id, document)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{document.name} is not a regular file")
            if st.st_size > self.watch.max_size:
                raise InputError(f"{document.name} is {size_words(st.st_size)}; the limit is "
                                 f"{size_words(self.watch.max_size)} (watch.max_size)")
            found = choose_number(document, control, self.watch.pattern, self.watch.recursive)
            if found is None:
                raise InputError(no_number_reason(document.name, office=self.office is not None
                                                  and self.office.enabled))
            written, origin = found
            try:
                number = destination(written, self.numbers)
            except NumberError as exc:
                raise InputError(f"{written} (from the {origin}): {exc.reason}") from exc
            options = control.options() if control else FaxOptions()
            if control is not None and control.send_at is not None:
                when = fax_options.send_at(f"{control.name}: send_at", control.send_at, zone=self.zone,
                                           now=self.clock.now())
                options = replace(options, send_at=when)
        except InputError as exc:
            return base, document, exc.reason
        new = NewJob(source=Source.FOLDER, to=number.e164, document=document.name,
                     options=options, meta=base.meta, dedup_key=base.dedup_key)
        return new, document, None

    def _base(self, claim_id: str, document: PurePosixPath) -> NewJob:
        """The job a claim makes before its number and options are known (what a rejection records)."""
        return NewJob(source=Source.FOLDER, to="", document=document.name,
                      meta=FolderOrigin.taken(self.watch, claim_id, document).meta(),
                      dedup_key=claims.dedup_key(claim_id))

    def _unexpected(self, claim_id: str, exc: Exception) -> Started:
        """Our own code failed on this claim: rejected with the error's kind, or quarantined."""
        log.error("folder.claim_unreadable", claim=claim_id, watch=str(self.root),
                  error=f"{type(exc).__name__}: {exc}"[:500], exc_info=exc)
        try:
            document, _controls = self.claimer.contents(claim_id)
            base = self._base(claim_id, document)
        except Exception as again:
            self.claimer.quarantine(claim_id, f"{type(exc).__name__}: {exc}; then {type(again).__name__}: {again}")
            return Started(claim_id, None, None)
        return Started(claim_id, base, document,
                       reject=f"{document.name} could not be taken ({type(exc).__name__}); see the daemon's log")

    # ---- committing -----------------------------------------------------------------------------

    def complete(self, started: Sequence[Started]) -> int:
        """Rejections are committed one by one; the staged documents' jobs together, in ONE
        transaction. Returns claims finished."""
        finished = 0
        staged: list[tuple[Started, NewJob, str, PreparedDocument]] = []
        for item in started:
            outcome: PreparedDocument | str | BaseException | None = item.error or item.reject
            if item.staging is not None:
                outcome = self.offload.outcome(item.staging)
            if isinstance(outcome, PreparedDocument) and item.new is not None and item.job_id is not None:
                staged.append((item, item.new, item.job_id, outcome))
                continue
            if item.job_id is not None:
                self.store.spool.discard_stage(item.job_id)
            try:
                if isinstance(outcome, str) and item.new is not None:
                    self._reject(item.claim_id, item.new, outcome)
                    self.forget(item.claim_id)
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
            jobs = self._commit([Staged(job_id, new, doc) for _, new, job_id, doc in staged])
        except (StoreError, OSError) as exc:
            for item, *_ in staged:
                self._failed(item.claim_id, exc)
            return finished
        crashpoints.hit("folder.committed")
        for (item, *_), job in zip(staged, jobs, strict=True):
            self.forget(item.claim_id)
            self.on_result("accepted")
            log.info("folder.taken", job_id=job.id, claim=item.claim_id, file=str(item.document),
                     watch=str(self.root), to=job.to, pages=job.pages)
        return finished + len(staged)

    def _commit(self, items: list[Staged]) -> list[Job]:
        """The round's staged jobs in ONE transaction of the job store (all or none). On failure
        every staging folder is removed."""
        try:
            jobs = self.store.enqueue_many(items, self.clock.now())
        except BaseException:
            for item in items:
                self.store.spool.discard_stage(item.job_id)
            raise
        for job in jobs:
            log.info("job.enqueued", job_id=job.id, source=job.source.value, to=job.to, pages=job.pages,
                     document=job.document)
        return jobs

    def _failed(self, claim_id: str, exc: BaseException) -> None:
        tries = self._tries.get(claim_id, 0) + (0 if isinstance(exc, StoreBusy) else 1)
        self._tries[claim_id] = tries
        log.error("folder.intake_failed", claim=claim_id, watch=str(self.root), error=str(exc), tries=tries)
        self.retry.soon()

    def _reject(self, claim_id: str, new: NewJob, reason: str) -> None:
        self.store.reject(claim_id, new, reason, self.clock.now())
        self.on_result("rejected")
        origin = FolderOrigin.of(new.meta)
        log.warning("folder.rejected", job_id=claim_id, file=str(origin.file) if origin else new.document,
                    watch=str(self.root), reason=reason)
