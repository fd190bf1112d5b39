"""Reading and checking PDFs with pypdf (strict=False: it repairs what it can, we check it really can)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from pypdf import PasswordType, PdfReader
from pypdf.generic import DictionaryObject, NullObject

from faxbridge.documents._common import majority_paper, nearest_paper, translated
from faxbridge.errors import DocumentError
from faxbridge.models import Paper

# A complete PDF (or its last incremental update) ends with %%EOF. Real files carry junk after it
# (the sample Canon scan has 11 KB), so the test is: no PDF object may start after the last %%EOF.
# Objects after it, or no %%EOF at all, mean the file was cut off (an interrupted upload, a truncated
# attachment), even when pypdf could guess its way through the rest.
_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
_BLOCK = 1 << 16
_OVERLAP = 64


def damaged(name: str) -> str:
    return f"{name} is damaged and cannot be read as a PDF; save or export it again and send it again"


def _ends_complete(fh: BinaryIO) -> bool:
    """Reading back from the end: is a %%EOF met before the start of any object?"""
    position, later = fh.seek(0, os.SEEK_END), b""
    while position > 0:
        start = max(0, position - _BLOCK)
        fh.seek(start)
        block = fh.read(position - start) + later[:_OVERLAP]
        end_marker = block.rfind(b"%%EOF")
        if end_marker >= 0:      # complete unless an object starts after it ("%" starts none)
            return _OBJECT.search(block, end_marker) is None
        if _OBJECT.search(block):
            return False
        position, later = start, block
    return False


def open_pdf(fh: BinaryIO, *, name: str) -> PdfReader:
    """A reader over an open PDF, decrypted with the empty password when encrypted, or DocumentError.

    pypdf reads from the open file as it goes (given a path it would load the whole file in memory).
    """
    if not _ends_complete(fh):
        raise DocumentError(
            f"{name} is incomplete (the PDF is cut off before its end); send the whole file again", name=name
        )
    fh.seek(0)
    with translated(damaged(name), name=name):
        reader = PdfReader(fh, strict=False)
        encrypted = reader.is_encrypted
    if encrypted:
        unknown = f"{name} is encrypted in a way we cannot open; send it without a password"
        with translated(unknown, name=name):
            opened = reader.decrypt("")
        if opened == PasswordType.NOT_DECRYPTED:
            raise DocumentError(f"{name} is password-protected; send it without a password", name=name)
    return reader


def count_pages(reader: PdfReader, *, name: str) -> int:
    """Pages in the page tree (pypdf detects loops in it), refusing a PDF with none.

    pypdf skips kids it cannot find; fewer pages than the tree's /Count declares means pages were
    lost, and a fax missing pages is worse than a refusal. (More than declared is a harmless slip.)
    """
    with translated(damaged(name), name=name):
        pages = len(reader.pages)
        tree = reader.root_object["/Pages"].get_object()
        declared = tree.get("/Count", 0) if isinstance(tree, DictionaryObject) else 0
        declared = declared if isinstance(declared, int) else 0
    if pages < declared:
        raise DocumentError(f"{name} is damaged: only {pages} of its {declared} pages can be read", name=name)
    if pages == 0:
        raise DocumentError(f"{name} has no pages", name=name)
    return pages


def page_papers(reader: PdfReader, *, name: str) -> list[Paper]:
    """Reads every page (size, /Rotate, content stream) and gives each page's paper."""
    papers: list[Paper] = []
    with translated(damaged(name), name=name):
        for number, page in enumerate(reader.pages, start=1):
            box = page.mediabox
            width, height = abs(float(box.width)), abs(float(box.height))
            if width < 1 or height < 1:
                raise DocumentError(f"{name} is damaged: page {number} has no size", name=name)
            if page.rotation % 180 == 90:
                width, height = height, width
            if "/Contents" in page:
                if page["/Contents"] is None or isinstance(page["/Contents"], NullObject):  # a missing object
                    raise DocumentError(f"{name} is damaged: page {number} has lost its content", name=name)
                contents = page.get_contents()
                if contents is not None:
                    contents.get_data()
            papers.append(nearest_paper(width, height))
    return papers


def inspect_pdf(path: Path, *, name: str) -> tuple[int, Paper]:
    """(pages, paper) of a PDF or DocumentError. Paper: the one most pages have (ties: the first page's)."""
    with path.open("rb") as fh:
        reader = open_pdf(fh, name=name)
        pages = count_pages(reader, name=name)
        return pages, majority_paper(page_papers(reader, name=name))
