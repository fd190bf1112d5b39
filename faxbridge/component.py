"""The shape of one of the daemon's parts, and the two small protocols app.py wires them by.

``app.Daemon`` builds each part itself (SMTP listener, folder watcher, web server, notifiers...),
handing it only what it uses: the store, the clock, the worker engine, wake callbacks, metric
counters. No part can reach another; only app.py knows who talks to whom. Every part is a
:class:`Component`; the ones that take the live keys of a SIGHUP are also :class:`Reconfigurable`.
The core's own loops (dispatcher, tracker) run under a :class:`faxbridge.loops.Supervisor` and
join the daemon's parts as a :class:`SupervisedLoop`, so ``/healthz`` and the watchdog see them
like any other part.

This module knows no part (an import-linter contract holds it to that), so it cannot turn into a
service locator again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from faxbridge.config import Config
from faxbridge.loops import Supervisor


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


class Reconfigurable(Protocol):
    """A part that applies the live keys of a reloaded configuration (SIGHUP, :mod:`faxbridge.reload`)."""

    def reconfigure(self, cfg: Config) -> None:
        """Apply what may change live (``reload.plan``'s config) to the next piece of work."""
        ...


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
