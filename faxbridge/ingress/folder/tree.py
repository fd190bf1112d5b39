"""Walking a folder tree someone else controls: bounded, iterative, never following a link.

A watched folder (with ``recursive = true``) may be 1,100 levels deep or hold a symlink loop; the
walk must neither recurse in Python (``RecursionError``) nor follow links (loops, escapes), and a
folder that cannot be listed (removed meanwhile, no permission) is one error, not the end of the
walk. :func:`walk` keeps its own stack, enters folders only up to ``max_depth`` levels below the
top (deeper folders are reported to ``on_deep`` and not entered), and reports a folder it cannot
list to ``on_error``.

:class:`FolderWatches` keeps one non-recursive watchdog watch per folder of a recursive
``[[watch]]``, so that watchdog itself never walks the tree (its own recursive walk is what a deep
tree broke): the intake reports every folder its sweeps visit, and the watches follow.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from watchdog.events import FileSystemEventHandler
from watchdog.observers.api import BaseObserver, ObservedWatch

log = structlog.get_logger("faxbridge.watch")

MAX_WATCHED_FOLDERS = 1000       # beyond this, a folder is found by the periodic sweep only


@dataclass
class Folder:
    path: Path
    depth: int                              # levels below the top of the walk (the top: 0)
    files: list[str] = field(default_factory=list)       # everything that is not a real folder
    folders: list[str] = field(default_factory=list)     # real subfolders (entered when not too deep)


def _ignore(_path: Path, _error: OSError) -> None:
    return None


def walk(top: Path, max_depth: int, *, skip: Callable[[str], bool] = lambda name: False,
         on_deep: Callable[[Path], None] = lambda path: None,
         on_error: Callable[[Path, OSError], None] = _ignore, start_depth: int = 0) -> Iterator[Folder]:
    """Every folder from ``top`` (at ``start_depth``) down to ``max_depth``, top first. A link, to
    a folder or anything else, is listed among the files and never followed. Subfolders whose name
    ``skip`` says are listed in ``folders`` but not entered."""
    stack = [(top, start_depth)]
    while stack:
        path, depth = stack.pop()
        folder = Folder(path, depth)
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    (folder.folders if is_dir else folder.files).append(entry.name)
        except OSError as exc:
            on_error(path, exc)
            continue
        folder.files.sort()
        folder.folders.sort()
        yield folder
        for name in reversed(folder.folders):
            if skip(name):
                continue
            if depth + 1 > max_depth:
                on_deep(path / name)
                continue
            stack.append((path / name, depth + 1))


class FolderWatches:
    """Non-recursive watches on the folders of one recursive ``[[watch]]`` (thread-safe)."""

    def __init__(self, observer: BaseObserver, handler: FileSystemEventHandler, root: Path) -> None:
        self.observer = observer
        self.handler = handler
        self.root = root
        self._lock = threading.Lock()
        self._watches: dict[Path, tuple[int, ObservedWatch]] = {}
        self._full = False

    def __len__(self) -> int:
        return len(self._watches)

    def ensure(self, path: Path) -> None:
        """Watch this folder (again, when it is a new folder under an old name)."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        with self._lock:
            known = self._watches.get(path)
            if known is not None and known[0] == st.st_ino:
                return
            if known is not None:
                self._unschedule(path)
            if len(self._watches) >= MAX_WATCHED_FOLDERS:
                if not self._full:
                    self._full = True
                    log.warning("folder.too_many_folders", watch=str(self.root), limit=MAX_WATCHED_FOLDERS,
                                folder=str(path), note="more folders are looked at by the periodic sweep only")
                return
            try:
                watch = self.observer.schedule(self.handler, str(path), recursive=False)
            except OSError as exc:
                log.warning("folder.watch_failed", watch=str(self.root), folder=str(path), error=str(exc))
                return
            self._watches[path] = (st.st_ino, watch)

    def keep_only(self, seen: set[Path]) -> None:
        """After a full sweep: drop the watches of folders that are gone."""
        with self._lock:
            for path in [p for p in self._watches if p not in seen]:
                self._unschedule(path)
            self._full = len(self._watches) >= MAX_WATCHED_FOLDERS

    def _unschedule(self, path: Path) -> None:
        _ino, watch = self._watches.pop(path)
        with contextlib.suppress(KeyError, OSError):
            self.observer.unschedule(watch)
