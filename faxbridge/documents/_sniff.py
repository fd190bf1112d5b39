"""What a file is, decided from its bytes (never its name), and words for what we cannot fax."""

from __future__ import annotations

import codecs
import re

HEAD_SIZE = 8192  # bytes read to decide; a PDF header must lie in the first 1024 of them

_PDF_HEADER = re.compile(rb"%PDF-\d")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
# Formats that are text-like bytes but would fax as gibberish when printed as text.
_NOT_TEXT: tuple[tuple[bytes, str], ...] = (
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
    (b"(This file must be converted with BinHex", "a BinHex archive"),
    (b"begin 6", "a uuencoded file"),
)
_DESCRIPTIONS: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a Microsoft Office 97-2003 document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"BM", "a BMP image"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"8BPS", "a Photoshop image"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"\x78\x9f\x3e\x22", "a winmail.dat (TNEF) file"),
    *_NOT_TEXT,
)
_ZIP_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"word/", "a Word document"),
    (b"xl/", "an Excel spreadsheet"),
    (b"ppt/", "a PowerPoint presentation"),
    (b"opendocument.text", "an OpenDocument text"),
    (b"opendocument.spreadsheet", "an OpenDocument spreadsheet"),
    (b"opendocument.presentation", "an OpenDocument presentation"),
)
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1a\x1b")


def sniff(head: bytes) -> str | None:
    """Type decided from the bytes: "pdf" | "jpeg" | "png" | "gif" | "tiff" | "text" | None.

    A PDF header may follow junk (a UTF-8 BOM, a few stray bytes) within the first 1024 bytes; text is
    UTF-8 (or UTF-16 with a BOM, or cp1252) without control characters other than whitespace.
    """
    if not head:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _PDF_HEADER.search(head[:1024]):
        return "pdf"
    if any(head.lstrip().startswith(magic) for magic, _ in _NOT_TEXT):
        return None
    return "text" if _looks_like_text(head) else None


def describe(head: bytes) -> str:
    """Words for what an unsupported file looks like, e.g. "a Word document"."""
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return next((what for key, what in _ZIP_KINDS if key in head), "a ZIP archive or Office document")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heif", b"mif1", b"msf1", b"hevc"):
            return "an HEIC photo (save it as JPEG)"
        return "an AVIF image" if brand.startswith(b"avi") else "a video or audio file"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[:1] == b"0" and head[1:2] in (b"\x80", b"\x81", b"\x82", b"\x83"):
        return "signed or encrypted data (PKCS#7), not a document"
    stripped = head.lstrip()
    return next((what for magic, what in _DESCRIPTIONS if stripped.startswith(magic)), "not a file type we know")


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    try:
        # The head may end inside a multi-byte character: an incremental decoder forgives that.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        try:
            text = head.decode("cp1252")
        except UnicodeDecodeError:
            return False
    return not any(ch < " " and ch not in _ALLOWED_CONTROLS for ch in text)
