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


# --- by mail ------------------------------------------------------------------------------------------------


def office_mail(attachment: bytes, name: str, *, headers: dict[str, str] | None = None,
                text: str = "Please fax the attached letter.") -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "15555551212@fax.local"
    msg["Subject"] = "Letter"
    msg["Message-ID"] = f"<office-{name}-{len(attachment)}-{sorted((headers or {}).items())!s:.40}@example.com>"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(text)
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


@pytest.fixture
def mail_daemon(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from tests.conftest import free_port

    settings = folder_settings(tmp_path)
    del settings["watch"]
    port = free_port()
    settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
    settings["time_zone"] = "Europe/Berlin"
    config = write_config(tmp_path / "faxbridge.toml", settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=60)
        yield {"config": config, "smtp": ("127.0.0.1", port)}
    finally:
        daemon.stop()


def job_of(config: Path, to: str) -> dict[str, Any]:
    from tests.support import cli

    jobs = [json.loads(line) for line in cli("jobs", "--json", config=config).stdout.splitlines()]
    return next(j for j in jobs if j["to"] == to)


def test_an_office_attachment_by_mail_with_options_from_headers_and_flags(mail_daemon: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    from tests.ingress import mailkit

    docx = make_docx(tmp_path / "made.docx", pages=3).read_bytes()
    raw = office_mail(docx, "letter.docx", headers={"X-Fax-Header": "ACME billing", "X-Fax-Paper": "a4"})
    answers = mailkit.send(mail_daemon["smtp"], "alice@example.com",
                           ["15555551212+fine@fax.local", "15555551211+nocover+low@fax.local"], raw)
    assert answers[-1].code == 250, answers[-1].line
    config = mail_daemon["config"]
    wait_until(lambda: job_of(config, "+15555551212")["final"] and job_of(config, "+15555551211")["final"],
               timeout=180, what="both jobs final")
    fine, plain = job_of(config, "+15555551212"), job_of(config, "+15555551211")
    assert (fine["state"], fine["pages"], fine["resolution"], fine["header"]) == ("delivered", 4, "fine",
                                                                                  "ACME billing")   # cover + 3
    assert (plain["state"], plain["pages"], plain["resolution"], plain["priority"]) == ("delivered", 3, "standard",
                                                                              "Low")    # no cover
    assert fine["paper"] == plain["paper"] == "a4"


def test_bad_options_are_refused_naming_them(mail_daemon: dict[str, Any], tmp_path: Path) -> None:
    from tests.ingress import mailkit

    pdf = mailkit.pdf_bytes(tmp_path)
    bad_header = office_mail(pdf, "a.pdf", headers={"X-Fax-Resolution": "ultra"})
    answers = mailkit.send(mail_daemon["smtp"], "alice@example.com", ["15555551212@fax.local"], bad_header)
    assert answers[-1].line == "554 5.6.0 Bad fax option: X-Fax-Resolution: expected fine or standard, got 'ultra'"
    far = office_mail(pdf, "a.pdf", headers={"X-Fax-Send-At": "2099-01-01 09:00"})
    answers = mailkit.send(mail_daemon["smtp"], "alice@example.com", ["15555551212@fax.local"], far)
    assert answers[-1].line == "554 5.6.0 Bad fax option: X-Fax-Send-At: at most 30 days ahead, got '2099-01-01 09:00'"
    answers = mailkit.send(mail_daemon["smtp"], "alice@example.com", ["15555551212+urgent@fax.local"], pdf)
    rcpt = next(a for a in answers if a.code >= 500)
    assert rcpt.line == ("553 5.1.3 Bad fax option in the address: +urgent is not a fax option; the address flags "
                         "are +fine, +standard, +letter, +legal, +a4, +cover, +nocover, +low")


def test_a_mail_to_send_later_waits_with_its_time(mail_daemon: dict[str, Any], tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from tests.ingress import mailkit

    when = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=1)).replace(second=0, microsecond=0)
    raw = office_mail(mailkit.pdf_bytes(tmp_path), "a.pdf", headers={"X-Fax-Send-At": when.strftime("%Y-%m-%d %H:%M")})
    answers = mailkit.send(mail_daemon["smtp"], "alice@example.com", ["15555551212@fax.local"], raw)
    assert answers[-1].code == 250
    job = job_of(mail_daemon["config"], "+15555551212")
    assert job["state"] == "queued" and job["send_at"] == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_conversion_that_hangs_is_refused_at_the_timeout_and_other_mail_goes_on(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.ingress import mailkit

    hang = tmp_path / "soffice"
    hang.write_text("#!/bin/sh\nsleep 600\n")
    hang.chmod(0o755)
    settings = base_settings(tmp_path)
    port = free_port()
    settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
    settings["documents"] = {"office": str(hang), "convert_timeout": "3s"}
    config = write_config(tmp_path / "faxbridge.toml", settings)
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=60)
        docx = make_docx(tmp_path / "made.docx").read_bytes()
        answers = mailkit.send(("127.0.0.1", port), "alice@example.com", ["15555551212@fax.local"],
                               office_mail(docx, "letter.docx"))
        assert answers[-1].line == ("554 5.6.1 letter.docx could not be converted to PDF in 3 s "
                                    "(documents.convert_timeout); send it as PDF")
        pdf = office_mail(mailkit.pdf_bytes(tmp_path), "a.pdf")
        assert mailkit.send(("127.0.0.1", port), "alice@example.com", ["15555551211@fax.local"], pdf)[-1].code == 250
        wait_until(lambda: job_of(config, "+15555551211")["state"] == "delivered", timeout=120, what="the other mail")
    finally:
        daemon.stop()


def test_opendocument_and_rtf_by_folder_and_by_mail(folder: Path, tmp_path: Path) -> None:
    """The other formats the contract names, through the real intake paths (the folder here; the
    mail path is the same ``prepare``, exercised with .docx above)."""
    from tests.test_documents_office import soffice_convert

    odt = soffice_convert(make_docx(tmp_path / "two.docx", pages=2), "odt", tmp_path / "odt").read_bytes()
    rtf = b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}} \\f0 Hello from RTF\\par }"
    drop(folder / "outbox" / "15555551212_two.odt", odt)
    drop(folder / "outbox" / "15555551213_note.rtf", rtf)
    assert (result(folder, "15555551212_two.result.json")["pages"], result(folder, "15555551213_note.result.json")[
        "pages"]) == (2, 1)
