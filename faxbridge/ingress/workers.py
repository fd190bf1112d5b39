"""Worker threads that each own a connection to the job store, for intake off the event loop.

Accepting a mail durably is mostly waiting on the disk (the document fsynced, the folders fsynced,
SQLite's commit fsynced) plus some parsing. Done on the event loop it would stall every other
session for that time. Each worker thread here opens its own :class:`Store` (SQLite connections
belong to the thread that made them; WAL lets them read alongside the daemon's own connection and
take turns writing, with the store's busy timeout), runs the functions it is handed, and closes
its store when the pool is closed. ``run`` returns an awaitable for the function's result.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from faxbridge.store import Store

log = structlog.get_logger("faxbridge.smtp")

T = TypeVar("T")
_Item = tuple[Callable[[Store], Any], asyncio.Future[Any], asyncio.AbstractEventLoop] | None


class StoreThreads:
    def __init__(self, open_store: Callable[[], Store], size: int = 4, name: str = "intake") -> None:
        self.open_store = open_store
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        store: Store | None = None
        try:
            while (item := self._queue.get()) is not None:
                fn, future, loop = item
                try:
                    if store is None:
                        store = self.open_store()
                    result = fn(store)
                except BaseException as exc:  # handed back to the awaiting coroutine, not lost
                    loop.call_soon_threadsafe(_set_exception, future, exc)
                else:
                    loop.call_soon_threadsafe(_set_result, future, result)
        finally:
            if store is not None:
                store.close()

    async def run(self, fn: Callable[[Store], T]) -> T:
        if not self._threads:
            raise RuntimeError("the intake workers are not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop))
        return await future

    async def close(self) -> None:
        """Let queued work finish, then stop every thread (each closes its own store)."""
        for _ in self._threads:
            self._queue.put(None)
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
