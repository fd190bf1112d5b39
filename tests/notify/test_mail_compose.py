"""The reply mail, composed purely: the headers of contract section 5 exactly, and the body in plain words."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from faxbridge.models import FaxOptions, Job, JobState, Paper, Source
from faxbridge.notify import mail

NOW = datetime(2026, 11, 22, 10, 1, 10, tzinfo=UTC)


def job(state: JobState = JobState.DELIVERED, reason: str | None = None, **meta: Any) -> Job:
    return Job(id="01JABCDEFGHJKMNPQRSTVWXYZ0", source=Source.SMTP, to="+15555551212", state=state, reason=reason,
               pages=3, paper=Paper.LETTER, attempts=3 if state is JobState.FAILED else 1, provider="simulator",
               provider_id="779029", status_code=0, duration_s=48.0, cost=0.21, sender="alice@example.com",
               subject="Invoice 42", document="invoice.pdf", options=FaxOptions(header="Invoice 42"),
               meta={"message_id": "<orig-1@example.com>", "no_reply": None, **meta},
               created_at=NOW, updated_at=NOW, finished_at=NOW, doc_sha256="")


@pytest.mark.parametrize("state", [JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.CANCELED])
def test_headers(state: JobState) -> None:
    msg = mail.compose(job(state, None if state is JobState.DELIVERED else "Busy: x"), [],
                       from_address="faxbridge@fax.local", now=NOW)
    assert msg["Subject"] == f"Re: Invoice 42 - fax to +1 555-555-1212 {state.value}"
    assert msg["To"] == "alice@example.com"
    assert msg["From"] == "faxbridge <faxbridge@fax.local>"
    assert msg["In-Reply-To"] == "<orig-1@example.com>"
    assert msg["References"] == "<orig-1@example.com>"
    assert msg["X-Faxbridge-Job"] == "01JABCDEFGHJKMNPQRSTVWXYZ0"
    assert msg["X-Faxbridge-State"] == state.value
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<faxbridge.01JABCDEFGHJKMNPQRSTVWXYZ0@fax.local>"
    assert msg["Date"] == "Sun, 22 Nov 2026 10:01:10 +0000"


def test_message_id_is_stable_per_job_and_outbox_row() -> None:
    """A reply sent again after a crash carries the same Message-ID; a later reply (another outbox row
    of a retried job) another one."""
    first = mail.compose(job(), [], from_address="faxbridge@fax.local", now=NOW, outbox_id=7)
    again = mail.compose(job(), [], from_address="faxbridge@fax.local", now=NOW, outbox_id=7)
    later = mail.compose(job(), [], from_address="faxbridge@fax.local", now=NOW, outbox_id=9)
    assert first["Message-ID"] == again["Message-ID"] == "<faxbridge.01JABCDEFGHJKMNPQRSTVWXYZ0.7@fax.local>"
    assert later["Message-ID"] == "<faxbridge.01JABCDEFGHJKMNPQRSTVWXYZ0.9@fax.local>"


def test_no_message_id_no_in_reply_to() -> None:
    msg = mail.compose(replace(job(), meta={}), [], from_address="faxbridge@fax.local", now=NOW)
    assert msg["In-Reply-To"] is None and msg["References"] is None


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's time zone for the test: UTC (reply times are local to the host)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("subject", "expected"), [
    ("Invoice 42", "Re: Invoice 42 - fax to +1 555-555-1212 delivered"),
    ("Re: RE: Invoice 42", "Re: Invoice 42 - fax to +1 555-555-1212 delivered"),
    (None, "Fax to +1 555-555-1212 delivered"),
    ("a\r\nBcc: x@y\x1b[2J", "Re: a Bcc: x@y[2J - fax to +1 555-555-1212 delivered"),
    ("x" * 300, "Re: " + "x" * 119 + "… - fax to +1 555-555-1212 delivered"),
], ids=["plain", "re-re", "none", "control-characters", "long"])
def test_subject_carries_the_original(subject: str | None, expected: str) -> None:
    assert mail.subject(replace(job(), subject=subject)) == expected


@pytest.mark.parametrize(("stored", "header"), [
    ("<orig-1@example.com>", "<orig-1@example.com>"),
    ("orig-2@example.com", "<orig-2@example.com>"),
    ("<a@b>\r\nBcc: x", None),
], ids=["bracketed", "bare", "injected"])
def test_in_reply_to_whenever_the_original_had_a_message_id(stored: str, header: str | None) -> None:
    msg = mail.compose(job(message_id=stored), [], from_address="faxbridge@fax.local", now=NOW)
    assert msg["In-Reply-To"] == header and msg["References"] == header


def test_delivered_body(utc: None) -> None:
    body = mail.body(job(cover_page=True))
    assert body.splitlines()[:11] == [
        "Your fax to +1 555-555-1212 was delivered.",
        "",
        "Number:    +1 555-555-1212",
        "Pages:     3 (including the cover page)",
        "Attempts:  1",
        "Duration:  48 s",
        "Cost:      $0.21 (USD)",
        "Delivered: 2026-11-22 10:01:10 UTC",
        "Document:  invoice.pdf",
        "Subject:   Invoice 42",
        "Job:       01JABCDEFGHJKMNPQRSTVWXYZ0",
    ]
    assert "Pages:     3\n" in mail.body(job())            # no cover page: just the pages


@pytest.mark.parametrize(("reason", "advice"), [
    ("Busy: the line was busy on all 3 attempts",
     "The line was busy each time: try again later by sending the mail again."),
    ("No Answer: there was no answer on all 3 attempts",
     "Nobody answered: check that the number is a fax line, then try again later."),
    ("Not a fax machine: the number answered but no fax machine did",
     "Check the number: it answered, but not as a fax machine."),
    ("Something odd happened",
     "If the number is right, try again later; if it keeps failing, tell your administrator."),
], ids=["busy", "no-answer", "not-a-fax", "other"])
def test_failed_body_says_why_and_what_to_do(reason: str, advice: str) -> None:
    lines = mail.body(job(JobState.FAILED, reason)).splitlines()
    assert lines[:4] == ["Your fax to +1 555-555-1212 could not be delivered.", "", f"Reason: {reason}",
                         f"What to do: {advice}"]
    assert "Attempts:  3" in lines


def test_rejected_after_250_and_skipped_parts_listed() -> None:
    j = job(JobState.REJECTED, "Document conversion failed: the provider could not convert the document",
            skipped=[{"name": "logo.png", "why": "an image the mail's HTML shows inline (such as a signature logo); "
                                                 "not faxed"}])
    text = mail.body(replace(j, duration_s=None, cost=None))
    assert text.startswith("Your fax to +1 555-555-1212 was not sent: it was refused.\n\nReason: Document conversion "
                           "failed: the provider could not convert the document\nWhat to do: Save the document as a "
                           "PDF and send the mail again.\n")
    assert "Duration:  not known\nCost:      not known\n" in text
    assert ("Not faxed from your mail:\n  - logo.png: an image the mail's HTML shows inline (such as a signature "
            "logo); not faxed\n") in text


@pytest.mark.parametrize(("j", "why"), [
    (job(), None),
    (replace(job(), sender=None), "the envelope sender is empty (a bounce)"),
    (job(no_reply="the mail is marked Auto-Submitted"), "the mail is marked Auto-Submitted"),
], ids=["person", "null-sender", "auto-submitted"])
def test_when_no_reply(j: Job, why: str | None) -> None:
    assert mail.no_reply_reason(j) == why
