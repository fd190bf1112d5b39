"""Fixtures: a simulator served on a free port, an HTTP client, PDFs, a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from pypdf import PdfWriter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from faxbridge.simulator import Simulator, SimulatorServer, credentials

SPEED = 1000.0


def make_pdf(pages: int = 1) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
def pdf() -> Callable[[int], bytes]:
    return make_pdf


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(speed=SPEED)
    yield simulator
    await simulator.aclose()


@pytest.fixture
async def base(sim: Simulator) -> AsyncIterator[str]:
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    url = await server.start()
    yield url
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as c:
        yield c


PHAXIO_AUTH = (credentials.PHAXIO_API_KEY, credentials.PHAXIO_API_SECRET)


@dataclass
class Received:
    method: str
    path: str
    url: str
    query: dict[str, str]
    headers: dict[str, str]
    fields: list[tuple[str, str]]


@dataclass
class Receiver:
    """A tiny webhook endpoint: records every request, answers the scripted statuses."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)   # consumed first; then 200
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


async def _serve(app: Starlette) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            yield

    server = Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def hook(request: Request) -> PlainTextResponse:
        async with request.form() as form:
            fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        rec.requests.append(Received(
            request.method, request.url.path, str(request.url), dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()}, fields,
        ))
        rec.arrived.set()
        status = rec.statuses.pop(0) if rec.statuses else 200
        return PlainTextResponse("ok", status_code=status)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["GET", "POST"])])
    async for url in _serve(app):
        rec.url = url
        yield rec
