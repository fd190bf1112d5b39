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

import errno
import hashlib
import os
import secrets
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from faxbridge.documents._common import FAXABLE, discard, majority_paper, publish, staging_path, translated
from faxbridge.documents._images import count_pages as count_image_pages
from faxbridge.documents._images import image_to_pdf
from faxbridge.documents._office import NO_CONVERTER, OfficeSettings, convert, office_kind
from faxbridge.documents._pdf import (
    DEFAULT_MAX_DECOMPRESSED,
    Inflation,
    count_pages,
    damaged,
    inspect_pdf,
    open_pdf,
    page_papers,
    too_many,
)
from faxbridge.documents._sniff import HEAD_SIZE, describe, sniff
from faxbridge.documents._text import decode_text, text_pages_at_least, text_to_pdf
from faxbridge.errors import DocumentError
from faxbridge.models import InputFile, Paper, PreparedDocument

__all__ = ["DEFAULT_MAX_DECOMPRESSED", "NO_CONVERTER", "OfficeSettings", "copy_prepared", "describe", "inspect_pdf",
           "join", "move_prepared", "office_kind", "prepare", "sniff", "text_pages_at_least", "text_to_pdf"]

_CHUNK = 1 << 20


OFFICE = "office:"   # a kind "office:docx": an Office document, converted by LibreOffice (``_office``)


def _kind(file: InputFile, office: OfficeSettings | None) -> str:
    with file.path.open("rb") as fh:
        head = fh.read(HEAD_SIZE)
    if not head:
        raise DocumentError(f"{file.name} is empty", name=file.name)
    document = office_kind(head, file.path)
    if document is not None and office is not None and office.enabled:
        return OFFICE + document
    kind = sniff(head)
    if kind is None:
        if document is not None:     # an Office document and no converter: CONTRACT §11
            raise DocumentError(f"{file.name} is {describe(head)}; {NO_CONVERTER} ({FAXABLE})", name=file.name)
        raise DocumentError(f"{file.name} is {describe(head)}; {FAXABLE}", name=file.name)
    return kind


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


def _digest(path: Path, *, sync: bool = False) -> tuple[str, int]:
    """The sha256 and size of a file (with ``sync``, its data fsynced too)."""
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if sync:
            os.fsync(fh.fileno())
        return digest, os.fstat(fh.fileno()).st_size


def _linked(source: Path, out_path: Path) -> Path | None:
    """A fresh hidden name beside ``out_path`` hard-linked to ``source``; None where a link cannot
    be made (another file system, one without links): then the file is copied."""
    for _ in range(100):
        candidate = out_path.with_name(f".{out_path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.link(source, candidate, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                return None
            raise
        return candidate
    raise FileExistsError(f"no free temporary name beside {out_path}")


def _measure(path: Path, *, name: str, max_pages: int, budget: Inflation | None) -> tuple[int, Paper]:
    """Pages and paper of a PDF; with ``budget`` every page's content is decoded and counted too
    (``None``: a PDF we made ourselves from inputs already checked: sizes only)."""
    with path.open("rb") as fh:
        reader = open_pdf(fh, name=name)
        pages = count_pages(reader, name=name, max_pages=max_pages)
        if pages > max_pages:
            raise too_many(pages, max_pages, name)
        return pages, majority_paper(page_papers(reader, name=name, budget=budget, contents=budget is not None))


def _text_part(file: InputFile, part: Path, *, paper: Paper, max_pages: int) -> int:
    text = decode_text(file.path.read_bytes())
    if not text.strip():
        raise DocumentError(f"{file.name} has no text to fax", name=file.name)
    if text_pages_at_least(text, paper) > max_pages:
        raise DocumentError(
            f"{file.name} has more than {max_pages} pages of text; the limit is {max_pages}",
            name=file.name, too_many_pages=True,
        )
    return text_to_pdf(text, part, paper=paper, name=file.name)


def _merge(
    files: Sequence[InputFile], kinds: Sequence[str], parts: Path, out: Path, *, max_pages: int, paper: Paper,
    budget: Inflation, office: OfficeSettings | None,
) -> None:
    """Every input as pages, checked and counted first (cheaply), then converted and merged in order."""
    with ExitStack() as stack:
        plan: list[tuple[InputFile, str, PdfReader | Path | None]] = []
        total = 0
        for index, (file, kind) in enumerate(zip(files, kinds, strict=True)):
            source: PdfReader | Path | None = None
            pdf: Path | None = file.path if kind == "pdf" else None
            if kind.startswith(OFFICE) and office is not None:
                pdf = parts / f"{index}.office.pdf"
                convert(file.path, pdf, kind=kind.removeprefix(OFFICE), name=file.name, settings=office)
            if pdf is not None:
                source = open_pdf(stack.enter_context(pdf.open("rb")), name=file.name)
                pages = count_pages(source, name=file.name, max_pages=max_pages)
                page_papers(source, name=file.name, budget=budget)  # every page: refuses a damaged one
            elif kind == "text":
                source = parts / f"{index}.pdf"
                pages = _text_part(file, source, paper=paper, max_pages=max_pages)
            else:
                pages = count_image_pages(file.path, name=file.name, kind=kind)
            if pages > max_pages:
                raise too_many(pages, max_pages, file.name)
            total += pages
            if total > max_pages:     # refused as soon as it is known, before the next part is read
                raise too_many(total, max_pages, None, more=index + 1 < len(files))
            plan.append((file, kind, source))
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
    files: Sequence[InputFile], out_path: Path, *, max_pages: int, paper: Paper | None = None,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, office: OfficeSettings | None = None,
    inputs_ours: bool = False,
) -> PreparedDocument:
    """Make one fax-ready PDF at out_path (written to a temp name beside it, fsynced, renamed).

    ``inputs_ours``: the files are private copies of ours on the file system of ``out_path``,
    never changed afterwards (a job's documents as received): a lone PDF, faxed as it is, then
    becomes the document by a hard link instead of a copy (no new file, nothing written twice).

    ``office``: how Office documents are converted (``documents.office``); None or no converter:
    they are refused saying this server cannot convert them.

    ``paper`` (default letter) is the page size for images and text; PDF pages keep their own.
    Bounds before work: a PDF's declared page count is checked before its pages are read, and the
    page content of all its PDFs together may inflate to at most ``max_decompressed`` bytes
    (``limits.max_decompressed``), counted as it is decoded and never held whole.
    """
    budget = Inflation(max_decompressed)
    if not files:
        raise DocumentError("there is nothing to fax")
    kinds = [_kind(file, office) for file in files]
    name = files[0].name if len(files) == 1 else "the combined document"
    linked = _linked(files[0].path, out_path) if inputs_ours and kinds == ["pdf"] else None
    if linked is not None:
        try:
            sha256, size = _digest(linked, sync=True)
            pages, measured = _measure(linked, name=name, max_pages=max_pages, budget=budget)
            publish(linked, out_path)
        finally:
            discard(linked)
        return PreparedDocument(path=out_path, pages=pages, paper=measured, sha256=sha256, size=size)
    tmp = staging_path(out_path)
    try:
        if kinds == ["pdf"]:
            sha256, size = _copy(files[0].path, tmp)
            pages, measured = _measure(tmp, name=name, max_pages=max_pages, budget=budget)
        else:
            with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.parts.") as parts:
                _merge(files, kinds, Path(parts), tmp, max_pages=max_pages, paper=paper or Paper.LETTER,
                       budget=budget, office=office)
            return _publish_ours(tmp, out_path, name=name, max_pages=max_pages)
        publish(tmp, out_path)
    finally:
        discard(tmp)
    return PreparedDocument(path=out_path, pages=pages, paper=measured, sha256=sha256, size=size)


def _publish_ours(tmp: Path, out_path: Path, *, name: str, max_pages: int) -> PreparedDocument:
    """A PDF we wrote at ``tmp`` (its content checked as it was made): measured, digested, renamed."""
    pages, measured = _measure(tmp, name=name, max_pages=max_pages, budget=None)
    sha256, size = _digest(tmp)
    publish(tmp, out_path)
    return PreparedDocument(path=out_path, pages=pages, paper=measured, sha256=sha256, size=size)


# --- a document prepared once, used for several jobs (a mail to several fax numbers) ------------------------


def copy_prepared(doc: PreparedDocument, out_path: Path) -> PreparedDocument:
    """A document ``prepare`` made, copied to ``out_path`` (fsynced, renamed) without reading it again."""
    tmp = staging_path(out_path)
    try:
        sha256, size = _copy(doc.path, tmp)
        publish(tmp, out_path)
    finally:
        discard(tmp)
    return PreparedDocument(path=out_path, pages=doc.pages, paper=doc.paper, sha256=sha256, size=size)


def move_prepared(doc: PreparedDocument, out_path: Path) -> PreparedDocument:
    """:func:`copy_prepared` for the last job that needs the document: renamed to ``out_path`` (same
    file system; the rename made durable) instead of copied. The file was fsynced when it was
    prepared, and its bytes, digest and size are those ``prepare`` measured."""
    publish(doc.path, out_path)
    return PreparedDocument(path=out_path, pages=doc.pages, paper=doc.paper, sha256=doc.sha256, size=doc.size)


def join(cover: Path, body: PreparedDocument, out_path: Path, *, max_pages: int) -> PreparedDocument:
    """A cover page PDF (``text_to_pdf``) followed by a document ``prepare`` made, as one fax-ready PDF.

    Both are our own output, already checked, so their content is not decoded again: the body's
    work (its parts decoded, converted, counted) is done once per message, and only the cover,
    which names each recipient, is made per job.
    """
    name = "the combined document"
    tmp = staging_path(out_path)
    try:
        with ExitStack() as stack:
            readers = [open_pdf(stack.enter_context(path.open("rb")), name=name) for path in (cover, body.path)]
            total = len(readers[0].pages) + body.pages
            if total > max_pages:
                raise too_many(total, max_pages, None)
            writer = PdfWriter()
            with translated("the pages could not be put together into one PDF", name=None):
                for reader in readers:
                    for page in reader.pages:
                        writer.add_page(page)
                with tmp.open("wb") as fh:
                    writer.write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
        return _publish_ours(tmp, out_path, name=name, max_pages=max_pages)
    finally:
        discard(tmp)
