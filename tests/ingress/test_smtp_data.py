"""DATA over real loopback: the client-shaped corpus and the real samples become jobs, or the exact refusal.

Also durability: our own trouble answers 451 4.3.0 and leaves nothing behind; the retried mail then makes
exactly one job; a resent mail (same Message-ID, recipient, documents) makes no second fax.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from faxbridge.ingress.smtp.replies import OUR_TROUBLE
from faxbridge.models import Source
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, listening, smtp_settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
RCPT = ["15555551212@fax.local"]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 20), "blue").save(out, format="PNG")
    return out.getvalue()


def page_texts(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


async def test_client_corpus_becomes_jobs(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    corpus = {
        "outlook": (mailkit.outlook(pdf, logo=png()), 3, "invoice.pdf"),
        "apple": (mailkit.apple_mail_inline(pdf), 3, "Scan.pdf"),
        "gmail": (mailkit.gmail(pdf, png()), 3, "letter.pdf"),
        "thunderbird": (mailkit.thunderbird(pdf, b"Notiz"), 4, "Rechnung März.pdf (+1 more)"),
        "scanner": (mailkit.scanner(pdf), 3, "Scan_0001.pdf"),
        "forwarded": (mailkit.forwarded(pdf), 3, "contract.pdf"),
    }
    async with listening(cfg) as bench:
        for name, (raw, pages, document) in corpus.items():
            answers = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
            assert answers[-1].code == 250, (name, answers[-1])
            job = bench.store.get(answers[-1].text.rsplit(" ", 1)[-1])
            assert (job.source, job.pages, job.document) == (Source.SMTP, pages, document), name
            assert bench.store.document_path(job.id).is_file()
        jobs = {j.document: j for j in bench.store.jobs()}
    outlook = jobs["invoice.pdf"]
    assert outlook.subject == "Invoice 42" and outlook.options.header == "Invoice 42"
    assert outlook.meta["message_id"] == "<AM0PR01MB1234@EURPRD01.prod.outlook.com>"
    assert outlook.meta["skipped"] == [{"name": "image001.png", "why": "an image the mail's HTML shows inline "
                                                                      "(such as a signature logo); not faxed"}]
    assert outlook.meta["cover_page"] is True
    assert outlook.meta["no_reply"] is None
    texts = page_texts(tmp_path / "var" / "spool" / outlook.id / "fax.pdf")
    assert "Invoice 42" in texts[0] and "+15555551212" in texts[0] and "Please fax the attached invoice." in texts[0]
    assert texts[1:] == ["faxbridge test page 1/2", "faxbridge test page 2/2"]
    thunderbird = jobs["Rechnung März.pdf (+1 more)"]
    assert thunderbird.subject == "Rechnung für März" and thunderbird.meta["documents"] == [
        "Rechnung März.pdf", "notiz.txt"]
    assert "Notiz" in page_texts(tmp_path / "var" / "spool" / thunderbird.id / "fax.pdf")[3]


async def test_subject_cut_to_openfax_limit_unless_configured(tmp_path: Path) -> None:
    openfax = {"kind": "openfax", "openfax": {"account_id": "a", "api_key": "k"}}
    cfg = config_of(tmp_path, {**smtp_settings(tmp_path), "provider": openfax})
    (tmp_path / "fixed").mkdir()
    fixed = config_of(tmp_path / "fixed", {**smtp_settings(tmp_path / "fixed"),
                                           "provider": {"kind": "phaxio", "phaxio": {
                                               "api_key": "k", "api_secret": "s", "header_text": "ACME Corp"}},
                                           "webhook": {"enabled": False}})
    raw = mailkit.plain("text", subject="Quarterly report for the board")
    async with listening(cfg) as bench:
        await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
        assert bench.store.jobs()[0].options.header == "Quarterly repor"
    async with listening(fixed) as bench:
        await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
        assert bench.store.jobs()[0].options.header is None       # the adapter sends header_text


async def test_refusals_at_data(tmp_path: Path) -> None:
    # documents.office = "off": an Office attachment is refused saying this server cannot convert it
    cfg = config_of(tmp_path, {**smtp_settings(tmp_path), "numbers": {"max_pages": 3},
                               "documents": {"office": "off"}})
    samples = SAMPLES / "mime"
    cases = {
        "winmail": ((samples / "outlook2013-tnef-winmail-dat-only-part.eml").read_bytes(),
                    "554 5.6.1 winmail.dat is a Microsoft Outlook (TNEF) attachment, not a document: send the mail "
                    "in HTML or plain text format, with the document attached as PDF"),
        "truncated-forwarded": ((samples / "forwarded-message-rfc822-carrying-truncated-pdf.eml").read_bytes(),
                                "554 5.6.1 broken.pdf is incomplete (the PDF is cut off before its end); send the "
                                "whole file again"),
        "encrypted": (mailkit.with_attachment((SAMPLES / "pdf" / "encrypted-aes256-user-and-owner-password.pdf")
                                              .read_bytes(), name="secret.pdf", ctype="application/pdf"),
                      "554 5.6.1 secret.pdf is password-protected; send it without a password"),
        "seeks-before-the-start": (mailkit.with_attachment(
            (SAMPLES / "pdf" / "damaged-offset-seeks-before-the-start.pdf").read_bytes(), name="offsets.pdf",
            ctype="application/pdf"),
            "554 5.6.1 offsets.pdf is damaged and cannot be read as a PDF; save or export it again and send it again"),
        "too-many-pages": (mailkit.scanner(mailkit.pdf_bytes(tmp_path, pages=3), message_id=True),
                           "554 5.3.4 Too many pages: the documents together have 4 pages; the limit is 3"),
        "docx": ((samples / "swiftmailer-pdf-docx-odt-rfc2231-png-base64-rfc822.eml").read_bytes(),
                 "554 5.6.1 Hello from SwiftMailer.docx is a Word document; this fax server cannot convert Office "
                 "documents; send it as PDF (only PDF, TIFF, JPEG, PNG, GIF and plain text can be faxed) (and 1 "
                 "more part that cannot be faxed)"),
    }
    async with listening(cfg) as bench:
        for name, (raw, reply) in cases.items():
            answers = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
            assert answers[-1].line == reply, name
        assert bench.store.jobs() == []
        assert list(bench.store.staging.iterdir()) == []          # nothing left behind
        good = await mailkit.asend(bench.address, "alice@example.com", RCPT,
                                   mailkit.scanner(mailkit.pdf_bytes(tmp_path, pages=1), message_id=True))
        assert good[-1].line.startswith("250 ") and len(bench.store.jobs()) == 1    # the next mail goes on


@pytest.mark.parametrize("sample", sorted(p.name for p in (SAMPLES / "mime").glob("*.eml")))
async def test_every_real_sample_gets_a_clean_answer(tmp_path: Path, sample: str) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    raw = (SAMPLES / "mime" / sample).read_bytes()
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]          # an mbox separator line is not part of the message
    async with listening(cfg) as bench:
        answers = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
        jobs = bench.store.jobs()
    final = answers[-1]
    assert final.code in (250, 554), final
    if final.code == 250:
        assert len(jobs) == 1 and final.line == f"250 2.0.0 Queued as job {jobs[0].id}"
    else:
        assert final.line.startswith(("554 5.6.0 ", "554 5.6.1 ")) and jobs == []


async def test_our_trouble_is_451_and_the_retry_makes_one_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    raw = mailkit.outlook(mailkit.pdf_bytes(tmp_path))
    async with listening(cfg) as bench:
        staging = bench.store.staging
        shutil.rmtree(staging)
        staging.write_text("not a folder")            # the spool cannot be written: like a full disk
        first = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
        assert first[-1].line == OUR_TROUBLE == "451 4.3.0 Temporary trouble on the fax server: please try again later"
        assert bench.store.jobs() == []
        staging.unlink()
        staging.mkdir()
        second = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)
        third = await mailkit.asend(bench.address, "alice@example.com", RCPT, raw)   # a confused client resends
        jobs = bench.store.jobs()
    assert len(jobs) == 1
    assert second[-1].line == f"250 2.0.0 Queued as job {jobs[0].id}"
    assert third[-1].line == f"250 2.0.0 Duplicate of job {jobs[0].id}: already received, not faxed again"


async def test_dedup_needs_same_message_recipient_and_documents(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    pdf = mailkit.pdf_bytes(tmp_path)
    other_pdf = mailkit.pdf_bytes(tmp_path, name="other.pdf", text="another document")
    async with listening(cfg) as bench:
        a = await mailkit.asend(bench.address, "alice@example.com", RCPT, mailkit.outlook(pdf))
        b = await mailkit.asend(bench.address, "alice@example.com", ["15555551213@fax.local"], mailkit.outlook(pdf))
        c = await mailkit.asend(bench.address, "alice@example.com", RCPT, mailkit.outlook(other_pdf))
        d = await mailkit.asend(bench.address, "alice@example.com", RCPT,
                                mailkit.outlook(pdf, message_id="<new-id@example.com>"))
        both = await mailkit.asend(bench.address, "alice@example.com", [*RCPT, "15555551214@fax.local"],
                                   mailkit.outlook(pdf))
        scan1 = await mailkit.asend(bench.address, "alice@example.com", RCPT, mailkit.scanner(pdf))
        scan2 = await mailkit.asend(bench.address, "alice@example.com", RCPT, mailkit.scanner(pdf))
        jobs = bench.store.jobs()
    assert all(x[-1].text.startswith("2.0.0 Queued as job ") for x in (a, b, c, d, scan1))
    first = a[-1].text.rsplit(" ", 1)[-1]
    assert both[-1].text.startswith("2.0.0 Queued as job ")
    assert both[-1].text.endswith(f"; Duplicate of job {first}: already received, not faxed again")
    assert scan2[-1].text.startswith("2.0.0 Duplicate of job ")   # no Message-ID: the whole message is the key
    assert len(jobs) == 6
