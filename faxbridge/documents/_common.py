"""Shared pieces of the documents package: paper sizes, error translation, durable files."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from faxbridge.durable import fsync_dir
from faxbridge.errors import DocumentError
from faxbridge.models import Paper

# Page sizes in PDF points (1/72 in), short side first.
PAPER_SIZES: dict[Paper, tuple[float, float]] = {
    Paper.LETTER: (612.0, 792.0),
    Paper.LEGAL: (612.0, 1008.0),
    Paper.A4: (595.28, 841.89),
}

FAXABLE = "only PDF, TIFF, JPEG, PNG, GIF and text can be faxed"


def nearest_paper(width: float, height: float) -> Paper:
    """The standard paper closest to a page of this size, in either orientation."""
    short, long = sorted((abs(width), abs(height)))
    return min(PAPER_SIZES, key=lambda p: abs(PAPER_SIZES[p][0] - short) + abs(PAPER_SIZES[p][1] - long))


def majority_paper(papers: list[Paper]) -> Paper:
    """The paper most pages have; on a tie the one met first (so the first page's wins when it ties)."""
    counts = {p: papers.count(p) for p in dict.fromkeys(papers)}
    best = max(counts.values())
    return next(p for p, n in counts.items() if n == best)


@contextlib.contextmanager
def translated(reason: str, *, name: str | None) -> Iterator[None]:
    """The one chokepoint where pypdf, Pillow, img2pdf and fpdf2 errors become a DocumentError.

    Real I/O trouble (an OSError carrying an errno: disk full, permission denied) passes through;
    the libraries' own OSErrors ("image file is truncated", "cannot identify image file") carry none.
    EINVAL is the file's fault too: a damaged offset makes pypdf seek before the start of the file.
    """
    try:
        yield
    except (DocumentError, MemoryError):
        raise        # MemoryError: the job's memory cap (``limits.job_memory``), not a damaged file
    except OSError as exc:
        if exc.errno is not None and exc.errno != errno.EINVAL:
            raise
        raise DocumentError(reason, name=name) from exc
    except Exception as exc:  # foreign parsers raise anything on malformed input
        raise DocumentError(reason, name=name) from exc


def staging_path(out_path: Path) -> Path:
    """A fresh hidden temporary file beside out_path (same file system, so a rename is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, out_path: Path) -> None:
    """Rename a written and fsynced temporary file into place, and make the rename durable."""
    os.replace(tmp, out_path)
    fsync_dir(out_path.parent)


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
