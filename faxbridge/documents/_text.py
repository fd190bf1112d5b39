"""Text to PDF pages with fpdf2: monospace, wrapped, form feeds start a new page.

Latin-1 text is set in fpdf2's core Courier (nothing to load or embed). Any other Unicode text is
set with a Unicode TTF found on the system (DejaVu Sans Mono first, with broader fonts as fallbacks
for scripts it lacks), else in Courier too. A character no font has becomes
"?", control and format characters are dropped, so no input text can make it fail.
"""

from __future__ import annotations

import codecs
import functools
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from faxbridge.documents._common import PAPER_SIZES, discard, publish, staging_path, translated
from faxbridge.durable import fsync_file
from faxbridge.models import Paper

# fpdf2 and its fontTools take half a second to import: loaded when text is first set (text_to_pdf),
# so the daemon, its workers and the CLI start without them.
if TYPE_CHECKING:
    from fpdf import FPDF

FONT_SIZE = 10.0      # points; DejaVu Sans Mono at 10 pt sets 89 columns across Letter
LINE_HEIGHT = 12.0
MARGIN = 36.0         # half an inch: fax machines lose a few millimetres at every edge
TAB_SIZE = 8
_ADVANCE = 0.602      # width of a DejaVu Sans Mono character in em
_COURIER_ADVANCE = 0.6

_FONT_ROOTS = (
    "/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
    "/Library/Fonts", "/System/Library/Fonts/Supplemental", "C:/Windows/Fonts",
)
# (regular, bold) monospace faces, best first.
_MONO = (
    ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
    ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf"),
    ("NotoSansMono-Regular.ttf", "NotoSansMono-Bold.ttf"),
    ("FreeMono.ttf", "FreeMonoBold.ttf"),
    ("cour.ttf", "courbd.ttf"),
)
# Faces with wide coverage, tried in order for characters the monospace face lacks.
_FALLBACKS = ("DejaVuSans.ttf", "FreeSerif.ttf", "NotoSans-Regular.ttf", "DroidSansFallbackFull.ttf",
              "unifont.ttf")
_LATIN1 = frozenset(range(0x20, 0x7F)) | frozenset(range(0xA0, 0x100))


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in _FONT_ROOTS:
        for folder, _dirs, files in os.walk(os.path.expanduser(root)):
            for file in files:
                found.setdefault(file, Path(folder) / file)
    return found


def _fonts() -> tuple[Path, Path, list[Path]] | None:
    installed = _installed_fonts()
    for regular, bold in _MONO:
        if regular in installed:
            fallbacks = [installed[f] for f in _FALLBACKS if f in installed]
            return installed[regular], installed.get(bold, installed[regular]), fallbacks
    return None


def decode_text(data: bytes) -> str:
    """Bytes of a text file as str: BOM-marked UTF-8/UTF-16, else UTF-8, else cp1252, else latin-1."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def lines_per_page(paper: Paper) -> int:
    return int((PAPER_SIZES[paper][1] - 2 * MARGIN) // LINE_HEIGHT)


def chars_per_line(paper: Paper) -> int:
    return int((PAPER_SIZES[paper][0] - 2 * MARGIN) // (FONT_SIZE * _ADVANCE))


def text_pages_at_least(text: str, paper: Paper) -> int:
    """A lower bound of the pages a text sets to, to refuse before setting a huge text in type
    (fpdf2 sets ~15 pages a second; a 5 MB line would take minutes). Halved by characters:
    glyphs from proportional fallback fonts can be narrower than monospace."""
    lines, chars = lines_per_page(paper), chars_per_line(paper)
    return max(text.count("\n") // lines, len(text) // (2 * lines * chars), text.count("\f")) + 1


class _Cleaner(dict[int, str | None]):
    """A str.translate table, filled on demand: what each code point becomes on the page."""

    def __init__(self, printable: frozenset[int]) -> None:
        super().__init__()
        self._printable = printable

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        category = unicodedata.category(char)
        result: str | None
        if char in "\n\f":
            result = char
        elif category in ("Cc", "Cf"):
            result = None
        elif code in self._printable:
            result = char
        else:
            result = " " if category == "Zs" else "?"
        self[code] = result
        return result


def _normalise(text: str, cleaner: _Cleaner) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = unicodedata.normalize("NFC", text)
    return "\n".join(line.expandtabs(TAB_SIZE) for line in text.split("\n")).translate(cleaner)


def _setup(pdf: FPDF, latin1: bool = False) -> tuple[str, frozenset[int]]:
    """Register fonts; gives the family to use and the code points it (with fallbacks) can print.

    Text that is all Latin-1 (most mail, every cover page in ASCII) is set in the core Courier:
    nothing to load or embed (loading and subsetting TrueType fonts costs some 60 ms a document).
    """
    fonts = None if latin1 else _fonts()
    if fonts is None:
        return "Courier", _LATIN1
    regular, bold, fallbacks = fonts
    pdf.add_font("mono", "", str(regular))
    pdf.add_font("mono", "B", str(bold))
    names = []
    for number, path in enumerate(fallbacks):
        names.append(f"fallback{number}")
        pdf.add_font(names[-1], "", str(path))
    printable: set[int] = set()
    for font in pdf.fonts.values():
        printable.update(getattr(font, "cmap", ()))
    if names:
        pdf.set_fallback_fonts(names, exact_match=False)
    return "mono", frozenset(code for code in printable if code >= 0x20)


def _is_latin1(text: str, heading: Iterable[tuple[str, str]]) -> bool:
    """Whether every character that would be printed is one Courier has (controls are dropped)."""
    every = "".join((text, *(f"{label}{value}" for label, value in heading)))
    if every.isascii():
        return True
    return all(ord(c) in _LATIN1 or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp")
               for c in unicodedata.normalize("NFC", every))


def _pages_of(text: str) -> list[str]:
    pages = [page.rstrip() for page in text.split("\f")]
    while len(pages) > 1 and not pages[-1]:
        pages.pop()
    return pages


def _size(family: str) -> float:
    """The font size that gives every face the same character width (so the same columns)."""
    return FONT_SIZE * _ADVANCE / _COURIER_ADVANCE if family == "Courier" else FONT_SIZE


def _write(pdf: FPDF, family: str, cleaner: _Cleaner, text: str, heading: Iterable[tuple[str, str]]) -> None:
    size = _size(family)
    pdf.add_page()
    rows = [(_normalise(label, cleaner), _normalise(value, cleaner)) for label, value in heading]
    for label, value in rows:
        pdf.set_font(family, "B", size)
        pdf.cell(w=pdf.get_string_width(f"{label}: ") + 1, h=LINE_HEIGHT, text=f"{label}: ")
        pdf.set_font(family, "", size)
        pdf.multi_cell(w=0, h=LINE_HEIGHT, text=value or " ", align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", size)
    if rows:
        rule_y = pdf.get_y() + LINE_HEIGHT / 2
        pdf.line(pdf.l_margin, rule_y, pdf.w - pdf.r_margin, rule_y)
        pdf.set_y(rule_y + LINE_HEIGHT / 2)
    for number, page in enumerate(_pages_of(_normalise(text, cleaner))):
        if number:
            pdf.add_page()
        if page:
            pdf.multi_cell(w=0, h=LINE_HEIGHT, text=page, align="L", new_x="LMARGIN", new_y="NEXT")


def text_to_pdf(
    text: str,
    out_path: Path,
    *,
    paper: Paper = Paper.LETTER,
    heading: Sequence[tuple[str, str]] = (),
    name: str | None = None,
) -> int:
    """Text pages with optional heading lines ("From", "alice@x") at the top of the first page.

    Written to a temporary name beside out_path, fsynced and renamed. Returns the page count.
    """
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=PAPER_SIZES[paper])
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, MARGIN)
    pdf.c_margin = 0  # lines use the full width between the margins
    pdf.set_creator("faxbridge")
    tmp = staging_path(out_path)
    try:
        with translated(f"{name or 'the text'} could not be set as fax pages", name=name):
            family, printable = _setup(pdf, latin1=_is_latin1(text, heading))
            _write(pdf, family, _Cleaner(printable), text, heading)
            pdf.output(str(tmp))
        fsync_file(tmp)
        publish(tmp, out_path)
    finally:
        discard(tmp)
    return int(pdf.pages_count)
