"""Office documents through LibreOffice (CONTRACT §11): typed by their bytes, converted in a sandboxed
process of their own, refused naming them when they cannot be converted or take too long.

Real files: .docx made by python-docx, .xlsx by openpyxl, and .odt/.ods/.doc/.xls/.pptx/.odp made
from them by LibreOffice itself; the converter is the real ``soffice`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from faxbridge.config import DocumentsConfig
from faxbridge.documents import OfficeSettings, office_kind, prepare
from faxbridge.documents._office import NO_CONVERTER
from faxbridge.documents._sniff import HEAD_SIZE
from faxbridge.errors import DocumentError
from faxbridge.models import InputFile, PreparedDocument

SOFFICE = shutil.which("soffice")
if SOFFICE is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have LibreOffice (soffice): .ci/run installs it")
    pytest.skip("LibreOffice (soffice) is not installed; .ci/run installs it", allow_module_level=True)

OFFICE = OfficeSettings(soffice=SOFFICE, timeout=120.0)   # generous: a loaded 2-core machine, cold profile
PPTX_PAGES = 1     # the 3-page text document, saved by LibreOffice as a presentation: one slide


def make_docx(path: Path, pages: int = 1, text: str = "Invoice 42") -> Path:
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    for page in range(pages):
        paragraph = document.add_paragraph(f"{text}, page {page + 1}")
        if page + 1 < pages:
            paragraph.add_run().add_break(WD_BREAK.PAGE)
    document.save(str(path))
    return path


def make_xlsx(path: Path, rows: int = 10) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in range(1, rows + 1):
        sheet.cell(row=row, column=1, value=f"item {row}")
        sheet.cell(row=row, column=2, value=row * 10)
    book.save(str(path))
    return path


def soffice_convert(source: Path, fmt: str, outdir: Path) -> Path:
    """A file in another Office format, made by LibreOffice itself (own profile, like the daemon's)."""
    outdir.mkdir(exist_ok=True)
    profile = outdir / f".profile-{fmt}"
    subprocess.run([SOFFICE or "soffice", f"-env:UserInstallation={profile.as_uri()}", "--headless",
                    "--convert-to", fmt, "--outdir", str(outdir), str(source)],
                   check=True, capture_output=True, timeout=300)
    made = outdir / f"{source.stem}.{fmt.split(':')[0]}"
    assert made.is_file(), f"LibreOffice made no {fmt} from {source.name}"
    return made


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("office")
    made = {"docx": make_docx(root / "letter.docx", pages=3), "xlsx": make_xlsx(root / "sheet.xlsx")}
    made["odt"] = soffice_convert(made["docx"], "odt", root / "odt")
    made["doc"] = soffice_convert(made["docx"], "doc", root / "doc")
    made["ods"] = soffice_convert(made["xlsx"], "ods", root / "ods")
    made["xls"] = soffice_convert(made["xlsx"], "xls", root / "xls")
    made["pptx"] = soffice_convert(made["odt"], "pptx:Impress MS PowerPoint 2007 XML", root / "pptx")
    rtf = root / "note.rtf"
    rtf.write_bytes(b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}} \\f0 Hello from RTF\\par }")
    made["rtf"] = rtf
    html = root / "page.html"
    html.write_text("<!DOCTYPE html><html><body><h1>Order 7</h1><p>Two boxes.</p></body></html>")
    made["html"] = html
    return made


def kind_of(path: Path) -> str | None:
    with path.open("rb") as fh:
        return office_kind(fh.read(HEAD_SIZE), path)


# --- typed by the bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("docx", "docx"), ("xlsx", "xlsx"), ("pptx", "pptx"), ("odt", "odt"),
                                            ("ods", "ods"), ("doc", "ole2"), ("xls", "ole2"), ("rtf", "rtf"),
                                            ("html", "html")])
def test_each_office_format_is_typed_by_its_bytes(files: dict[str, Path], name: str, kind: str) -> None:
    assert kind_of(files[name]) == kind


def test_a_name_does_not_decide(files: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "scan.pdf"
    shutil.copyfile(files["docx"], disguised)
    assert kind_of(disguised) == "docx"
    plain_zip = tmp_path / "letter.docx"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "not a Word document")
    assert kind_of(plain_zip) is None
    text = tmp_path / "notes.docx"
    text.write_text("plain words\n")
    assert kind_of(text) is None


def test_a_damaged_zip_is_no_office_document(tmp_path: Path) -> None:
    cut = tmp_path / "cut.docx"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    cut.write_bytes(buffer.getvalue()[:40])       # the central directory is gone
    assert kind_of(cut) is None


# --- converted, counted, refused -------------------------------------------------------------------------


def prepared(path: Path, out: Path, *, office: OfficeSettings | None = OFFICE,
             name: str | None = None) -> PreparedDocument:
    return prepare([InputFile(path=path, name=name or path.name)], out, max_pages=50, office=office)


def test_a_word_document_becomes_its_pages(files: dict[str, Path], tmp_path: Path) -> None:
    doc = prepared(files["docx"], tmp_path / "out.pdf")
    assert doc.pages == 3
    assert (tmp_path / "out.pdf").read_bytes().startswith(b"%PDF-")
    assert doc.size == (tmp_path / "out.pdf").stat().st_size


@pytest.mark.parametrize(("name", "pages"), [("xlsx", 1), ("odt", 3), ("ods", 1), ("doc", 3), ("xls", 1),
                                             ("pptx", PPTX_PAGES), ("rtf", 1), ("html", 1)])
def test_every_format_converts(files: dict[str, Path], tmp_path: Path, name: str, pages: int) -> None:
    doc = prepared(files[name], tmp_path / "out.pdf")
    assert doc.pages == pages
    assert (tmp_path / "out.pdf").read_bytes().startswith(b"%PDF-")


def test_an_office_document_and_a_pdf_make_one_fax(files: dict[str, Path], tmp_path: Path) -> None:
    pdf = tmp_path / "one.pdf"
    prepared(files["rtf"], pdf)
    both = prepare([InputFile(path=files["docx"], name="letter.docx"), InputFile(path=pdf, name="one.pdf")],
                   tmp_path / "both.pdf", max_pages=50, office=OFFICE)
    assert both.pages == 4


def test_without_a_converter_an_office_document_is_refused_saying_so(files: dict[str, Path], tmp_path: Path) -> None:
    for office in (None, OfficeSettings(soffice=None)):
        with pytest.raises(DocumentError) as caught:
            prepared(files["docx"], tmp_path / "out.pdf", office=office)
        assert str(caught.value) == (f"letter.docx is a Word document; {NO_CONVERTER} "
                                     "(only PDF, TIFF, JPEG, PNG, GIF and text can be faxed)")
        assert caught.value.name == "letter.docx"
    assert not (tmp_path / "out.pdf").exists()


def test_without_a_converter_html_is_faxed_as_text_as_before(files: dict[str, Path], tmp_path: Path) -> None:
    doc = prepared(files["html"], tmp_path / "out.pdf", office=None)
    assert doc.pages == 1


def test_a_page_limit_counts_the_converted_pages(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as caught:
        prepare([InputFile(path=files["docx"], name="letter.docx")], tmp_path / "out.pdf", max_pages=2,
                office=OFFICE)
    assert "letter.docx has 3 pages" in str(caught.value)


def test_a_document_libreoffice_cannot_read_is_refused_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.docx"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types")          # not XML
        archive.writestr("word/document.xml", b"\x00\xff" * 100)
    with pytest.raises(DocumentError) as caught:
        prepared(broken, tmp_path / "out.pdf")
    assert str(caught.value) == ("broken.docx could not be converted to PDF (LibreOffice could not read it); "
                                 "send it as PDF")
    assert not (tmp_path / "out.pdf").exists()


def fake_soffice(tmp_path: Path, body: str) -> str:
    script = tmp_path / "soffice"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_a_conversion_that_hangs_is_killed_at_the_timeout(files: dict[str, Path], tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the converter and a child of its own both hang: the whole group must go
    hang = fake_soffice(tmp_path, f"sleep 600 & echo $! >> {pids}\necho $$ >> {pids}\nwait\n")
    started = time.monotonic()
    with pytest.raises(DocumentError) as caught:
        prepared(files["docx"], tmp_path / "out.pdf", office=OfficeSettings(soffice=hang, timeout=2.0))
    assert str(caught.value) == ("letter.docx could not be converted to PDF in 2 s (documents.convert_timeout); "
                                 "send it as PDF")
    assert time.monotonic() - started < 60          # killed, not waited for (600 s)
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"converter process {pid} was left running"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return status != "Z"


def test_a_converter_that_makes_nothing_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    nothing = fake_soffice(tmp_path, "echo 'Error: source file could not be loaded'\nexit 0\n")
    with pytest.raises(DocumentError) as caught:
        prepared(files["docx"], tmp_path / "out.pdf", office=OfficeSettings(soffice=nothing, timeout=30.0))
    assert "letter.docx could not be converted to PDF" in str(caught.value)


def test_the_sender_s_name_never_reaches_the_command_line(files: dict[str, Path], tmp_path: Path) -> None:
    argv = tmp_path / "argv"
    spy = fake_soffice(tmp_path, f'printf "%s\\n" "$@" > {argv}\nexit 1\n')
    with pytest.raises(DocumentError):
        prepared(files["docx"], tmp_path / "out.pdf", office=OfficeSettings(soffice=spy, timeout=30.0),
                 name="--convert-to=x; rm -rf ~.docx")
    args = argv.read_text().splitlines()
    assert args[-1].endswith("/document.docx")
    assert not any("rm -rf" in arg for arg in args)


def test_no_temporary_files_are_left(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    prepared(files["rtf"], tmp_path / "out.pdf")
    assert list(scratch.iterdir()) == []


# --- the setting ------------------------------------------------------------------------------------------


def test_the_setting_names_the_converter(tmp_path: Path) -> None:
    assert DocumentsConfig(office="off").soffice() is None
    assert DocumentsConfig(office="auto").soffice() == SOFFICE
    assert DocumentsConfig(office=str(tmp_path / "missing")).soffice() is None
    script = fake_soffice(tmp_path, "exit 0\n")
    assert DocumentsConfig(office=script).soffice() == script
