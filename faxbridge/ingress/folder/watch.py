"""The folder watcher component: watchdog observers bridged into the daemon's event loop.

One observer per ``[[watch]]``: inotify, or watchdog's PollingObserver with ``poll = true`` (SMB and
NFS shares, where inotify hears nothing). Observer threads only forward the paths they hear about
into the event loop (``loop.call_soon_threadsafe``); the loop hands them, in rounds, to ONE worker
thread that owns every :class:`~faxbridge.ingress.folder.intake.FolderIntake`, so stat calls,
content checks, PDF copies and fsyncs never block the event loop. The intakes commit through the
daemon's own async :class:`~faxbridge.store.JobStore` (``store``), called from that thread
(:class:`~faxbridge.ingress.folder.bridge.LoopStore`): the loop only schedules the call. The
CPU-heavy pure part of a round (content checks, document copies) runs on the daemon's worker
engine (:mod:`faxbridge.workers`: processes started when work comes, gone when idle, each job
under the CPU and memory caps), so a burst of files uses every core.
A file over a cap is rejected with :func:`too_costly`'s reason; a worker that died with a file in
hand is our trouble, tried again. After a round that made jobs, the dispatcher and the result
writer are woken.

With ``recursive = true`` every folder (down to ``watch.max_depth``) gets a plain, non-recursive
watch of its own (:class:`~faxbridge.ingress.folder.tree.FolderWatches`), added as the intake's
sweeps find folders, so that watchdog never walks a tree itself (its walk recursed, and a tree 1,100 levels deep
killed it).

Start-up: the processing area is reconciled with the store (claims a crash left behind), the
observers start, and then a sweep looks at every file already there, so nothing that arrived while
the daemon was down, or during start-up, is missed. A sweep also runs every ``SWEEP_S`` seconds as a
safety net for events the kernel dropped (inotify queue overflow).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirModifiedEvent,
    FileClosedNoWriteEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from faxbridge.clock import Clock
from faxbridge.config import Config, WatchConfig
from faxbridge.errors import StoreError
from faxbridge.ingress.folder.content import incomplete, stage, stage_claimed
from faxbridge.ingress.folder.intake import FolderIntake, TickResult
from faxbridge.ingress.folder.tree import FolderWatches
from faxbridge.intake import office_settings
from faxbridge.store import JobStore
from faxbridge.workers import Engine, TooMuchWork, WorkerLost

log = structlog.get_logger("faxbridge.watch")

SWEEP_S = 60.0
IDLE_S = 1.0
DEBOUNCE_S = 0.05
ERROR_PAUSE_S = 2.0
ROUND_FILES = 100               # files taken per round (claimed, synced and committed together)
_IGNORED_EVENTS = (DirModifiedEvent, FileOpenedEvent, FileClosedNoWriteEvent)


class _Forward(FileSystemEventHandler):
    """Runs in an observer thread: hands each path it hears about to the event loop."""

    def __init__(self, watcher: FolderWatcher, index: int) -> None:
        self.watcher = watcher
        self.index = index

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, _IGNORED_EVENTS):
            return
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        with contextlib.suppress(RuntimeError):   # the loop is closing; the next start sweeps
            self.watcher.loop.call_soon_threadsafe(self.watcher.note, self.index, paths)


def make_observer(watch: WatchConfig) -> BaseObserver:
    if watch.poll:
        return PollingObserver(timeout=min(1.0, max(0.1, watch.settle / 2)))
    return Observer()


def too_costly(name: str) -> str:
    """Why a file over the job caps (``limits.job_cpu``, ``limits.job_memory``) is rejected."""
    return (f"{name} is too much work: it needs more CPU time or memory than the fax server allows one "
            "document (limits.job_cpu, limits.job_memory); send a smaller or simpler document")


# What a content function's answer is when its job went over a cap: a document to stage is
# rejected with its reason; a completeness check says nothing (the file is claimed, and its
# staging, which does the same work, is then refused).
_OVER_CAP: dict[Callable[..., Any], Callable[[tuple[Any, ...]], Any]] = {
    stage: lambda args: too_costly(args[1]),
    stage_claimed: lambda args: too_costly(args[3].name),      # (spool, root, claim id, document, ...)
    incomplete: lambda args: None,
}


class EnginePool(Executor):
    """The folder intake's ``pool`` on the worker engine: ``submit`` from the watcher's thread, the
    job run on the daemon's loop. Over a cap: :data:`_OVER_CAP`'s answer; a worker lost: OSError
    (our trouble: the file is tried again)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if kwargs:
            raise TypeError("the worker engine takes positional arguments only")
        return asyncio.run_coroutine_threadsafe(self._run(fn, args), self.loop)

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return await self.engine.run(fn, *args)
        except TooMuchWork:
            over = _OVER_CAP.get(fn)
            if over is None:
                raise
            return over(args)
        except WorkerLost as exc:
            raise OSError(f"the worker process was lost: {exc}") from exc


class FolderWatcher:
    """A :class:`faxbridge.component.Component`: every ``[[watch]]`` folder of the configuration."""

    name = "folder"

    def __init__(self, cfg: Config, store: JobStore, clock: Clock, *, engine: Engine | None = None,
                 on_jobs: Callable[[], None] = lambda: None,
                 on_file: Callable[[str], None] = lambda result: None) -> None:
        """``store``: the daemon's; ``engine``: the daemon's worker engine (None: one of its own,
        closed with it); ``on_jobs``: called after a round that made or finished jobs (app.py wakes
        the dispatcher and the result-file writer); ``on_file``: each file's result (a metric)."""
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.on_jobs = on_jobs
        self.on_file = on_file
        self.watches = cfg.watch
        self.loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faxbridge-folder")
        self._own_engine = engine is None         # closed and reconfigured here when it is ours
        self.engine = engine or Engine(cfg)
        self._pool = EnginePool(self.engine, self.loop)
        self._intakes: list[FolderIntake] = []
        self._changed: list[set[Path]] = [set() for _ in self.watches]
        self._observers: list[BaseObserver] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.finished = 0

    # ---- the worker thread --------------------------------------------------------------------

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await self.loop.run_in_executor(self._executor, fn, *args)

    def _open(self) -> int:
        finished = 0
        for watch in self.watches:
            intake = FolderIntake(watch, self.store, self.clock, self.cfg.numbers, loop=self.loop, pool=self._pool,
                                  max_decompressed=self.cfg.limits.max_decompressed,
                                  office=office_settings(self.cfg), zone=self.cfg.zone())
            intake.on_result = self.on_file
            self._intakes.append(intake)
            try:
                intake.prepare_folders()
                finished += intake.reconcile()
            except Exception as exc:      # one folder's trouble never keeps the daemon from starting
                log.error("folder.start_failed", watch=str(watch.path), error=f"{type(exc).__name__}: {exc}",
                          exc_info=exc)
                intake.retry_soon()
        return finished

    def _sweep(self) -> int:
        seen = 0
        for intake in self._intakes:
            try:
                seen += intake.sweep()
            except (OSError, RecursionError, ValueError) as exc:
                log.error("folder.sweep_failed", watch=str(intake.root), error=f"{type(exc).__name__}: {exc}")
        return seen

    # ---- the loop ---------------------------------------------------------------------------

    def note(self, index: int, paths: list[str]) -> None:
        self._changed[index].update(Path(p) for p in paths)
        self._wake.set()

    def _woken(self) -> None:
        self.on_jobs()

    async def start(self) -> None:
        finished = await self._in_worker(self._open)
        for index, watch in enumerate(self.watches):
            observer = make_observer(watch)
            handler = _Forward(self, index)
            if watch.recursive:           # one plain watch per folder: watchdog never walks the tree
                folders = FolderWatches(observer, handler, watch.path)
                self._intakes[index].on_folder = folders.ensure
                self._intakes[index].on_swept = folders.keep_only
                folders.ensure(watch.path)
            else:
                observer.schedule(handler, str(watch.path), recursive=False)
            observer.daemon = True
            observer.start()
            self._observers.append(observer)
        seen = await self._in_worker(self._sweep)
        if finished:
            self._woken()
        log.info("folder.watching", folders=[str(w.path) for w in self.watches], files=seen,
                 resumed=finished, poll=[w.poll for w in self.watches])
        self._task = asyncio.create_task(self._run(), name="folder")

    async def _round(self) -> TickResult:
        finished, more, next_in = 0, False, None
        for index, intake in enumerate(self._intakes):
            changed, self._changed[index] = self._changed[index], set()
            result: TickResult = await self._in_worker(intake.tick, changed, ROUND_FILES)
            finished += result.finished
            more = more or result.more
            if result.next_in is not None:
                next_in = result.next_in if next_in is None else min(next_in, result.next_in)
        if finished:
            self.finished += finished
            self._woken()
        return TickResult(finished, more, next_in)

    async def _run(self) -> None:
        last_sweep = self.loop.time()
        while not self._stopping:
            self._wake.clear()
            try:
                result = await self._round()
                if self.loop.time() - last_sweep >= SWEEP_S:
                    last_sweep = self.loop.time()
                    await self._in_worker(self._sweep)
            except (OSError, StoreError) as exc:
                log.error("folder.round_failed", error=str(exc))
                for intake in self._intakes:      # claims the round left are taken again later
                    intake.retry_soon()
                result = TickResult(0, False, ERROR_PAUSE_S)
            except Exception as exc:      # our bug: logged, and the watcher goes on after a pause
                log.error("folder.round_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                result = TickResult(0, False, ERROR_PAUSE_S)
            if result.more or self._stopping:
                continue
            timeout = IDLE_S if result.next_in is None else min(IDLE_S, max(0.02, result.next_in))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
                await asyncio.sleep(DEBOUNCE_S)   # let a burst of events gather into one round
            except TimeoutError:
                pass

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: the number policy applies to the next file; folders need a restart."""
        for intake in self._intakes:
            intake.numbers = cfg.numbers
        if self._own_engine:
            self.engine.reconfigure(cfg)

    def healthy(self) -> bool:
        return (self._task is not None and not self._task.done()
                and all(o.is_alive() for o in self._observers))

    async def stop(self) -> None:
        """Stop watching; a round under way finishes (its files are claimed and committed)."""
        self._stopping = True
        self._wake.set()
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        await asyncio.to_thread(_join, observers)

    async def close(self, timeout: float) -> None:
        self._stopping = True
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=max(timeout, 1.0))
            if not done:
                log.warning("folder.stopped_mid_round")
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.error("folder.loop_crashed", error=repr(self._task.exception()))
        self._executor.shutdown(wait=False)
        if self._own_engine:
            await self.engine.close()


def _join(observers: list[BaseObserver]) -> None:
    for observer in observers:
        observer.join(5.0)

