"""A worker process's lifeline to the daemon: when the daemon is gone, the worker goes too.

Worker processes of a ``multiprocessing`` pool wait on a queue whose write end their siblings
also hold, so a daemon killed with SIGKILL (the OOM killer, a crash, ``kill -9``) would leave its
pool behind, waiting forever (under systemd the unit's cgroup is cleaned up, but nowhere else).
:func:`hold` starts a thread that waits for the daemon process to end (a pidfd on Linux: no
polling, no confusion with a later process that gets the same pid; elsewhere a check every
second) and then ends this process at once.
"""

from __future__ import annotations

import os
import select
import threading
import time

POLL_S = 1.0


def hold(daemon_pid: int) -> None:
    """Pool initializer: end this process when ``daemon_pid`` ends."""
    threading.Thread(target=_wait, args=(daemon_pid,), name="lifeline", daemon=True).start()


def _wait(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):     # no pidfd (not Linux, or too old a kernel): poll
        while _alive(pid):
            time.sleep(POLL_S)
    else:
        select.select([fd], [], [])       # readable when the process has ended
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
