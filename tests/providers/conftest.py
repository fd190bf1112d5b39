"""Fixtures for the provider adapter tests: a canned-reply HTTP server on a free loopback port,
PDFs, and helpers that wait on conditions with deadlines (never a blind sleep)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pypdf import PdfWriter
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Reply:
    body: Any = None                    # dict/list → JSON; str → text as is
    status: int = 200
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if isinstance(self.body, str):
            return Response(self.body, self.status, self.headers, self.content_type or "text/html")
        return Response(json.dumps(self.body), self.status, self.headers, "application/json")


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    fields: list[tuple[str, str]]
    files: list[tuple[str, str | None, str | None, bytes]]   # name, filename, content type, data
    raw_length: int

    def field(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)


class StubServer:
    """Real HTTP: each path answers from its queue of Replies (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.handlers: dict[str, Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self.base = ""
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
        )
        self._task: asyncio.Task[None] | None = None

    def reply(self, path: str, *replies: Reply) -> None:
        self.replies[path] = list(replies)

    def handle(self, path: str, fn: Callable[[Seen], Reply]) -> None:
        self.handlers[path] = fn

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, str | None, str | None, bytes]] = []
        if request.method == "POST" and body:
            async with request.form(max_part_size=200 * 1024 * 1024) as form:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        files.append((name, value.filename, value.content_type, await value.read()))
                    else:
                        fields.append((name, value))
        seen = Seen(
            request.method, request.url.path, list(request.query_params.multi_items()),
            dict(request.headers), fields, files, len(body),
        )
        self.seen.append(seen)
        if request.url.path in self.handlers:
            return self.handlers[request.url.path](seen).response()
        queue = self.replies.get(request.url.path)
        if not queue:
            return Reply({"success": False, "message": "no stub"}, 404).response()
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply.response()

    async def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        await wait_for(lambda: self._server.started, 10, "stub server start")
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.base

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until cond() holds, checking often, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(fn: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float,
                     what: str, interval: float = 0.05) -> Any:
    """Call fn until ok(result) holds or the deadline passes; return that result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await fn()
        if ok(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)


@pytest.fixture
async def stub() -> AsyncIterator[StubServer]:
    server = StubServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_pdf(path: Path, pages: int = 1) -> Path:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    with path.open("wb") as fh:
        writer.write(fh)
    return path


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "doc.pdf", 2)
