"""Bounded work before expensive work (contract section 9; issue 11 findings 7 and 8).

The daemon runs in a subprocess, fed by real SMTP clients and real files in its watch folder:

- a 4 MB PDF of 60 pages, each a FlateDecode stream inflating to 74 MB, is refused by mail (the
  exact 554) and by folder (a ``rejected`` result naming why), and the daemon tree's memory stays
  bounded (peak RSS of every process, read from /proc); good mail and files go on;
- mails that would cost minutes of CPU (a huge cover text, thousands of parts, thousands of RFC 2231
  continuations, deep nesting) get their exact answer at once, while a good mail sent at the same
  time on another connection is accepted;
- the pure bounds are table-tested.
"""

from __future__ import annotations

import json
import smtplib
import struct
import zlib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from faxbridge.ingress.smtp.mime_bounds import MailLimits, Shape, verdict
from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, base_settings, make_pdf, pdf_of, process_tree, write_config

TO = "15555551212@fax.local"


# --- documents made on the spot -----------------------------------------------------------------------------


def pdf_with_streams(streams: list[bytes], *, flate: bool = True) -> bytes:
    """A valid PDF with one page per content stream (each its own object), given already encoded."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(streams)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{kids}] /Count {len(streams)} >>".encode()]
    for i, stream in enumerate(streams):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R >>".encode())
        filters = b"/Filter /FlateDecode " if flate else b""
        objects.append(b"<< " + filters + b"/Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
                       + b"\nendstream")
    return pdf_of(objects)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """Issue 11's memory bomb: 60 pages, each a content stream of 74 MB of zeros, compressed."""
    page = zlib.compress(b"\0" * 74_000_000, 9)
    return pdf_with_streams([page] * 60)


BOMB_REASON = ("bomb.pdf is too large when unpacked: its pages hold more than 200 MB of content "
               "(the limit is 200 MB); it cannot be faxed")


# --- the daemon -----------------------------------------------------------------------------------------------


class Bridge:
    def __init__(self, tmp: Path, **limits: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        s = base_settings(tmp)
        s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{self.port}"}
        s["limits"] = limits
        self.outbox, self.results = tmp / "outbox", tmp / "results"
        s["watch"] = [{"path": str(self.outbox), "results": str(self.results), "done": str(tmp / "done"),
                       "failed": str(tmp / "failed"), "settle": "200ms"}]
        self.outbox.mkdir()
        self.daemon = DaemonProcess(write_config(tmp / "faxbridge.toml", s), tmp / "daemon.log")

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def mail(self, message: bytes, recipients: tuple[str, ...] = (TO,)) -> tuple[int, str]:
        """One SMTP dialogue; the answer to DATA (code, text on one line)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=120) as client:
            client.ehlo()
            client.mail("alice@example.com")
            for rcpt in recipients:
                assert client.rcpt(rcpt)[0] == 250
            try:
                code, text = client.data(message)
            except smtplib.SMTPResponseException as exc:
                code, text = exc.smtp_code, exc.smtp_error
        return code, text.decode("utf-8", "replace").replace("\n", " ")

    def result(self, stem: str, timeout: float = 60.0) -> dict[str, Any]:
        path = self.results / f"{stem}.result.json"
        wait_until(path.exists, timeout=timeout, what=f"{path.name}")
        data: dict[str, Any] = json.loads(path.read_bytes())
        return data

    def good_mail(self, n: int) -> None:
        code, text = self.mail(attachment(make_pdf(self.tmp / f"good{n}.pdf").read_bytes(), f"good{n}.pdf",
                                          f"<good-{n}@example.com>"))
        assert (code, text.startswith("2.0.0 Queued as job ")) == (250, True), (code, text)

    def good_file(self, stem: str) -> None:
        make_pdf(self.outbox / f"{stem}.pdf")
        result = self.result(stem)
        assert result["state"] in ("queued", "submitted", "sending", "delivered"), result


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    """The daemon with the default limits, ready."""
    b = Bridge(tmp_path)
    b.daemon.start()
    try:
        b.daemon.wait_ready()
        yield b
    finally:
        b.daemon.stop()


def attachment(data: bytes, name: str, message_id: str, *, text: str = "see attached") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "alice@example.com", TO, "Test", message_id
    msg.set_content(text)
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


def tree_kb(pid: int, field: str) -> int:
    """The sum of a /proc status field (VmRSS: now, VmHWM: each process's peak) over the daemon's tree."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)
    return total


# --- finding 7: a memory bomb --------------------------------------------------------------------------------


def test_a_small_pdf_that_inflates_to_gigabytes_is_refused_not_parsed(bridge: Bridge, bomb: bytes) -> None:
    assert len(bomb) < 6_000_000              # 4.4 GB of page content in a few MB
    bridge.good_mail(1)                       # the intake workers and the folder pool are up
    bridge.good_file("15555551213")
    before = tree_kb(bridge.pid, "VmRSS")

    code, text = bridge.mail(attachment(bomb, "bomb.pdf", "<bomb-1@example.com>"))
    assert f"{code} {text}" == f"554 5.6.1 {BOMB_REASON}"

    (bridge.outbox / "15555551212_bomb.pdf").write_bytes(bomb)
    result = bridge.result("15555551212_bomb")
    assert (result["state"], result["reason"]) == ("rejected", BOMB_REASON.replace("bomb.pdf", "15555551212_bomb.pdf"))

    peak = tree_kb(bridge.pid, "VmHWM")        # every process's own peak, summed: at least the tree's peak
    assert peak < before + 500_000, (before, peak)
    bridge.good_mail(2)
    bridge.good_file("15555551214")


# --- the pure bounds ------------------------------------------------------------------------------------------

LIMITS = MailLimits(max_parts=100, max_nesting=20, max_headers=500, max_parameters=100)


@pytest.mark.parametrize(("shape", "expected"), [
    (Shape(parts=100, depth=20, headers=500, parameters=100), None),
    (Shape(parts=1, depth=1, headers=10, parameters=1), None),
    (Shape(parts=101, depth=2, headers=10, parameters=1),
     "554 5.3.4 The message has more than 100 parts; the limit is 100: send fewer attachments per message"),
    (Shape(parts=1, depth=21, headers=10, parameters=1),
     "554 5.6.0 The message is nested more than 20 levels deep (multiparts or forwarded messages within "
     "each other); the limit is 20"),
    (Shape(parts=1, depth=2, headers=501, parameters=1),
     "554 5.6.0 The message has a part with more than 500 header fields; the limit is 500"),
    (Shape(parts=1, depth=2, headers=10, parameters=101),
     "554 5.6.0 The message has a Content-Type or Content-Disposition with more than 100 parameters; "
     "the limit is 100"),
    (Shape(parts=5000, depth=1000, headers=10, parameters=1),       # nesting is named first
     "554 5.6.0 The message is nested more than 20 levels deep (multiparts or forwarded messages within "
     "each other); the limit is 20"),
])
def test_the_shape_verdict(shape: Shape, expected: str | None) -> None:
    assert verdict(shape, LIMITS) == expected


# --- finding 8: CPU before limits ----------------------------------------------------------------------------


def raw_mail(head: str, body: bytes) -> bytes:
    return (f"From: alice@example.com\r\nTo: {TO}\r\nSubject: hostile\r\n{head}".encode() + b"\r\n" + body)


def long_text_body() -> bytes:
    line = "All work and no play makes Jack a dull boy. " * 2
    return raw_mail("Message-ID: <long-1@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n",
                    (line.strip() + "\r\n").encode() * 12_000)          # 1 MB, some 190 pages


def one_line_body() -> bytes:
    return raw_mail("Message-ID: <line-1@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n",
                    b"x" * 5_000_000 + b"\r\n")


def many_pdfs(count: int) -> bytes:
    import base64

    pdf = base64.encodebytes(pdf_with_streams([b"BT ET"], flate=False)).replace(b"\n", b"\r\n")
    part = (b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"page.pdf\"\r\n\r\n" + pdf)
    return raw_mail("Message-ID: <many-1@example.com>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/mixed; boundary=B\r\n",
                    b"--B\r\nContent-Type: text/plain\r\n\r\nmany pages\r\n" + part * count + b"--B--\r\n")


def continuations(count: int) -> bytes:
    name = ";\r\n ".join(f"filename*{i}*=utf-8''part{i}" if i == 0 else f"filename*{i}=part{i}" for i in range(count))
    return raw_mail("Message-ID: <rfc2231-1@example.com>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/mixed; boundary=B\r\n",
                    b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n "
                    + name.encode() + b"\r\n\r\n%PDF-1.4\r\n--B--\r\n")


def many_headers(count: int) -> bytes:
    head = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(count))
    return raw_mail(f"Message-ID: <headers-1@example.com>\r\n{head}Content-Type: text/plain\r\n", b"hello\r\n")


def deep(depth: int) -> bytes:
    body = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    body += b"Content-Type: text/plain\r\n\r\nhello\r\n" + b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return (f"From: alice@example.com\r\nTo: {TO}\r\nSubject: deep\r\nMessage-ID: <deep-1@example.com>\r\n"
            "MIME-Version: 1.0\r\n").encode() + body        # the first Content-Type is the message's own


COVER_TOO_LONG = ("554 5.3.4 Too many pages: the mail text would fill more than 20 cover pages (the limit is 20); "
                  "send long text as an attached file")
HOSTILE = {
    "1 MB body": (long_text_body, COVER_TOO_LONG),
    "5 MB line": (one_line_body, COVER_TOO_LONG),
    "170,000 uuencode begins": (lambda: raw_mail("Message-ID: <uu-1@example.com>\r\nContent-Type: text/plain\r\n",
                                                 b"begin 644 x\r\n" * 170_000), COVER_TOO_LONG),
    "10,000 PDFs": (lambda: many_pdfs(10_000),
                    "554 5.3.4 The message has more than 100 parts; the limit is 100: send fewer attachments "
                    "per message"),
    "4,000 RFC 2231 continuations": (lambda: continuations(4_000),
                                     "554 5.6.0 The message has a Content-Type or Content-Disposition with more "
                                     "than 100 parameters; the limit is 100"),
    "2,000 headers": (lambda: many_headers(2_000),
                      "554 5.6.0 The message has a part with more than 500 header fields; the limit is 500"),
    "nested 1,000 deep": (lambda: deep(1_000),
                          "554 5.6.0 The message is nested more than 20 levels deep (multiparts or forwarded "
                          "messages within each other); the limit is 20"),
}


def test_expensive_mails_are_refused_before_the_work_and_a_good_mail_goes_on(bridge: Bridge) -> None:
    """Every hostile mail at once, each on its own connection, and a good one among them: each gets
    its exact answer, the good one its 250 (generous deadlines: the machine is loaded)."""
    from concurrent.futures import ThreadPoolExecutor

    mails = {what: make() for what, (make, _) in HOSTILE.items()}
    assert all(len(m) < 25_000_000 for m in mails.values())
    good = attachment(make_pdf(bridge.tmp / "good.pdf").read_bytes(), "good.pdf", "<good-at-once@example.com>")
    with ThreadPoolExecutor(max_workers=len(mails) + 1) as pool:
        answers = {what: pool.submit(bridge.mail, m) for what, m in mails.items()}
        good_answer = pool.submit(bridge.mail, good)
        got = {what: "{} {}".format(*a.result(timeout=120)) for what, a in answers.items()}
        code, text = good_answer.result(timeout=120)
    assert got == {what: reply for what, (_, reply) in HOSTILE.items()}
    assert code == 250 and text.startswith("2.0.0 Queued as job "), (code, text)
    bridge.good_mail(3)


TOO_MUCH_WORK = ("554 5.3.4 Too much work: the message needs more CPU time or memory than the fax server allows "
                 "one message; send fewer or smaller documents")


def text_attachment(pages: int, message_id: str) -> bytes:
    """A text file of about ``pages`` pages (within max_pages: only the CPU cap can refuse it)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "alice@example.com", TO, "Report", message_id
    msg.set_content("see attached")
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    msg.add_attachment(line * (60 * pages), subtype="plain", filename="report.txt")
    return msg.as_bytes()


def big_png(width: int, height: int) -> bytes:
    """A white RGB PNG that decodes to width x height x 3 bytes (a few hundred KB as a file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" + b"\xff" * (3 * width)) * height
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def image_mail(png: bytes, message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "alice@example.com", TO, "Poster", message_id
    msg.set_content("see attached")
    msg.add_attachment(png, maintype="image", subtype="png", filename="poster.png")
    return msg.as_bytes()


def test_a_job_over_its_cpu_time_or_memory_is_refused_and_its_worker_replaced(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bridge = Bridge(tmp_path, job_cpu="2s", job_memory="400MB")   # a worker itself takes some 190 MB
    bridge.daemon.start()
    try:
        bridge.daemon.wait_ready()
        bridge.good_mail(1)                                     # a worker is up
        workers = set(process_tree(bridge.pid)[1:])
        heavy = text_attachment(180, "<heavy-1@example.com>")   # ~180 pages set in type: >2 s of CPU
        good = attachment(make_pdf(tmp_path / "good.pdf").read_bytes(), "good.pdf", "<good-meanwhile@example.com>")
        with ThreadPoolExecutor(max_workers=2) as pool:
            heavy_answer = pool.submit(bridge.mail, heavy)
            good_answer = pool.submit(bridge.mail, good)
            assert "{} {}".format(*heavy_answer.result(timeout=120)) == TOO_MUCH_WORK
            code, text = good_answer.result(timeout=120)
        assert code == 250 and text.startswith("2.0.0 Queued as job "), (code, text)
        events = [e for e in bridge.daemon.events() if e.get("event") == "smtp.too_much_work"]
        assert len(events) == 1 and "TooMuchWork" in events[0]["error"]
        bridge.good_mail(2)                                     # and the next mail goes through
        assert len(set(process_tree(bridge.pid)[1:]) - workers) >= 1   # a fresh worker took its place

        # 88 megapixels (just under Pillow's bomb limit) decode to 265 MB: over this worker's memory cap.
        code, text = bridge.mail(image_mail(big_png(9400, 9400), "<poster-1@example.com>"))
        assert f"{code} {text}" == TOO_MUCH_WORK
        events = [e for e in bridge.daemon.events() if e.get("event") == "smtp.too_much_work"]
        assert len(events) == 2 and "MemoryError" in events[1]["error"]
        bridge.good_mail(3)
        bridge.good_mail(4)
    finally:
        bridge.daemon.stop()


def test_a_file_over_its_cpu_time_or_memory_is_rejected_and_the_next_one_goes_through(tmp_path: Path) -> None:
    """Folder work runs under the same caps as mail (it had none): a file over either is rejected with
    its reason (it would cost as much on every try), and the files after it are faxed."""
    from faxbridge.ingress.folder.watch import too_costly

    bridge = Bridge(tmp_path, job_cpu="2s", job_memory="400MB")
    bridge.daemon.start()
    try:
        bridge.daemon.wait_ready()
        line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
        (bridge.outbox / "15555551212_report.txt").write_bytes(line * 60 * 180)   # ~180 pages: > 2 s of CPU
        result = bridge.result("15555551212_report", timeout=120)
        assert (result["state"], result["reason"]) == ("rejected", too_costly("15555551212_report.txt"))
        bridge.good_file("15555551213")
        # 88 megapixels (just under Pillow's bomb limit) decode to 265 MB: over this worker's memory cap.
        # With a control file it is complete by declaration: the cap is met where it is faxed (the
        # completeness check of a file without one takes any error of Pillow's for "not complete yet").
        (bridge.outbox / "15555551214_poster.png").write_bytes(big_png(9400, 9400))
        (bridge.outbox / "15555551214_poster.json").write_text("{}")
        result = bridge.result("15555551214_poster", timeout=120)
        assert (result["state"], result["reason"]) == ("rejected", too_costly("15555551214_poster.png"))
        bridge.good_file("15555551215")
        bridge.good_mail(1)
    finally:
        bridge.daemon.stop()


def test_the_daemon_at_rest_is_one_process(tmp_path: Path) -> None:
    """Workers start when work comes and leave after ``limits.worker_idle``: after a mail and a file
    went through, the daemon started as a process has no child left."""
    bridge = Bridge(tmp_path, worker_idle="1s")
    bridge.daemon.start()
    try:
        bridge.daemon.wait_ready()
        bridge.good_mail(1)
        bridge.good_file("15555551213")
        wait_until(lambda: process_tree(bridge.pid) == [bridge.pid], timeout=60, what="the workers gone")
        bridge.good_mail(2)                   # and work still goes through: new workers come
        bridge.good_file("15555551214")
        wait_until(lambda: process_tree(bridge.pid) == [bridge.pid], timeout=60, what="the workers gone again")
    finally:
        bridge.daemon.stop()


def test_a_mail_to_three_numbers_prepares_its_documents_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attachments are decoded, checked and converted once per message; per recipient only its
    cover page is set and joined (the real functions, counted on the way through)."""
    import faxbridge.documents as documents
    from faxbridge import intake
    from faxbridge.config import load
    from faxbridge.ingress.smtp import data as smtp_data
    from faxbridge.ingress.smtp.policy import Recipient
    from faxbridge.store import FileSpool, new_job_id
    from tests.support import base_settings

    calls: dict[str, int] = {"prepare": 0, "image_to_pdf": 0, "text_to_pdf": 0}

    def counted(module: Any, name: str, key: str) -> None:
        real = getattr(module, name)

        def through(*args: Any, **kwargs: Any) -> Any:
            calls[key] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, through)

    counted(smtp_data, "prepare", "prepare")
    counted(documents, "image_to_pdf", "image_to_pdf")
    counted(smtp_data, "text_to_pdf", "text_to_pdf")

    cfg = load(write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path)), {})
    numbers = ["15555551212", "15555551213", "15555551214"]
    recipients = [Recipient(f"{n}@fax.local", intake.destination(n, cfg.numbers)) for n in numbers]
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "alice@example.com", TO, "Both", "<three@x>"
    msg.set_content("Three copies, please.")
    msg.add_attachment(make_pdf(tmp_path / "a.pdf", pages=2).read_bytes(), maintype="application",
                       subtype="pdf", filename="a.pdf")
    msg.add_attachment(big_png(200, 100), maintype="image", subtype="png", filename="logo.png")
    plan = smtp_data.stage_mail(smtp_data.mail_settings(cfg, 50), FileSpool(cfg.state_dir), "alice@example.com",
                                recipients, msg.as_bytes(), {}, [new_job_id() for _ in recipients])
    assert isinstance(plan, smtp_data.MailPlan), plan      # what the worker answers: all staged
    assert sorted(s.new.to for s in plan.staged) == ["+15555551212", "+15555551213", "+15555551214"]
    assert [s.doc.pages for s in plan.staged] == [4, 4, 4]   # cover + 2 PDF pages + the image
    assert all(s.doc.path.is_file() for s in plan.staged)
    assert calls == {"prepare": 1, "image_to_pdf": 1, "text_to_pdf": 3}


def test_a_mail_without_a_cover_to_three_numbers_gets_the_pdf_byte_for_byte_each(tmp_path: Path) -> None:
    """No cover page: the PDF prepared once is copied for the first recipients and moved (renamed,
    not copied) for the last; each job has its own file holding the attached PDF's bytes."""
    import hashlib

    from faxbridge import intake
    from faxbridge.config import load
    from faxbridge.ingress.smtp import data as smtp_data
    from faxbridge.ingress.smtp.policy import Recipient
    from faxbridge.store import FileSpool, new_job_id
    from tests.support import base_settings

    cfg = load(write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path)), {})
    numbers = ["15555551212", "15555551213", "15555551214"]
    recipients = [Recipient(f"{n}@fax.local", intake.destination(n, cfg.numbers)) for n in numbers]
    pdf = make_pdf(tmp_path / "a.pdf", pages=2).read_bytes()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "alice@example.com", TO, "Scan", "<nocover@x>"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="a.pdf")
    job_ids = [new_job_id() for _ in recipients]
    plan = smtp_data.stage_mail(smtp_data.mail_settings(cfg, 50), FileSpool(cfg.state_dir), "alice@example.com",
                                recipients, msg.as_bytes(), {}, job_ids)
    assert isinstance(plan, smtp_data.MailPlan), plan
    assert [s.job_id for s in plan.staged] == job_ids
    assert len({s.doc.path for s in plan.staged}) == 3
    assert all(s.doc.path.read_bytes() == pdf for s in plan.staged)
    assert {s.doc.sha256 for s in plan.staged} == {hashlib.sha256(pdf).hexdigest()}
    assert [(s.doc.pages, s.doc.size) for s in plan.staged] == [(2, len(pdf))] * 3
    # nothing but the three staged jobs, each its document and the part as received (a link to one file)
    staging = FileSpool(cfg.state_dir).staging
    assert sorted(p.name for p in staging.iterdir()) == sorted(job_ids)
    for job_id in job_ids:
        assert sorted(str(p.relative_to(staging / job_id)) for p in (staging / job_id).rglob("*")) == [
            "fax.pdf", "received", "received/0-a.pdf"]
    assert len({(staging / j / "received" / "0-a.pdf").stat().st_ino for j in job_ids}) == 1


# --- documents: bounds from the structure, before the pages are read ---------------------------------------


def declaring(count: int, real: int) -> bytes:
    """A PDF whose page tree declares ``count`` pages but holds only ``real`` (the rest are missing)."""
    data = pdf_with_streams([b"BT ET"] * real, flate=False)
    return data.replace(f"/Count {real} >>".encode(), f"/Count {count} >>".encode(), 1)


@pytest.mark.parametrize(("data", "max_decompressed", "reason"), [
    # The declared /Count is checked before the tree is walked: a tree that declares 10,000 pages
    # is refused as too long, not walked to find that most of them are missing.
    (lambda: declaring(10_000, 3), 200_000_000, "doc.pdf has 10000 pages; the limit is 200"),
    (lambda: declaring(150, 3), 200_000_000, "doc.pdf is damaged: only 3 of its 150 pages can be read"),
    (lambda: pdf_with_streams([zlib.compress(b"\0" * 3_000_000)] * 4), 10_000_000,
     "doc.pdf is too large when unpacked: its pages hold more than 10 MB of content (the limit is 10 MB); "
     "it cannot be faxed"),
], ids=["declared-too-many", "declared-but-missing", "inflates-over-the-limit"])
def test_documents_are_refused_from_their_structure(tmp_path: Path, data: Any, max_decompressed: int,
                                                    reason: str) -> None:
    from faxbridge.documents import prepare
    from faxbridge.errors import DocumentError
    from faxbridge.models import InputFile

    src = tmp_path / "doc.pdf"
    src.write_bytes(data())
    (tmp_path / "out").mkdir()
    with pytest.raises(DocumentError) as refused:
        prepare([InputFile("doc.pdf", src)], tmp_path / "out" / "fax.pdf", max_pages=200,
                max_decompressed=max_decompressed)
    assert refused.value.reason == reason
    assert list((tmp_path / "out").iterdir()) == []


def test_a_pdf_within_the_inflation_limit_is_sent_as_it_is(tmp_path: Path) -> None:
    from faxbridge.documents import prepare
    from faxbridge.models import InputFile

    data = pdf_with_streams([zlib.compress(b"\0" * 3_000_000)] * 3)      # 9 MB of content, limit 10 MB
    src = tmp_path / "doc.pdf"
    src.write_bytes(data)
    doc = prepare([InputFile("doc.pdf", src)], tmp_path / "fax.pdf", max_pages=200, max_decompressed=10_000_000)
    assert (doc.pages, (tmp_path / "fax.pdf").read_bytes()) == (3, data)


@pytest.mark.parametrize(("used", "job_cpu", "hard", "expected"), [
    (0.0, 120.0, -1, 120),          # -1: RLIM_INFINITY
    (10.2, 2.0, -1, 13),            # whole seconds, rounded up: never less than the job's share
    (500.0, 120.0, 550, 550),       # never above the hard limit
])
def test_the_cpu_limit_moves_on_with_each_job(used: float, job_cpu: float, hard: int, expected: int) -> None:
    import resource

    from faxbridge.workers.caps import cpu_limit

    assert cpu_limit(used, job_cpu, resource.RLIM_INFINITY if hard == -1 else hard) == expected


def test_huge_header_values_are_read_as_raw_text_not_parsed(tmp_path: Path) -> None:
    """The stdlib's header parser is quadratic on some values (a 400 KB comment in Content-Type took
    two minutes of CPU): a value over 4 KB is kept as its raw text. With a 20 s CPU cap per job, each
    of these mails is accepted (it used to be over the cap), a good mail meanwhile too."""
    from concurrent.futures import ThreadPoolExecutor

    comment = raw_mail("Message-ID: <comment-1@example.com>\r\nContent-Type: text/plain ("
                       + "a " * 200_000 + ")\r\n", b"Please fax this.\r\n")
    subject = (b"From: alice@example.com\r\nTo: " + TO.encode() + b"\r\nSubject: " + b"w " * 200_000
               + b"\r\nMessage-ID: <subject-1@example.com>\r\nContent-Type: text/plain\r\n\r\nPlease fax this.\r\n")
    bridge = Bridge(tmp_path, job_cpu="20s")
    bridge.daemon.start()
    try:
        bridge.daemon.wait_ready()
        good = attachment(make_pdf(tmp_path / "good.pdf").read_bytes(), "good.pdf", "<good-headers@example.com>")
        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = [pool.submit(bridge.mail, m) for m in (comment, subject, good)]
            got = [a.result(timeout=120) for a in answers]
        assert [code for code, _ in got] == [250, 250, 250], got
        assert all(text.startswith("2.0.0 Queued as job ") for _, text in got), got
        bridge.good_mail(5)
    finally:
        bridge.daemon.stop()


def test_caps_refused_by_a_seccomp_filter_leave_mail_flowing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where setrlimit is refused (EPERM, as a unit's SystemCallFilter would), the caps are off in that
    worker, said once; the job still runs."""
    import errno
    import resource

    import structlog

    from faxbridge.workers import caps as job_caps

    def refuse(which: int, limits: tuple[int, int]) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    import signal

    monkeypatch.setattr(job_caps, "_refused", False)
    monkeypatch.setattr(resource, "setrlimit", refuse)
    before = signal.getsignal(signal.SIGXCPU)
    with structlog.testing.capture_logs() as logs:
        job_caps.install(2_000_000_000)
        signal.signal(signal.SIGXCPU, before)          # this is the test process, not a worker
        with job_caps.cpu_cap(5.0):
            ran = sum(range(1000))
        with job_caps.cpu_cap(5.0):
            ran += 1
    assert ran == 499501
    assert [e["event"] for e in logs] == ["intake.caps_unavailable"]
