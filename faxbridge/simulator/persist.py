"""The built-in simulator's memory across restarts: its faxes, ids and owed webhooks in one file.

A simulated fax network that forgot everything at each restart stranded the jobs in flight
("Fax not found" for ever) and numbered new faxes from the start again, so a new fax could
take a stuck job's id and the job another fax's outcome. The daemon's built-in simulator
therefore keeps its state in ``state_dir/simulator.state``: written (temp file, fsync, rename,
mode 0600) before a send is answered and whenever a fax ends or a webhook is delivered, read at
start. The faxes' timelines are planned at acceptance and computed from the clock, so a fax
goes on after a restart as if nothing had happened; ids never repeat.

The file is a pickle of the simulator's own records. It lives in the daemon's state folder
(0700, the daemon's only), beside the job database, and is read only by the daemon that wrote
it; a file that cannot be read is set aside (``.unreadable``) and the simulator starts empty.
"""

from __future__ import annotations

import os
import pickle
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from faxbridge.durable import fsync_dir
from faxbridge.simulator.openfax_model import HistoryRow
from faxbridge.simulator.records import Notification, SimFax

log = structlog.get_logger("faxbridge.simulator")

VERSION = 1


@dataclass
class SimState:
    faxes: list[SimFax] = field(default_factory=list)
    next_id: dict[str, int] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    row_ids: dict[str, int] = field(default_factory=dict)
    outbox: list[Notification] = field(default_factory=list)


def load(path: Path, *, set_aside: bool = True) -> SimState | None:
    """The saved state, or None when there is none (or it cannot be read: then it is set aside,
    unless ``set_aside`` is False: a read-only look)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        version, state = pickle.loads(data)   # our own file, in our own 0700 folder
        if version != VERSION or not isinstance(state, SimState):
            raise ValueError(f"unknown simulator state version {version!r}")
    except Exception as exc:
        if not set_aside:
            log.warning("simulator.state_unreadable", path=str(path), error=str(exc))
            return None
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        log.error("simulator.state_unreadable", path=str(path), moved_to=str(aside), error=str(exc))
        return None
    return state


def save(path: Path, state: SimState) -> None:
    """Write ``state`` so that a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((VERSION, state), fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
