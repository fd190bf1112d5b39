"""Office documents and per-file options end to end (CONTRACT §11): the real daemon watching a real
folder, LibreOffice converting, the built-in simulator counting the pages it was sent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.support import DaemonProcess, base_settings, write_config
from tests.test_documents_office import SOFFICE, make_docx, make_xlsx

OFFICE_PATTERN = (r"^(?P<number>\+?[0-9(][0-9().\- ]{6,}[0-9])(?:[_ ].*)?"
                  r"\.(?i:pdf|tiff?|png|jpe?g|txt|docx?|xlsx?|pptx?|od[tsp]|rtf|html?)$")


def folder_settings(tmp: Path, **watch: Any) -> dict[str, Any]:
    settings = base_settings(tmp)
    settings["watch"] = [{"path": str(tmp / "outbox"), "results": str(tmp / "results"), "done": str(tmp / "done"),
                          "failed": str(tmp / "failed"), "settle": "300ms", **watch}]
    settings["documents"] = {"office": SOFFICE, "convert_timeout": "120s"}
    return settings


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    config = write_config(tmp_path / "faxbridge.toml", folder_settings(tmp_path, pattern=OFFICE_PATTERN))
    (tmp_path / "outbox").mkdir()
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=60)
        yield tmp_path
    finally:
        daemon.stop()


def drop(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def result(root: Path, name: str, *, final: bool = True) -> dict[str, Any]:
    path = root / "results" / name
    wait_until(lambda: path.exists() and (json.loads(path.read_text())["final"] or not final), timeout=180,
               what=f"{name}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_office_files_dropped_in_a_folder_are_converted_and_faxed(folder: Path, tmp_path: Path) -> None:
    docx = make_docx(tmp_path / "made.docx", pages=3).read_bytes()
    xlsx = make_xlsx(tmp_path / "made.xlsx").read_bytes()
    drop(folder / "outbox" / "15555551212_letter.docx", docx)        # the number from the name
    drop(folder / "outbox" / "sheet.json", json.dumps({"to": "+15555551211"}).encode())
    drop(folder / "outbox" / "sheet.xlsx", xlsx)                      # ... and from a control file
    letter = result(folder, "15555551212_letter.result.json")
    sheet = result(folder, "sheet.result.json")
    assert (letter["state"], letter["pages"]) == ("delivered", 3)
    assert (sheet["state"], sheet["pages"]) == ("delivered", 1)
    assert (folder / "done" / "15555551212_letter.docx").read_bytes() == docx    # the original, kept as it was


def test_a_file_libreoffice_cannot_read_is_rejected_naming_it(folder: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types")
        archive.writestr("word/document.xml", b"\x00\xff" * 50)
    drop(folder / "outbox" / "15555551212_broken.docx", buffer.getvalue())
    broken = result(folder, "15555551212_broken.result.json")
    assert broken["state"] == "rejected"
    assert broken["reason"] == ("15555551212_broken.docx could not be converted to PDF (LibreOffice could not read "
                                "it); send it as PDF")
    assert (folder / "failed" / "15555551212_broken.docx").exists()


def test_a_control_file_sends_later_and_a_bad_time_is_refused_naming_the_key(folder: Path, tmp_path: Path) -> None:
    pdf = make_docx(tmp_path / "x.docx").read_bytes()
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    drop(folder / "outbox" / "later.json", json.dumps({"to": "+15555551212", "send_at": later.isoformat()}).encode())
    drop(folder / "outbox" / "later.docx", pdf)
    drop(folder / "outbox" / "bad.json", json.dumps({"to": "+15555551212", "send_at": "next tuesday"}).encode())
    drop(folder / "outbox" / "bad.docx", pdf)
    bad = result(folder, "bad.result.json")
    assert bad["state"] == "rejected"
    assert bad["reason"] == ("bad.json: send_at: expected a time such as 2026-12-03T09:00:00+01:00 (RFC 3339) or "
                             "2026-12-03 09:00 (in the server's time zone), got 'next tuesday'")
    from tests.support import cli

    def queued_later() -> dict[str, Any] | None:
        r = cli("jobs", "--json", config=tmp_path / "faxbridge.toml")
        jobs = [json.loads(line) for line in r.stdout.splitlines()]
        return next((j for j in jobs if j["document"] == "later.docx"), None)

    wait_until(lambda: queued_later() is not None, timeout=120, what="the later job")
    job = queued_later()
    assert job is not None and job["state"] == "queued"
    assert job["send_at"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
