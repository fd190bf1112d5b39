"""Watching the provider account balance: a metric, and a warning when it runs low.

A :class:`faxbridge.component.Component`. The balance is read a minute after start (not at once:
a start-up storm of requests helps nobody, and a provider being faulted in a test should see
only the requests the test expects) and then every ``interval``. Below
``provider.low_balance`` (0: never) each reading logs ``provider.balance_low`` and sets
``faxbridge_provider_balance_low`` to 1. A failed reading (a provider error, or any other
error, e.g. a bug in the adapter or an answer it cannot read) is logged and tried again at the
next interval; it never affects jobs. With ``lead`` (a shared store: ``JobStore.lead("balance")``)
only the daemon leading that role asks the provider; the others ask again at the next interval
whether it is theirs now. The loop runs under a :class:`faxbridge.loops.Supervisor`
(restarted with back-off and counted in ``faxbridge_loop_restarts_total{loop="balance"}`` if it
still dies); ``healthy()`` is False while it waits to be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from faxbridge.config import Config
from faxbridge.errors import FaxbridgeError, ProviderError
from faxbridge.loops import Supervisor
from faxbridge.metrics import Metrics
from faxbridge.models import Balance
from faxbridge.providers.base import Provider

log = structlog.get_logger("faxbridge.balance")


NOT_OFFERED = "not_offered"     # the ProviderError code of a call the provider does not have


def is_low(amount: float, threshold: float) -> bool:
    return threshold > 0 and amount < threshold


class BalanceWatch:
    name = "balance"

    def __init__(self, provider: Provider, metrics: Metrics, threshold: float, *, label: str,
                 first_delay: float = 60.0, interval: float = 900.0, name: str = "balance",
                 lead: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.name = name                        # "balance", or "balance:<provider>" for another provider's
        self.provider = provider
        self.metrics = metrics
        self.threshold = threshold
        self.label = label
        self.first_delay = first_delay
        self.interval = interval
        self.lead = lead
        self.last: Balance | None = None
        self.offered = True                     # False once the provider says it has no balance call
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.supervisor = Supervisor(self.name, self._run, self._stop, on_restart=metrics.loop_restarted)

    async def check(self) -> Balance | None:
        """Read the balance once; update the metrics; warn when low. None when it could not be read."""
        try:
            balance = await self.provider.balance()
        except ProviderError as exc:
            if exc.code == NOT_OFFERED:         # the provider has no balance call (Sinch): said once, not asked again
                self.offered = False
                log.info("provider.balance_not_offered", provider=self.label, why=exc.reason)
                return None
            log.warning("provider.balance_failed", provider=self.label, error=exc.reason)
            return None
        except Exception as exc:        # not the provider saying no: our adapter, or an answer it cannot read
            log.error("provider.balance_error", provider=self.label, error=repr(exc), exc_info=exc)
            return None
        self.last = balance
        low = is_low(balance.amount, self.threshold)
        self.metrics.balance.labels(self.label).set(balance.amount)
        self.metrics.balance_low.labels(self.label).set(1 if low else 0)
        if low:
            log.warning("provider.balance_low", provider=self.label, balance=balance.amount,
                        currency=balance.currency, threshold=self.threshold)
        else:
            log.info("provider.balance", provider=self.label, balance=balance.amount, currency=balance.currency)
        return balance

    async def _run(self) -> None:
        delay = self.first_delay
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            if self._stop.is_set():
                return
            delay = self.interval
            if not await self._leads():
                continue
            await self.check()
            if not self.offered:
                await self._stop.wait()         # nothing more to ask; the part stays up (healthy)
                return

    async def _leads(self) -> bool:
        """Whether this daemon checks the balance now (always, unless the store is shared)."""
        if self.lead is None:
            return True
        try:
            return await self.lead()
        except FaxbridgeError as exc:           # the store is down: asked again at the next interval
            log.warning("provider.balance_skipped", provider=self.label, error=str(exc))
            return False

    async def start(self) -> None:
        if self._task is None:
            self._task = self.supervisor.start()

    async def stop(self) -> None:
        self._stop.set()

    async def close(self, timeout: float) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self.supervisor.healthy()


def build_balance_watch(cfg: Config, provider: Provider, metrics: Metrics,
                        lead: Callable[[], Awaitable[bool]] | None = None) -> BalanceWatch:
    """The balance watch of one configured provider (``provider.low_balance``: its threshold),
    labelled with the provider's name (one watch per provider, contract section 14); the component
    of ``provider.kind``'s is "balance", another's "balance:NAME". ``lead``: whether this daemon is
    the one to ask (several daemons on one store)."""
    name = "balance" if provider.name == cfg.provider.kind else f"balance:{provider.name}"
    return BalanceWatch(provider, metrics, cfg.provider.low_balance, label=provider.name, name=name, lead=lead)
