"""The worker engine (``faxbridge.workers``) on its own: real worker processes running real functions.

Answers and exceptions come back as they were; big bytes travel out of band; a job over its CPU cap
raises TooMuchWork and a job whose worker was killed WorkerLost, and the next job is served by a new
worker either way; idle workers leave after ``limits.worker_idle``; a new configuration reaches them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbridge.config import Config, load
from faxbridge.workers import Engine, Shared, TooMuchWork, WorkerLost
from tests.conftest import async_wait_until
from tests.support import base_settings, running, write_config


def spin(seconds: float) -> int:
    """Python work for about ``seconds`` of CPU time (a loop of bytecodes: signals are seen)."""
    import resource

    def used() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    start, n = used(), 0
    while used() - start < seconds:
        n += sum(i for i in range(10_000))
    return n


def hang() -> None:
    signal.pause()


def length(data: bytes) -> tuple[str, int]:
    return type(data).__name__, len(data)


def refuse(why: str) -> None:
    raise ValueError(why)


@dataclasses.dataclass(frozen=True)
class Settings:
    name: str
    limits: tuple[int, ...]


PICKLED: list[str] = []      # in this process: each time a Settings is pickled


def _pickled(settings: Settings) -> tuple[type[Settings], tuple[str, tuple[int, ...]]]:
    PICKLED.append(settings.name)
    return Settings, (settings.name, settings.limits)


Settings.__reduce__ = _pickled  # type: ignore[assignment,method-assign]


def identity_of(settings: Settings) -> tuple[Settings, int]:
    return settings, id(settings)


def config(tmp: Path, **limits: object) -> Config:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = load(write_config(tmp / "faxbridge.toml", base_settings(tmp)), {})
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    found = Engine(config(tmp_path, job_cpu=1.0, worker_idle=60.0), size=1)
    try:
        yield found
    finally:
        await found.close()


async def test_answers_exceptions_and_big_bytes_come_back_from_another_process(engine: Engine) -> None:
    assert engine.pids() == []                                   # nothing started before work comes
    pid = await engine.run(os.getpid)
    assert pid != os.getpid() and engine.pids() == [pid]
    big = os.urandom(1000) * 20_000                              # 20 MB, sent out of band
    assert await engine.run(length, pickle.PickleBuffer(big)) == ("bytes", len(big))
    with pytest.raises(ValueError, match="no such thing"):
        await engine.run(refuse, "no such thing")
    assert await engine.run(os.getpid) == pid                    # the same worker all along


async def test_a_shared_argument_is_pickled_once_and_unpickled_once_per_worker(engine: Engine) -> None:
    """``Shared``: the settings every job carries are pickled when wrapped, not for each frame, and
    the worker keeps the object it made of them; new settings (a SIGHUP) are a new object."""
    PICKLED.clear()
    first = Shared(Settings("first", (1, 2)))
    answers = [await engine.run(identity_of, first) for _ in range(3)]
    assert PICKLED == ["first"]                                 # when wrapped; never per job
    assert [value for value, _ in answers] == [Settings("first", (1, 2))] * 3
    assert len({ident for _, ident in answers}) == 1            # one object in the worker, reused
    again, ident = await engine.run(identity_of, Shared(Settings("first", (1, 2))))
    assert again == Settings("first", (1, 2)) and ident == answers[0][1]   # same bytes, same object
    second, other = await engine.run(identity_of, Shared(Settings("second", (3,))))
    assert second == Settings("second", (3,)) and other != ident
    assert PICKLED == ["first", "first", "second"]


async def test_a_job_over_its_cpu_time_is_too_much_work_and_a_new_worker_takes_the_next(engine: Engine) -> None:
    first = await engine.run(os.getpid)
    with pytest.raises(TooMuchWork, match=r"limits\.job_cpu"):
        await engine.run(spin, 30.0)
    await async_wait_until(lambda: not running(first), timeout=30)
    second = await engine.run(os.getpid)
    assert second != first and engine.pids() == [second]


async def test_a_worker_killed_with_a_job_in_hand_is_lost_and_replaced(engine: Engine) -> None:
    first = await engine.run(os.getpid)
    job = asyncio.ensure_future(engine.run(hang))
    await asyncio.sleep(0.5)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        await asyncio.wait_for(job, 30)
    second = await engine.run(os.getpid)
    assert second != first


async def test_idle_workers_leave_and_a_new_configuration_reaches_the_next(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path, job_cpu=0.0, worker_idle=0.5), size=2)
    try:
        pids = set(await asyncio.gather(*(engine.run(spin, 0.3) for _ in range(2))))
        assert len(engine.pids()) == 2
        await async_wait_until(lambda: engine.pids() == [], timeout=30)
        await async_wait_until(lambda: not any(running(p) for p in pids), timeout=30)   # reaped too
        assert await engine.run(spin, 1.5) > 0                   # job_cpu 0: no cap
        engine.reconfigure(config(tmp_path / "again", job_cpu=1.0, worker_idle=0.5))
        with pytest.raises(TooMuchWork):
            await engine.run(spin, 30.0)
    finally:
        await engine.close()
    assert engine.pids() == []
