"""Folder intake, the pure part: names, control files, destination choice, result names (tables)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from faxbridge.config import DEFAULT_PATTERN
from faxbridge.ingress.folder.control import (
    Control,
    ControlError,
    choose_number,
    control_names,
    is_control,
    is_ignored,
    numbered,
    parse_control,
    parse_fax_control,
    parse_json_control,
    relevant,
    result_name,
    safe_component,
    stem,
)
from faxbridge.models import Paper, Resolution

PATTERN = re.compile(DEFAULT_PATTERN)


@pytest.mark.parametrize(("name", "ignored"), [
    ("letter.pdf", False), ("15555551212.pdf", False), ("report", False),
    (".hidden.pdf", True), ("~$letter.pdf", True), ("letter.pdf.tmp", True), ("letter.PDF.TMP", True),
    ("letter.pdf.part", True), ("letter.pdf.crdownload", True), (".letter.pdf.swp", True),
    ("letter.swp", True), (".DS_Store", True), ("Thumbs.db", True), ("thumbs.db", True),
    ("desktop.ini", True), ("Desktop.ini", True), ("._15555551212.pdf", True), ("", True),
], ids=lambda v: repr(v))
def test_ignored_names(name: str, ignored: bool) -> None:
    assert is_ignored(name) is ignored


@pytest.mark.parametrize(("rel", "recursive", "want"), [
    ("a.pdf", False, True), ("sub/a.pdf", False, False), ("sub/a.pdf", True, True),
    (".faxbridge/processing/X/a.pdf", True, False), ("sub/.tmp/a.pdf", True, False),
    ("sub/a.pdf.part", True, False),
])
def test_relevant_paths(rel: str, recursive: bool, want: bool) -> None:
    assert relevant(PurePosixPath(rel), recursive) is want


@pytest.mark.parametrize(("name", "want"), [
    ("letter.pdf", "letter"), ("a.b.pdf", "a.b"), ("letter", "letter"), ("x.", "x"),
])
def test_stem(name: str, want: str) -> None:
    assert stem(name) == want


def test_control_names_and_kind() -> None:
    assert control_names("letter.pdf") == ("letter.json", "letter.fax")
    assert is_control("letter.json") and is_control("LETTER.FAX") and not is_control("letter.pdf")


def test_json_control_with_every_key() -> None:
    data = (b'{"to": "+1 555 555 1212", "header": "ACME", "resolution": "fine", "paper": "a4", '
            b'"priority": "Low", "tags": {"ref": "42", "n": 7, "ok": true}, "send_at": "2026-12-03 09:00"}')
    c = parse_json_control("letter.json", data)
    assert c == Control(to="+1 555 555 1212", header="ACME", resolution=Resolution.FINE, paper=Paper.A4,
                        priority="Low", tags={"ref": "42", "n": "7", "ok": "true"}, send_at="2026-12-03 09:00")
    assert c.name == "letter.json"
    o = c.options()
    assert (o.header, o.resolution, o.paper, o.priority, dict(o.tags)) == \
        ("ACME", Resolution.FINE, Paper.A4, "Low", {"ref": "42", "n": "7", "ok": "true"})


def test_json_control_minimal_and_bom() -> None:
    assert parse_json_control("a.json", "\ufeff{\"to\": 15555551212}".encode()) == Control(to="15555551212")
    assert parse_json_control("a.json", b"{}") == Control()


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"to": "+15555551212",}', "letter.json is not valid JSON: Expecting property name enclosed in "
                                 "double quotes: line 1 column 23 (char 22)"),
    (b'{"to": "+1555', "letter.json is not valid JSON: Unterminated string starting at: line 1 column 8 "
                      "(char 7)"),
    (b'["+15555551212"]', 'letter.json must hold a JSON object, like {"to": "+15555551212"}'),
    (b'{"too": "+15555551212"}', "letter.json: unknown key 'too' (known: to, header, resolution, paper, "
                                 "priority, tags, send_at)"),
    (b'{"resolution": "ultra"}', 'letter.json: resolution must be "standard" or "fine", not "ultra"'),
    (b'{"paper": "a3"}', 'letter.json: paper must be "letter" or "legal" or "a4", not "a3"'),
    (b'{"priority": "High"}', 'letter.json: priority must be "normal" or "low", not "High"'),
    (b'{"to": ["+15555551212"]}', "letter.json: to must be a fax number in a string"),
    (b'{"header": "' + b"x" * 51 + b'"}', "letter.json: header has 51 characters; at most 50"),
    (b'{"tags": ["a"]}', "letter.json: tags must be an object of names and values"),
    (b'{"tags": {"a": {"b": 1}}}', "letter.json: tags.a must be a string or a number"),
], ids=["trailing-comma", "cut-off", "array", "unknown-key", "resolution", "paper", "priority", "to-type",
        "header-long", "tags-type", "tag-value"])
def test_json_control_errors_name_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(ControlError) as exc:
        parse_json_control("letter.json", data)
    assert exc.value.reason == reason


def test_legacy_fax_control() -> None:
    text = b"# written by LegacyApp 3.1\r\nTO=+1 (555) 555-1213\r\nheader = Accounts\r\nresolution=HIGH\r\n" \
           b"from=ignored\r\n\r\n; comment\r\n"
    assert parse_fax_control("letter.fax", text) == Control(to="+1 (555) 555-1213", header="Accounts",
                                                             resolution=Resolution.FINE)
    assert parse_control("x.fax", b"to=15555551212\nresolution=standard\n") == Control(to="15555551212")
    assert parse_control("x.FAX", "to=15555551212\nheader=Müller\n".encode("latin-1")).header == "Müller"


@pytest.mark.parametrize(("data", "reason"), [
    (b"to 15555551212\n", "letter.fax: line 1 is not key=value: 'to 15555551212'"),
    (b"to=15555551212\nresolution=ultra\n", 'letter.fax: resolution must be "fine" or "high" or "standard" or '
                                            '"normal" or "low", not "ultra"'),
])
def test_legacy_fax_control_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ControlError) as exc:
        parse_fax_control("letter.fax", data)
    assert exc.value.reason == reason


@pytest.mark.parametrize(("rel", "control", "recursive", "want"), [
    ("15555551212.pdf", None, False, ("15555551212", "file name")),
    ("+1 555-555-1212_invoice 42.pdf", None, False, ("+1 555-555-1212", "file name")),
    ("(555) 555-1212.TIF", None, False, ("(555) 555-1212", "file name")),
    ("15555551212.pdf", Control(to="15555551299"), False, ("15555551299", "control file")),
    ("15555551212.pdf", Control(header="only a header"), False, ("15555551212", "file name")),
    ("letter.pdf", None, False, None),
    ("15555551212.docx", None, False, None),
    ("15555551234/letter.pdf", None, True, ("15555551234", "folder name")),
    ("15555551234/letter.pdf", None, False, None),
    ("15555551234/15555551212.pdf", None, True, ("15555551212", "file name")),
    ("a/15555551234/letter.pdf", None, True, ("15555551234", "folder name")),
    ("15555551234/letter.pdf", Control(to="15555551200"), True, ("15555551200", "control file")),
], ids=["name", "name-with-words", "national", "control-wins", "control-without-to", "none", "wrong-ext",
        "subfolder", "subfolder-not-recursive", "name-beats-folder", "nearest-folder", "control-beats-folder"])
def test_destination_first_match_wins(rel: str, control: Control | None, recursive: bool,
                                      want: tuple[str, str] | None) -> None:
    assert choose_number(PurePosixPath(rel), control, PATTERN, recursive) == want


@pytest.mark.parametrize(("document", "n", "want"), [
    ("letter.pdf", 1, "letter.result.json"), ("letter.pdf", 2, "letter-2.result.json"),
    ("letter", 1, "letter.result.json"), ("a.b.tiff", 1, "a.b.result.json"),
    ("x\x00y.pdf", 1, "x_y.result.json"), ("é" * 200 + ".pdf", 1, "é" * 121 + ".result.json"),
])
def test_result_names(document: str, n: int, want: str) -> None:
    assert result_name(document, n) == want


@pytest.mark.parametrize("document", [
    "..", ".", "", "../../etc/passwd", "a\\..\\b.pdf", "/abs/path.pdf", "..\x00.pdf", "../" * 100 + "x.pdf",
    "\n.pdf", ".hidden.pdf", "x" * 300,
])
def test_no_name_can_leave_the_results_folder(document: str) -> None:
    name = result_name(document)
    assert "/" not in name and "\\" not in name and "\x00" not in name and "\n" not in name
    assert name.endswith(".result.json") and not name.startswith(".")
    assert len(name.encode()) <= 255
    assert PurePosixPath("/results", name).parent == PurePosixPath("/results")


@pytest.mark.parametrize(("name", "n", "want"), [
    ("letter.pdf", 1, "letter.pdf"), ("letter.pdf", 2, "letter-2.pdf"), ("letter", 3, "letter-3"),
    ("a.b.pdf", 2, "a.b-2.pdf"),
])
def test_numbered_names(name: str, n: int, want: str) -> None:
    assert numbered(name, n) == want


def test_safe_component() -> None:
    assert safe_component(".") == "__" and safe_component("") == "_" and safe_component("a/b") == "a_b"


@pytest.mark.parametrize("value", [42, ["2026-12-03"], "x" * 65])
def test_a_send_at_that_is_no_time_string_is_refused_naming_the_key(value: object) -> None:
    import json as json_module

    with pytest.raises(ControlError) as caught:
        parse_json_control("letter.json", json_module.dumps({"to": "15555551212", "send_at": value}).encode())
    assert str(caught.value).startswith("letter.json: send_at must be a time in a string")
