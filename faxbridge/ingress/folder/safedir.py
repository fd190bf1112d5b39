"""Folders other users can write, handled like a mail server does: through directory descriptors.

A watched folder may be world-writable (a shared outbox). Whatever a local user does in it, and
in ``done``/``failed``/``results`` when those are writable by others, faxbridge must never follow a
symbolic link they planted, never use a folder they made, and never write through a name they can
guess. The rules here:

- **The working area** is ``<watch>/.faxbridge`` (so that claiming stays a ``rename`` on one
  filesystem) with ``processing/`` inside it. It is created by faxbridge with mode 0700 and, every
  time it is used, opened without following links (``O_DIRECTORY|O_NOFOLLOW``, component by
  component from the watched folder) and checked with ``fstat``: a directory, owned by our user.
  One of ours with a looser mode is tightened to 0700 (it can hold only what we put there: nobody
  else could enter it... unless it was loose; every file is checked again when it is opened). One
  that is a link, not a folder, or not ours is **refused**: the intake (``repair=True``) renames it
  aside to ``.faxbridge.refused-<random>`` with an error in the log and creates a fresh one; the
  result writer (``repair=False``) leaves it alone and moves nothing out of it.
- **Files and folders under it are reached by descriptor**: every step is ``openat`` with
  ``O_NOFOLLOW`` from the descriptor of the checked area, never a path through ``.faxbridge`` (a
  name another user can rename away and replace between our check and our use).
- **``done``, ``failed`` and ``results``** are opened with ``O_DIRECTORY|O_NOFOLLOW`` on their last
  component and must be owned by us or root: a link or another user's folder is refused
  (:class:`UnsafeFolder`); the caller keeps what it meant to put there in ``.faxbridge/kept``.
- **Temporary names** are random (128 bits) and created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in the
  target folder's descriptor, then renamed by descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import structlog

log = structlog.get_logger("faxbridge.folder")

AREA = ".faxbridge"
PROCESSING = "processing"
KEPT = "kept"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFolder(OSError):
    """A folder we will not use: a link, not a folder, or another user's. ``reason`` says which."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = f"{path}: {reason}"


def _why_not_ours(st: os.stat_result, owners: tuple[int, ...]) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}, not by faxbridge (uid {os.geteuid()})"
    return None


def open_child(parent_fd: int, name: str, where: Path | str, *, owners: tuple[int, ...] | None = None,
               strict: bool = True) -> int:
    """The folder ``name`` in ``parent_fd``, never through a link; checked when ``owners`` is given.
    A link is refused (UnsafeFolder); so is a file that is not a folder, unless ``strict`` is
    False (then it is the plain OSError, trouble to retry)."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link:
            raise UnsafeFolder(where, "a symbolic link") from exc
        if strict:
            raise UnsafeFolder(where, "not a folder") from exc
        raise
    if owners is not None:
        why = _why_not_ours(os.fstat(fd), owners)
        if why is not None:
            os.close(fd)
            raise UnsafeFolder(where, why)
    return fd


def _own_dir(parent_fd: int, name: str, where: Path, *, repair: bool) -> int:
    """Our private folder ``name`` in ``parent_fd`` (made 0700 when missing), or UnsafeFolder."""
    for attempt in (1, 2):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        try:
            fd = open_child(parent_fd, name, where, owners=(os.geteuid(),))
        except UnsafeFolder as exc:
            if not repair or attempt == 2:
                raise
            aside = f"{name}.refused-{secrets.token_hex(8)}"
            os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            log.error("folder.area_refused", folder=str(where), reason=exc.reason, moved_to=aside,
                      note="faxbridge made a fresh working area; nothing in the refused one is used")
            continue
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o700)
            log.warning("folder.area_tightened", folder=str(where), mode="0700")
        return fd
    raise AssertionError("unreachable")


_round = threading.local()      # .areas: watch path -> the checked area's descriptor, in one_check_per_round


@contextlib.contextmanager
def one_check_per_round() -> Iterator[None]:
    """Within the block (on this thread), :func:`open_area` opens and checks each watched folder's
    working area once, at its first use, and answers a duplicate of that descriptor afterwards: a
    round of a burst took it several times a file, each an ``open`` per component, ``fstat``s and
    a ``mkdir`` (the metadata operations a burst's fsyncs hold up). The descriptor is the checked
    folder itself, so a name swapped meanwhile changes nothing for the round; the next round checks
    again."""
    areas: dict[Path, int] = {}
    outer = getattr(_round, "areas", None)
    _round.areas = areas
    try:
        yield
    finally:
        _round.areas = outer
        for fd in areas.values():
            os.close(fd)


def open_area(watch_path: Path, *, repair: bool = False) -> int:
    """The descriptor of ``<watch>/.faxbridge/processing``, checked (see the module's rules); the
    caller closes it."""
    areas: dict[Path, int] | None = getattr(_round, "areas", None)
    if areas is None:
        return _open_area(watch_path, repair=repair)
    if watch_path not in areas:
        areas[watch_path] = _open_area(watch_path, repair=repair)
    return os.dup(areas[watch_path])


def _open_area(watch_path: Path, *, repair: bool) -> int:
    root = os.open(watch_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        area = _own_dir(root, AREA, watch_path / AREA, repair=repair)
    finally:
        os.close(root)
    try:
        return _own_dir(area, PROCESSING, watch_path / AREA / PROCESSING, repair=repair)
    finally:
        os.close(area)


def open_kept(area_fd: int, where: Path) -> int:
    """``.faxbridge/kept``: where an original or a result goes when its own folder was refused."""
    parent = os.open("..", DIR_FLAGS, dir_fd=area_fd)
    try:
        return _own_dir(parent, KEPT, where, repair=False)
    finally:
        os.close(parent)


def open_target(path: Path) -> int:
    """``done``/``failed``/``results``: made when missing; its last component never a link, and
    owned by us or root; else UnsafeFolder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.name, 0o755, dir_fd=parent)
        return open_child(parent, path.name, path, owners=(os.geteuid(), 0), strict=False)
    finally:
        os.close(parent)


def open_path(top_fd: int, rel: PurePosixPath, where: Path) -> int:
    """The folder ``rel`` under ``top_fd``, every component opened without following links."""
    fd = os.dup(top_fd)
    for part in rel.parts:
        try:
            inner = open_child(fd, part, where)
        finally:
            os.close(fd)
        fd = inner
    return fd


def fd_path(fd: int) -> Path:
    """A path naming exactly the folder behind ``fd`` (for listing it), whatever its name is now."""
    return Path(f"/proc/self/fd/{fd}")


def temp_name(suffix: str) -> str:
    return f".{secrets.token_hex(16)}{suffix}"


def create_exclusive(dir_fd: int, suffix: str, mode: int = 0o644) -> tuple[str, int]:
    """A new file with an unpredictable name in ``dir_fd``: (its name, a descriptor to write)."""
    while True:
        name = temp_name(suffix)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        return name, fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
