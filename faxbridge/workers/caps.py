"""A CPU-time and memory cap per job, in the worker processes of the engine (``workers.child``).

- Memory: the worker's address space is capped (``RLIMIT_AS``, soft limit, ``limits.job_memory``)
  once at start; an allocation over it raises MemoryError in the job that made it.
- CPU: ``RLIMIT_CPU`` counts a process's whole life, so before each job its soft limit is set to
  the CPU time used so far plus ``limits.job_cpu`` (rounded up to whole seconds, as the kernel
  counts), and lifted after. Over it, the kernel sends SIGXCPU, which here raises
  :class:`OverCpu` in the job (a BaseException: no ``except Exception`` on the way turns it
  into something else). The hard limit is left alone, so the worker may lift it again.

Both end the job: the engine raises :class:`faxbridge.workers.TooMuchWork` to its caller (a mail
is answered 554 5.3.4, a folder file rejected: it would cost as much on every retry) and the worker
leaves (a new one is started for the next job). Used only in worker processes: threads share one
process, and its limits.

Where the limits cannot be set (a seccomp filter that refuses ``setrlimit``, as a unit with
``SystemCallFilter=~@resources`` and no exception for it would), the caps are off in that worker,
said once in the log; mail is still taken (the unit's ``MemoryMax`` then bounds the whole tree).
"""

from __future__ import annotations

import contextlib
import math
import resource
import signal
from collections.abc import Iterator
from types import FrameType

import structlog

log = structlog.get_logger("faxbridge.intake")


class OverCpu(BaseException):
    """This job used more CPU time than ``limits.job_cpu`` (raised inside the worker)."""


def _on_xcpu(signum: int, frame: FrameType | None) -> None:
    if not _capped:
        return       # a late signal after the work was done: nothing to stop
    work_done()
    raise OverCpu("over the CPU time one message may take (limits.job_cpu)")


_refused = False   # setrlimit is not allowed here: the caps are off in this process


def _setrlimit(which: int, limits: tuple[int, int]) -> bool:
    global _refused
    if _refused:
        return False
    try:
        resource.setrlimit(which, limits)
    except (OSError, ValueError) as exc:
        _refused = True
        log.warning("intake.caps_unavailable", error=str(exc),
                    why="setrlimit is refused here; limits.job_cpu and limits.job_memory are not applied")
        return False
    return True


def install(job_memory: int) -> None:
    """In a worker process at start: the memory cap, and SIGXCPU raising :class:`OverCpu`."""
    signal.signal(signal.SIGXCPU, _on_xcpu)
    if job_memory > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = job_memory if hard == resource.RLIM_INFINITY else min(job_memory, hard)
        _setrlimit(resource.RLIMIT_AS, (soft, hard))


def _used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _lift() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    _setrlimit(resource.RLIMIT_CPU, (hard, hard))


def cpu_limit(used: float, job_cpu: float, hard: int) -> int:
    """The soft RLIMIT_CPU (whole seconds) that lets a job use ``job_cpu`` more seconds. Pure."""
    soft = math.ceil(used + job_cpu)
    return soft if hard == resource.RLIM_INFINITY else min(soft, hard)


_capped = False    # a cap is set in this (worker) process now


@contextlib.contextmanager
def cpu_cap(job_cpu: float) -> Iterator[None]:
    """At most ``job_cpu`` seconds of CPU time for the work inside (0: no cap), or until
    :func:`work_done` says the rest (committing the jobs) must not be cut short."""
    global _capped
    if job_cpu <= 0:
        yield
        return
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if not _setrlimit(resource.RLIMIT_CPU, (cpu_limit(_used(), job_cpu, hard), hard)):
        yield
        return
    _capped = True
    try:
        yield
    finally:
        work_done()


def work_done() -> None:
    """The capped work is over (a no-op where no cap is set: threads, tools, tests)."""
    global _capped
    if _capped:
        _capped = False
        _lift()
