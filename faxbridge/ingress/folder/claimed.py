"""Reading what a claim holds: each file through ONE descriptor, opened without following links from
the checked working area (:func:`faxbridge.ingress.folder.claims.open_claimed`), checked with ``fstat``
and used through that descriptor, never reopened by path.

The document itself is copied through its descriptor into a staging folder of the store (under
``state_dir``, ours alone) and prepared from that copy, so nothing done to the working area after
the check can change what is faxed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from faxbridge.errors import InputError
from faxbridge.ingress.folder import claims
from faxbridge.ingress.folder.control import MAX_CONTROL_SIZE, Control, ControlError, parse_control
from faxbridge.ingress.folder.safedir import write_all


def size_words(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def stat_of(root: Path, claim_id: str, document: PurePosixPath) -> os.stat_result:
    """What the claimed document is (a link is not a regular file: InputError)."""
    try:
        fd, st = claims.open_claimed(root, claim_id, document)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{document.name} is not a regular file") from exc
        raise
    os.close(fd)
    return st


def copy_out(root: Path, claim_id: str, document: PurePosixPath, copy: Path, max_size: int) -> None:
    """Copy the claimed document to ``copy`` (created exclusively, 0600) through one checked
    descriptor; InputError when it is not a regular file within ``max_size``."""
    fd, st = claims.open_claimed(root, claim_id, document)
    try:
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_size:
            raise InputError(f"{document.name} changed after it was checked; not a regular file "
                             f"within watch.max_size")
        out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            left = max_size + 1
            while left > 0 and (chunk := os.read(fd, min(1 << 20, left))):
                left -= len(chunk)
                write_all(out, chunk)
        finally:
            os.close(out)
        if left <= 0:
            raise InputError(f"{document.name} grew past {size_words(max_size)} (watch.max_size)")
    finally:
        os.close(fd)


def control(root: Path, claim_id: str, controls: list[PurePosixPath]) -> Control | None:
    """The first control file by precedence (.json before .fax), read (bounded) and parsed."""
    for rel in sorted(controls, key=lambda c: not c.name.lower().endswith(".json")):
        try:
            fd, st = claims.open_claimed(root, claim_id, rel)
        except OSError as exc:
            raise ControlError(f"{rel.name} cannot be read ({exc.strerror or exc}); "
                               "a control file must be a regular file") from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(st.st_mode):
                raise ControlError(f"{rel.name} is not a regular file")
            data = fh.read(MAX_CONTROL_SIZE + 1)
        if len(data) > MAX_CONTROL_SIZE:
            raise ControlError(f"{rel.name} is larger than {MAX_CONTROL_SIZE // 1024} KB")
        return parse_control(rel.name, data)
    return None
