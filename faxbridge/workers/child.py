"""A worker process of the engine: requests in, replies out, until the daemon closes the socket pair.

Started by :meth:`faxbridge.workers.engine.Engine` as a new interpreter (``python -c``, never a
fork of the daemon), with argv holding its socket's descriptor and the daemon's pid. It dies with
the daemon (``lifeline``); a crash point hit in here kills the daemon too (``crashpoints``). The
first frame is its :class:`Settings`; later ones are jobs, or new settings after a SIGHUP.

Each job is ``fn(*args)`` under the job caps (``caps``): CPU time ``job_cpu`` per job, address space
``job_memory`` for the process. Over either, the reply is ``CAPPED`` and the worker leaves (its
heap may be in any state); any other exception goes back to the caller, pickled, and the worker
stays. Its log lines go to the daemon's stderr.
"""

from __future__ import annotations

import pickle
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog

from faxbridge import crashpoints, heap, lifeline, logs
from faxbridge.workers import caps, wire

log = structlog.get_logger("faxbridge.workers")


@dataclass(frozen=True)
class Settings:
    """What a worker needs of the configuration (sent at start and after each SIGHUP)."""

    job_cpu: float
    job_memory: int
    log: tuple[str, str, bool]          # level, format, show_numbers
    secrets: tuple[str, ...]


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    daemon_pid = int(sys.argv[2])
    lifeline.hold(daemon_pid)                  # the daemon killed: this worker goes too
    crashpoints.also_kill(daemon_pid)          # a test's crash point in here is the daemon's crash
    stream = sock.makefile("rb")
    heap.settle()
    try:
        _serve(sock, stream)
    except OSError as exc:        # the daemon went away while we worked: nothing of ours to keep
        log.warning("workers.orphaned", error=f"{type(exc).__name__}: {exc}")
    finally:
        stream.close()
        sock.close()


def _serve(sock: socket.socket, stream: Any) -> None:
    settings: Settings | None = None
    while (request := wire.read_request(stream)) is not None:
        kind, value = request
        if kind == wire.CONFIG:
            settings = _apply(cast(Settings, value), settings)
            continue
        fn, args = cast(tuple[Callable[..., Any], tuple[Any, ...]], value)
        status, answer = _call(fn, args, settings.job_cpu if settings is not None else 0.0)
        try:
            payload = wire.reply(status, answer)
        except Exception as exc:       # a result that does not pickle: the caller hears why
            payload = wire.reply(wire.RAISED, RuntimeError(f"{fn.__qualname__}: unpicklable answer: {exc!r}"))
        sock.sendall(payload)
        if status == wire.CAPPED:
            return                     # a fresh worker takes the next job


def _apply(new: Settings, old: Settings | None) -> Settings:
    if old is None or new.log != old.log:
        logs.setup(*new.log)
    logs.register_secrets(new.secrets)
    if old is None or new.job_memory != old.job_memory:
        caps.install(new.job_memory)
    return new


def _call(fn: Callable[..., Any], args: tuple[Any, ...], job_cpu: float) -> tuple[int, Any]:
    try:
        with caps.cpu_cap(job_cpu):
            return wire.OK, fn(*args)
    except caps.OverCpu as exc:
        return wire.CAPPED, str(exc)
    except MemoryError as exc:
        return wire.CAPPED, f"MemoryError: over the memory one job may take (limits.job_memory) {exc}".rstrip()
    except Exception as exc:
        log.error("workers.job_raised", function=f"{fn.__module__}.{fn.__qualname__}",
                  error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        try:
            pickle.dumps(exc)
        except Exception:
            return wire.RAISED, RuntimeError(f"{type(exc).__name__}: {exc}")
        return wire.RAISED, exc
