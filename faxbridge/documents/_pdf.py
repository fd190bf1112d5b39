"""Reading and checking PDFs with pypdf (strict=False: it repairs what it can, we check it really can)."""

from __future__ import annotations

import io
import os
import re
import zlib
from pathlib import Path
from typing import BinaryIO

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.filters import decode_stream_data
from pypdf.generic import ArrayObject, DictionaryObject, NullObject, StreamObject

from faxbridge.documents._common import majority_paper, nearest_paper, translated
from faxbridge.errors import DocumentError
from faxbridge.models import Paper

# A complete PDF (or its last incremental update) ends with %%EOF. Real files carry junk after it
# (the sample Canon scan has 11 KB), so the test is: no PDF object may start after the last %%EOF.
# Objects after it, or no %%EOF at all, mean the file was cut off (an interrupted upload, a truncated
# attachment), even when pypdf could guess its way through the rest.
_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
_BLOCK = 1 << 16
IN_MEMORY = 4 << 20      # a PDF up to this size is read whole and parsed from memory (open_pdf)
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


def _in_memory(fh: BinaryIO) -> BinaryIO:
    """A file of at most :data:`IN_MEMORY` bytes read whole, as a ``BytesIO``; anything else as it is.

    pypdf seeks about the file for every object it reads (the cross-reference table, the page
    tree): some 50 ``lseek`` and ``read`` system calls for a one-page scan; one ``read`` instead."""
    try:
        size = os.fstat(fh.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return fh                                    # not a file of the file system
    if size > IN_MEMORY:
        return fh
    position = fh.tell()
    fh.seek(0)
    data = fh.read(IN_MEMORY + 1)
    if len(data) > IN_MEMORY:                        # it grew meanwhile: read as it comes
        fh.seek(position)
        return fh
    memory = io.BytesIO(data)
    memory.seek(position)
    return memory


def open_pdf(fh: BinaryIO, *, name: str) -> PdfReader:
    """A reader over an open PDF, decrypted with the empty password when encrypted, or DocumentError.

    pypdf reads from the open file as it goes (given a path it would load the whole file in memory);
    a small file (:data:`IN_MEMORY`) is read once and parsed from memory (:func:`_in_memory`).
    """
    fh = _in_memory(fh)
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


def declared_pages(reader: PdfReader) -> int:
    """The page count the page tree's root declares (/Count): read from the structure, before any
    page is looked at. 0 when it declares none (or nonsense)."""
    tree = reader.root_object["/Pages"].get_object()
    declared = tree.get("/Count", 0) if isinstance(tree, DictionaryObject) else 0
    return declared if isinstance(declared, int) and declared > 0 else 0


def too_many(pages: int, max_pages: int, name: str | None, *, more: bool = False) -> DocumentError:
    who = f"{name} has" if name else "the documents together have"
    count = f"more than {max_pages}" if more else str(pages)
    return DocumentError(f"{who} {count} pages; the limit is {max_pages}", name=name, too_many_pages=True)


def count_pages(reader: PdfReader, *, name: str, max_pages: int | None = None) -> int:
    """Pages in the page tree (pypdf detects loops in it), refusing a PDF with none.

    With ``max_pages``, a tree that declares more pages (/Count) is refused before the tree is
    walked (bounds first: 10,000 declared pages are not read to learn that they are too many).
    pypdf skips kids it cannot find; fewer pages than the tree's /Count declares means pages were
    lost, and a fax missing pages is worse than a refusal. (More than declared is a harmless slip.)
    """
    with translated(damaged(name), name=name):
        declared = declared_pages(reader)
        if max_pages is not None and declared > max_pages:
            raise too_many(declared, max_pages, name)
        pages = len(reader.pages)
    if pages < declared:
        raise DocumentError(f"{name} is damaged: only {pages} of its {declared} pages can be read", name=name)
    if pages == 0:
        raise DocumentError(f"{name} has no pages", name=name)
    return pages


class Inflation:
    """The page content a document may inflate to (``limits.max_decompressed``), shared by all
    the PDFs of one document: a small file whose streams inflate to gigabytes is refused, not parsed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, name: str) -> None:
        self.used += size
        if self.limit and self.used > self.limit:
            raise DocumentError(
                f"{name} is too large when unpacked: its pages hold more than {_mb(self.limit)} of content "
                f"(the limit is {_mb(self.limit)}); it cannot be faxed", name=name)


def _mb(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


_INFLATE_CHUNK = 1 << 20


def _inflate_size(data: bytes, budget: Inflation, name: str) -> bool:
    """Inflate a FlateDecode stream a chunk at a time, counting into ``budget`` (never holding more
    than a chunk); False when zlib cannot read it (pypdf's recovery then gets its turn)."""
    inflater = zlib.decompressobj()
    pending = data
    try:
        while pending:
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
            budget.take(len(chunk), name)
            pending = inflater.unconsumed_tail
            if inflater.eof or not chunk:
                break
        budget.take(len(inflater.flush()), name)
    except zlib.error:
        return False
    return True


def _check_stream(stream: StreamObject, budget: Inflation, name: str) -> None:
    """A content stream decodes, and what it decodes to is counted (bounded memory for Flate)."""
    filters = stream.get("/Filter")
    filters = filters.get_object() if filters is not None else None
    if filters is None:
        budget.take(len(stream._data), name)
        return
    flate = filters == "/FlateDecode" or (isinstance(filters, ArrayObject) and list(filters) == ["/FlateDecode"])
    if flate and _inflate_size(stream._data, budget, name):
        return
    budget.take(len(decode_stream_data(stream)), name)   # other filters: pypdf's (each capped at 75 MB)


def _check_contents(page: PageObject, number: int, budget: Inflation, name: str) -> None:
    contents = page["/Contents"]
    if contents is None or isinstance(contents, NullObject):  # a missing object
        raise DocumentError(f"{name} is damaged: page {number} has lost its content", name=name)
    resolved = contents.get_object()
    if isinstance(resolved, NullObject):
        raise DocumentError(f"{name} is damaged: page {number} has lost its content", name=name)
    streams = [resolved] if isinstance(resolved, StreamObject) else list(resolved) if isinstance(
        resolved, ArrayObject) else []
    for item in streams:
        stream = item.get_object()
        if isinstance(stream, StreamObject):
            _check_stream(stream, budget, name)


DEFAULT_MAX_DECOMPRESSED = 200_000_000


def page_papers(reader: PdfReader, *, name: str, budget: Inflation | None = None,
                contents: bool = True) -> list[Paper]:
    """Reads every page (size, /Rotate and, with ``contents``, its content streams decoded and
    counted into ``budget``) and gives each page's paper. Decoded content is counted, not kept."""
    budget = budget if budget is not None else Inflation(DEFAULT_MAX_DECOMPRESSED)
    papers: list[Paper] = []
    with translated(damaged(name), name=name):
        for number, page in enumerate(reader.pages, start=1):
            box = page.mediabox
            width, height = abs(float(box.width)), abs(float(box.height))
            if width < 1 or height < 1:
                raise DocumentError(f"{name} is damaged: page {number} has no size", name=name)
            if page.rotation % 180 == 90:
                width, height = height, width
            if contents and "/Contents" in page:
                _check_contents(page, number, budget, name)
            papers.append(nearest_paper(width, height))
    return papers


def inspect_pdf(path: Path, *, name: str) -> tuple[int, Paper]:
    """(pages, paper) of a PDF or DocumentError. Paper: the one most pages have (ties: the first page's)."""
    with path.open("rb") as fh:
        reader = open_pdf(fh, name=name)
        pages = count_pages(reader, name=name)
        return pages, majority_paper(page_papers(reader, name=name))
