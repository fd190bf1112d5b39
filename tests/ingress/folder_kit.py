"""Shared pieces for the folder intake tests: a real config, store and folder, with a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Iterator
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
from faxbridge.store import Store
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
def engine_pool(cfg: Config) -> Iterator[EnginePool]:
    """The daemon's worker engine on an event loop of its own thread, as the folder intake's pool
    (for the synchronous intake tests; the watcher does the same on the daemon's loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-engine-loop", daemon=True)
    thread.start()
    engine = asyncio.run_coroutine_threadsafe(_engine(cfg), loop).result(30)
    try:
        yield EnginePool(engine, loop)
    finally:
        asyncio.run_coroutine_threadsafe(engine.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _engine(cfg: Config) -> Engine:
    return Engine(cfg)


@dataclass
class Folder:
    cfg: Config
    store: Store
    clock: FakeClock
    intake: FolderIntake

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
    store = Store(cfg.state_dir, "simulator")
    clock = FakeClock()
    intake = FolderIntake(cfg.watch[0], store, clock, cfg.numbers, incomplete_after=incomplete_after)
    intake.prepare_folders()
    try:
        yield Folder(cfg, store, clock, intake)
    finally:
        store.close()
