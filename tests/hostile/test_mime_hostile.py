"""Hostile mail against the real listener and its worker processes (contract section 9; issue 11
findings 15 and 16): each message gets its own exact answer, never a 451 for what can never be read,
and a good mail still goes through afterwards.

- a cut ``Content-Disposition: attachment; filename*`` (the stdlib header parser raises IndexError
  on it) no longer fails the whole mail: the attachment is faxed under a made-up name;
- a mail nested 1,000 deep gets 554 5.6.0 naming the nesting limit (it used to be 451: retried for days);
- a Subject with a lone surrogate or undecodable bytes is accepted with the bad characters replaced;
- our own bug while reading a mail is 554 5.6.0 "the fax server failed on it", logged with its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from faxbridge.ingress.smtp import data as smtp_data
from faxbridge.ingress.smtp import mime
from faxbridge.ingress.smtp.data import _plan
from faxbridge.ingress.smtp.replies import INTERNAL_ERROR
from tests.ingress.mailkit import Bench, asend, config_of, listening, pdf_bytes, scanner, smtp_settings

SENDER = "alice@example.com"
TO = ["15555551212@fax.local"]
TOO_DEEP = ("554 5.6.0 The message is nested more than 20 levels deep (multiparts or forwarded messages "
            "within each other); the limit is 20")


def cut_disposition(pdf: bytes) -> bytes:
    """What the fuzzer found: a PDF part whose Content-Disposition ends in a bare ``filename*``."""
    import base64

    body = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    return (b"From: alice@example.com\r\nTo: 15555551212@fax.local\r\nSubject: cut\r\n"
            b"Message-ID: <cut-1@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename*\r\n\r\n" + body + b"--XX--\r\n")


def nested(depth: int) -> bytes:
    """``depth`` multiparts within each other around one line of text."""
    head = b"From: alice@example.com\r\nTo: 15555551212@fax.local\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    body += b"Content-Type: text/plain\r\n\r\nhello\r\n"
    return head + body + b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))


def with_subject(raw_subject: bytes, message_id: str) -> bytes:
    return (b"From: alice@example.com\r\nTo: 15555551212@fax.local\r\nSubject: " + raw_subject + b"\r\n"
            b"Message-ID: <" + message_id.encode() + b">\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease fax this text.\r\n")


async def good_mail_goes_through(bench: Bench, tmp_path: Path, n: int) -> None:
    good = scanner(pdf_bytes(tmp_path, pages=1, name=f"good{n}.pdf"), name=f"good{n}.pdf", message_id=False)
    answers = await asend(bench.address, SENDER, TO, good)
    assert answers[-1].code == 250 and answers[-1].text.startswith("2.0.0 Queued as job "), answers[-1]


def job_of(bench: Bench, text: str) -> str:
    assert text.startswith("2.0.0 Queued as job "), text
    return text.removeprefix("2.0.0 Queued as job ")


async def test_a_cut_filename_parameter_gets_its_proper_answer_not_a_refusal(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        answers = await asend(bench.address, SENDER, TO, cut_disposition(pdf_bytes(tmp_path, pages=2)))
        assert [a.code for a in answers] == [250, 250, 250], answers
        job = bench.store.get(job_of(bench, answers[-1].text))
        assert job.pages == 3                                    # the cover page and the PDF's 2
        assert job.document == "attachment 1 (application/pdf)"
        await good_mail_goes_through(bench, tmp_path, 1)


async def test_a_mail_nested_1000_deep_is_refused_for_good_naming_why(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        for depth in (21, 1000):
            answers = await asend(bench.address, SENDER, TO, nested(depth))
            assert answers[-1].line == TOO_DEEP
        assert sum(bench.store.counts().values()) == 0
        answers = await asend(bench.address, SENDER, TO, nested(19))   # within the limit: its text is faxed
        assert answers[-1].code == 250, answers[-1]
        await good_mail_goes_through(bench, tmp_path, 2)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"=?unicode-escape?q?Invoice_=5Cud800_42?=", "Invoice \ufffd 42"),     # decodes to a lone surrogate
    (b"Invoice \xff\xfe 42", "Invoice \ufffd\ufffd 42"),                      # raw bytes, not UTF-8
    (b"=?utf-8?b?SW52b2ljZSDtoIAgNDI=?=", "Invoice \ufffd\ufffd\ufffd 42"),  # UTF-8 of a surrogate
])
async def test_a_subject_with_bad_characters_is_accepted_with_them_replaced(
        tmp_path: Path, raw: bytes, expected: str) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        answers = await asend(bench.address, SENDER, TO, with_subject(raw, "subject-1@example.com"))
        assert [a.code for a in answers] == [250, 250, 250], answers
        job = bench.store.get(job_of(bench, answers[-1].text))
        assert job.subject == expected
        assert job.options.header == expected[:50].rstrip()
        await good_mail_goes_through(bench, tmp_path, 3)


def test_our_own_bug_while_reading_is_a_5xx_logged_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in our extraction (here: extract raising KeyError) is deterministic: 554 with a generic
    text, not a 451 that a relay would retry for days; the operator gets the traceback."""
    def broken(*args: object, **kwargs: object) -> mime.MailContent:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(smtp_data.mime, "extract", broken)
    with structlog.testing.capture_logs() as captured:
        assert _plan(with_subject(b"hello", "bug@example.com"), "if-body") == INTERNAL_ERROR
    bugs = [e for e in captured if e["event"] == "smtp.intake_bug"]
    assert len(bugs) == 1 and bugs[0]["log_level"] == "error"
    assert bugs[0]["error"] == "KeyError: 'a bug of ours'" and isinstance(bugs[0]["exc_info"], KeyError)
    monkeypatch.undo()
    assert not isinstance(_plan(with_subject(b"hello", "bug@example.com"), "if-body"), str)


def _broken(*args: object) -> mime.MailContent:
    raise KeyError("a bug of ours")


def stage_with_a_bug(*args: Any) -> smtp_data.MailPlan | str:
    """The worker's ``stage_mail`` with a bug planted in our extraction, in the worker that runs it."""
    real = smtp_data.mime.extract
    smtp_data.mime.extract = _broken
    try:
        return smtp_data.stage_mail(*args)
    finally:
        smtp_data.mime.extract = real


async def test_our_own_bug_reaches_the_client_as_a_5xx_and_is_counted(tmp_path: Path) -> None:
    """The same through the real listener and its worker processes (the bug planted in the worker):
    the exact 554 on the wire, the daemon's hook counts it, and once the bug is gone mail flows again."""
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        counted: list[str] = []
        intake = bench.listener.handler.intake
        intake.on_refused_work = counted.append
        intake.work = stage_with_a_bug
        answers = await asend(bench.address, SENDER, TO, with_subject(b"hello", "bug-2@example.com"))
        assert answers[-1].line == INTERNAL_ERROR
        assert counted == ["bug"]
        intake.work = smtp_data.stage_mail
        await good_mail_goes_through(bench, tmp_path, 4)
        assert counted == ["bug"]
