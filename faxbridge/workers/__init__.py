"""One worker engine for the daemon's CPU work: mail intake and the folder watcher's content work.

::

    caller (SMTP DATA, a folder round)          daemon process (event loop)
        │  await engine.run(fn, *args)
        ▼
    Engine (engine.py) ── takes an idle worker, or starts one (≤ cores: os.sched_getaffinity)
        │  socket pair, one job at a time per worker (wire.py: a pickle + big bytes out of band)
        ▼
    worker process (child.py): a new interpreter (subprocess, never a fork of the daemon),
        │  lifeline to the daemon; settings pushed at start and after SIGHUP;
        │  fn(*args) under the job caps (caps.py): CPU time limits.job_cpu, memory limits.job_memory
        ▼
    answer ──▶ the result, or what fn raised, or TooMuchWork (over a cap: the worker leaves),
               or WorkerLost (it died: killed, crashed); either way a new worker takes its place
               when the next job comes. Idle limits.worker_idle seconds: the worker leaves, so a
               daemon at rest is one process.

Workers hold no store and commit nothing: they compute and write plain files (documents staged
in the spool's staging area); the daemon commits (``faxbridge.ingress.smtp.listener``, ``ingress.folder.watch``).
"""

from __future__ import annotations

from faxbridge.workers.engine import Engine, TooMuchWork, WorkerError, WorkerLost, default_size
from faxbridge.workers.wire import Shared

__all__ = ["Engine", "Shared", "TooMuchWork", "WorkerError", "WorkerLost", "default_size"]
