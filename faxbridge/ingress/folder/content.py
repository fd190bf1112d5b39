"""The pure work of a folder round, apart so that worker processes can run it: is a file complete
yet, and its fax-ready copy (made from our private copy of the claimed file, which is taken here
too). Files in, answers out; no store, no clock, no logging.

These run in the folder watcher's pool of worker processes (:mod:`faxbridge.ingress.folder.watch`), or in
the calling thread when there is no pool; their arguments and answers are plain, picklable values.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from PIL import Image, ImageSequence

from faxbridge.documents import OfficeSettings, prepare, sniff
from faxbridge.documents._images import _tiff_pages as tiff_pages
from faxbridge.documents._pdf import DEFAULT_MAX_DECOMPRESSED, count_pages, open_pdf
from faxbridge.documents._sniff import HEAD_SIZE
from faxbridge.errors import DocumentError, InputError
from faxbridge.ingress.folder.claimed import copy_out
from faxbridge.intake import received_name
from faxbridge.models import InputFile, Paper, PreparedDocument
from faxbridge.store.protocol import DOC_NAME, RECEIVED_DIR, DocumentSpool

_IMAGE_KINDS = {"tiff": "TIFF", "jpeg": "JPEG", "png": "PNG", "gif": "GIF"}


def warm() -> int:
    """Run once in each worker process at start, so the first round does not wait for imports."""
    return os.getpid()


def stage(path: Path, name: str, out: Path, max_pages: int, paper: Paper | None,
          max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, office: OfficeSettings | None = None,
          ) -> PreparedDocument | str:
    """The fax-ready PDF of a claimed file at ``out`` (fsynced), or why it cannot be faxed.
    ``path`` is our private copy of the file, kept as received beside ``out`` (a PDF faxed as it
    is becomes the document by a hard link to it).
    Pure work on files (no database): runs in a worker process when the intake has a pool.
    ``max_decompressed``: ``limits.max_decompressed`` (a PDF inflating to more is refused);
    ``office``: how Office documents are converted (``documents.office``; None: refused)."""
    try:
        return prepare([InputFile(name, path)], out, max_pages=max_pages, paper=paper,
                       max_decompressed=max_decompressed, office=office, inputs_ours=True)
    except DocumentError as exc:
        return exc.reason


def stage_claimed(spool: DocumentSpool, root: Path, claim_id: str, document: PurePosixPath, job_id: str,
                  max_size: int, max_pages: int, paper: Paper | None,
                  max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, office: OfficeSettings | None = None,
                  ) -> PreparedDocument | str:
    """A claimed document (``document`` in claim ``claim_id`` of the watched folder ``root``) made
    job ``job_id``'s staged, fax-ready PDF; or why it cannot be faxed. ``spool``: the job store's
    (a plain, picklable :class:`~faxbridge.store.spool.FileSpool` for every backend).

    The job's staging folder is made in the spool and the document copied into it through one
    checked descriptor (:func:`~faxbridge.ingress.folder.claimed.copy_out`), as
    ``received/0-NAME``: the copy kept as received (console), written where it is kept, in the
    job's own staging folder, which moves into the spool with the document; then :func:`stage`
    makes the fax-ready copy from it. Done here rather than on the folder thread, so that a
    round's copies run in the worker processes while the next file is claimed. Trouble on our
    side is raised (a staging folder that cannot be made: the spool's StoreBusy/StoreError; an
    ``OSError``): the caller discards the staging folder and tries the claim again later."""
    folder = spool.stage(job_id)
    (folder / RECEIVED_DIR).mkdir(mode=0o700)
    copy = folder / RECEIVED_DIR / received_name(0, document.name)
    try:
        copy_out(root, claim_id, document, copy, max_size)
    except InputError as exc:
        return exc.reason
    return stage(copy, document.name, folder / DOC_NAME, max_pages, paper, max_decompressed, office)


def incomplete(path: Path, name: str) -> str | None:
    """Why the file's content is not complete yet, or None. Read-only; never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"{name} cannot be read: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None                                   # refused when it is claimed
        head = fh.read(HEAD_SIZE)
        if not head:
            return f"{name} is empty"
        kind = sniff(head)
        fh.seek(0)
        if kind == "pdf":
            try:   # complete: it ends whole and its page tree reads; its pages are read when prepared
                count_pages(open_pdf(fh, name=name), name=name)
            except DocumentError as exc:
                return exc.reason
        elif kind in _IMAGE_KINDS:
            return _image_incomplete(cast(BinaryIO, fh), name, kind)
    return None


def _image_incomplete(fh: BinaryIO, name: str, kind: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(fh, formats=[_IMAGE_KINDS[kind]]) as image:
                for frame in ImageSequence.Iterator(image):
                    frame.load()
            if kind == "tiff":
                fh.seek(0)
                tiff_pages(fh, name=name)                 # the chain of pages reads to its end
        except Image.DecompressionBombError:
            return None                                   # complete; refused when prepared
        except DocumentError as exc:
            return exc.reason
        except MemoryError:
            raise             # the job's memory cap (limits.job_memory): the engine says so, not "not yet"
        except Exception as exc:  # Pillow raises many kinds for a file cut short; all mean "not yet"
            return f"{name} is an incomplete or damaged {_IMAGE_KINDS[kind]} image ({type(exc).__name__}: {exc})"
    return None
