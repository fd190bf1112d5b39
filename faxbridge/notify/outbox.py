"""Delivering the outbox: one worker per kind of notification (reply mail, result file).

Outbox rows are written in the same transaction as a job's final state. A worker takes
due rows in order, calls its ``deliver`` function, and marks the row delivered only after
``deliver`` returned: delivery is at least once, and a restart never repeats a notification
that was marked (a mark that fails, the store having turned read-only, is retried alone: the
running worker does not deliver that row again). ``deliver`` raises :class:`NotifyRetry` for
trouble that may pass (the smarthost is down: retried with capped, jittered backoff, forever;
nothing is dropped: :func:`faxbridge.states.backoff`, the dispatcher's own) and
:class:`NotifyGiveUp` for a notification that can never be delivered (logged, marked
done with the error). A notifier failure never changes a job's state.

One row never stops the worker (contract section 9): any other exception while composing or
delivering a row (a bug, a stored sender no mail header can hold) gives that row up with the
error as its reason, and the worker goes on with the next row; a given-up row is marked done, so
a restart does not meet it again. The store records a give-up as a ``notify.given_up`` event in
the job's history, which ``faxbridge job ID`` shows. Store trouble is not a row's fault: the round
ends and is tried again; but a job whose row does not decode (:class:`UnreadableJob`) is this
row's trouble: it is retried later with back-off, like :class:`NotifyRetry` (nothing is dropped:
an operator may repair the row), and the other rows go on. Under all that the loop runs in a
:class:`faxbridge.loops.Supervisor`, which restarts it with back-off should it still raise;
``healthy()`` is False while it is down.

A kind this configuration never delivers (reply mail and receipts without ``notify.smarthost``:
``unsent`` gives the reason) is not composed at all: each due row is logged
``notify.<kind>_not_sent`` with the reason and marked done (never ``notify.delivered``: nothing
was sent; ``not_sent`` counts them), the round's marks committed together, without reading its
job (what deliver would have said for every row, at a store write a row instead of four calls).

On a store shared by several daemons, rows are leased to the daemon they were handed to; each
row's lease is renewed (:meth:`JobStore.outbox_keep`) just before it is delivered, and a row whose
lease ran out and went to another daemon is left to that one: each reply is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog

from faxbridge.clock import Clock
from faxbridge.errors import FaxbridgeError, JobNotFound, StoreError
from faxbridge.loops import OnRestart, Supervisor, nap
from faxbridge.models import Job, JobEvent
from faxbridge.states import Policy, backoff
from faxbridge.store import JobStore, OutboxItem, UnreadableJob

log = structlog.get_logger("faxbridge.notify")


class NotifyRetry(FaxbridgeError):
    """Delivery failed for now; try again later."""


class NotifyGiveUp(FaxbridgeError):
    """Delivery can never succeed (e.g. the recipient address is refused for good)."""


# What ``deliver`` returns: None when it delivered the notification, False when it handled the row
# without sending anything (no smarthost, a reply RFC 3834 forbids; it logged why): either way the
# row is marked done, but only a delivery is logged ``notify.delivered`` and counted in ``delivered``.
Deliver = Callable[[Job, Sequence[JobEvent], OutboxItem], Awaitable[bool | None]]


def printable(text: str) -> str:
    """An error text safe to store and log: control characters and lone surrogates (from the data
    that caused the error) escaped, so recording a give-up cannot fail on what it records."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else ascii(c)[1:-1] for c in text)


def retry_delay(item: OutboxItem, initial: float, maximum: float) -> float:
    """Seconds before the next try of a row that failed ``item.attempts`` times before: the
    dispatcher's capped backoff with its jitter (50-100% of ``initial * 2**attempts``, at most
    ``maximum``), spread by the row's id."""
    return backoff(Policy(retry_initial=initial, retry_max=maximum), item.attempts + 1, f"outbox:{item.id}")


class OutboxWorker:
    """A :class:`faxbridge.component.Component` that delivers one kind of outbox row."""

    def __init__(self, store: JobStore, clock: Clock, kind: str, deliver: Deliver, *, interval: float = 0.5,
                 retry_initial: float = 5.0, retry_max: float = 600.0,
                 on_restart: OnRestart | None = None, keep_every: float = 10.0, unsent: str | None = None) -> None:
        self.name = f"notify.{kind}"
        self.unsent = unsent            # why this kind is never delivered under this configuration (or None)
        self.keep_every = keep_every    # the row's lease renewed this often while it is delivered
        self.store = store
        self.clock = clock
        self.kind = kind
        self.deliver = deliver
        self.interval = interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        # Rows delivered whose mark failed (the store turned read-only, say): id -> (the error to
        # record, whether anything was sent). Retried as marks only, so a reply mail is not sent
        # again every round meanwhile.
        self._unmarked: dict[int, tuple[str | None, bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0
        self.not_sent = 0          # rows handled without sending (``deliver`` returned False, or ``unsent``)
        self.given_up = 0
        self.supervisor = Supervisor(self.name, self._run, self._stop, on_restart=on_restart)

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Deliver every due row of this kind. Returns how many were finished (delivered or given up)."""
        done = 0
        due = await self.store.outbox_due(self.clock.now(), [self.kind])
        if self.unsent is not None:
            return await self._not_sent(due, self.unsent)
        for item in due:
            if self._stop.is_set():
                break
            done += await self._one(item)
        return done

    async def _not_sent(self, due: Sequence[OutboxItem], why: str) -> int:
        """Rows never delivered under this configuration: each logged and marked done, the marks
        under way together (one transaction). A store error ends the round (the rows stay due)."""
        for item in due:
            log.info(f"notify.{self.kind}_not_sent", job_id=item.job_id, why=why)
        marked = await asyncio.gather(*(self._mark(item, None, sent=False) for item in due), return_exceptions=True)
        for outcome in marked:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(due)

    async def _delivering(self, job: Job, events: Sequence[JobEvent], item: OutboxItem) -> bool:
        """``deliver``, with the row's lease renewed every ``keep_every`` meanwhile (a slow smarthost
        must not let another daemon sharing the store take the row and send it too)."""
        keep = asyncio.create_task(self._keep_leased(item), name=f"{self.name}-lease")
        try:
            return await self.deliver(job, events, item) is not False
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep

    async def _keep_leased(self, item: OutboxItem) -> None:
        while True:
            await asyncio.sleep(self.keep_every)
            try:
                if not await self.store.outbox_keep(item.id, self.clock.now()):
                    log.warning("notify.lease_lost", kind=self.kind, job_id=item.job_id)
                    return
            except StoreError as exc:       # tried again at the next beat
                log.warning("notify.lease_renew_failed", kind=self.kind, job_id=item.job_id, error=str(exc))

    async def _one(self, item: OutboxItem) -> int:
        if item.id in self._unmarked:
            error, sent = self._unmarked[item.id]
            await self._mark(item, error, sent=sent)
            return 1
        if not await self.store.outbox_keep(item.id, self.clock.now()):
            # a shared store: its lease ran out while earlier rows went, and another daemon has it
            log.info("notify.taken_over", kind=self.kind, job_id=item.job_id)
            return 0
        try:
            job = await self.store.get(item.job_id)
            events = await self.store.events(item.job_id)
            sent = await self._delivering(job, events, item)
        except (NotifyRetry, UnreadableJob) as exc:
            delay = retry_delay(item, self.retry_initial, self.retry_max)
            log.warning("notify.retry", kind=self.kind, job_id=item.job_id, attempts=item.attempts + 1,
                        retry_in_s=delay, error=printable(str(exc)))
            await self.store.outbox_failed(item.id, printable(str(exc)), self.clock.now() + timedelta(seconds=delay))
            return 0
        except (NotifyGiveUp, JobNotFound) as exc:
            log.error("notify.undeliverable", kind=self.kind, job_id=item.job_id, error=printable(str(exc)))
            await self._mark(item, printable(f"undeliverable: {exc}"))
            return 1
        except StoreError:
            raise                       # not this row's fault: the round ends, the row stays due
        except Exception as exc:        # one row never stops the worker (see the module docstring)
            error = printable(f"{type(exc).__name__}: {exc}")
            log.error("notify.undeliverable", kind=self.kind, job_id=item.job_id,
                      error=f"internal error: {error}", exc_info=exc)
            await self._mark(item, f"undeliverable: internal error: {error}")
            return 1
        await self._mark(item, None, sent=sent)
        return 1

    async def _mark(self, item: OutboxItem, error: str | None, *, sent: bool = True) -> None:
        self._unmarked[item.id] = (error, sent)
        await self.store.outbox_delivered(item.id, self.clock.now(), error=error)
        del self._unmarked[item.id]
        if error is not None:
            self.given_up += 1
        elif not sent:
            self.not_sent += 1
        else:
            self.delivered += 1
            log.info("notify.delivered", kind=self.kind, job_id=item.job_id)

    async def _run(self) -> None:
        while not self._stop.is_set():
            closing = self._closing
            try:
                await self.run_once()
            except StoreError as exc:
                log.error("notify.store_error", kind=self.kind, error=str(exc))
            if closing:
                return
            self._wake.clear()
            await nap(self.interval, self._wake, self._stop)

    async def start(self) -> None:
        self._task = self.supervisor.start()

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self.supervisor.healthy()

    async def stop(self) -> None:
        """Notifications of jobs finishing during the drain still go out: nothing to stop yet."""

    async def close(self, timeout: float) -> None:
        """One last round for what became final during the drain, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=max(timeout, 0.1))
        except TimeoutError:
            log.warning("notify.stopped_mid_delivery", kind=self.kind)
            self._stop.set()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
