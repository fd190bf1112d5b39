"""loops.Supervisor: a loop that dies is restarted with back-off, reported down meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from faxbridge.loops import Supervisor


async def test_a_dying_body_is_restarted_and_reported() -> None:
    stop = asyncio.Event()
    runs: list[int] = []
    seen: list[tuple[str, str]] = []

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise ValueError(f"bad item {len(runs)}")

    sup = Supervisor("demo", body, stop, initial=0.01, maximum=0.02,
                     on_restart=lambda name, exc: seen.append((name, str(exc))))
    await asyncio.wait_for(sup.run(), timeout=30)
    assert runs == [0, 1, 2]
    assert sup.restarts == 2
    assert seen == [("demo", "bad item 1"), ("demo", "bad item 2")]
    assert sup.last_error == "ValueError: bad item 2"
    assert sup.finished and not sup.down
    assert not sup.healthy()           # its work ended although nobody asked it to stop


async def test_down_while_waiting_for_restart_and_stop_ends_the_wait() -> None:
    stop = asyncio.Event()

    async def body() -> None:
        raise RuntimeError("always")

    sup = Supervisor("crashy", body, stop, initial=600.0)
    task = sup.start()
    async with asyncio.timeout(30):
        while not sup.down:
            await asyncio.sleep(0.01)
    assert not sup.healthy()
    stop.set()
    await asyncio.wait_for(task, timeout=30)   # the 600 s back-off is cut short by stop
    assert sup.restarts == 1 and sup.healthy()


async def test_cancel_is_not_swallowed() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.Event().wait()

    task = Supervisor("forever", body, stop).start()
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_async_tests_run_on_the_daemons_event_loop() -> None:
    """``faxbridge run`` runs on uvloop (cli.cmd_run); conftest gives the tests the same loop."""
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
