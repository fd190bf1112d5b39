"""Live updates for the console: server-sent events (``GET /events``) fed by the store's observer.

The store tells each change it commits (:meth:`~faxbridge.store.JobStore.observe`, called on the
event loop); :meth:`Changes.observe` adds the job's id to every open stream's pending set and wakes
it. Each stream then writes one ``event: jobs`` message whose data is the JSON list of the ids that
changed since it last wrote (a burst of changes is one message; past ``MAX_IDS`` ids it is ``"*"``,
"reload everything"). The browser (``static/console.js``) fetches again only the fragments those
jobs appear in. No thread, no queue per change, nothing kept for a stream that is not open.

A stream writes a comment line every ``HEARTBEAT_S`` seconds, so a connection whose browser went
away is noticed at the next write and a proxy does not time it out; it ends when its session ends
(logout, expiry) or the console stops (:meth:`Changes.close`, before the listener closes, so
shutdown never waits on an open page). At most ``MAX_STREAMS`` streams are open at once (each holds
one of the listener's connections); past that ``/events`` answers 503 and the page polls instead.

What the observer cannot see: changes committed by another process (``faxbridge send`` from a
shell queues a job in the store directly; another daemon on a shared PostgreSQL store). The page
therefore still fetches its fragments every ``SLOW_POLL_S`` seconds while the stream is up, and
every ``REFRESH_S`` seconds (:mod:`faxbridge.console.app`) when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

from faxbridge.models import Job

HEARTBEAT_S = 15.0
MAX_IDS = 200
MAX_STREAMS = 50
SLOW_POLL_S = 15
RETRY_MS = 3000          # how soon a browser reconnects a stream that ended


class Stream:
    """One open ``/events`` stream: the ids changed since it last wrote."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.everything = False
        self.wake = asyncio.Event()
        self.closed = False

    def add(self, job_id: str) -> None:
        if len(self.ids) >= MAX_IDS:
            self.everything = True
        else:
            self.ids.add(job_id)
        self.wake.set()

    def take(self) -> list[str] | str | None:
        """What changed since the last call: the ids, ``"*"`` (too many to list), or None."""
        self.wake.clear()
        if self.everything:
            taken: list[str] | str | None = "*"
        elif self.ids:
            taken = sorted(self.ids)
        else:
            taken = None
        self.ids = set()
        self.everything = False
        return taken


class Changes:
    """The open streams, told of every change; the store observer is :meth:`observe`."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._streams: set[Stream] = set()
        self.closed = False

    def observe(self, before: Job | None, after: Job, event: str) -> None:
        for stream in self._streams:
            stream.add(after.id)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open(self) -> Stream | None:
        """A new stream, or None when the console is closing or ``max_streams`` are open."""
        if self.closed or len(self._streams) >= self.max_streams:
            return None
        stream = Stream()
        self._streams.add(stream)
        return stream

    def drop(self, stream: Stream) -> None:
        self._streams.discard(stream)

    def close(self) -> None:
        """End every stream (each writes nothing more and returns) and open no new one."""
        self.closed = True
        for stream in self._streams:
            stream.closed = True
            stream.wake.set()


def message(ids: list[str] | str) -> bytes:
    return f"event: jobs\ndata: {json.dumps(ids)}\n\n".encode()


async def events(changes: Changes, stream: Stream, alive: Callable[[], bool], *,
                 heartbeat: float = HEARTBEAT_S) -> AsyncIterator[bytes]:
    """The body of one ``/events`` response; ``alive``: whether its session still holds."""
    try:
        yield f"retry: {RETRY_MS}\n: faxbridge console events\n\n".encode()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), heartbeat)
            if stream.closed or not alive():
                return
            ids = stream.take()
            yield b": still here\n\n" if ids is None else message(ids)
    finally:
        changes.drop(stream)
