"""The daemon's side of the worker engine: :class:`Engine` (see the package docstring)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from faxbridge import logs
from faxbridge.config import Config
from faxbridge.errors import FaxbridgeError
from faxbridge.workers import wire
from faxbridge.workers.child import Settings

log = structlog.get_logger("faxbridge.workers")

T = TypeVar("T")
RETIRE_WAIT_S = 5.0
SOCKET_BUFFER = 4 << 20      # the daemon's send buffer toward a worker (the kernel caps it at net.core.wmem_max)


class WorkerError(FaxbridgeError):
    """A job did not come back from its worker process with an answer."""


class WorkerLost(WorkerError):
    """The worker died (killed, crashed) or could not be started: our trouble, try again later."""


class TooMuchWork(WorkerError):
    """The job went over its CPU time (``limits.job_cpu``) or memory (``limits.job_memory``): it
    would again on every try."""


def _alive(worker: _Worker) -> bool:
    """Whether an idle worker can take a job: its process not ended, its socket not closed (a
    process that was killed closes its socket a moment before the kernel lets it be reaped)."""
    reader = worker.reader
    return worker.process.poll() is None and not reader.at_eof() and reader.exception() is None


def default_size() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def settings_of(cfg: Config) -> Settings:
    lim, lg = cfg.limits, cfg.log
    return Settings(lim.job_cpu, lim.job_memory, (lg.level, lg.format, lg.show_numbers),
                    tuple(logs.registered_secrets()))


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    generation: int                       # the settings it has
    idle_turn: int = 0                    # bumped each time it goes idle (its retirement timer's ticket)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Engine:
    """Worker processes for CPU work: ``await engine.run(fn, *args)`` runs ``fn(*args)`` in one.

    At most ``size`` workers, started when work comes, each retired after ``idle`` seconds without
    a job (``limits.worker_idle``). ``fn`` must be a module-level function; its arguments and its
    answer must pickle (wrap big ``bytes`` in :class:`pickle.PickleBuffer`: sent without copies).
    Raises what ``fn`` raised, :class:`TooMuchWork` over a cap, :class:`WorkerLost` if its worker died.
    """

    def __init__(self, cfg: Config, *, size: int | None = None) -> None:
        self.size = size or default_size()
        self.idle = cfg.limits.worker_idle
        self._settings = settings_of(cfg)
        self._generation = 0
        self._idle: list[_Worker] = []                # most recently used last (taken first)
        self._all: list[_Worker] = []
        self._starting = 0
        self._waiters: collections.deque[asyncio.Future[_Worker | None]] = collections.deque()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    # ---- for callers ---------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        frame = wire.request(wire.JOB, (fn, args))          # an argument that does not pickle: raised here
        worker = await self._take()
        status, answer, answered = wire.RAISED, None, False
        try:
            if worker.generation != self._generation:
                worker.writer.writelines(wire.request(wire.CONFIG, self._settings))
                worker.generation = self._generation
            worker.writer.writelines(frame)
            del frame
            await worker.writer.drain()
            status, size = wire.REPLY.unpack(await worker.reader.readexactly(wire.REPLY.size))
            payload = await worker.reader.readexactly(size)
            answered = True
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            log.error("workers.lost", pid=worker.process.pid, exitcode=worker.process.poll(),
                      error=f"{type(exc).__name__}: {exc}")
            raise WorkerLost(f"the worker process ended with the job in hand ({type(exc).__name__})") from None
        finally:
            if answered and status != wire.CAPPED:
                self._release(worker)
            else:       # died, over a cap (it leaves), or we were cancelled with a frame half sent
                self._retire(worker, kill=not answered)
        answer = pickle.loads(payload)
        if status == wire.OK:
            return answer  # type: ignore[no-any-return]
        if status == wire.CAPPED:
            log.warning("workers.too_much_work", function=f"{fn.__module__}.{fn.__qualname__}", why=answer)
            raise TooMuchWork(str(answer))
        if isinstance(answer, BaseException):
            raise answer
        raise WorkerError(f"unexpected answer from a worker: {answer!r}")

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: the new caps and log settings go to each worker before its next job."""
        self.idle = cfg.limits.worker_idle
        self._settings = settings_of(cfg)
        self._generation += 1

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and the footprint benchmark)."""
        return [w.process.pid for w in self._all if w.process.poll() is None]

    async def close(self) -> None:
        """Every worker leaves (each finishes the job it has: there is none once callers are done)."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        for worker in list(self._all):
            self._retire(worker, kill=False)
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    # ---- the workers ---------------------------------------------------------------------------

    async def _take(self) -> _Worker:
        """An idle live worker; a new one while there are fewer than ``size``; else wait for one."""
        while True:
            if self._closed:
                raise WorkerLost("the worker engine is closed")
            while self._idle:
                worker = self._idle.pop()
                if worker.timer is not None:
                    worker.timer.cancel()
                if _alive(worker):
                    return worker
                log.warning("workers.died", pid=worker.process.pid, exitcode=worker.process.returncode)
                self._retire(worker, kill=True)
            if len(self._all) + self._starting < self.size:
                self._starting += 1
                try:
                    return await self._spawn()
                finally:
                    self._starting -= 1
            waiter: asyncio.Future[_Worker | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                given = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if given is not None:
                    self._release(given)             # handed to us just as we were cancelled
                raise
            if handed is not None:
                if _alive(handed):
                    return handed
                self._retire(handed, kill=True)

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        # Room for a whole mail (up to smtp.SPOOL_OVER, 4 MiB; bigger ones go as a file name) in
        # the kernel's buffer: one write hands it over, instead of a partial write, a wait for the
        # socket to drain and more writes while the worker reads it in pieces.
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        # This interpreter's import path, so the worker runs the very code the daemon runs.
        code = f"import sys; sys.path[:] = {sys.path!r}; from faxbridge.workers.child import main; main()"
        try:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)   # its log lines: our stderr
            finally:
                theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except OSError as exc:
            ours.close()
            log.error("workers.start_failed", error=f"{type(exc).__name__}: {exc}")
            raise WorkerLost(f"a worker process could not be started: {exc}") from exc
        writer.writelines(wire.request(wire.CONFIG, self._settings))
        worker = _Worker(process, reader, writer, self._generation)
        self._all.append(worker)
        log.debug("workers.started", pid=process.pid, workers=len(self._all))
        return worker

    def _release(self, worker: _Worker) -> None:
        """A worker done with its job: to a caller waiting for one, else idle until retired."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        if self._closed:
            self._retire(worker, kill=False)
            return
        worker.idle_turn += 1
        self._idle.append(worker)
        worker.timer = asyncio.get_running_loop().call_later(
            max(0.0, self.idle), self._expire, worker, worker.idle_turn)

    def _expire(self, worker: _Worker, turn: int) -> None:
        if worker.idle_turn == turn and worker in self._idle:
            self._idle.remove(worker)
            log.debug("workers.idle_retired", pid=worker.process.pid, idle_s=self.idle)
            self._retire(worker, kill=False)

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        """The worker leaves (closing its socket pair ends it; ``kill``: at once); its place is free."""
        if worker in self._all:
            self._all.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if worker.timer is not None:
            worker.timer.cancel()
        if kill and worker.process.poll() is None:
            worker.process.kill()
        worker.writer.close()
        task = asyncio.get_running_loop().create_task(self._reap(worker))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        while self._waiters:                      # a caller waiting for a worker may start one now
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        try:
            await asyncio.to_thread(worker.process.wait, RETIRE_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("workers.killed", pid=worker.process.pid, why="it did not leave when asked")
            worker.process.kill()
            await asyncio.to_thread(worker.process.wait, RETIRE_WAIT_S)
