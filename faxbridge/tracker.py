"""Following submitted faxes to their end: status updates in, state changes out.

Polling is the safety net that runs even when webhooks work: every ``poll_interval`` the
provider is asked about the faxes we wait on (in batches: the cost grows with the
provider's news, not with the number of jobs in flight). Webhooks (:mod:`faxbridge.web`) call
:meth:`Tracker.apply` with the same :class:`StatusUpdate` values. Whichever arrives first
finalizes the job; the state machine ignores the rest.

Poll cycles never overlap (a lock): the cursor a cycle stores is always the newest. On a store
shared by several daemons, :meth:`Tracker.run` polls only while this daemon leads the role
"poller" (:meth:`JobStore.lead`, one daemon at a time; another takes it over at its next interval
when that one dies); the cursor is in the store (``kv``), so whoever polls next reads on from it.
A webhook may reach any daemon: it is applied through the store's version check and the state
machine, so a repeat (or the poller's own news of the same fax) changes nothing.
:meth:`Tracker.refresh` asks for a cycle from a webhook handler (an Openfax postback is only
a hint, confirmed from the report): callers that arrive while a cycle runs share the next one,
so a burst of postbacks costs one or two cycles, not one each.

Each fax is handed to the provider with the time its submission *started*
(``submit_started_at``): a fax found again by reconciliation was created at the provider then,
not when we learned its id, and the provider's lists are filtered by creation time.

One tracker follows one provider (app.py starts one per configured provider, contract section
14): it asks only about the jobs that name its provider, and a fax id it hears of is looked up
among those jobs only (two providers may well use the same ids).

One update never stops the others: an unexpected error applying one status update (or sending
one cancel) is logged with the job and the cycle goes on. A provider or store failure fails the
cycle (tried again at the next interval); anything else ends :meth:`Tracker.run`, and the
daemon's supervisor restarts it with back-off (``/healthz`` names the tracker meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import structlog

from faxbridge.clock import Clock
from faxbridge.errors import JobNotFound, PermanentProviderError, ProviderError, StoreError
from faxbridge.loops import nap
from faxbridge.models import FaxOutcome, Job, PendingFax, StatusUpdate
from faxbridge.providers.base import Provider
from faxbridge.states import CancelFailed, Decision, Ignore, Policy, Status, Unknown
from faxbridge.store import JobStore, UnreadableJob
from faxbridge.workflow import advance

log = structlog.get_logger("faxbridge.tracker")

MAX_HINTS = 10_000           # hints kept at most (the oldest go first)


class Tracker:
    def __init__(self, store: JobStore, provider: Provider, clock: Clock, policy: Policy, *,
                 interval: float) -> None:
        self.store = store
        self.provider = provider
        self.clock = clock
        self.policy = policy
        self.interval = interval
        self._wake = asyncio.Event()
        self._cancel_sent: set[str] = set()
        self._lock = asyncio.Lock()
        self._started = 0            # cycles started (for refresh's coalescing)
        self.cycles = 0
        self.requests = 0
        self.last_requests = 0       # provider requests the last cycle cost
        self.last_pending = 0        # faxes the last cycle asked about
        self.last_cpu_s = 0.0        # process CPU seconds the last cycle used
        self.test_faxes = 0          # updates about faxes the provider marked is_test (warned once)
        self._hints: dict[str, StatusUpdate] = {}   # provider id -> a hinting webhook's final update

    @property
    def cursor_key(self) -> str:
        return f"poll_cursor:{self.provider.name}"

    def wake(self) -> None:
        self._wake.set()

    def hint(self, update: StatusUpdate) -> None:
        """A webhook that only hints at the end (an Openfax postback, confirmed from the report):
        kept so that a confirming report row without a reason (no ``LastStatus``) still says why."""
        if update.outcome.final:
            self._hints[update.provider_id] = update
            while len(self._hints) > MAX_HINTS:
                del self._hints[next(iter(self._hints))]

    def _with_hint(self, update: StatusUpdate) -> StatusUpdate:
        hint = self._hints.pop(update.provider_id, None) if update.outcome.final else None
        if (hint is not None and hint.outcome is update.outcome and update.status_code is None
                and hint.status_code is not None):
            return replace(update, reason=hint.reason, status_code=hint.status_code, retryable=hint.retryable)
        return update

    async def apply(self, update: StatusUpdate, *, known: Job | None = None) -> tuple[Job, Decision] | None:
        """Apply one status update (from a poll or a webhook). None when it matches no job.

        ``known``: the job as the caller just read it (a webhook found it to check the
        signature). When it is this provider's job for this very fax, it is the job the lookup by
        fax id would find, so it is not looked up again; a copy gone stale meanwhile is caught by
        the store's version check (``advance`` then reads it afresh)."""
        update = self._with_hint(update)
        if (known is not None and known.provider == self.provider.name and known.provider_id is not None
                and known.provider_id == update.provider_id):
            job: Job | None = known
        else:
            job = await self.store.by_provider_id(update.provider_id, self.provider.name)
        if job is not None and update.job_id and update.job_id != job.id:
            # The fax carries another job's tag: its id was given to a new fax (a provider that
            # lost its records, the simulator before it kept them); never adopt its outcome.
            log.warning("tracker.fax_of_another_job", provider_id=update.provider_id, job_id=job.id,
                        tagged=update.job_id)
            return None
        if job is None and update.job_id:
            try:
                job = await self.store.get(update.job_id)
            except JobNotFound:
                job = None
            if job is not None and job.provider != self.provider.name:
                log.warning("tracker.fax_of_another_provider", provider=self.provider.name, job_id=job.id,
                            job_provider=job.provider, provider_id=update.provider_id)
                return None
        if job is None:
            log.info("tracker.unknown_fax", provider=update.provider, provider_id=update.provider_id)
            return None
        if update.is_test:
            if not self.test_faxes:
                log.warning("provider.test_fax", provider=update.provider, job_id=job.id,
                            why="the provider marked a fax is_test: a test API key in production sends nothing")
            self.test_faxes += 1
        return await advance(self.store, job.id, Status(update), self.clock, self.policy,
                             {"provider_status": update.raw_status} if update.raw_status else None, job=job)

    async def _unknown(self, provider_id: str) -> int:
        """The provider says it has no record of this fax: hold the job, end it after the grace."""
        job = await self.store.by_provider_id(provider_id, self.provider.name)
        if job is None:
            return 0
        _, decision = await advance(self.store, job.id, Unknown(provider_id), self.clock, self.policy, job=job)
        return 0 if isinstance(decision, Ignore) else 1

    async def refresh(self) -> None:
        """Run a poll cycle that starts after this call (or share one that does)."""
        wanted = self._started + 1
        async with self._lock:
            if self._started >= wanted:
                return          # a cycle started after we asked, and has finished
            await self._poll_locked(hinted=True)

    async def poll_once(self) -> int:
        """One poll cycle. Returns the number of jobs whose state changed."""
        async with self._lock:
            return await self._poll_locked()

    async def _poll_locked(self, *, hinted: bool = False) -> int:
        """``hinted``: a cycle run to confirm webhooks' hints (:meth:`refresh`). It leaves a fax the
        report calls failed without saying why, and that no hint is in for yet, to its own postback
        (on its way, or lost: then the next cycle, which reads from the same cursor, ends it)."""
        self._started += 1
        await self._send_cancels()
        jobs = await self.store.submitted(self.provider.name)
        if not jobs:
            self.last_pending = self.last_requests = 0
            return 0
        pending = [
            PendingFax(job_id=j.id, provider_id=j.provider_id or "", to=j.to, pages=j.pages,
                       submitted_at=j.submit_started_at or j.submitted_at or j.created_at)
            for j in jobs
        ]
        cpu = time.process_time()
        result = await self.provider.poll(pending, await self.store.kv_get(self.cursor_key))
        self.cycles += 1
        self.requests += result.requests
        self.last_requests = result.requests
        self.last_pending = len(pending)
        changed = 0
        left = 0
        for update in result.updates:
            if (hinted and update.outcome is FaxOutcome.FAILED and update.status_code is None
                    and update.provider_id not in self._hints):
                left += 1
                continue
            try:
                applied = await self.apply(update)
            except UnreadableJob as exc:    # that job's row does not decode: this update only
                log.error("tracker.update_failed", provider_id=update.provider_id, job_id=update.job_id,
                          error=str(exc))
                continue
            except StoreError:
                raise                   # the store as a whole: this cycle (and its cursor) is retried
            except Exception as exc:    # this update only
                log.error("tracker.update_failed", provider_id=update.provider_id, job_id=update.job_id,
                          error=repr(exc), exc_info=exc)
                continue
            if applied is not None and not isinstance(applied[1], Ignore):
                changed += 1
        for provider_id in result.unknown:
            changed += await self._unknown(provider_id)
        # the cursor moves with the lead poller's cycles only: a cycle run on another daemon to
        # confirm a postback it received must not move it back under the poller's (several daemons)
        if result.cursor is not None and not left and (not hinted or await self.store.lead("poller")):
            await self.store.kv_set(self.cursor_key, result.cursor)
        self.last_cpu_s = time.process_time() - cpu
        log.debug("tracker.poll", pending=len(pending), updates=len(result.updates), changed=changed,
                  requests=result.requests)
        return changed

    async def _send_cancels(self) -> None:
        for job in await self.store.cancel_requested():
            if job.provider != self.provider.name or not job.provider_id or job.provider_id in self._cancel_sent:
                continue
            try:
                await self.provider.cancel(job.provider_id)
            except PermanentProviderError as exc:
                await advance(self.store, job.id, CancelFailed(exc.reason), self.clock, self.policy, job=job)
                continue
            except ProviderError as exc:
                log.warning("provider.cancel_failed", job_id=job.id, error=exc.reason)
                continue
            except Exception as exc:    # a bug for this one job: tried again next cycle, the rest go on
                log.error("provider.cancel_error", job_id=job.id, error=repr(exc), exc_info=exc)
                continue
            self._cancel_sent.add(job.provider_id)
            log.info("provider.cancel_sent", job_id=job.id, provider_id=job.provider_id)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.store.lead("poller"):
                    await self.poll_once()
            except ProviderError as exc:
                log.warning("tracker.poll_failed", provider=self.provider.name, error=exc.reason)
            except StoreError as exc:
                log.error("tracker.store_error", error=str(exc))
            self._wake.clear()
            await nap(self.interval, self._wake, stop)
