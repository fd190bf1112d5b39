"""Shared pieces for the folder intake tests: a real config, store and folder, with a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faxbridge.clock import FakeClock
from faxbridge.config import Config, load
from faxbridge.ingress.folder import claims
from faxbridge.ingress.folder.intake import FolderIntake
from faxbridge.ingress.folder.results import FolderOrigin
from faxbridge.ingress.folder.watch import EnginePool
from faxbridge.models import Job
from faxbridge.store import JobStore, Store, open_store
from faxbridge.workers import Engine
from tests.support import write_config

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_config(tmp: Path, **watch: Any) -> Config:
    settings: dict[str, Any] = {
        "state_dir": str(tmp / "var"),
        "smtp": {"enabled": False},
        "webhook": {"enabled": False},
        "watch": [{"path": str(tmp / "outbox"), "results": str(tmp / "results"), "done": str(tmp / "done"),
                   "failed": str(tmp / "failed"), "settle": "2s", **watch}],
    }
    return load(write_config(tmp / "faxbridge.toml", settings), {})


@contextlib.contextmanager
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own: the daemon's loop, for the synchronous intake
    tests (the intake runs in the test's thread, as it runs in the watcher's worker thread)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@contextlib.contextmanager
def engine_pool(cfg: Config, loop: asyncio.AbstractEventLoop | None = None) -> Iterator[EnginePool]:
    """The daemon's worker engine on an event loop (``loop``, or one of its own thread), as the folder
    intake's pool (for the synchronous intake tests; the watcher does the same on the daemon's loop)."""
    with contextlib.ExitStack() as stack:
        if loop is None:
            loop = stack.enter_context(loop_thread())
        engine = asyncio.run_coroutine_threadsafe(_engine(cfg), loop).result(30)
        try:
            yield EnginePool(engine, loop)
        finally:
            asyncio.run_coroutine_threadsafe(engine.close(), loop).result(30)


async def _engine(cfg: Config) -> Engine:
    return Engine(cfg)


@dataclass
class Folder:
    """``store``: a second, synchronous connection to the store, for the tests' reads; the intake
    commits through ``jobstore``, the daemon's kind of store (async), living on ``loop``."""
    cfg: Config
    store: Store
    clock: FakeClock
    intake: FolderIntake
    jobstore: JobStore
    loop: asyncio.AbstractEventLoop
    incomplete_after: float | None = None

    def new_intake(self, pool: Executor | None = None) -> FolderIntake:
        """A fresh intake on the same folder and store (nothing in memory, as after a restart)."""
        self.intake = FolderIntake(self.cfg.watch[0], self.jobstore, self.clock, self.cfg.numbers, loop=self.loop,
                                   incomplete_after=self.incomplete_after, pool=pool)
        return self.intake

    @property
    def root(self) -> Path:
        return self.cfg.watch[0].path

    @property
    def area(self) -> Path:
        return claims.processing_dir(self.root)

    def settle(self, seconds: float = 2.0) -> int:
        """Let the fake clock run and tick; returns jobs made."""
        self.clock.advance(seconds)
        return self.intake.tick().finished

    def jobs(self) -> list[Job]:
        return self.store.jobs()

    def claim_of(self, job: Job) -> Path:
        return self.area / claim_of_job(job)


def claim_of_job(job: Job) -> str:
    """The claim a folder job was made from (its typed origin)."""
    origin = FolderOrigin.of(job.meta)
    assert origin is not None, job
    return origin.claim


def open_folder(tmp: Path, incomplete_after: float | None = None, **watch: Any) -> Iterator[Folder]:
    cfg = folder_config(tmp, **watch)
    with loop_thread() as loop:
        jobstore = asyncio.run_coroutine_threadsafe(open_store(cfg.state_dir, "simulator"), loop).result(30)
        store = Store(cfg.state_dir, "simulator")
        clock = FakeClock()
        intake = FolderIntake(cfg.watch[0], jobstore, clock, cfg.numbers, loop=loop,
                              incomplete_after=incomplete_after)
        intake.prepare_folders()
        try:
            yield Folder(cfg, store, clock, intake, jobstore, loop, incomplete_after)
        finally:
            store.close()
            asyncio.run_coroutine_threadsafe(jobstore.close(), loop).result(30)
