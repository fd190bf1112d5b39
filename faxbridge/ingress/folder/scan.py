"""Scan: which files of one watched folder are there, and which are ready to be taken.

Discovery (a sweep of the whole folder, or the paths an observer heard of) feeds the
:class:`~faxbridge.ingress.folder.settle.SettleTracker` (injected clock; pure), and :meth:`Scanner.picks`
answers the files due now, in a fair order (:func:`fair`), each as a :class:`Pick`. A file is ready
when (in this order; the first that fails decides):

1. it is not a temporary or system name, nor a control file (those go with their document);
2. it is a regular file (a symbolic link is never followed: it is rejected, and the link itself,
   not its target, moves to ``failed``), no larger than ``watch.max_size``;
3. its size, mtime and inode have not changed for ``settle`` (and neither have its control files);
4. with a control file beside it, it is complete by declaration; without one, its content must
   be complete (``Pick.check``: the intake has :func:`~faxbridge.ingress.folder.content.incomplete`
   look, in place and read-only, before the claim); a file still incomplete after
   ``incomplete_after`` seconds unchanged is rejected with the reason it was waiting for.

Only ``lstat`` and directory listings here: nothing is opened, moved or committed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from faxbridge.config import WatchConfig
from faxbridge.ingress.folder.claimed import size_words
from faxbridge.ingress.folder.control import control_names, is_control, is_ignored, relevant, stem
from faxbridge.ingress.folder.settle import Due, SettleTracker, Signature
from faxbridge.ingress.folder.tree import walk

log = structlog.get_logger("faxbridge.folder")

LOOK_BATCH = 500             # tracked files lstat'ed again per tick, in turn


def fair(due: list[Due], limit: int) -> list[Due]:
    """The files a round takes: all when they fit, else half from the oldest first seen and half
    from the newest, so that neither a flood dropped earlier starves a file dropped after it, nor
    a flood that keeps coming starves the files already waiting."""
    if len(due) <= limit:
        return due
    newest = limit // 2
    return due[:limit - newest] + due[len(due) - newest:]


def default_incomplete_after(settle: float) -> float:
    """How long a file may sit unchanged but incomplete before it is rejected."""
    return max(5.0, 10.0 * settle)


@dataclass(frozen=True)
class Pick:
    """A file chosen in a tick: to be claimed (and made a job, or rejected with ``reject``)."""
    rel: PurePosixPath
    controls: list[PurePosixPath]
    reject: str | None = None
    check: bool = False      # its content must be checked complete first

    @property
    def paths(self) -> tuple[PurePosixPath, ...]:
        return (self.rel, *self.controls)


class Scanner:
    """Discovery and settling for one ``[[watch]]`` (used from one thread)."""

    def __init__(self, watch: WatchConfig, tracker: SettleTracker) -> None:
        self.watch = watch
        self.root = watch.path
        self.tracker = tracker
        self.on_folder: Callable[[Path], None] = lambda folder: None  # a folder a sweep visited
        self.on_swept: Callable[[set[Path]], None] = lambda folders: None   # every folder, after a full sweep
        self._deep: set[Path] = set()
        self._look_at = 0

    # ---- discovery --------------------------------------------------------------------------

    def sweep(self, now: float, under: Path | None = None) -> int:
        """Look at every file in the folder (or a subfolder just moved in). Returns files seen.
        Iterative and bounded (:func:`faxbridge.ingress.folder.tree.walk`): folders deeper than
        ``watch.max_depth`` are not entered, links are never followed, and a folder that cannot
        be listed is logged and skipped."""
        start = under or self.root
        rel = self._rel(start)
        if rel is None:
            return 0
        depth = len(rel.parts)
        max_depth = self.watch.max_depth if self.watch.recursive else 0
        if depth > max_depth:
            self._too_deep(start)
            return 0
        found: list[Path] = []
        folders: set[Path] = set()
        for folder in walk(start, max_depth, skip=is_ignored, on_deep=self._too_deep,
                           on_error=self._unlisted, start_depth=depth):
            folders.add(folder.path)
            self.on_folder(folder.path)
            found += [folder.path / f for f in folder.files]
        self.observe(found, now)
        if under is None:
            self.on_swept(folders)
        return len(found)

    def _too_deep(self, path: Path) -> None:
        if path not in self._deep and len(self._deep) < 1000:
            self._deep.add(path)
            log.warning("folder.too_deep", watch=str(self.root), folder=str(path),
                        max_depth=self.watch.max_depth, note="ignored: deeper than watch.max_depth")

    def _unlisted(self, path: Path, exc: OSError) -> None:
        if path != self.root and isinstance(exc, FileNotFoundError):
            return                                # removed meanwhile
        log.warning("folder.unlisted", watch=str(self.root), folder=str(path), error=str(exc))

    def _rel(self, path: Path) -> PurePosixPath | None:
        try:
            return PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return None

    def observe(self, paths: Iterable[Path], now: float) -> None:
        """These paths may have changed: look at them now."""
        for path in paths:
            rel = self._rel(path)
            if rel is None or not relevant(rel, self.watch.recursive) or len(rel.parts) > self.watch.max_depth + 1:
                continue
            self.look(rel, now)

    def look(self, rel: PurePosixPath, now: float) -> None:
        """``lstat`` one path again: seen (with its signature), forgotten when gone, swept when a folder."""
        path = self.root / rel
        try:
            st = os.lstat(path)
        except OSError:
            self.tracker.forget(rel)
            return
        if stat.S_ISDIR(st.st_mode):
            if self.watch.recursive:
                self.sweep(now, path)
            return
        self.tracker.see(rel, Signature(st.st_size, st.st_mtime_ns, st.st_ino), now)

    def refresh(self, now: float) -> None:
        """Look again at the tracked files (events may have been missed): all of them when there
        are few, else the next ``LOOK_BATCH`` in turn, so that a flood of files costs each tick a
        bounded amount. A file is lstat'ed again before it is taken anyway."""
        paths = self.tracker.paths()
        if len(paths) > LOOK_BATCH:
            start = self._look_at % len(paths)
            self._look_at = start + LOOK_BATCH
            paths = (paths[start:] + paths[:start])[:LOOK_BATCH]
        for rel in paths:
            self.look(rel, now)

    # ---- what is due -------------------------------------------------------------------------

    def picks(self, now: float, limit: int) -> tuple[list[Pick], bool]:
        """The files to take this round (at most ``limit`` considered), and whether more were due.
        A pick without ``check`` is forgotten by the tracker at once (it is being taken)."""
        due = self.tracker.due(now)
        picks: list[Pick] = []
        for item in fair(due, limit):
            pick = self._consider(item, now)
            if pick is not None:
                if not pick.check:
                    self.forget(pick)
                picks.append(pick)
        return picks, len(due) > limit

    def next_due_in(self, now: float) -> float | None:
        return self.tracker.next_due_in(now)

    def incomplete(self, pick: Pick, why: str) -> None:
        """A picked file's content is not whole yet: it waits (and is rejected once it has waited
        ``incomplete_after``)."""
        if self.tracker.wait(pick.rel, why):
            log.info("folder.waiting", file=str(pick.rel), watch=str(self.root), reason=why)

    def forget(self, pick: Pick) -> None:
        for path in pick.paths:
            self.tracker.forget(path)

    def look_again(self, pick: Pick, now: float) -> None:
        """A pick that could not be claimed: its files are looked at anew."""
        for path in pick.paths:
            self.look(path, now)

    def _consider(self, due: Due, now: float) -> Pick | None:
        rel = due.rel
        if rel not in self.tracker:
            return None                           # taken with its document earlier in this round
        if is_control(rel.name):
            if self._document_for(rel) is None and self.tracker.park(rel):
                log.info("folder.control_waiting", control=str(rel), watch=str(self.root))
            return None
        try:
            st = os.lstat(self.root / rel)
        except OSError:
            self.tracker.forget(rel)
            return None
        if stat.S_ISLNK(st.st_mode):
            return Pick(rel, [], f"{rel.name} is a symbolic link; faxbridge takes only regular files")
        if not stat.S_ISREG(st.st_mode):
            return Pick(rel, [], f"{rel.name} is not a regular file")
        if Signature(st.st_size, st.st_mtime_ns, st.st_ino) != self.tracker.signature(rel):
            self.tracker.see(rel, Signature(st.st_size, st.st_mtime_ns, st.st_ino), now)
            return None                           # changed since it was last looked at: settle again
        if st.st_size > self.watch.max_size:
            return Pick(rel, [], f"{rel.name} is {size_words(st.st_size)}; the limit is "
                                 f"{size_words(self.watch.max_size)} (watch.max_size)")
        controls = [rel.parent / c for c in control_names(rel.name) if os.path.lexists(self.root / rel.parent / c)]
        if st.st_size == 0 and not controls and not due.expired:
            if self.tracker.wait(rel, f"{rel.name} is empty"):     # no content check needed to say so
                log.info("folder.waiting", file=str(rel), watch=str(self.root), reason=f"{rel.name} is empty")
            return None
        for control in controls:
            if not self.tracker.stable(control, now):
                self.look(control, now)           # a control file still being written: wait for it
                return None
        if not controls:
            if due.expired:
                return Pick(rel, [], due.reason or f"{rel.name} is incomplete")
            return Pick(rel, [], check=True)
        return Pick(rel, controls)

    def _document_for(self, control: PurePosixPath) -> PurePosixPath | None:
        folder = self.root / control.parent
        want = stem(control.name)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            if name != control.name and not is_control(name) and stem(name) == want \
                    and relevant(control.parent / name, self.watch.recursive):
                return control.parent / name
        return None
