"""Live updates of the console (CONTRACT §13, :mod:`faxbridge.console.live`): ``GET /events`` over real
HTTP (the console's own uvicorn listener on a free port), fed by a real SQLite store's observer: a
change to a job is told to every open page at once, a burst of changes is one message, a stream ends
at logout and when the console stops (without holding the stop up), and too many open pages are
told to poll instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import bcrypt
import httpx

from faxbridge.console.live import MAX_IDS, Changes, events
from faxbridge.console.server import ConsoleServer
from faxbridge.models import FaxOutcome, Job, JobState
from faxbridge.states import CancelRequested, Policy
from faxbridge.workflow import advance
from tests.console.test_console_http import Console, csrf_of, make_console

DEADLINE_S = 60.0      # a loaded 2-core machine


async def messages(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event; comments as ("", the comment)."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, "\n".join(data)
            event, data = "message", []


async def next_jobs(it: AsyncIterator[tuple[str, str]]) -> str:
    async with asyncio.timeout(DEADLINE_S):
        async for event, data in it:
            if event == "jobs":
                return data
    raise AssertionError("the stream ended without a jobs message")


async def served(console: Console) -> ConsoleServer:
    server = ConsoleServer(console.ctx, "127.0.0.1", 0)
    await server.start()
    return server


async def test_a_change_reaches_every_open_page_at_once(tmp_path: Path) -> None:
    console = await make_console(tmp_path)
    server = await served(console)
    try:
        async with httpx.AsyncClient(base_url=server.local_url, timeout=DEADLINE_S) as client, \
                client.stream("GET", "/events") as one, client.stream("GET", "/events") as two:
            assert one.status_code == 200 and one.headers["content-type"].startswith("text/event-stream")
            assert one.headers["cache-control"] == "no-store"
            first, second = messages(one), messages(two)
            async with asyncio.timeout(DEADLINE_S):
                assert await anext(first) == ("", "faxbridge console events")     # the stream is open
                assert await anext(second) == ("", "faxbridge console events")
                while console.ctx.changes.open_streams < 2:
                    await asyncio.sleep(0.01)
            job_id = await console.job()
            assert await next_jobs(first) == f'["{job_id}"]'
            assert await next_jobs(second) == f'["{job_id}"]'
            await console.finish(job_id, FaxOutcome.DELIVERED)       # three changes, read as they come
            seen: set[str] = set()
            while (await console.store.get(job_id)).state is not JobState.DELIVERED or not seen:
                seen.add(await next_jobs(first))
            assert seen == {f'["{job_id}"]'}
    finally:
        await server.stop()
        await console.store.close()


def _job_value(job_id: str) -> Job:
    return cast(Job, SimpleNamespace(id=job_id))          # the observer reads only the id


async def test_a_burst_is_one_message_and_too_many_is_everything() -> None:
    changes = Changes()
    stream = changes.open()
    assert stream is not None
    body = events(changes, stream, lambda: True, heartbeat=0.05)
    assert (await anext(body)).startswith(b"retry: ")
    assert await anext(body) == b": still here\n\n"                 # nothing changed: a heartbeat
    for n in ("b", "a", "b"):
        changes.observe(None, _job_value(n), "job.queued")
    assert await anext(body) == b'event: jobs\ndata: ["a", "b"]\n\n'
    for n in range(MAX_IDS + 5):
        changes.observe(None, _job_value(f"j{n}"), "job.queued")
    assert await anext(body) == b'event: jobs\ndata: "*"\n\n'
    changes.close()
    assert [chunk async for chunk in body] == []                    # closed: it ends, writing nothing
    assert changes.open_streams == 0 and changes.open() is None


async def test_too_many_open_pages_are_told_to_poll(tmp_path: Path) -> None:
    console = await make_console(tmp_path)
    console.ctx.changes.max_streams = 1
    server = await served(console)
    try:
        async with httpx.AsyncClient(base_url=server.local_url, timeout=DEADLINE_S) as client, \
                client.stream("GET", "/events") as first:
            assert first.status_code == 200
            async with asyncio.timeout(DEADLINE_S):
                await anext(messages(first))
            refused = await client.get("/events")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
    finally:
        await server.stop()
        await console.store.close()


async def test_the_stream_ends_at_logout_and_needs_a_login(tmp_path: Path) -> None:
    users = {"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}
    console = await make_console(tmp_path, users)
    server = await served(console)
    try:
        async with httpx.AsyncClient(base_url=server.local_url, timeout=DEADLINE_S) as client:
            assert (await client.get("/events")).status_code == 401
            token = csrf_of((await client.get("/login")).text)
            assert (await client.post("/login", data={"csrf": token, "user": "alice",
                                                       "password": "s3cret"})).status_code == 303
            queue = (await client.get("/")).text
            assert 'data-events="/events"' in queue
            async with client.stream("GET", "/events") as stream:
                assert stream.status_code == 200
                it = messages(stream)
                async with asyncio.timeout(DEADLINE_S):
                    await anext(it)
                job_id = await console.job()
                assert await next_jobs(it) == f'["{job_id}"]'
                await client.post("/logout", data={"csrf": csrf_of(queue)})
                await advance(console.store, job_id, CancelRequested(by="test"), console.clock, Policy())
                async with asyncio.timeout(DEADLINE_S):
                    rest = [m async for m in it]          # the next wake finds the session gone: the end
                assert rest == []
    finally:
        await server.stop()
        await console.store.close()


async def test_stopping_the_console_ends_open_streams_at_once(tmp_path: Path) -> None:
    console = await make_console(tmp_path)
    server = await served(console)
    try:
        async with httpx.AsyncClient(base_url=server.local_url, timeout=DEADLINE_S) as client, \
                client.stream("GET", "/events") as stream:
            it = messages(stream)
            async with asyncio.timeout(DEADLINE_S):
                await anext(it)
            await server.stop()
            # ended by the console, not cut by uvicorn (which cancels what is still running after its
            # grace): a cut leaves the chunked body unfinished and httpx raises RemoteProtocolError
            async with asyncio.timeout(DEADLINE_S):
                assert [m async for m in it] == []
            assert console.ctx.changes.open_streams == 0
    finally:
        await server.stop()
        await console.store.close()
