"""Whether a daemon serves a state folder: it holds ``faxbridge.lock`` there for its whole life.

Asked by the commands that only read or queue (``faxbridge send``, ``balance``), so they can say
when nobody will act on what they do, instead of silently using a folder no daemon serves.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

LOCK_NAME = "faxbridge.lock"
DB_NAME = "faxbridge.db"


def is_served(state_dir: Path) -> bool:
    """True while a running daemon holds the state folder's lock."""
    try:
        with open(state_dir / LOCK_NAME) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except FileNotFoundError:
        pass
    return False


def has_store(state_dir: Path) -> bool:
    """True when a job store exists in the state folder (a daemon or a send made one)."""
    return (state_dir / DB_NAME).is_file()
