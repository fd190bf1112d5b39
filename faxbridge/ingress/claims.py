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
- a document and its job: left for the result writer (``notify.sidecar``).

Moving out (to ``done``/``failed``) never overwrites: ``os.link`` to the target name (fails if the
name exists) then unlink, with a copy for another filesystem; a name that is taken gets a suffix
before its extension (``letter-2.pdf``).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path, PurePosixPath

from faxbridge.durable import fsync_dir
from faxbridge.ingress.control import is_control, numbered
from faxbridge.ingress.tree import walk

AREA = ".faxbridge"
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

    With ``sync=False`` the folders touched are not fsynced here: the caller claims a round of
    files and then calls :func:`sync_claims` once for all of them, before any job is committed."""
    area = processing_dir(watch_path)
    target = area / claim_id
    (target / document.parent).mkdir(parents=True)
    taken: list[PurePosixPath] = []
    for control in controls:
        try:
            os.rename(watch_path / control, target / control)
            taken.append(control)
        except FileNotFoundError:
            continue
    try:
        os.rename(watch_path / document, target / document)
    except FileNotFoundError:
        give_back(watch_path, target)
        return False
    if sync:
        sync_claims(watch_path, [(claim_id, document)])
    return True


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
    ``REASON.txt`` beside it; nothing there is ever taken again (an administrator looks)."""
    folder = watch_path / AREA / QUARANTINE
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / claim_id
    os.rename(processing_dir(watch_path) / claim_id, target)
    with open(folder / f"{claim_id}.REASON.txt", "w", encoding="utf-8", errors="replace") as fh:
        fh.write(reason + "\n")
    fsync_dir(folder)
    fsync_dir(processing_dir(watch_path))
    return target


def give_back(watch_path: Path, claim: Path) -> list[PurePosixPath]:
    """Return what a claim holds to the watched folder (names that are taken stay) and drop the claim."""
    returned: list[PurePosixPath] = []
    document, controls = claim_files(claim)
    for rel in [*controls, *([document] if document else [])]:
        home = watch_path / rel
        if os.path.lexists(home):
            continue
        home.parent.mkdir(parents=True, exist_ok=True)
        os.rename(claim / rel, home)
        returned.append(rel)
    if not any(folder.files for folder in walk(claim, MAX_CLAIM_DEPTH)):
        shutil.rmtree(claim, ignore_errors=True)
    return returned


def _copy_in(source: Path, folder: Path) -> Path:
    """Copy to a fresh temporary name in ``folder`` (fsynced): for a move to another filesystem.
    The name is unpredictable and created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``): nothing
    planted in ``folder`` can be written through. A symbolic link is copied as a link, never
    followed; the source is opened without following links too."""
    tmp = folder / f".{secrets.token_hex(16)}.moving.tmp"
    if stat.S_ISLNK(os.lstat(source).st_mode):
        os.symlink(os.readlink(source), tmp)          # fails if the name exists
        return tmp
    src_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(src_fd, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst_fd, view):]
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return tmp


_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def _place(source: Path, target: Path) -> bool:
    """Give ``source`` the name ``target`` unless that name exists. False: the name is taken."""
    try:
        os.link(source, target, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    # no hard links on this filesystem: rename, having just checked that the name is free
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True


def move_no_clobber(source: Path, folder: Path, name: str) -> Path:
    """Move ``source`` into ``folder`` as ``name`` (or ``name-2``... when taken). Never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    same_fs = os.lstat(source).st_dev == os.stat(folder).st_dev
    moving = source if same_fs else _copy_in(source, folder)
    for n in range(1, 10_000):
        target = folder / numbered(name, n)
        if not _place(moving, target):
            continue
        if os.path.lexists(moving):
            os.unlink(moving)
        if moving != source and os.path.lexists(source):
            os.unlink(source)
        fsync_dir(folder)
        fsync_dir(source.parent)
        return target
    raise OSError(errno.EEXIST, f"no free name for {name} in {folder}")
