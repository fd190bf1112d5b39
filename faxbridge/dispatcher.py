"""The submit loop: claim due jobs, call the provider, record what happened.

- At most ``max_in_flight`` jobs are submitting or submitted at once, counted by the store in the
  claiming transaction (across every daemon on a shared store).
- Claims are leases of ``lease_s`` (``store.lease``). While a job is worked on, a heartbeat
  (:meth:`Dispatcher._heartbeat`, every ``lease_s / 3``) renews its lease, so a slow provider call
  of a live daemon is never taken over; a daemon that dies stops renewing, and another daemon
  takes its jobs over once their leases run out: a queued one is claimed again, one caught in
  ``submitting`` is found abandoned, held and reconciled with the provider (outcome unknown),
  never sent again blindly: the invariant SQLite's start-up recovery keeps, across daemons.
- A job is committed as ``submitting`` *before* the provider call, so a crash during the
  call leaves a trace; the next start holds it for reconciliation instead of resending.
- Transient errors go back to ``queued`` with capped, jittered backoff (``states.backoff``);
  an error after which the request may have reached the provider (a read timeout) holds the
  job, and :meth:`Dispatcher._reconcile` asks the provider for its record before anything
  is sent again.
- One job never stops the others: an unexpected error while working on a job (a bug in a
  provider adapter, a raw database error) holds that job for reconciliation like a cut-off
  submission (``job.outcome_unknown``, then the usual back-off and ``submit_retries``), and a
  row that cannot even be read is skipped by the store (``store.bad_row``): it stays leased for
  ``lease_s`` while every other job goes on.
- Every store call is awaited (:class:`faxbridge.store.JobStore`): a commit waiting on the
  write lock never holds up the event loop.
  An error outside any one job ends :meth:`Dispatcher.run`; the daemon's supervisor restarts it.
- An account problem (bad credentials, an inactive account, Openfax ``InvalidMissingValue``)
  concerns every fax: sending is *paused* (no job is claimed) for ``PAUSE_S`` at first, doubling
  up to ``PAUSE_MAX_S``, with a ``provider.account_problem`` error logged each time and
  ``account_problem`` set (a metric); the job waits ``queued`` saying why. The first fax the
  provider takes again ends the pause (``provider.account_ok``).
- Several providers (contract section 14): the dispatcher is handed a
  :class:`~faxbridge.providers.router.ProviderSet` (or one adapter, which becomes a set of one).
  Each new submission goes where :meth:`ProviderSet.choose` says (the route, or a fallback while
  the routed provider's circuit is open), and the job records that provider *before* the call
  (``Claimed``); the call's verdict goes back to that provider's circuit. A job held for
  reconciliation is asked about at the provider it records, never another one.
- ``run_until_idle`` drains the due work and returns: tests call it instead of sleeping.
- Per step, only what changes per step: abandoned submissions (``JobStore.abandoned``, which reads
  every job in flight) are looked for after one of our calls ended in an error, and otherwise
  once every ``IDLE_POLL_S``; a job just read from the store is handed to ``advance`` (``job=``),
  which then does not read it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from faxbridge import crashpoints
from faxbridge.clock import Clock
from faxbridge.errors import (
    AccountError,
    ProviderError,
    StoreError,
    TransientProviderError,
)
from faxbridge.loops import nap
from faxbridge.models import Job, JobState, SubmissionLookup, SubmitRequest
from faxbridge.providers.base import Provider
from faxbridge.providers.router import ProviderSet
from faxbridge.states import (
    Accepted,
    Claimed,
    FailureKind,
    Ignore,
    Outcome,
    Policy,
    Reconciled,
    Recovered,
    SubmitFailed,
)
from faxbridge.store import JobStore, UnreadableJob
from faxbridge.workflow import advance

log = structlog.get_logger("faxbridge.dispatcher")

PAUSE_S = 60.0           # sending paused this long after an account problem, at first
PAUSE_MAX_S = 900.0      # ... doubling up to this
LEASE_S = 30.0           # a claim's lease when none is given (store.lease's default); renewed while worked on
IDLE_POLL_S = 1.0        # jobs enqueued by another process (faxbridge send) are seen this fast


def pdf_filename(document: str) -> str:
    """A safe ASCII file name ending in .pdf for the provider's multipart part."""
    stem = document.rsplit("/", 1)[-1].rsplit(".", 1)[0] if document else "fax"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "fax"
    return stem[:60] + ".pdf"


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        provider: Provider | ProviderSet,
        clock: Clock,
        policy: Policy,
        *,
        max_in_flight: int,
        owner: str,
        per_destination: int = 0,
        callback_url: Callable[[Job], str | None] = lambda job: None,
        pause_s: float = PAUSE_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.providers = provider if isinstance(provider, ProviderSet) else ProviderSet.single(provider,
                                                                                             clock.monotonic)
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.per_destination = per_destination    # limits.per_destination (0: no limit)
        self._full = False                        # the last round found max_in_flight reached
        self.owner = owner
        self.lease_s = lease_s                    # store.lease: claims run out after this unless renewed
        self.callback_url = callback_url
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: set[str] = set()
        self._released: set[str] = set()    # working jobs whose lease ended with their last change
        self._reconcile_lock = asyncio.Lock()
        self.account_problem: str | None = None      # why sending is paused (the provider's words)
        self.paused_until: datetime | None = None
        self._pause_first = self._pause_s = pause_s
        # Abandoned submissions are looked for when one of our calls ended in an error (the only way
        # a running dispatcher leaves one), and otherwise at most every IDLE_POLL_S of loop time.
        self._suspect_abandoned = True
        self._abandoned_next = 0.0

    @property
    def provider(self) -> Provider:
        """``provider.kind``'s adapter; setting one makes it the only provider (no routes, no fallback)."""
        return self.providers.primary

    @provider.setter
    def provider(self, provider: Provider) -> None:
        self.providers = ProviderSet.single(provider, self.clock.monotonic)

    def wake(self) -> None:
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._tasks)

    # ---- one round ------------------------------------------------------------------------

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    def _pause(self, reason: str) -> float:
        """An account problem: pause sending; returns how long (the job waits that long)."""
        pause = self._pause_s
        self._pause_s = min(PAUSE_MAX_S, pause * 2)
        self.account_problem = reason
        self.paused_until = self.clock.now() + timedelta(seconds=pause)
        return pause

    def _resume(self) -> None:
        if self.account_problem is not None:
            log.info("provider.account_ok", provider=self.provider.name, was=self.account_problem)
        self.account_problem = self.paused_until = None
        self._pause_s = self._pause_first

    async def step(self) -> int:
        """Start work on every due job there is room for. Returns how many were started."""
        now = self.clock.now()
        started = 0
        if self.paused(now):
            return 0
        await self._abandoned(now)
        for job in await self.store.claim_due(self.owner, now, 100, self.lease_s, reconcile=True):
            started += self._start(job)
        room = self.max_in_flight - await self.store.in_flight()
        self._full = room <= 0
        # a row that does not decode is left leased by the store (it costs only itself); the store
        # counts max_in_flight again in the claiming transaction (other daemons claim meanwhile)
        for job in await self.store.claim_due(self.owner, now, room, self.lease_s, reconcile=False,
                                              per_destination=self.per_destination,
                                              max_in_flight=self.max_in_flight):
            started += self._start(job)
        return started

    async def renew_leases(self) -> None:
        """Renew the leases of the jobs this dispatcher works on (the heartbeat's one beat)."""
        working = set(self._working)
        if not working:
            return
        kept = await self.store.renew(self.owner, working, self.clock.now(), self.lease_s)
        for job_id in sorted(working - kept):
            if job_id in self._working:     # (not finished meanwhile): another daemon took it over
                log.warning("dispatcher.lease_lost", job_id=job_id, lease_s=self.lease_s)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Every ``lease_s / 3``; after ``stop``, on while calls in progress finish (the drain)."""
        while not stop.is_set() or self._tasks:
            if stop.is_set():
                await asyncio.sleep(self.lease_s / 3)
            else:
                await nap(self.lease_s / 3, stop)
            try:
                await self.renew_leases()
            except StoreError as exc:       # tried again at the next beat (the lease has two more)
                log.error("dispatcher.renew_failed", error=str(exc))
            except Exception as exc:        # a bug of ours: logged, and the heartbeat goes on
                log.error("dispatcher.renew_failed", error=repr(exc), exc_info=exc)

    async def _abandoned(self, now: datetime) -> None:
        """Hold our ``submitting`` jobs that no call is working on any more (a store failure after
        the provider call left them so). Not every step: the query reads every job in flight."""
        loop_now = asyncio.get_running_loop().time()
        if not self._suspect_abandoned and loop_now < self._abandoned_next:
            return
        self._suspect_abandoned = False
        try:
            for job in await self.store.abandoned(now, self.owner):
                if job.id not in self._working:     # held, then reconciled like a submission a crash cut off
                    await self._hold_abandoned(job)
        except BaseException:
            self._suspect_abandoned = True          # looked for again at the next step
            raise
        self._abandoned_next = loop_now + IDLE_POLL_S

    async def _hold_abandoned(self, job: Job) -> None:
        log.warning("dispatcher.abandoned_submission", job_id=job.id)
        try:
            await advance(self.store, job.id, Recovered("after the job store failed during its submission"),
                          self.clock, self.policy, job=job)
            await self.store.release(job.id, self.owner)
        except UnreadableJob as exc:            # its row stopped decoding: this job only
            log.error("dispatcher.job_error", job_id=job.id, error=str(exc))
        except StoreError:
            raise                               # the store as a whole: the round is retried
        except Exception as exc:                # this job only: the next round tries it again
            self._suspect_abandoned = True
            log.error("dispatcher.job_error", job_id=job.id, error=repr(exc), exc_info=exc)

    def _start(self, job: Job) -> int:
        if job.id in self._working:
            return 0
        self._working.add(job.id)
        task = asyncio.create_task(self._work(job), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 1

    async def _work(self, job: Job) -> None:
        try:
            if job.state is JobState.SUBMITTING:
                await self._reconcile(job)
            else:
                await self._submit(job)
        except StoreError as exc:
            # The job stays as the store has it; its lease runs out and it is picked up again (or,
            # left in submitting, the next step finds it abandoned).
            self._suspect_abandoned = True
            log.error("dispatcher.store_error", job_id=job.id, error=str(exc))
        except Exception as exc:
            # A bug of ours. If the provider call may have gone out, hold the job for
            # reconciliation rather than leave it stuck or send it again.
            self._suspect_abandoned = True
            log.exception("dispatcher.internal_error", job_id=job.id, error=repr(exc))
            with contextlib.suppress(Exception):
                await advance(self.store, job.id,
                              SubmitFailed(FailureKind.TRANSIENT, f"internal error: {exc!r}", maybe_sent=True),
                              self.clock, self.policy)
        finally:
            self._working.discard(job.id)
            if job.id in self._released:
                self._released.discard(job.id)
            else:
                with contextlib.suppress(StoreError):
                    await self.store.release(job.id, self.owner)
            self._wake.set()

    async def _submit(self, job: Job) -> None:
        choice = self.providers.choose(job.to)
        verdict: Callable[[str], None] = self.providers.released   # what the call says of the provider
        try:
            verdict = await self._submit_to(job, choice.provider, choice.routed)
        finally:
            verdict(choice.provider.name)

    async def _submit_to(self, job: Job, provider: Provider, routed: str) -> Callable[[str], None]:
        """Submit ``job`` to ``provider``; returns the circuit verdict on the provider."""
        job, decision = await advance(self.store, job.id, Claimed(provider.name), self.clock, self.policy, job=job)
        if isinstance(decision, Ignore):
            return self.providers.released
        if provider.name != routed:
            log.info("provider.failover", job_id=job.id, provider=provider.name, routed=routed)
        req = SubmitRequest(
            job_id=job.id,
            to=job.to,
            pdf=self.store.spool.document_path(job.id),
            filename=pdf_filename(job.document),
            pages=job.pages,
            paper=job.paper,
            options=job.options,
            callback_url=self.callback_url(job),
        )
        crashpoints.hit("dispatch.submitting")
        verdict: Callable[[str], None] = self.providers.succeeded   # it answered (took, refused, account)
        outcome: Outcome
        detail: dict[str, Any] | None = None
        try:
            receipt = await provider.submit(req)
        except TransientProviderError as exc:
            verdict = self.providers.failed
            outcome = SubmitFailed(FailureKind.TRANSIENT, exc.reason, exc.retry_after, exc.maybe_sent)
            log.warning("provider.submit_transient", job_id=job.id, provider=provider.name,
                        error=exc.reason, code=exc.code, maybe_sent=exc.maybe_sent)
        except AccountError as exc:
            pause = self._pause(exc.reason)
            outcome = SubmitFailed(FailureKind.ACCOUNT, exc.reason, retry_after=pause)
            log.error("provider.account_problem", job_id=job.id, provider=provider.name,
                      kind=exc.kind, error=exc.reason, paused_s=pause)
        except ProviderError as exc:
            outcome = SubmitFailed(FailureKind.REFUSED, exc.reason)
        else:
            self._resume()
            crashpoints.hit("dispatch.accepted")
            outcome, detail = Accepted(receipt.provider_id, receipt.callback_url), {"provider_id": receipt.provider_id}
        _, decision = await advance(self.store, job.id, outcome, self.clock, self.policy, detail, job=job,
                                    release=self.owner)
        if not isinstance(decision, Ignore):
            self._released.add(job.id)      # the lease ended with that change: no release of its own
        return verdict

    async def _reconcile(self, job: Job) -> None:
        # One at a time: two held jobs to the same number must not both adopt the same fax.
        async with self._reconcile_lock:
            await self._reconcile_one(job)

    async def _reconcile_one(self, job: Job) -> None:
        lookup = SubmissionLookup(
            job_id=job.id,
            to=job.to,
            pages=job.pages,
            since=job.submit_started_at or job.created_at,
            known_ids=await self.store.known_provider_ids(job.provider),
        )
        try:
            # the provider the job records: the one that may have the fax (never a fallback)
            provider_id = await self.providers.get(job.provider).find_submission(lookup)
        except ProviderError as exc:
            log.warning("provider.reconcile_failed", job_id=job.id, provider=job.provider, error=exc.reason)
            await self.store.defer(job.id, self.clock.now() + timedelta(seconds=self.policy.retry_initial * 5))
            return
        log.info("provider.reconcile_result", job_id=job.id, found=provider_id is not None,
                 provider_id=provider_id)
        await advance(self.store, job.id, Reconciled(provider_id), self.clock, self.policy, job=job)

    # ---- loops ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(stop), name="lease-heartbeat")
        try:
            await self._run(stop)
            await heartbeat
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            timeout = IDLE_POLL_S
            try:
                await self.step()
                due = await self.store.next_due(self.per_destination)
                if self._full and due is not None:
                    # no room: a job leaving the provider wakes us (or the idle poll), not a due time
                    due = max(due, self.clock.now() + timedelta(seconds=IDLE_POLL_S))
                if self.paused_until is not None and self.paused(self.clock.now()):
                    due = self.paused_until if due is None else max(due, self.paused_until)
                if due is not None:
                    timeout = min(timeout, max(0.0, (due - self.clock.now()).total_seconds()))
            except StoreError as exc:
                # e.g. a read-only file system: the due job stays due; try again after the idle
                # poll, not at once (that would log a line every 10 ms until the store is back)
                log.error("dispatcher.store_error", error=str(exc))
            self._wake.clear()
            await nap(max(timeout, 0.01), self._wake, stop)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for calls in progress; True when none is left."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return not pending

    async def run_until_idle(self, max_rounds: int = 10_000) -> None:
        """Submit everything due now, and wait for it; returns when nothing is due or running."""
        for _ in range(max_rounds):
            started = await self.step()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            elif not started:
                return
