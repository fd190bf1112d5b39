"""Mail intake in worker processes: a received message → the SMTP reply, off the daemon's interpreter.

Accepting a mail is mostly Python work (the MIME parser, the PDF check, the job row) plus disk
syncs. In threads it all shares the daemon's one interpreter lock with the event loop, so however
many cores the machine has, the listener accepts mail at the speed of one. Here each message goes
to one of a few long-lived worker processes, each with its own store connection (SQLite in WAL mode
takes writers from several processes in turn, as it does from several threads), which runs the very
same :meth:`MailIntake.accept_now` and sends back the reply line. The event loop only moves bytes.

The wire between the daemon and a worker is a socket pair, one message at a time per worker
(framed: lengths, a pickled header of plain values, the raw message). Nothing about a job is
decided in the daemon, so nothing is lost if a worker dies: the message in flight is answered
``451 4.3.0`` (the client keeps it and sends it again; what the worker had already committed is
found again by its dedup key), and a new worker takes the dead one's place.

Workers are new interpreters (``subprocess``: never forked from this process with its threads and
event loop), given one end of the socket pair; the first frame sets them up (configuration,
logging). They leave when the daemon closes the socket pair, and at once when the daemon dies
(``lifeline``). Their log lines go to the daemon's own stderr. A new configuration (SIGHUP) is
sent to each worker before its next message.

Each job is capped (``job_caps``): CPU time per message (``limits.job_cpu``) and the worker's
address space (``limits.job_memory``, set when it starts). A message over either is answered
``554 5.3.4`` (``TOO_MUCH_WORK``: it would cost as much on every retry) and its worker leaves; the
daemon puts a fresh one in its place before taking the next message to it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from faxbridge import crashpoints, lifeline, logs
from faxbridge.clock import SystemClock
from faxbridge.config import Config
from faxbridge.ingress import job_caps
from faxbridge.ingress.smtp.data import OUR_TROUBLE, TOO_MUCH_WORK, MailIntake
from faxbridge.ingress.smtp.policy import Recipient
from faxbridge.store import Store

log = structlog.get_logger("faxbridge.smtp")

_FRAME = struct.Struct(">II")       # header length, raw message length
_REPLY = struct.Struct(">I")


def default_size() -> int:
    """Worker processes for this machine: one per core, at least 2 (a disk sync waits), at most 4."""
    return max(2, min(4, os.cpu_count() or 1))


# --- the worker process -------------------------------------------------------------------------------------


def _read_exact(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None          # the daemon closed the socket pair (or died): leave
    return bytes(data)


def main() -> None:
    """A worker process (``python -c`` from :meth:`IntakeProcesses._spawn`): argv has the socket's
    fd and the daemon's pid; the first frame is the set-up (configuration, provider, logging)."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    daemon_pid = int(sys.argv[2])
    lifeline.hold(daemon_pid)                  # the daemon killed: this worker goes too
    crashpoints.also_kill(daemon_pid)          # a test's crash point in here is the daemon's crash
    stream = sock.makefile("rb")
    setup = _read_frame(stream)
    if setup is None:                          # the daemon went away before it said anything
        return
    _, cfg, provider, log_args, secrets = pickle.loads(setup[0])
    logs.setup(*log_args)
    logs.register_secrets(secrets)
    job_caps.install(cfg.limits.job_memory)
    try:
        _serve(sock, stream, MailIntake(cfg, lambda: Store(cfg.state_dir, provider), SystemClock(), threads=0),
               provider)
    except OSError as exc:     # the daemon died while we worked: what we committed stands; leave
        log.warning("smtp.intake_worker_orphaned", error=f"{type(exc).__name__}: {exc}")
    except BaseException as exc:
        log.error("smtp.intake_worker_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        raise SystemExit(1) from None


def _read_frame(stream: Any) -> tuple[bytes, bytes] | None:
    head = _read_exact(stream, _FRAME.size)
    if head is None:
        return None
    meta_size, raw_size = _FRAME.unpack(head)
    meta = _read_exact(stream, meta_size)
    raw = _read_exact(stream, raw_size) if raw_size else b""
    return None if meta is None or raw is None else (meta, raw)


def _serve(sock: socket.socket, stream: Any, intake: MailIntake, provider: str) -> None:
    """Frames in, reply lines out, until the daemon closes the socket pair."""
    store: Store | None = None
    try:
        while (frame := _read_frame(stream)) is not None:
            request = pickle.loads(frame[0])
            if request[0] == "config":
                intake.reconfigure(request[1])
                continue
            _, sender, recipients, extra, spooled = request
            try:
                if store is None:
                    store = Store(intake.cfg.state_dir, provider)
                with job_caps.cpu_cap(intake.cfg.limits.job_cpu):
                    reply = intake.accept_file(store, sender, recipients, spooled or frame[1], extra)
            except (job_caps.TooMuchWork, MemoryError) as exc:
                # Over this job's CPU time or memory: the message's own fault (it would be again on
                # every retry), so 5xx; and this worker leaves (its heap, its store connection may be
                # in any state): the daemon starts a fresh one (``IntakeProcesses.mail``).
                log.warning("smtp.too_much_work", error=f"{type(exc).__name__}: {exc}", sender=sender)
                encoded = TOO_MUCH_WORK.encode("utf-8")
                sock.sendall(_REPLY.pack(len(encoded)) + encoded)
                return
            except Exception as exc:   # the client hears 451 and keeps its mail; never a silent loss
                log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender, exc_info=exc)
                if store is not None:
                    store.close()
                    store = None
                reply = OUR_TROUBLE
            encoded = reply.encode("utf-8")
            sock.sendall(_REPLY.pack(len(encoded)) + encoded)
    finally:
        if store is not None:
            store.close()
        stream.close()
        sock.close()


# --- the daemon's side -------------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    generation: int          # the configuration it has


class IntakeProcesses:
    """A few worker processes for :meth:`MailIntake.accept_now`; ``mail`` returns the SMTP reply."""

    def __init__(self, cfg: Config, provider: str, size: int | None = None) -> None:
        self.cfg = cfg
        self.provider = provider
        self.size = size or default_size()
        self.generation = 0
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: list[_Worker] = []
        self._starting = 0
        self._closed = False

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        # This interpreter's import path, so the worker runs the very code the daemon runs.
        code = f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import main; main()"
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)   # its log lines: our stderr
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        log_cfg = self.cfg.log
        self._send_to(writer, ("setup", self.cfg, self.provider,
                               (log_cfg.level, log_cfg.format, log_cfg.show_numbers), logs.registered_secrets()), b"")
        worker = _Worker(process, reader, writer, self.generation)
        self._all.append(worker)
        log.debug("smtp.intake_worker_started", pid=process.pid, workers=len(self._all))
        return worker

    async def start(self) -> None:
        """Nothing to do yet: workers are started as mail arrives (a daemon that gets none has none)."""

    async def _take(self) -> _Worker:
        """An idle live worker; a new one while there are fewer than ``size``."""
        while True:
            if self._idle.empty() and self._starting + len(self._all) < self.size:
                self._starting += 1
                try:
                    return await self._spawn()
                finally:
                    self._starting -= 1
            worker = await self._idle.get()
            if worker.process.poll() is None:
                return worker
            log.warning("smtp.intake_worker_died", pid=worker.process.pid, exitcode=worker.process.returncode)
            await self._retire(worker)     # and round again: its place is free for a new one

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.generation += 1

    async def mail(self, sender: str, recipients: Sequence[Recipient], raw: bytes | Path,
                   extra: dict[str, Any]) -> str:
        """The reply to DATA for this message (``raw``: its bytes, or the file a big one was spooled to)."""
        worker = await self._take()
        answered = False
        reply = OUR_TROUBLE
        try:
            if worker.generation != self.generation:
                self._send_to(worker.writer, ("config", self.cfg), b"")
                worker.generation = self.generation
            spooled, data = (raw, b"") if isinstance(raw, Path) else (None, raw)
            self._send_to(worker.writer, ("mail", sender, list(recipients), extra, spooled), data)
            await worker.writer.drain()
            size = _REPLY.unpack(await worker.reader.readexactly(_REPLY.size))[0]
            reply = (await worker.reader.readexactly(size)).decode("utf-8")
            answered = True
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            # The worker died (killed, out of memory): this message is not answered 250 (what the
            # worker had committed is found by its dedup key when the client sends it again).
            log.error("smtp.intake_worker_lost", error=f"{type(exc).__name__}: {exc}",
                      exitcode=worker.process.poll())
            return OUR_TROUBLE
        finally:
            if answered and reply != TOO_MUCH_WORK:
                self._idle.put_nowait(worker)
            elif answered:   # that worker leaves after this answer: a fresh one takes its place
                await asyncio.shield(self._replace(worker))
            else:   # died, or we were cancelled mid-message: its socket may hold half a frame
                await asyncio.shield(self._replace(worker))
        return reply

    async def _replace(self, worker: _Worker) -> None:
        await self._retire(worker)
        if self._closed:
            return
        try:
            self._idle.put_nowait(await self._spawn())   # for a session already waiting for a worker
        except OSError as exc:
            log.error("smtp.intake_worker_failed", error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _send_to(writer: asyncio.StreamWriter, meta: tuple[Any, ...], raw: bytes) -> None:
        header = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(_FRAME.pack(len(header), len(raw)) + header)
        if raw:
            writer.write(raw)

    async def _retire(self, worker: _Worker, timeout: float = 5.0) -> None:
        if worker in self._all:
            self._all.remove(worker)
        worker.writer.close()
        try:
            await asyncio.to_thread(worker.process.wait, timeout)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            await asyncio.to_thread(worker.process.wait, timeout)

    async def close(self) -> None:
        """Each worker finishes the message it has (there is none once the listener is idle) and leaves."""
        self._closed = True
        workers, self._all = list(self._all), []
        await asyncio.gather(*(self._retire(w) for w in workers))
        self._idle = asyncio.Queue()
