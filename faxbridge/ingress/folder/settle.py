"""Readiness by stability (pure): has a file stopped changing for ``settle`` seconds?

The shell feeds what ``lstat`` says (size, mtime, inode) with the time of its injected clock; the
tracker says which files are due for a look. A file whose content check found it incomplete is
not looked at again until it changes, or until it has sat unchanged for ``incomplete_after``
seconds: then it is due once more, as *expired*, and is rejected with the reason it was waiting
for (never retried forever). A file that keeps changing is never expired: it is being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Signature:
    size: int
    mtime_ns: int
    inode: int


@dataclass
class _Entry:
    sig: Signature
    stable_since: float
    waiting: str | None = None       # why the content check said "not yet"
    noted: bool = False              # a "waiting" line was logged for this version
    parked: bool = False             # not due on its own (a control file waiting for its document)


@dataclass(frozen=True)
class Due:
    rel: PurePosixPath
    expired: bool                    # waited for its content past the bound: reject with ``reason``
    reason: str | None = None


class SettleTracker:
    def __init__(self, settle: float, incomplete_after: float) -> None:
        self.settle = settle
        self.incomplete_after = incomplete_after
        self._entries: dict[PurePosixPath, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rel: object) -> bool:
        return rel in self._entries

    def paths(self) -> list[PurePosixPath]:
        return list(self._entries)

    def see(self, rel: PurePosixPath, sig: Signature, now: float) -> None:
        """The file's current state; a change (or a first sight) starts its settle time again."""
        entry = self._entries.get(rel)
        if entry is None or entry.sig != sig:
            self._entries[rel] = _Entry(sig, now)

    def forget(self, rel: PurePosixPath) -> None:
        self._entries.pop(rel, None)

    def stable(self, rel: PurePosixPath, now: float) -> bool:
        entry = self._entries.get(rel)
        return entry is not None and now - entry.stable_since >= self.settle

    def signature(self, rel: PurePosixPath) -> Signature | None:
        entry = self._entries.get(rel)
        return entry.sig if entry else None

    def wait(self, rel: PurePosixPath, reason: str) -> bool:
        """The content is not complete yet. True the first time for this version (log it once)."""
        entry = self._entries[rel]
        entry.waiting = reason
        first, entry.noted = not entry.noted, True
        return first

    def park(self, rel: PurePosixPath) -> bool:
        """Not due on its own until it changes (a control file whose document has not arrived).
        True the first time for this version (log it once)."""
        entry = self._entries[rel]
        first, entry.parked = not entry.parked, True
        return first

    def due(self, now: float) -> list[Due]:
        out: list[Due] = []
        for rel, entry in self._entries.items():
            if entry.parked:
                continue
            age = now - entry.stable_since
            if entry.waiting is None:
                if age >= self.settle:
                    out.append(Due(rel, False))
            elif age >= self.incomplete_after:
                out.append(Due(rel, True, entry.waiting))
        return out

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next file falls due (0: now), None when nothing is tracked."""
        waits = [
            (self.settle if e.waiting is None else self.incomplete_after) - (now - e.stable_since)
            for e in self._entries.values() if not e.parked
        ]
        return max(0.0, min(waits)) if waits else None
