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
from faxbridge.workers import Engine, TooMuchWork, WorkerLost
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
