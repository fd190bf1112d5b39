"""Fixtures for the tracking tests: the real daemon in this process (so tests can reach its
store, simulator and metrics), on free loopback ports, stopped and awaited after each test."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from faxbridge import config
from faxbridge.app import Daemon
from faxbridge.simulator import Simulator, credentials
from tests.conftest import free_port
from tests.support import base_settings, served_simulator, write_config

Start = Callable[..., Awaitable[Daemon]]


def settings(tmp: Path, *, web: bool = True, **provider: Any) -> dict[str, Any]:
    s = base_settings(tmp, **provider)
    if web:
        port = free_port()
        s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}
    return s


def phaxio_at(base: str, sim: Simulator | None = None) -> dict[str, Any]:
    """Phaxio at ``base``; callbacks verified with ``sim``'s token (without one, a token no
    simulator signs with: every callback fails its check and polling finishes the jobs)."""
    token = sim.callback_token if sim is not None else secrets.token_urlsafe(16)
    return {"kind": "phaxio", "phaxio": {"base_url": base + "/v2.1", "api_key": credentials.PHAXIO_API_KEY,
                                         "api_secret": credentials.PHAXIO_API_SECRET,
                                         "callback_token": token}}


def openfax_at(base: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "openfax", "openfax": {"base_url": base, "account_id": credentials.OPENFAX_ACCOUNT_ID,
                                           "api_key": credentials.OPENFAX_API_KEY, **extra}}


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """``await start(settings)`` runs ``Daemon.run`` as a task and returns once it is ready."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def go(values: dict[str, Any], name: str = "faxbridge.toml") -> Daemon:
        cfg = config.load(write_config(tmp_path / name, values), {})
        daemon = Daemon(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        running.append((stop, task))
        ready = asyncio.ensure_future(daemon.ready.wait())
        await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert daemon.ready.is_set(), "daemon not ready after 30 s"
        return daemon

    yield go
    for stop, _ in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    """A simulator of our own (both protocols) on a free port: (sim, base URL)."""
    async with served_simulator(speed=2000.0) as served:
        yield served
