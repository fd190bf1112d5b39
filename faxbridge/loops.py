"""Small helpers for the daemon's background loops: waiting, and supervising.

Every long-lived loop handles its errors per item (a bad mail, file, row or webhook is
quarantined with a reason and the loop goes on). :class:`Supervisor` is the net under that:
a loop body that still raises is logged with its traceback, counted, and started again after a
capped, doubling back-off, so no single input stops a listener, watcher, notifier or the
dispatcher for good. While a loop waits to be restarted it is *down*: ``healthy()`` is False,
so ``/healthz`` answers 503 naming it and the systemd watchdog pings stop; once the body runs
again (a restart that has not failed for ``settle`` seconds) the back-off starts over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("faxbridge.loops")


async def nap(timeout: float, *events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set or ``timeout`` seconds pass, whichever comes first."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


OnRestart = Callable[[str, BaseException], None]
"""Called with the loop's name and the error each time a supervised loop dies (for a metric)."""


class Supervisor:
    """Run ``body`` until it returns or ``stop`` is set; restart it with back-off when it raises.

    ``body`` is a coroutine function holding the loop (it returns when its work is over, e.g.
    after ``stop``). ``asyncio.CancelledError`` is never caught: cancelling the task ends it.
    """

    def __init__(self, name: str, body: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                 initial: float = 1.0, maximum: float = 60.0, settle: float = 30.0,
                 on_restart: OnRestart | None = None) -> None:
        self.name = name
        self.body = body
        self.stop = stop
        self.initial = initial
        self.maximum = maximum
        self.settle = settle
        self.on_restart = on_restart
        self.restarts = 0
        self.last_error: str | None = None
        self.down = False                  # died, waiting for its restart
        self.finished = False              # the body returned: its work is over

    def healthy(self) -> bool:
        return not self.down and not (self.finished and not self.stop.is_set())

    async def run(self) -> None:
        delay = self.initial
        while True:
            started = time.monotonic()
            try:
                await self.body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started >= self.settle:
                    delay = self.initial       # it ran fine for a while: a fresh fault, not a crash loop
                self.restarts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.down = True
                log.error("loop.crashed", loop=self.name, error=self.last_error, restarts=self.restarts,
                          restart_in_s=delay, exc_info=exc)
                if self.on_restart is not None:
                    self.on_restart(self.name, exc)
                await nap(delay, self.stop)
                self.down = False
                if self.stop.is_set():
                    return
                delay = min(self.maximum, delay * 2)
                log.info("loop.restarted", loop=self.name, restarts=self.restarts)
                continue
            self.finished = True
            return

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.run(), name=self.name)
