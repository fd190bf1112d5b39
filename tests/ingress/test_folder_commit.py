"""The commit step's parts: the pool's futures (Offload; a broken pool is dropped and its work done here)
and the daemon's async job store reached from the intake's thread (LoopStore)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbridge.errors import StoreBusy
from faxbridge.ingress.folder.bridge import LoopStore
from faxbridge.ingress.folder.commit import Offload
from faxbridge.models import Job
from tests.conftest import wait_until
from tests.ingress.folder_kit import Folder, open_folder
from tests.support import make_pdf

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    yield from open_folder(tmp_path)


def twice(n: int) -> int:
    return 2 * n


def refuse(n: int) -> int:
    raise ValueError(f"no {n}")


def die_unless_in(pid: int) -> int:
    """Kills a worker process; answers in the process ``pid``."""
    if os.getpid() != pid:
        os._exit(3)
    return pid


def test_without_a_pool_the_work_is_done_here_as_a_finished_future(tmp_path: Path) -> None:
    offload = Offload(None, tmp_path)
    work = offload.submit(twice, 21)
    assert work.future.done() and offload.outcome(work) == 42
    failed = offload.outcome(offload.submit(refuse, 7))
    assert isinstance(failed, ValueError) and str(failed) == "no 7"


def test_work_in_the_pool_comes_back_through_its_future(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        offload = Offload(pool, tmp_path)
        works = [offload.submit(twice, n) for n in range(5)]
        assert [offload.outcome(w) for w in works] == [0, 2, 4, 6, 8]
        assert isinstance(offload.outcome(offload.submit(refuse, 1)), ValueError)
        assert offload.pool is pool


def test_a_broken_pool_is_dropped_and_the_work_done_here(tmp_path: Path) -> None:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        offload = Offload(pool, tmp_path)
        work = offload.submit(die_unless_in, os.getpid())
        assert offload.outcome(work) == os.getpid()         # the worker died; done in this process
        assert offload.pool is None
        later = offload.submit(twice, 4)
        assert later.future.done() and offload.outcome(later) == 8
    finally:
        pool.shutdown(wait=True)


def test_a_pool_shut_down_at_exit_is_dropped(tmp_path: Path) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    offload = Offload(pool, tmp_path)
    assert offload.outcome(offload.submit(twice, 5)) == 10 and offload.pool is None


def test_the_round_commits_through_the_daemons_store(folder: Folder) -> None:
    """The intake's jobs are the daemon's store's: its observers hear each one, on its loop."""
    heard: list[tuple[str, str, bool]] = []
    folder.jobstore.observe(lambda before, after, event: heard.append(
        (after.document, event, threading.current_thread().name == "test-loop")))
    for n in range(3):
        make_pdf(folder.root / f"1555555121{n}.pdf", text=f"doc {n}")
    make_pdf(folder.root / "letter.pdf")
    folder.intake.sweep()
    assert folder.settle(2) == 4
    wait_until(lambda: len(heard) == 4, timeout=10, what="the store's observers")
    assert sorted(heard) == [("15555551210.pdf", "job.queued", True), ("15555551211.pdf", "job.queued", True),
                             ("15555551212.pdf", "job.queued", True), ("letter.pdf", "job.rejected", True)]
    jobs: list[Job] = folder.jobs()
    assert len(jobs) == 4


def test_the_store_is_never_awaited_from_the_loops_own_thread(folder: Folder) -> None:
    bridge = LoopStore(folder.jobstore, folder.loop)
    assert bridge.find_duplicate("folder:none", folder.clock.now()) is None      # from another thread: fine

    async def on_the_loop() -> None:
        bridge.find_duplicate("folder:none", folder.clock.now())

    with pytest.raises(RuntimeError, match="would wait for itself"):
        asyncio.run_coroutine_threadsafe(on_the_loop(), folder.loop).result(10)


def test_a_loop_that_is_gone_is_store_trouble_not_a_hang(tmp_path: Path) -> None:
    """The daemon's loop stopped (shutdown past its grace) or closed: the intake's store call is
    StoreBusy (its claim stays for the next start), never a worker thread waiting forever."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def stop_first(_key: str, _since: object) -> None:
        started.set()
        loop.stop()                                # the loop stops before this call can answer
        await asyncio.Event().wait()

    class Gone:
        find_duplicate = staticmethod(stop_first)

    thread = threading.Thread(target=loop.run_forever, name="test-stopping-loop", daemon=True)
    thread.start()
    bridge = LoopStore(Gone(), loop)  # type: ignore[arg-type]
    with pytest.raises(StoreBusy, match="event loop stopped"):
        bridge.find_duplicate("folder:x", NOW)
    assert started.is_set()
    thread.join(10)
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    with pytest.raises(StoreBusy, match="event loop is closed"):
        bridge.find_duplicate("folder:x", NOW)
