"""Serving the simulator over HTTP with uvicorn, inside the caller's event loop.

The socket is bound (port 0: a free one) before ``start`` returns, so the address is known
and no other process can take the port. uvicorn runs as a task of the current loop on that
pre-bound socket (``Server.serve(sockets=[sock])``); its signal capture is switched off,
since the host application (the daemon, pytest) owns SIGINT/SIGTERM. ``stop`` asks uvicorn
to exit (``should_exit``), waits for it, then stops the simulator's tasks of this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from faxbridge.simulator import credentials
from faxbridge.simulator.core import Simulator
from faxbridge.simulator.records import PostbackTarget

log = structlog.get_logger("faxbridge.simulator")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:   # a host name
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class SimulatorServer:
    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        """Serve in the current loop; returns ``http://HOST:PORT``."""
        if self._task is not None:
            return self.base_url
        config = uvicorn.Config(
            self.sim.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="faxbridge-sim-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()   # raises what stopped it
                raise RuntimeError("the simulator's HTTP server stopped while starting")
            await asyncio.sleep(0.005)
        self.sim.runtime()
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
        self._sock.close()
        await self.sim.aclose()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_forever(
    host: str, port: int, speed: float, openfax_postback: str | None, stop: asyncio.Event
) -> None:
    """What ``faxbridge simulate --listen HOST:PORT`` runs until ``stop`` is set.

    ``openfax_postback``: a URL for Openfax postbacks (form POST), or ``"GET <url>"``. Phaxio
    callbacks are signed with ``$FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN`` (set the same value as the
    daemon's ``provider.phaxio.callback_token``), else with a random token nobody else knows.
    """
    sim = Simulator(speed=speed)
    if openfax_postback:
        method, _, url = openfax_postback.partition(" ")
        if url and method.upper() in ("GET", "POST"):
            sim.openfax_postback = PostbackTarget(url.strip(), method.upper())
        else:
            sim.openfax_postback = PostbackTarget(openfax_postback.strip())
    server = SimulatorServer(sim, host, port)
    base = await server.start()
    log.info(
        "simulator.listening",
        url=base,
        phaxio=[f"{base}/v2", f"{base}/v2.1"],
        openfax=base,
        speed=speed,
        openfax_postback=sim.openfax_postback.url if sim.openfax_postback else None,
        callback_token=f"from ${credentials.CALLBACK_TOKEN_ENV}" if os.environ.get(credentials.CALLBACK_TOKEN_ENV)
        else f"random (set ${credentials.CALLBACK_TOKEN_ENV} to choose it)",
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
        log.info("simulator.stopped", url=base)
