"""Shared fixtures: factories that clean up after themselves. No fixed ports, no blind sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop

from faxbridge import logs
from tests.pg import pg_server, pg_url
from tests.stores import backend, jobstore
from tests.support import LOG_FILES, SECRETS, make_pdf, write_config

__all__ = ["backend", "jobstore", "make_pdf", "pg_server", "pg_url", "write_config"]

def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The async tests run on the event loop the daemon runs on (``faxbridge run``: uvloop)."""
    return {"uvloop": uvloop.new_event_loop}


# Fields every log line carries, and those a state change adds (contract section 8; issue 6).
LINE_FIELDS = {"event", "level", "timestamp"}
STATE_FIELDS = {"job_id", "source", "provider", "provider_id", "state", "reason"}


def check_log_line(line: str, where: str) -> list[str]:
    """Problems with one log line: not JSON, missing fields, or a test secret in it."""
    problems = [f"{where}: a test secret appears: {line[:200]}" for secret in SECRETS if secret in line]
    try:
        obj = json.loads(line)
    except ValueError:
        return [*problems, f"{where}: not JSON: {line[:200]}"]
    if not isinstance(obj, dict) or not obj.keys() >= LINE_FIELDS:
        return [*problems, f"{where}: missing {sorted(LINE_FIELDS - set(obj))}: {line[:200]}"]
    if str(obj["event"]).startswith("job.") and obj["event"] != "job.enqueued" and not obj.keys() >= STATE_FIELDS:
        problems.append(f"{where}: state change without {sorted(STATE_FIELDS - set(obj))}: {line[:200]}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def every_log_line_is_checked() -> Iterator[None]:
    """Every line the suite logs, in this process and in the daemons it starts, is JSON with the agreed
    fields, and none holds a test secret."""
    lines: list[str] = []
    remove = logs.add_tap(lines.append)
    yield
    remove()
    problems = [p for line in lines for p in check_log_line(line, "in-process log")]
    for path in LOG_FILES:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                problems += check_log_line(line, path.name)
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(autouse=True)
def log_setup_is_undone() -> Iterator[None]:
    """A test that runs a CLI command in this process (``cli.main`` calls ``logs.setup``, at level
    warning for most commands) leaves structlog and the root logger as they were before it: else a
    later test in the same process captures no info lines (``structlog.testing.capture_logs`` only
    swaps the processors, not the level filter), and what fails depends on the order tests run in."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``cond`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        time.sleep(interval)


async def async_wait_until(cond: Callable[[], Any | Awaitable[Any]], timeout: float = 30.0,
                           interval: float = 0.02, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await asyncio.sleep(interval)


@pytest.fixture
def pdf(tmp_path: Path) -> Callable[..., Path]:
    def factory(name: str = "doc.pdf", pages: int = 1, size: str = "letter") -> Path:
        return make_pdf(tmp_path / name, pages=pages, size=size)

    return factory


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faxbridge torture")
    group.addoption("--torture-rounds", type=int, default=4,
                    help="daemon kills per torture run (default 4; try 40 for a long run)")
    group.addoption("--torture-seed", type=int, default=None,
                    help="replay a torture run with this seed (printed by every run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A long torture run gets the time it needs (the suite's per-test timeout is for the short one)."""
    rounds = config.getoption("--torture-rounds")
    for item in items:
        if item.name == "test_crash_and_fault_torture" and rounds > 4:
            item.add_marker(pytest.mark.timeout(120 + 40 * rounds))
        if item.name == "test_two_daemons_killed_at_random":
            item.add_marker(pytest.mark.timeout(240 + 60 * rounds))
