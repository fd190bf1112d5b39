"""faxbridge.documents: real files in (made here with fpdf2/pypdf/Pillow, or the shared samples), one PDF out."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF
from PIL import Image, ImageChops
from pypdf import PdfReader, PdfWriter

from faxbridge.documents import _text, describe, inspect_pdf, prepare, sniff, text_to_pdf
from faxbridge.errors import DocumentError
from faxbridge.models import InputFile, Paper

SAMPLES = Path(__file__).resolve().parent / "samples"  # a copy of shared/samples, with SOURCES.md

LETTER = (612.0, 792.0)
LEGAL = (612.0, 1008.0)
A4 = (595.28, 841.89)


# ---------------------------------------------------------------------------------------------- helpers


def make_pdf(path: Path, sizes: Sequence[tuple[float, float]], texts: Sequence[str] | None = None) -> Path:
    """A real PDF made with fpdf2: one page per size (points), each carrying a line of text."""
    pdf = FPDF(unit="pt")
    for number, (width, height) in enumerate(sizes):
        pdf.add_page(format=(width, height))
        pdf.set_font("helvetica", size=14)
        pdf.cell(text=texts[number] if texts else f"page {number + 1}")
    pdf.output(str(path))
    return path


def page_sizes(path: Path) -> list[tuple[float, float]]:
    return [(round(float(p.mediabox.width)), round(float(p.mediabox.height))) for p in PdfReader(path).pages]


def page_texts(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def images_on(path: Path, page: int) -> dict[str, Any]:
    """The image XObjects a page draws, by resource name."""
    resources = PdfReader(path).pages[page].get("/Resources")
    xobjects = resources.get_object().get("/XObject", {}) if resources is not None else {}
    return {key: xobjects[key].get_object() for key in xobjects}


def only(*paths: Path) -> list[InputFile]:
    return [InputFile(path.name, path) for path in paths]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder / "fax.pdf"


@pytest.fixture
def png(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "image.png", size: tuple[int, int] = (300, 400), mode: str = "RGB") -> Path:
        color: int | tuple[int, ...] = 128 if mode in ("L", "1", "P", "I;16") else (10, 200, 30, 128)[: len(mode)]
        path = tmp_path / name
        Image.new(mode, size, color).save(path, "PNG")
        return path

    return make


def refusal(files: Sequence[InputFile], out: Path, *, max_pages: int = 200) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        prepare(files, out, max_pages=max_pages)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [], "a refusal leaves no temporary files behind"
    return caught.value


# ---------------------------------------------------------------------------------------------- sniff


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "pdf"),
        (b"\xef\xbb\xbf%PDF-1.4\n", "pdf"),
        (b"\n\xa0\xa4\x03%PDF-1.5\n", "pdf"),
        (b"\x00" * 1000 + b"%PDF-1.4", "pdf"),
        (b"\x00" * 1100 + b"%PDF-1.4", None),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"GIF87a\x01\x00", "gif"),
        (b"GIF89a\x01\x00", "gif"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"Dear Sir,\r\n\tplease find\x0c", "text"),
        ("Grüße, Привет, 你好, مرحبا".encode(), "text"),
        ("naïve".encode()[:-3] + "é".encode()[:1], "text"),  # head cut inside a UTF-8 character
        ("caf\u00e9 cr\u00e8me \u20ac".encode("cp1252"), "text"),
        ("hello".encode("utf-16"), "text"),
        (b"text with a \x00 NUL", None),
        (b"PK\x03\x04\x14\x00\x06\x00word/document.xml", None),
        (b"{\\rtf1\\ansi hello}", None),
        (b"%!PS-Adobe-3.0\n", None),
        (b"(This file must be converted with BinHex 4.0)\r\n:", None),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", None),
        (b"", None),
    ],
    ids=lambda value: None if isinstance(value, bytes) else str(value),
)
def test_sniff_decides_from_bytes(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (_zip("[Content_Types].xml", "word/document.xml"), "a Word document"),
        (_zip("[Content_Types].xml", "xl/workbook.xml"), "an Excel spreadsheet"),
        (_zip("notes.txt"), "a ZIP archive or Office document"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "a Microsoft Office 97-2003 document"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "an HEIC photo (save it as JPEG)"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "a WebP image"),
        (b"0\x82\x01\x8f\x06\t*\x86H", "signed or encrypted data (PKCS#7), not a document"),
        (b"{\\rtf1", "an RTF document"),
        (b"\x01\x02\x03", "not a file type we know"),
    ],
    ids=["docx", "xlsx", "zip", "ole", "heic", "webp", "pkcs7", "rtf", "unknown"],
)
def test_describe_names_what_a_file_looks_like(head: bytes, words: str) -> None:
    assert describe(head) == words


# ---------------------------------------------------------------------------------------------- inspect_pdf


@pytest.mark.parametrize(
    ("sizes", "pages", "paper"),
    [
        ([A4, A4], 2, Paper.A4),
        ([LEGAL], 1, Paper.LEGAL),
        ([LETTER], 1, Paper.LETTER),
        ([(792.0, 612.0)], 1, Paper.LETTER),          # landscape Letter
        ([(590.0, 838.0)], 1, Paper.A4),              # a scanner's almost-A4
        ([(600.0, 1000.0)], 1, Paper.LEGAL),          # non-standard: the nearest
        ([LETTER, A4, A4], 3, Paper.A4),              # the paper most pages have
        ([A4, LETTER], 2, Paper.A4),                  # a tie: the first page's
        ([LEGAL, A4, LETTER, A4, LETTER], 5, Paper.A4),  # a tie not involving the first: the one met first
    ],
    ids=["a4", "legal", "letter", "landscape", "near-a4", "odd-size", "majority", "tie-first", "tie-order"],
)
def test_inspect_pdf_measures_pages_and_paper(tmp_path: Path, sizes: list[tuple[float, float]], pages: int,
                                              paper: Paper) -> None:
    assert inspect_pdf(make_pdf(tmp_path / "doc.pdf", sizes), name="doc.pdf") == (pages, paper)


def test_inspect_pdf_honours_rotate(tmp_path: Path) -> None:
    source = PdfReader(make_pdf(tmp_path / "a.pdf", [LEGAL]))
    writer = PdfWriter()
    writer.add_page(source.pages[0]).rotate(90)
    writer.add_page(source.pages[0]).rotate(270)
    writer.write(tmp_path / "rotated.pdf")
    assert inspect_pdf(tmp_path / "rotated.pdf", name="rotated.pdf") == (2, Paper.LEGAL)


def test_inspect_pdf_refuses_zero_pages(tmp_path: Path) -> None:
    PdfWriter().write(tmp_path / "empty.pdf")
    with pytest.raises(DocumentError, match=r"^empty\.pdf has no pages$"):
        inspect_pdf(tmp_path / "empty.pdf", name="empty.pdf")


# ---------------------------------------------------------------------------------------------- the samples

PDF_SAMPLES: dict[str, tuple[int, Paper] | str] = {
    "broken-xref-table.pdf": "is damaged",
    "damaged-offset-seeks-before-the-start.pdf": "is damaged",   # pypdf's OSError EINVAL: the file's fault
    "encrypted-aes256-user-and-owner-password.pdf": "is password-protected; send it without a password",
    "encrypted-owner-only-empty-user-password-acrobat-aes256.pdf": (1, Paper.LETTER),
    "encrypted-user-password-libreoffice-rc4-128.pdf": "is password-protected; send it without a password",
    "header-only-not-a-pdf.pdf": "is damaged",
    "incremental-update-evince-form-fill.pdf": (1, Paper.A4),
    "junk-bytes-before-header-chromium-linearized.pdf": (2, Paper.LETTER),
    "linearized-30-pages-letter.pdf": (30, Paper.LETTER),
    "malformed-page-tree-cycle.pdf": "is damaged",
    "mixed-page-sizes-letter-a4-ccitt.pdf": (3, Paper.LETTER),
    "pdf17-object-streams-xref-stream-a4-weasyprint.pdf": (3, Paper.A4),
    "pdfa-1b-ghostscript.pdf": (1, Paper.LETTER),
    "rotated-pages-90-180-270-360-a4.pdf": (4, Paper.A4),
    "scan-brother-ads1700w-ccitt-g4-3pages.pdf": (3, Paper.A4),
    "scan-canon-jpeg-letter.pdf": (1, Paper.LETTER),  # 11 KB of junk after %%EOF: still complete
    "scan-epson-ccitt-5pages-letter-indirect-rotate.pdf": (5, Paper.LETTER),
    "scan-jbig2-letter.pdf": (1, Paper.LETTER),
    "us-legal-word-ilovepdf.pdf": (1, Paper.LEGAL),
    "utf8-bom-before-header-ghostscript.pdf": (2, Paper.A4),
    "zero-pages.pdf": "has no pages",
}
# Images are fitted onto the default paper (Letter).
TIFF_SAMPLES: dict[str, int | str] = {
    "fax-g3-1d-eol-aligned-3pages-204x196dpi-ghostscript.tif": 3,
    "fax-g3-1d-no-eol-1728px.tif": 1,
    "fax-g4-300dpi-imagegear-form.tiff": 1,
    "fax-g4-3pages-400dpi-ghostscript.tiff": 3,
    "g4-fillorder-lsb-kofax.tif": 1,
    "malformed-ifd-loop-to-self.tif": "is a damaged TIFF file",
    "multipage-grayscale-deflate-300dpi.tiff": 3,
}


def test_every_sample_has_an_expected_outcome() -> None:
    assert sorted(p.name for p in (SAMPLES / "pdf").iterdir()) == sorted(PDF_SAMPLES)
    assert sorted(p.name for p in (SAMPLES / "tiff").iterdir()) == sorted(TIFF_SAMPLES)


@pytest.mark.parametrize(("name", "expected"), PDF_SAMPLES.items(), ids=list(PDF_SAMPLES))
def test_pdf_samples(name: str, expected: tuple[int, Paper] | str, out: Path) -> None:
    sample = SAMPLES / "pdf" / name
    if isinstance(expected, str):
        error = refusal(only(sample), out)
        assert error.reason.startswith(f"{name} {expected}")
        assert error.name == name and not error.too_many_pages
        with pytest.raises(DocumentError):
            inspect_pdf(sample, name=name)
        return
    result = prepare(only(sample), out, max_pages=200)
    assert (result.pages, result.paper) == expected
    assert inspect_pdf(sample, name=name) == expected
    data = sample.read_bytes()
    assert out.read_bytes() == data, "a single PDF is sent byte for byte"
    assert (result.path, result.size, result.sha256) == (out, len(data), hashlib.sha256(data).hexdigest())
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize(("name", "expected"), TIFF_SAMPLES.items(), ids=list(TIFF_SAMPLES))
def test_tiff_samples(name: str, expected: int | str, out: Path) -> None:
    sample = SAMPLES / "tiff" / name
    if isinstance(expected, str):
        assert refusal(only(sample), out).reason.startswith(f"{name} {expected}")
        return
    result = prepare(only(sample), out, max_pages=200)
    assert (result.pages, result.paper) == (expected, Paper.LETTER)
    assert [sorted(size) for size in page_sizes(out)] == [[612, 792]] * expected  # landscape pages allowed
    # The first page shows exactly the pixels Pillow reads (fill order, G3/G4 coding kept right).
    with Image.open(sample) as original:
        shown = PdfReader(out).pages[0].images[0].image
        assert shown is not None
        assert ImageChops.difference(shown.convert("L"), original.convert("L")).getbbox() is None


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95, 0.99])
def test_truncated_sample_is_refused(tmp_path: Path, out: Path, fraction: float) -> None:
    data = (SAMPLES / "pdf" / "linearized-30-pages-letter.pdf").read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    error = refusal(only(cut), out)
    assert error.reason == "cut.pdf is incomplete (the PDF is cut off before its end); send the whole file again"


# ---------------------------------------------------------------------------------------------- single PDFs


@pytest.mark.parametrize(("size", "paper"), [(A4, Paper.A4), (LEGAL, Paper.LEGAL)], ids=["a4", "legal"])
def test_single_pdf_keeps_its_paper_and_bytes(tmp_path: Path, out: Path, size: tuple[float, float],
                                              paper: Paper) -> None:
    source = make_pdf(tmp_path / "doc.pdf", [size, size])
    result = prepare(only(source), out, max_pages=200, paper=Paper.LETTER)
    assert (result.pages, result.paper) == (2, paper)
    assert out.read_bytes() == source.read_bytes()


def test_pdf_with_a_user_password_is_refused(tmp_path: Path, out: Path) -> None:
    writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", [LETTER]))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    writer.write(tmp_path / "invoice.pdf")
    error = refusal(only(tmp_path / "invoice.pdf"), out)
    assert error.reason == "invoice.pdf is password-protected; send it without a password"
    assert error.name == "invoice.pdf"


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_pdf_with_an_empty_user_password_is_accepted(tmp_path: Path, out: Path, png: Callable[..., Path],
                                                     algorithm: str) -> None:
    writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", [A4], ["locked page"]))
    writer.encrypt(user_password="", owner_password="owner", algorithm=algorithm)
    writer.write(tmp_path / "locked.pdf")
    result = prepare(only(tmp_path / "locked.pdf"), out, max_pages=200)
    assert (result.pages, result.paper) == (1, Paper.A4)
    assert out.read_bytes() == (tmp_path / "locked.pdf").read_bytes()
    # Merged with other pages, it is decrypted into the combined PDF.
    merged = prepare(only(tmp_path / "locked.pdf", png()), out, max_pages=200)
    assert merged.pages == 2
    assert not PdfReader(out).is_encrypted
    assert "locked page" in page_texts(out)[0]


def test_truncated_pdf_is_refused(tmp_path: Path, out: Path) -> None:
    data = make_pdf(tmp_path / "whole.pdf", [LETTER] * 3).read_bytes()
    (tmp_path / "report.pdf").write_bytes(data[: len(data) // 2])
    assert refusal(only(tmp_path / "report.pdf"), out).reason.startswith("report.pdf is incomplete")


@pytest.mark.parametrize(
    ("good", "bad", "reason"),
    [
        (b"/Kids [3 0 R]", b"/Kids [9 0 R]", "bad.pdf is damaged: only 0 of its 1 pages can be read"),
        (b"/Contents 4 0 R", b"/Contents 9 0 R", "bad.pdf is damaged: page 1 has lost its content"),
        (b"/Pages 1 0 R", b"/Pages 9 0 R", "bad.pdf is damaged and cannot be read as a PDF; save or export"),
        (b"/Kids [3 0 R]", b"/Kids [1 0 R]", "bad.pdf is damaged and cannot be read as a PDF; save or export"),
    ],
    ids=["page-missing", "content-missing", "page-tree-missing", "page-tree-loop"],
)
def test_pdf_with_a_damaged_page_tree_is_refused(tmp_path: Path, out: Path, good: bytes, bad: bytes,
                                                 reason: str) -> None:
    data = make_pdf(tmp_path / "whole.pdf", [LETTER]).read_bytes()
    assert good in data, "fpdf2 writes the objects in the order this test expects"
    (tmp_path / "bad.pdf").write_bytes(data.replace(good, bad))
    assert refusal(only(tmp_path / "bad.pdf"), out).reason.startswith(reason)


def test_too_many_pages(tmp_path: Path, out: Path) -> None:
    source = make_pdf(tmp_path / "big.pdf", [LETTER] * 5)
    error = refusal(only(source), out, max_pages=4)
    assert error.too_many_pages
    assert error.reason == "big.pdf has 5 pages; the limit is 4"
    assert prepare(only(source), out, max_pages=5).pages == 5


def test_too_many_pages_together(tmp_path: Path, out: Path) -> None:
    first = make_pdf(tmp_path / "one.pdf", [LETTER] * 3)
    second = make_pdf(tmp_path / "two.pdf", [LETTER] * 3)
    error = refusal(only(first, second), out, max_pages=5)
    assert error.too_many_pages
    assert error.reason == "the documents together have 6 pages; the limit is 5"


def test_zero_page_pdf_among_others_is_refused(tmp_path: Path, out: Path, png: Callable[..., Path]) -> None:
    PdfWriter().write(tmp_path / "nothing.pdf")
    error = refusal(only(png(), tmp_path / "nothing.pdf"), out)
    assert error.reason == "nothing.pdf has no pages"
    assert not error.too_many_pages


# ---------------------------------------------------------------------------------------------- images


def test_png_named_pdf_is_typed_by_its_bytes(tmp_path: Path, out: Path, png: Callable[..., Path]) -> None:
    result = prepare(only(png("scan.pdf")), out, max_pages=200)
    assert (result.pages, result.paper) == (1, Paper.LETTER)
    assert out.read_bytes() != (tmp_path / "scan.pdf").read_bytes()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
    assert result.size == out.stat().st_size


def test_multipage_tiff_gives_a_page_per_frame(tmp_path: Path, out: Path) -> None:
    frames = [Image.new("1", (1728, 2200), 1), Image.new("L", (2200, 1700), 90), Image.new("RGB", (800, 800))]
    frames[0].save(tmp_path / "fax.tif", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    result = prepare(only(tmp_path / "fax.tif"), out, max_pages=200, paper=Paper.A4)
    assert (result.pages, result.paper) == (3, Paper.A4)
    assert page_sizes(out) == [(595, 842), (842, 595), (595, 842)]  # landscape frames on a landscape page


def test_tiff_frames_count_toward_the_limit(tmp_path: Path, out: Path) -> None:
    frames = [Image.new("1", (100, 100), 1) for _ in range(3)]
    frames[0].save(tmp_path / "fax.tif", save_all=True, append_images=frames[1:])
    error = refusal(only(tmp_path / "fax.tif"), out, max_pages=2)
    assert error.too_many_pages and error.reason == "fax.tif has 3 pages; the limit is 2"


def test_tiff_whose_page_chain_points_past_the_end_is_refused(tmp_path: Path, out: Path) -> None:
    Image.new("L", (20, 20), 50).save(tmp_path / "ok.tif")
    data = bytearray((tmp_path / "ok.tif").read_bytes())
    (first_ifd,) = struct.unpack("<I", data[4:8])
    (entries,) = struct.unpack("<H", data[first_ifd : first_ifd + 2])
    data[first_ifd + 2 + 12 * entries : first_ifd + 6 + 12 * entries] = struct.pack("<I", 10_000_000)
    (tmp_path / "broken.tif").write_bytes(bytes(data))
    assert refusal(only(tmp_path / "broken.tif"), out).reason.startswith("broken.tif is a damaged or incomplete")


def test_jpeg(tmp_path: Path, out: Path) -> None:
    Image.new("RGB", (1200, 1600), (200, 10, 10)).save(tmp_path / "photo.jpg", "JPEG")
    result = prepare(only(tmp_path / "photo.jpg"), out, max_pages=200)
    assert (result.pages, result.paper) == (1, Paper.LETTER)
    assert [image["/Filter"] for image in images_on(out, 0).values()] == ["/DCTDecode"], "the JPEG as it is"


def test_jpeg_with_an_invalid_exif_orientation(tmp_path: Path, out: Path) -> None:
    image = Image.new("RGB", (300, 200))
    exif = image.getexif()
    exif[0x0112] = 9
    image.save(tmp_path / "odd.jpg", exif=exif)
    assert prepare(only(tmp_path / "odd.jpg"), out, max_pages=200).pages == 1


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16"])
def test_png_modes_a_fax_cannot_show_are_flattened(out: Path, png: Callable[..., Path], mode: str) -> None:
    result = prepare(only(png(mode=mode)), out, max_pages=200)
    assert result.pages == 1
    images = images_on(out, 0)
    assert len(images) == 1
    assert all("/SMask" not in image for image in images.values()), "transparency is flattened onto white"


def test_palette_png_with_transparency(tmp_path: Path, out: Path) -> None:
    image = Image.new("P", (50, 60), 0)
    image.putpalette([255, 255, 255, 0, 0, 0])
    image.save(tmp_path / "logo.png", transparency=0)
    assert prepare(only(tmp_path / "logo.png"), out, max_pages=200).pages == 1


def test_gif_single_and_animated(tmp_path: Path, out: Path) -> None:
    frames = [Image.new("P", (120, 160), index) for index in range(3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] * 2)
    frames[0].save(tmp_path / "still.gif")
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert prepare(only(tmp_path / "still.gif"), out, max_pages=200).pages == 1
    assert prepare(only(tmp_path / "moving.gif"), out, max_pages=200).pages == 3


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_truncated_image_is_refused(tmp_path: Path, out: Path, kind: str) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((400, 400), 60).convert("RGB").save(buffer, kind)
    path = tmp_path / f"cut.{kind.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    error = refusal(only(path), out)
    assert error.reason == f"{path.name} is a damaged or incomplete {kind} image and cannot be read"
    assert error.__cause__ is not None


@pytest.mark.parametrize("size", [(40, 40), (100, 100)], ids=["over-the-limit", "over-twice-the-limit"])
def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch, out: Path, png: Callable[..., Path],
                                       size: tuple[int, int]) -> None:
    path = png(size=size, mode="L")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    error = refusal(only(path), out)
    assert error.reason == "image.png is too large an image to fax (more than 1,000 pixels)"


# ---------------------------------------------------------------------------------------------- text


SCRIPTS = "Grüße aus Köln. Ελληνικά. Привет, мир. שלום. مرحبا. 你好世界. 😀 done"


def test_text_in_several_scripts(tmp_path: Path) -> None:
    pages = text_to_pdf(SCRIPTS + "\n" + "x" * 500 + "\tEND", tmp_path / "t.pdf")
    assert pages == 1
    text = page_texts(tmp_path / "t.pdf")[0]
    for word in ("Grüße", "Köln", "Ελληνικά", "Привет", "done", "END"):
        assert word in text
    assert (round(float(PdfReader(tmp_path / "t.pdf").pages[0].mediabox.width))) == 612


def test_text_never_fails_on_odd_characters(tmp_path: Path) -> None:
    nasty = "a\x00b\x07c\x1b[0m\u200b\u202e\ud800\U0010ffff\ue000\ufeff\r\nline two\u2028three\r"
    assert text_to_pdf(nasty, tmp_path / "t.pdf") == 1
    assert "line two" in page_texts(tmp_path / "t.pdf")[0]


def test_text_without_a_unicode_font_falls_back_to_courier(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setattr(_text, "_installed_fonts", dict)
    assert text_to_pdf(SCRIPTS, tmp_path / "t.pdf", heading=[("Subject", "Привет café")]) == 1
    text = page_texts(tmp_path / "t.pdf")[0]
    assert "Grüße aus Köln" in text and "café" in text and "?" in text


def test_text_heading_on_the_first_page(tmp_path: Path) -> None:
    heading = [("From", "alice@example.com"), ("Subject", "Invoice 42 – überfällig")]
    pages = text_to_pdf("Body text\fSecond page", tmp_path / "cover.pdf", paper=Paper.A4, heading=heading)
    assert pages == 2
    first, second = page_texts(tmp_path / "cover.pdf")
    assert first.index("From: alice@example.com") < first.index("Subject: Invoice 42 – überfällig")
    assert first.index("überfällig") < first.index("Body text")
    assert "Second page" in second and "From" not in second
    assert page_sizes(tmp_path / "cover.pdf") == [(595, 842)] * 2


@pytest.mark.parametrize(
    ("text", "pages"),
    [("one\ftwo\f", 2), ("one\f\fthree", 3), ("", 1), ("\f", 1)],
    ids=["trailing-form-feed", "blank-page-between", "empty", "only-form-feed"],
)
def test_text_form_feeds(tmp_path: Path, text: str, pages: int) -> None:
    assert text_to_pdf(text, tmp_path / "t.pdf") == pages
    assert len(PdfReader(tmp_path / "t.pdf").pages) == pages


def test_text_flows_onto_further_pages(tmp_path: Path) -> None:
    lines = _text.lines_per_page(Paper.LETTER)
    text = "\n".join(f"line {n}" for n in range(1, 3 * lines + 1))
    assert text_to_pdf(text, tmp_path / "t.pdf") == 3
    texts = page_texts(tmp_path / "t.pdf")
    assert texts[0].rstrip().endswith(f"line {lines}")
    assert texts[1].lstrip().startswith(f"line {lines + 1}")


def test_text_long_lines_wrap_within_the_page(tmp_path: Path) -> None:
    columns, lines = _text.chars_per_line(Paper.LETTER), _text.lines_per_page(Paper.LETTER)
    words_per_line = (columns + 1) // len("word ")
    pages = text_to_pdf("word " * 5000, tmp_path / "words.pdf")
    assert pages == math.ceil(math.ceil(5000 / words_per_line) / lines)
    assert text_to_pdf("x" * 3 * columns * lines, tmp_path / "blob.pdf") == 3  # no spaces: broken anywhere
    for text in page_texts(tmp_path / "words.pdf") + page_texts(tmp_path / "blob.pdf"):
        assert max(len(line) for line in text.splitlines()) <= columns


def test_text_file_in_latin1_is_read(tmp_path: Path, out: Path) -> None:
    (tmp_path / "note.txt").write_bytes("Caf\u00e9 cr\u00e8me, 5 \u20ac".encode("cp1252"))
    result = prepare(only(tmp_path / "note.txt"), out, max_pages=200, paper=Paper.LEGAL)
    assert (result.pages, result.paper) == (1, Paper.LEGAL)
    assert "Café crème, 5 €" in page_texts(out)[0]


def test_text_file_too_long_is_refused_before_typesetting(tmp_path: Path, out: Path) -> None:
    (tmp_path / "log.txt").write_text("line\n" * 100_000)
    error = refusal(only(tmp_path / "log.txt"), out, max_pages=200)
    assert error.too_many_pages
    assert error.reason == "log.txt has more than 200 pages of text; the limit is 200"


def test_blank_text_file_is_refused(tmp_path: Path, out: Path) -> None:
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    assert refusal(only(tmp_path / "blank.txt"), out).reason == "blank.txt has no text to fax"


# ---------------------------------------------------------------------------------------------- mixed inputs


def test_mixed_inputs_in_order(tmp_path: Path, out: Path) -> None:
    first = make_pdf(tmp_path / "first.pdf", [A4, A4], ["alpha one", "alpha two"])
    (tmp_path / "second.txt").write_text("bravo text\n")
    Image.new("RGB", (1600, 1200), (0, 0, 255)).save(tmp_path / "third.jpg")  # landscape photo
    fourth = make_pdf(tmp_path / "fourth.pdf", [LEGAL], ["delta legal"])
    result = prepare(only(first, tmp_path / "second.txt", tmp_path / "third.jpg", fourth), out, max_pages=200)
    assert result.pages == 5
    assert page_sizes(out) == [(595, 842), (595, 842), (612, 792), (792, 612), (612, 1008)]
    texts = page_texts(out)
    for page, words in ((0, "alpha one"), (1, "alpha two"), (2, "bravo text"), (4, "delta legal")):
        assert words in texts[page]
    assert len(images_on(out, 3)) == 1 and not images_on(out, 2)
    assert result.paper == Paper.A4  # A4 2, Letter 2, Legal 1: the tie goes to the first page's paper
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary files are left behind"


def test_same_pdf_twice(tmp_path: Path, out: Path) -> None:
    source = make_pdf(tmp_path / "doc.pdf", [LETTER], ["hello"])
    result = prepare(only(source, source), out, max_pages=200)
    assert result.pages == 2
    assert all("hello" in text for text in page_texts(out))


# ---------------------------------------------------------------------------------------------- refusals


def test_word_document_is_refused_with_what_it_is(tmp_path: Path, out: Path) -> None:
    (tmp_path / "report.docx").write_bytes(_zip("[Content_Types].xml", "_rels/.rels", "word/document.xml"))
    error = refusal(only(tmp_path / "report.docx"), out)
    assert error.reason == (
        "report.docx is a Word document; this fax server cannot convert Office documents; send it as PDF "
        "(only PDF, TIFF, JPEG, PNG, GIF and text can be faxed)"
    )
    assert error.name == "report.docx"


def test_unsupported_file_among_good_ones_names_the_culprit(tmp_path: Path, out: Path,
                                                            png: Callable[..., Path]) -> None:
    (tmp_path / "program.exe").write_bytes(b"MZ\x90\x00\x03\x00\x00\x00")
    error = refusal(only(png(), tmp_path / "program.exe"), out)
    assert error.name == "program.exe"
    assert error.reason.startswith("program.exe is a Windows program;")


def test_empty_file_and_no_files(tmp_path: Path, out: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert refusal(only(tmp_path / "empty.pdf"), out).reason == "empty.pdf is empty"
    assert refusal([], out).reason == "there is nothing to fax"


def test_missing_file_is_an_os_error(tmp_path: Path, out: Path) -> None:
    with pytest.raises(FileNotFoundError):
        prepare(only(tmp_path / "gone.pdf"), out, max_pages=200)


def test_output_replaces_an_existing_file(tmp_path: Path, out: Path, png: Callable[..., Path]) -> None:
    out.write_bytes(b"old")
    result = prepare(only(png()), out, max_pages=200)
    assert out.read_bytes()[:5] == b"%PDF-" and result.size == out.stat().st_size


def _base_fonts(path: Path) -> set[str]:
    reader = PdfReader(path)
    fonts = set()
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            fonts.add(str(font.get_object()["/BaseFont"]))
    return fonts


def test_latin1_text_is_set_in_core_courier_other_text_in_a_unicode_font(tmp_path: Path) -> None:
    """Courier for Latin-1 (nothing loaded or embedded: fast), the same columns as the TTF face."""
    text_to_pdf("Grüße aus Köln, façade, ½ × 10 EUR", tmp_path / "latin1.pdf",
                heading=[("From", "José <jose@example.com>")])
    assert _base_fonts(tmp_path / "latin1.pdf") == {"/Courier", "/Courier-Bold"}
    if _text._fonts() is None:
        pytest.skip("no Unicode TrueType font installed here")
    text_to_pdf("Grüße – 日本語のテキスト", tmp_path / "unicode.pdf")
    assert not any("Courier" in f for f in _base_fonts(tmp_path / "unicode.pdf"))
    columns = _text.chars_per_line(Paper.LETTER)
    for name, text in (("a.pdf", "x" * 3 * columns), ("b.pdf", "é" * 3 * columns)):
        text_to_pdf(text, tmp_path / name)
        assert [len(line) for line in page_texts(tmp_path / name)[0].splitlines()] == [columns] * 3


def test_a_lone_pdf_of_ours_becomes_the_document_by_a_link_and_is_fsynced(tmp_path: Path) -> None:
    """prepare(inputs_ours=True): a PDF faxed as it is is the same file as the input kept as
    received (no copy); the digest and size are the file's; nothing else is left beside it."""
    kept = tmp_path / "received"
    kept.mkdir()
    source = make_pdf(kept / "0-scan.pdf", [LETTER, LETTER])
    doc = prepare([InputFile("scan.pdf", source)], tmp_path / "fax.pdf", max_pages=10, inputs_ours=True)
    assert doc.path.stat().st_ino == source.stat().st_ino and source.stat().st_nlink == 2
    data = source.read_bytes()
    assert (doc.pages, doc.size, doc.sha256) == (2, len(data), hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fax.pdf", "received"]


def test_a_damaged_pdf_of_ours_is_refused_and_only_its_link_goes(tmp_path: Path) -> None:
    source = tmp_path / "0-cut.pdf"
    source.write_bytes(make_pdf(tmp_path / "whole.pdf", [LETTER]).read_bytes()[:-200])
    with pytest.raises(DocumentError, match=r"cut\.pdf is incomplete"):
        prepare([InputFile("cut.pdf", source)], tmp_path / "fax.pdf", max_pages=10, inputs_ours=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-cut.pdf", "whole.pdf"]
    assert source.stat().st_nlink == 1


def test_inputs_of_ours_that_are_not_a_lone_pdf_are_made_as_before(tmp_path: Path) -> None:
    """An image (converted) and a PDF on another file system (no link across: copied)."""
    png = tmp_path / "0-logo.png"
    Image.new("L", (200, 100), 255).save(png)
    doc = prepare([InputFile("logo.png", png)], tmp_path / "fax.pdf", max_pages=10, inputs_ours=True)
    assert doc.pages == 1 and doc.path.stat().st_ino != png.stat().st_ino
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system here to link across")
    elsewhere = make_pdf(shm / f"faxbridge-test-{tmp_path.name}.pdf", [LETTER])
    try:
        copied = prepare([InputFile("a.pdf", elsewhere)], tmp_path / "other.pdf", max_pages=10, inputs_ours=True)
        assert copied.path.read_bytes() == elsewhere.read_bytes() and elsewhere.stat().st_nlink == 1
    finally:
        elsewhere.unlink()


def test_a_small_pdf_is_parsed_from_memory_and_a_big_one_from_the_file(tmp_path: Path) -> None:
    """open_pdf reads a PDF up to IN_MEMORY whole (one read, no seeks about the file); a bigger one
    is read as pypdf goes. Both give the same pages, and a cut-off small one is still refused."""
    from faxbridge.documents._pdf import IN_MEMORY, count_pages, open_pdf
    from tests.support import big_pdf

    small = make_pdf(tmp_path / "small.pdf", [LETTER] * 3)
    big = big_pdf(tmp_path / "big.pdf", IN_MEMORY // 1_000_000 + 1)
    assert small.stat().st_size <= IN_MEMORY < big.stat().st_size
    with small.open("rb") as fh:
        reader = open_pdf(fh, name="small.pdf")
        assert isinstance(reader.stream, io.BytesIO)
        assert count_pages(reader, name="small.pdf") == 3
    with big.open("rb") as fh:
        reader = open_pdf(fh, name="big.pdf")
        assert reader.stream is fh
        assert count_pages(reader, name="big.pdf") == 1
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    with cut.open("rb") as fh, pytest.raises(DocumentError, match="incomplete"):
        open_pdf(fh, name="cut.pdf")
