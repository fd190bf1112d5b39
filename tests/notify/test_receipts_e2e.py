"""Receipts, previews and copies end to end (CONTRACT §12): the real daemon, smtplib in, the simulator as
the provider, a real sink as the smarthost. A mail to two numbers (one busy) gets a receipt per job right
after its 250, then one final reply per job carrying the first page; the failed one is copied to the
administrator with the PDF sent. A mail the daemon must not answer (Auto-Submitted) gets no receipt."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from faxbridge.models import JobState
from faxbridge.store import JobStore
from tests.conftest import async_wait_until
from tests.ingress import mailkit
from tests.ingress.mailkit import Received, config_of, mail_sink, running, smtp_settings


def kind_of(got: Received) -> str:
    msg = got.message
    if msg["X-Faxbridge-Receipt"]:
        return "receipt"
    return "copy" if msg["X-Faxbridge-Copy"] else "reply"


async def test_receipts_replies_with_previews_and_a_copy(tmp_path: Path) -> None:
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    logo = None
    with mail_sink() as sink:
        settings = smtp_settings(tmp_path)
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}", "from_address": "fax@fax.local",
                              "receipt": True, "attach": "preview", "copy_to": ["admin@example.com"],
                              "copy_attach": "document"}
        cfg = config_of(tmp_path, settings)
        async with running(cfg) as daemon:
            store: JobStore | None = daemon.store
            assert store is not None
            answers = await mailkit.asend(mailkit.address(daemon), "alice@example.com",
                                          ["15555551212@fax.local", "15555551219@fax.local"],
                                          mailkit.outlook(pdf, logo=logo))
            assert answers[-1].code == 250
            silent = await mailkit.asend(mailkit.address(daemon), "bot@example.com", ["15555551212@fax.local"],
                                         mailkit.plain("hello", sender="bot@example.com",
                                                       extra="Auto-Submitted: auto-generated\n"))
            assert silent[-1].code == 250

            async def drained() -> bool:
                return (len(await store.jobs()) == 3 and all(j.final for j in await store.jobs())
                        and await store.outbox_backlog() == 0)
            await async_wait_until(drained, timeout=120, what="every job final and every notice sent")
            jobs = {(j.sender, j.to): j for j in await store.jobs()}
        received = sink.received
    ok, busy = jobs[("alice@example.com", "+15555551212")], jobs[("alice@example.com", "+15555551219")]
    quiet = jobs[("bot@example.com", "+15555551212")]
    assert (ok.state, busy.state, quiet.state) == (JobState.DELIVERED, JobState.FAILED, JobState.DELIVERED)
    by = sorted((kind_of(got), got.message["X-Faxbridge-Job"]) for got in received)
    assert by == sorted([("receipt", ok.id), ("receipt", busy.id), ("reply", ok.id), ("reply", busy.id),
                         ("copy", busy.id)])          # nothing for the Auto-Submitted mail; one copy: the failure
    mails = {(kind_of(got), got.message["X-Faxbridge-Job"]): got for got in received}

    receipt = mails[("receipt", ok.id)]
    assert (receipt.mail_from, receipt.rcpt_tos) == ("<>", ["alice@example.com"])
    msg = receipt.message
    assert msg["Subject"] == "Re: Invoice 42 - fax to +1 555-555-1212 accepted"
    assert msg["In-Reply-To"] == "<AM0PR01MB1234@EURPRD01.prod.outlook.com>"
    text = msg.get_content().replace("\r\n", "\n")
    assert text.startswith("Your fax to +1 555-555-1212 was accepted and will be sent.\n")
    assert "Number:    +15555551212 (United States)\n" in text
    assert "Pages:     3 (including the cover page)\n" in text
    assert "Faxed from your mail:\n  - the mail text, as the cover page\n  - invoice.pdf\n" in text

    for job in (ok, busy):
        reply = mails[("reply", job.id)].message
        [part] = list(reply.iter_attachments())
        image = Image.open(io.BytesIO(part.get_content()))
        assert image.format == "PNG" and image.size == (850, 1100)

    copy = mails[("copy", busy.id)]
    assert copy.rcpt_tos == ["admin@example.com"] and copy.mail_from == "<>"
    assert copy.message["Subject"] == "[Copy] Re: Invoice 42 - fax to +1 555-555-1219 failed"
    [part] = list(copy.message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == store.spool.document_path(busy.id).read_bytes()
