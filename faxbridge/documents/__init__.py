"""The files a user hands us, made into ONE fax-ready PDF with its page count and paper, or refused.

Pure-ish: files in, one file out; no store, no network. Every refusal is a DocumentError whose reason
names the file and says what to do. pypdf, Pillow, img2pdf and fpdf2 errors are translated at one
chokepoint (``_common.translated``, chained with ``from``); only OSErrors of real I/O trouble escape.

- Types come from the bytes (``sniff``), never from names: a PNG called ``scan.pdf`` is an image.
- One PDF alone is sent byte for byte (CONTRACT §4): copied in chunks (hashing as it goes) to a
  temporary name beside ``out_path``, checked there, fsynced, renamed. Checking the copy rather than
  the source means what we measured is exactly what is sent, even if the source changes meanwhile.
- Otherwise each input becomes pages (PDF pages as they are, image frames fitted onto ``paper``,
  text set in monospace) and pypdf merges them in the given order.
- "Readable" means pypdf (strict=False, so it repairs what it can) reads the page tree, every page's
  size and rotation, and every page's content stream. A PDF without %%EOF near its end was cut off
  and is refused even when pypdf could guess its way through (see ``_pdf``). An encrypted PDF that
  the empty password opens (permissions-only protection) is accepted.
- A TIFF's chain of pages is walked by hand, so a chain that loops back (a damaged file; Pillow would
  quietly stop at the loop) is refused rather than faxed short.
- pages and paper are measured from the output. Paper: the standard size nearest each page, in
  either orientation; the one most pages have, ties going to the one met first.
- Memory: pypdf reads from open files, never a whole PDF into memory; images are decoded a frame at
  a time. Decompression bombs (Pillow's MAX_IMAGE_PIXELS) are refused on purpose.

Split into a package because sniffing, PDF checks, images and text setting are separate jobs:
``_sniff``, ``_pdf``, ``_images``, ``_text``, with ``_common`` for the pieces they share.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from faxbridge.documents._common import FAXABLE, discard, majority_paper, publish, staging_path, translated
from faxbridge.documents._images import count_pages as count_image_pages
from faxbridge.documents._images import image_to_pdf
from faxbridge.documents._pdf import count_pages, damaged, inspect_pdf, open_pdf, page_papers
from faxbridge.documents._sniff import HEAD_SIZE, describe, sniff
from faxbridge.documents._text import chars_per_line, decode_text, lines_per_page, text_to_pdf
from faxbridge.errors import DocumentError
from faxbridge.models import InputFile, Paper, PreparedDocument

__all__ = ["describe", "inspect_pdf", "prepare", "sniff", "text_to_pdf"]

_CHUNK = 1 << 20


def _kind(file: InputFile) -> str:
    with file.path.open("rb") as fh:
        head = fh.read(HEAD_SIZE)
    if not head:
        raise DocumentError(f"{file.name} is empty", name=file.name)
    kind = sniff(head)
    if kind is None:
        raise DocumentError(f"{file.name} is {describe(head)}; {FAXABLE}", name=file.name)
    return kind


def _too_many(pages: int, max_pages: int, name: str | None) -> DocumentError:
    who = f"{name} has" if name else "the documents together have"
    return DocumentError(f"{who} {pages} pages; the limit is {max_pages}", name=name, too_many_pages=True)


def _copy(source: Path, target: Path) -> tuple[str, int]:
    """Streams source to target, fsyncs it, and gives the sha256 and size of what was written."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), size


def _digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest(), os.fstat(fh.fileno()).st_size


def _measure(path: Path, *, name: str, max_pages: int) -> tuple[int, Paper]:
    with path.open("rb") as fh:
        reader = open_pdf(fh, name=name)
        pages = count_pages(reader, name=name)
        if pages > max_pages:
            raise _too_many(pages, max_pages, name)
        return pages, majority_paper(page_papers(reader, name=name))


def _text_part(file: InputFile, part: Path, *, paper: Paper, max_pages: int) -> int:
    text = decode_text(file.path.read_bytes())
    if not text.strip():
        raise DocumentError(f"{file.name} has no text to fax", name=file.name)
    # A lower bound, to refuse before setting a huge text in type (fpdf2 sets ~15 pages a second).
    # Halved by characters: glyphs from proportional fallback fonts can be narrower than monospace.
    lines, chars = lines_per_page(paper), chars_per_line(paper)
    at_least = max(text.count("\n") // lines, len(text) // (2 * lines * chars), text.count("\f")) + 1
    if at_least > max_pages:
        raise DocumentError(
            f"{file.name} has more than {max_pages} pages of text; the limit is {max_pages}",
            name=file.name, too_many_pages=True,
        )
    return text_to_pdf(text, part, paper=paper, name=file.name)


def _merge(
    files: Sequence[InputFile], kinds: Sequence[str], parts: Path, out: Path, *, max_pages: int, paper: Paper
) -> None:
    """Every input as pages, checked and counted first (cheaply), then converted and merged in order."""
    with ExitStack() as stack:
        plan: list[tuple[InputFile, str, PdfReader | Path | None]] = []
        total = 0
        for index, (file, kind) in enumerate(zip(files, kinds, strict=True)):
            source: PdfReader | Path | None = None
            if kind == "pdf":
                source = open_pdf(stack.enter_context(file.path.open("rb")), name=file.name)
                pages = count_pages(source, name=file.name)
                if pages <= max_pages:
                    page_papers(source, name=file.name)  # reads every page: refuses a damaged one
            elif kind == "text":
                source = parts / f"{index}.pdf"
                pages = _text_part(file, source, paper=paper, max_pages=max_pages)
            else:
                pages = count_image_pages(file.path, name=file.name, kind=kind)
            if pages > max_pages:
                raise _too_many(pages, max_pages, file.name)
            total += pages
            plan.append((file, kind, source))
        if total > max_pages:
            raise _too_many(total, max_pages, None)
        writer = PdfWriter()
        for index, (file, kind, source) in enumerate(plan):
            if source is None:
                source = parts / f"{index}.pdf"
                image_to_pdf(file.path, source, name=file.name, kind=kind, paper=paper)
            reader = source
            if isinstance(reader, Path):
                reader = open_pdf(stack.enter_context(reader.open("rb")), name=file.name)
            with translated(damaged(file.name), name=file.name):
                for page in reader.pages:
                    writer.add_page(page)
        with out.open("wb") as fh:
            with translated("the pages could not be put together into one PDF", name=None):
                writer.write(fh)
            fh.flush()
            os.fsync(fh.fileno())


def prepare(
    files: Sequence[InputFile], out_path: Path, *, max_pages: int, paper: Paper | None = None
) -> PreparedDocument:
    """Make one fax-ready PDF at out_path (written to a temp name beside it, fsynced, renamed).

    ``paper`` (default letter) is the page size for images and text; PDF pages keep their own.
    """
    if not files:
        raise DocumentError("there is nothing to fax")
    kinds = [_kind(file) for file in files]
    name = files[0].name if len(files) == 1 else "the combined document"
    tmp = staging_path(out_path)
    try:
        if kinds == ["pdf"]:
            sha256, size = _copy(files[0].path, tmp)
            pages, measured = _measure(tmp, name=name, max_pages=max_pages)
        else:
            with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.parts.") as parts:
                _merge(files, kinds, Path(parts), tmp, max_pages=max_pages, paper=paper or Paper.LETTER)
            pages, measured = _measure(tmp, name=name, max_pages=max_pages)
            sha256, size = _digest(tmp)
        publish(tmp, out_path)
    finally:
        discard(tmp)
    return PreparedDocument(path=out_path, pages=pages, paper=measured, sha256=sha256, size=size)
