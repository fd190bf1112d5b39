"""What the daemon's parts share at run time, and the shape of a pluggable part.

``app.Daemon`` builds one :class:`Runtime` and hands it to each component builder in
``app.COMPONENTS`` (SMTP listener, folder watcher, web server, notifiers...). A builder
returns None when its part is disabled by the configuration. The core's own loops (dispatcher,
tracker) run under a :class:`faxbridge.loops.Supervisor` and join ``components`` as a
:class:`SupervisedLoop`, so ``/healthz`` and the watchdog see them like any other part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.dispatcher import Dispatcher
from faxbridge.loops import Supervisor
from faxbridge.metrics import Metrics
from faxbridge.providers.base import Provider
from faxbridge.simulator import Simulator
from faxbridge.states import Policy
from faxbridge.store import JobStore
from faxbridge.tracker import Tracker


@dataclass
class Runtime:
    cfg: Config
    store: JobStore
    clock: Clock
    policy: Policy
    provider: Provider
    dispatcher: Dispatcher
    tracker: Tracker
    simulator: Simulator | None
    owner: str
    components: list[Component] = field(default_factory=list)   # started parts, in start order
    metrics: Metrics = field(default_factory=Metrics)            # this daemon's Prometheus registry
    ready: bool = False                # every component started, the loops running (until stopping)


class Component(Protocol):
    name: str

    async def start(self) -> None:
        """Start; return once serving (listeners bound, loops running)."""
        ...

    async def stop(self) -> None:
        """Stop taking new work (close listeners). Work in hand may go on."""
        ...

    async def close(self, timeout: float) -> None:
        """Finish work in hand for up to ``timeout`` seconds, then release everything."""
        ...

    def healthy(self) -> bool:
        """True while the part works (its listener is up, its loop runs): /healthz asks every part."""
        ...


Builder = Callable[[Runtime], Component | None]


class SupervisedLoop:
    """A supervised loop as a part: healthy while its body runs (not while it waits to be restarted).

    It stops with the event its :class:`Supervisor` watches; ``stop`` does nothing (the daemon
    stops the core loops after the listeners), ``close`` cancels what is left.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.name = supervisor.name
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.task is None:
            self.task = self.supervisor.start()

    async def stop(self) -> None:
        return None

    async def close(self, timeout: float) -> None:
        if self.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), max(timeout, 0.0))
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def healthy(self) -> bool:
        task = self.task
        if task is None:
            return False
        if task.done() and not self.supervisor.stop.is_set():
            return False                   # cancelled, or ended although nobody asked it to
        return self.supervisor.healthy()
