"""The processing area of a watched folder, and the careful file moves around it.

Layout: ``<watch path>/.faxbridge/processing/<claim id>/<relative path>``. A claim is a folder named
by a fresh ULID, holding the document (and its control files) under the path they had relative to
the watched folder (``sub/letter.pdf`` with ``recursive``). It lives inside the watched folder so
that claiming is a ``rename`` on the same filesystem (atomic: the writer, a user renaming the file
and faxbridge cannot all win); ``.faxbridge`` starts with a dot, so the watcher never takes it for
a new file. The job made from a claim carries ``dedup_key = "folder:<claim id>"``, which is how a
restart tells a claim that already has its job from one that does not.

Claiming order: the folder, then the control files, then the document, then an fsync of every
folder touched (once per round of claims, :func:`sync_claims`; always before the job is committed,
so a crash can never leave both a committed job and the file back in the watched folder). What a
crash can leave, and what start-up does with it:

- an empty claim folder: removed;
- control files without their document: given back to the watched folder (taken again later);
- a document, no job: the job is made now (exactly once: the document is no longer in the
  watched folder);
- a document and its job: left for the result-file step (:mod:`faxbridge.ingress.folder.results`).

The working area is ours alone: made 0700 and checked at every use, and everything in it is
reached through directory descriptors, never a path through ``.faxbridge``
(:mod:`faxbridge.ingress.folder.safedir` has the rules; the watched folder may be writable by others).
Why there and not under ``state_dir``: claiming must be an atomic ``rename`` on the watched
folder's filesystem, which ``state_dir`` need not share.

Moving out (to ``done``/``failed``) never overwrites: ``os.link`` to the target name (fails if the
name exists) then unlink, with a copy (a random, exclusive temporary name) for another
filesystem; a name that is taken gets a suffix before its extension (``letter-2.pdf``). All of it
by descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from faxbridge.durable import fsync_dir
from faxbridge.ingress.folder import safedir
from faxbridge.ingress.folder.control import is_control, numbered
from faxbridge.ingress.folder.tree import walk

AREA = safedir.AREA
QUARANTINE = "quarantine"
DEDUP_PREFIX = "folder:"
MAX_CLAIM_DEPTH = 64              # a claim holds the path its document had (watch.max_depth deep)


def processing_dir(watch_path: Path) -> Path:
    return watch_path / AREA / "processing"


def dedup_key(claim_id: str) -> str:
    return DEDUP_PREFIX + claim_id



def claim_files(claim: Path) -> tuple[PurePosixPath | None, list[PurePosixPath]]:
    """(document, control files) in a claim, as paths relative to the claim (and the watched folder)."""
    document: PurePosixPath | None = None
    controls: list[PurePosixPath] = []
    for folder in walk(claim, MAX_CLAIM_DEPTH):
        for name in folder.files:
            rel = PurePosixPath((folder.path / name).relative_to(claim).as_posix())
            if is_control(name):
                controls.append(rel)
            elif document is None:
                document = rel
    return document, controls


def claim(watch_path: Path, claim_id: str, document: PurePosixPath, controls: list[PurePosixPath], *,
          sync: bool = True) -> bool:
    """Rename the controls, then the document, into a new claim. False when the document vanished
    meanwhile (renamed or removed by someone else): nothing is claimed then.

    Every step goes through directory descriptors (:mod:`faxbridge.ingress.folder.safedir`): the
    working area is opened and checked now (a refused one is moved aside and made afresh), the
    claim folder is made in it by descriptor, and the folder the document sits in is opened from
    the watched folder component by component without following links, so a subfolder swapped
    for a link claims nothing from elsewhere. Raises :class:`~faxbridge.ingress.folder.safedir.UnsafeFolder`
    when no safe working area can be had.

    With ``sync=False`` the folders touched are not fsynced here: the caller claims a round of
    files and then calls :func:`sync_claims` once for all of them, before any job is committed."""
    area = safedir.open_area(watch_path, repair=True)
    root = os.open(watch_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = [area, root]
    try:
        os.mkdir(claim_id, 0o700, dir_fd=area)
        target = safedir.open_child(area, claim_id, watch_path / AREA)
        fds.append(target)
        for part in document.parent.parts:
            os.mkdir(part, 0o700, dir_fd=target)
            target = safedir.open_child(target, part, watch_path / AREA)
            fds.append(target)
        try:
            source = safedir.open_path(root, document.parent, watch_path / document.parent)
        except (FileNotFoundError, safedir.UnsafeFolder):
            _drop_claim(watch_path, claim_id)
            return False
        fds.append(source)
        taken: list[str] = []
        for control in controls:
            try:
                os.rename(control.name, control.name, src_dir_fd=source, dst_dir_fd=target)
                taken.append(control.name)
            except FileNotFoundError:
                continue
        try:
            os.rename(document.name, document.name, src_dir_fd=source, dst_dir_fd=target)
        except FileNotFoundError:
            for name in taken:            # give the controls back (a name taken meanwhile stays)
                if not _exists(source, name):
                    os.rename(name, name, src_dir_fd=target, dst_dir_fd=source)
            _drop_claim(watch_path, claim_id)
            return False
    finally:
        for fd in fds:
            os.close(fd)
    if sync:
        sync_claims(watch_path, [(claim_id, document)])
    return True


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _drop_claim(watch_path: Path, claim_id: str) -> None:
    """Remove an (empty) claim folder just made, by descriptor."""
    area = safedir.open_area(watch_path)
    try:
        stack = [claim_id]
        while stack:                      # the empty subfolders first, deepest first
            try:
                inner = [f"{stack[-1]}/{e.name}" for e in os.scandir(safedir.fd_path(area) / stack[-1])
                         if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                stack.pop()
                continue
            if inner:
                stack += inner
                continue
            try:
                os.rmdir(stack.pop(), dir_fd=area)
            except OSError:
                return                    # not empty: reconcile sees it at the next start
    finally:
        os.close(area)


def open_claimed(watch_path: Path, claim_id: str, rel: PurePosixPath) -> tuple[int, os.stat_result]:
    """A file in a claim, opened from the checked working area without following any link: (its
    descriptor, its fstat). The caller closes it and uses THAT descriptor, never the path."""
    area = safedir.open_area(watch_path)
    try:
        folder = safedir.open_path(area, PurePosixPath(claim_id) / rel.parent, watch_path / AREA)
    finally:
        os.close(area)
    try:
        fd = os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    return fd, os.fstat(fd)


def list_claim(watch_path: Path, claim_id: str) -> tuple[PurePosixPath | None, list[PurePosixPath]]:
    """:func:`claim_files` of a claim reached through the checked working area's descriptor."""
    area = safedir.open_area(watch_path)
    try:
        folder = safedir.open_child(area, claim_id, watch_path / AREA)
    finally:
        os.close(area)
    try:
        return claim_files(safedir.fd_path(folder))
    finally:
        os.close(folder)


def sync_claims(watch_path: Path, taken: list[tuple[str, PurePosixPath]]) -> None:
    """Make claims durable: fsync every folder they touched, each once (the claim folders, the
    processing area, then the folders the documents left)."""
    area = processing_dir(watch_path)
    inside: list[Path] = []
    left: dict[Path, None] = {}
    for claim_id, document in taken:
        target = area / claim_id
        folder = target / document.parent
        while True:
            inside.append(folder)
            if folder == target:
                break
            folder = folder.parent
        left[(watch_path / document).parent] = None
    for folder in [*inside, area]:
        fsync_dir(folder)
    for folder in left:
        try:
            fsync_dir(folder)
        except FileNotFoundError:
            continue                      # a subfolder removed since (a claim resumed at start-up)


def quarantine(watch_path: Path, claim_id: str, reason: str) -> Path:
    """Move a claim that cannot be made a job to ``.faxbridge/quarantine/<claim id>`` with a
    ``<claim id>.REASON.txt`` beside it, by descriptor; nothing there is ever taken again (an
    administrator looks)."""
    area = safedir.open_area(watch_path)
    try:
        parent = os.open("..", safedir.DIR_FLAGS, dir_fd=area)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(QUARANTINE, 0o700, dir_fd=parent)
            folder = safedir.open_child(parent, QUARANTINE, watch_path / AREA / QUARANTINE, owners=(os.geteuid(),))
        finally:
            os.close(parent)
        try:
            os.rename(claim_id, claim_id, src_dir_fd=area, dst_dir_fd=folder)
            name, fd = safedir.create_exclusive(folder, ".tmp", 0o600)
            try:
                safedir.write_all(fd, (reason + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
            os.replace(name, f"{claim_id}.REASON.txt", src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
            os.fsync(area)
        finally:
            os.close(folder)
    finally:
        os.close(area)
    return watch_path / AREA / QUARANTINE / claim_id


def give_back(watch_path: Path, claim_id: str) -> list[PurePosixPath]:
    """Return what a claim holds to the watched folder (names that are taken stay) and drop the
    claim; by descriptor on both sides (a link on the way back is never followed)."""
    returned: list[PurePosixPath] = []
    area = safedir.open_area(watch_path)
    root = os.open(watch_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        claim = safedir.open_child(area, claim_id, watch_path / AREA)
        try:
            document, controls = claim_files(safedir.fd_path(claim))
            for rel in [*controls, *([document] if document else [])]:
                try:
                    home = _make_path(root, rel.parent, watch_path)
                except safedir.UnsafeFolder:
                    continue                  # its folder is a link now: it stays in the claim
                try:
                    source = safedir.open_path(claim, rel.parent, watch_path / AREA)
                    try:
                        if not _exists_at(home, rel.name):
                            os.rename(rel.name, rel.name, src_dir_fd=source, dst_dir_fd=home)
                            returned.append(rel)
                    finally:
                        os.close(source)
                finally:
                    os.close(home)
            empty = not any(folder.files for folder in walk(safedir.fd_path(claim), MAX_CLAIM_DEPTH))
        finally:
            os.close(claim)
        if empty:
            shutil.rmtree(claim_id, dir_fd=area, ignore_errors=True)
    finally:
        os.close(root)
        os.close(area)
    return returned


def remove_claim(watch_path: Path, claim_id: str) -> None:
    """Remove a claim folder (and what it holds) by descriptor."""
    area = safedir.open_area(watch_path)
    try:
        shutil.rmtree(claim_id, dir_fd=area, ignore_errors=True)
    finally:
        os.close(area)


def _make_path(top: int, rel: PurePosixPath, where: Path) -> int:
    """The folder ``rel`` under ``top``, made where missing, never through a link."""
    fd = os.dup(top)
    for part in rel.parts:
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            inner = safedir.open_child(fd, part, where)
        finally:
            os.close(fd)
        fd = inner
    return fd


def _copy_in(src_fd: int, name: str, dst_fd: int) -> str:
    """Copy ``name`` (in ``src_fd``) to a fresh temporary name in ``dst_fd`` (fsynced): for a move
    to another filesystem. The name is unpredictable and created exclusively
    (``O_CREAT|O_EXCL|O_NOFOLLOW``): nothing planted in the target can be written through. A
    symbolic link is copied as a link, never followed; the source is opened without following
    links too. Returns the temporary name."""
    if stat.S_ISLNK(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode):
        tmp = safedir.temp_name(".moving.tmp")
        os.symlink(os.readlink(name, dir_fd=src_fd), tmp, dir_fd=dst_fd)      # fails if the name exists
        return tmp
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        tmp, out = safedir.create_exclusive(dst_fd, ".moving.tmp", 0o600)
        try:
            while chunk := os.read(source, 1 << 20):
                safedir.write_all(out, chunk)
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(source)
    return tmp


_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _place(src_fd: int, source: str, dst_fd: int, target: str) -> bool:
    """Give ``source`` the name ``target`` unless that name exists. False: the name is taken."""
    try:
        os.link(source, target, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    # no hard links on this filesystem: rename, having just checked that the name is free
    if _exists_at(dst_fd, target):
        return False
    os.rename(source, target, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    return True


def move_no_clobber(src_fd: int, source: str, dst_fd: int, name: str) -> str:
    """Move ``source`` (in the folder ``src_fd``) into the folder ``dst_fd`` as ``name`` (or
    ``name-2``... when taken), by descriptor: no link on the way is followed, and nothing is ever
    overwritten. Returns the name it got."""
    same_fs = os.stat(source, dir_fd=src_fd, follow_symlinks=False).st_dev == os.fstat(dst_fd).st_dev
    moving_fd, moving = (src_fd, source) if same_fs else (dst_fd, _copy_in(src_fd, source, dst_fd))
    for n in range(1, 10_000):
        target = numbered(name, n)
        if not _place(moving_fd, moving, dst_fd, target):
            continue
        if _exists_at(moving_fd, moving):
            os.unlink(moving, dir_fd=moving_fd)
        if moving_fd != src_fd and _exists_at(src_fd, source):
            os.unlink(source, dir_fd=src_fd)
        os.fsync(dst_fd)
        os.fsync(src_fd)
        return target
    raise OSError(errno.EEXIST, f"no free name for {name}")
