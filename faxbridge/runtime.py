"""What the daemon's parts share at run time, and the shape of a pluggable part.

``app.Daemon`` builds one :class:`Runtime` and hands it to each component builder in
``app.COMPONENTS`` (SMTP listener, folder watcher, web server, notifiers...). A builder
returns None when its part is disabled by the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.dispatcher import Dispatcher
from faxbridge.metrics import Metrics
from faxbridge.providers.base import Provider
from faxbridge.simulator import Simulator
from faxbridge.states import Policy
from faxbridge.store import Store
from faxbridge.tracker import Tracker


@dataclass
class Runtime:
    cfg: Config
    store: Store
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
