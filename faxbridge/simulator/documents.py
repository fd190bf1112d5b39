"""Counting the pages of what a client uploads, the way a fax service's renderer would.

PDFs are counted with pypdf; images (PNG, JPEG, GIF, TIFF, ...) give one page per frame;
plain text one page per 60 lines. A file that claims to be a document but cannot be read is
*accepted* and fails later, as the real services render asynchronously: the simulator
reports it as a document conversion failure once rendering time has passed.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from faxbridge.simulator.timing import RenderError

LINES_PER_TEXT_PAGE = 60
TEXT_SUFFIXES = (".txt", ".text", ".csv")


@dataclass(frozen=True)
class Counted:
    pages: int                         # 0 when unreadable
    error: RenderError | None = None   # why it will fail to render, if it will


def count_pdf(data: bytes) -> Counted:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # sloppy files are the renderer's business
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                return Counted(0, RenderError.CONVERSION)
            pages = len(reader.pages)
    except (PyPdfError, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError,
            RecursionError, AssertionError):
        return Counted(0, RenderError.CONVERSION)
    return Counted(pages) if pages > 0 else Counted(0, RenderError.CONVERSION)


def count_image(data: bytes) -> Counted | None:
    """One page per frame, or None when Pillow does not know the bytes."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                frames = int(getattr(img, "n_frames", 1) or 1)
                img.verify()
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError, EOFError):
        return Counted(0, RenderError.CONVERSION)
    return Counted(frames)


def count_text(data: bytes) -> Counted | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    lines = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return Counted(math.ceil(lines / LINES_PER_TEXT_PAGE))


def count_pages(data: bytes, filename: str = "", content_type: str | None = None) -> Counted:
    """Pages of one uploaded file. Never raises."""
    name = filename.lower()
    ctype = (content_type or "").split(";")[0].strip().lower()
    if data.lstrip()[:5] == b"%PDF-" or name.endswith(".pdf") or ctype == "application/pdf":
        return count_pdf(data)
    image = count_image(data)
    if image is not None:
        return image
    if name.endswith(TEXT_SUFFIXES) or ctype.startswith("text/plain") or (not name and not ctype):
        text = count_text(data)
        if text is not None:
            return text
    return Counted(0, RenderError.MIMETYPE)
