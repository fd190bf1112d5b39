"""What replies carry and the administrator's copies (CONTRACT §12): ``notify.attach``, ``copy_to``,
``copy_on``, ``copy_attach``, through a real smarthost (an aiosmtpd sink) and the real worker engine
for the first-page preview (pypdfium2 in a worker process)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import structlog
from PIL import Image

from faxbridge.clock import FakeClock
from faxbridge.config import Config, ConfigError
from faxbridge.documents import text_to_pdf
from faxbridge.models import FaxOutcome, NewJob, Paper, Source, StatusUpdate
from faxbridge.notify import mail
from faxbridge.notify.mail import make_copy_deliver, make_deliver
from faxbridge.notify.outbox import OutboxWorker
from faxbridge.notify.preview import render_first_page
from faxbridge.states import Accepted, Claimed, Policy, Status
from faxbridge.store import COPY_KIND, DOC_NAME, JobStore, new_job_id, open_store
from faxbridge.workers import Engine
from faxbridge.workflow import advance
from tests.ingress.mailkit import config_of, mail_sink
from tests.support import base_settings


def cfg_for(tmp: Path, port: int | None, **notify: Any) -> Config:
    settings = base_settings(tmp)
    settings["notify"] = {"smarthost": f"127.0.0.1:{port}" if port else "", "from_address": "fax@fax.local",
                          **notify}
    return config_of(tmp, settings)


async def final_job(store: JobStore, clock: FakeClock, *, source: Source = Source.SMTP,
                    sender: str | None = "alice@example.com", outcome: FaxOutcome = FaxOutcome.DELIVERED,
                    paper: Paper = Paper.LETTER) -> str:
    """A job with a real one-page PDF (``text_to_pdf``), taken to its final state."""
    from faxbridge.documents import prepare
    from faxbridge.models import InputFile

    job_id = new_job_id()
    staged = store.spool.stage(job_id)
    text = staged / "page.txt"
    text.write_text("Invoice 42\nTwo boxes of paper.\n")
    doc = prepare([InputFile(path=text, name="invoice.txt")], staged / DOC_NAME, max_pages=10, paper=paper)
    text.unlink()
    new = NewJob(source=source, to="+15555551212", document="invoice.txt",
                 sender=sender if source is Source.SMTP else None, subject="Invoice 42",
                 meta={"message_id": "<m1@example.com>", "no_reply": None, "sender_check": "any"})
    await store.enqueue(job_id, new, doc, clock.now())
    reason = None if outcome is FaxOutcome.DELIVERED else "Busy: the line was busy on all 3 attempts"
    update = StatusUpdate("simulator", "9", outcome, reason=reason, attempts=3, duration_s=30.0, cost=0.07)
    for step in (Claimed(), Accepted("9"), Status(update)):
        await advance(store, job_id, step, clock, Policy())
    return job_id


def png_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- the preview ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("paper", "size"), [(Paper.LETTER, (850, 1100)), (Paper.A4, (827, 1169)),
                                             (Paper.LEGAL, (850, 1400))])
def test_the_first_page_renders_as_a_grey_png_at_100_dpi(tmp_path: Path, paper: Paper,
                                                          size: tuple[int, int]) -> None:
    pdf = tmp_path / "a.pdf"
    text_to_pdf("Invoice 42\n" * 200, pdf, paper=paper)        # several pages: only the first is drawn
    image = png_of(render_first_page(pdf))
    assert image.format == "PNG" and image.mode == "L"
    assert abs(image.size[0] - size[0]) <= 1 and abs(image.size[1] - size[1]) <= 1
    assert image.getextrema()[0] < 128 < image.getextrema()[1]    # text on white: not a blank page


async def test_the_preview_renders_in_the_worker_engine(tmp_path: Path) -> None:
    pdf = tmp_path / "a.pdf"
    text_to_pdf("hello", pdf)
    engine = Engine(cfg_for(tmp_path, None))
    try:
        data = await engine.run(render_first_page, pdf)
    finally:
        await engine.close()
    assert png_of(data).size[1] in (1099, 1100, 1101)


# --- what replies carry -----------------------------------------------------------------------------------


async def reply_of(tmp_path: Path, attach: str, **job: Any) -> Any:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    engine = Engine(cfg_for(tmp_path, None))
    try:
        with mail_sink() as sink:
            cfg = cfg_for(tmp_path, sink.port, attach=attach)
            job_id = await final_job(store, clock, **job)
            deliver = make_deliver(cfg, clock, document=store.spool.document_path,
                                   render=lambda pdf: engine.run(render_first_page, pdf))
            assert await OutboxWorker(store, clock, "mail", deliver).run_once() == 1
            [got] = sink.received
        return got, store.spool.document_path(job_id)
    finally:
        await engine.close()
        await store.close()


async def test_a_reply_can_carry_the_first_page(tmp_path: Path) -> None:
    got, _ = await reply_of(tmp_path, "preview")
    [part] = list(got.message.iter_attachments())
    assert part.get_content_type() == "image/png"
    assert part.get_filename().endswith("-page1.png")
    assert png_of(part.get_content()).size == (850, 1100)
    assert "Reason" not in got.message.get_body(("plain",)).get_content()


async def test_a_reply_can_carry_the_pdf_sent(tmp_path: Path) -> None:
    got, document = await reply_of(tmp_path, "document")
    [part] = list(got.message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == document.read_bytes()


async def test_a_pdf_too_big_to_attach_is_named_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "ATTACH_MAX", 100)
    got, document = await reply_of(tmp_path, "document")
    assert list(got.message.iter_attachments()) == []
    size = document.stat().st_size / 1e6
    assert f"The document sent ({size:.1f} MB) is too big to attach to this mail." in got.message.get_content()


async def test_by_default_a_reply_carries_nothing(tmp_path: Path) -> None:
    got, _ = await reply_of(tmp_path, "none")
    assert not got.message.is_multipart()


# --- copies -------------------------------------------------------------------------------------------------


async def copies_of(tmp_path: Path, jobs: list[dict[str, Any]], *, copies: bool = True,
                    **notify: Any) -> tuple[list[Any], list[str], JobStore]:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator", notices=[COPY_KIND] if copies else [])
    with mail_sink() as sink:
        cfg = cfg_for(tmp_path, sink.port, **notify)
        ids = [await final_job(store, clock, **job) for job in jobs]
        deliver = make_copy_deliver(cfg, clock, document=store.spool.document_path,
                                    render=lambda pdf: _thread_render(pdf))
        worker = OutboxWorker(store, clock, COPY_KIND, deliver)
        await worker.run_once()
        # a restart: nothing is sent twice
        assert await OutboxWorker(store, clock, COPY_KIND, deliver).run_once() == 0
        received = sink.received
    return received, ids, store


async def _thread_render(pdf: Path) -> bytes:
    import asyncio

    return await asyncio.to_thread(render_first_page, pdf)


async def test_failed_jobs_are_copied_to_the_administrators_once(tmp_path: Path) -> None:
    received, ids, store = await copies_of(
        tmp_path, [{"outcome": FaxOutcome.FAILED}, {"outcome": FaxOutcome.DELIVERED}],
        copy_to=["admin@example.com", "boss@example.com"])
    try:     # both copy rows done (the delivered job's without a mail); the replies' rows wait for theirs
        assert await store.outbox_due(FakeClock().now().replace(year=2100), [COPY_KIND]) == []
        assert await store.outbox_backlog() == 2
    finally:
        await store.close()
    [got] = received
    assert (got.mail_from, got.rcpt_tos) == ("<>", ["admin@example.com", "boss@example.com"])
    msg = got.message
    assert msg["Subject"] == "[Copy] Re: Invoice 42 - fax to +1 555-555-1212 failed"
    assert msg["X-Faxbridge-Copy"] == "yes" and msg["X-Faxbridge-Job"] == ids[0]
    assert msg["To"] == "admin@example.com, boss@example.com"
    text = msg.get_content().replace("\r\n", "\n")
    assert text.startswith("This is a copy for the fax server's administrator: the result of a mail from "
                           "alice@example.com.\n\nYour fax to +1 555-555-1212 could not be delivered.")
    assert "Reason: Busy: the line was busy on all 3 attempts" in text


async def test_copy_on_final_copies_every_job_with_its_preview(tmp_path: Path) -> None:
    received, ids, store = await copies_of(
        tmp_path, [{"outcome": FaxOutcome.DELIVERED}, {"source": Source.FOLDER, "outcome": FaxOutcome.FAILED}],
        copy_to=["admin@example.com"], copy_on="final", copy_attach="preview")
    await store.close()
    by_job = {got.message["X-Faxbridge-Job"]: got.message for got in received}
    assert sorted(by_job) == sorted(ids)
    assert by_job[ids[1]].get_body(("plain",)).get_content().replace("\r\n", "\n").startswith(
        "This is a copy for the fax server's administrator: the result of the file invoice.txt in a watched folder.")
    for msg in by_job.values():
        [part] = list(msg.iter_attachments())
        assert png_of(part.get_content()).size == (850, 1100)


async def test_the_sender_never_gets_a_copy_too(tmp_path: Path) -> None:
    received, _, store = await copies_of(tmp_path, [{"outcome": FaxOutcome.FAILED}],
                                         copy_to=["Alice@Example.com", "admin@example.com"])
    await store.close()
    assert [got.rcpt_tos for got in received] == [["admin@example.com"]]


async def test_without_copies_the_store_owes_no_copy_rows(tmp_path: Path) -> None:
    received, _, store = await copies_of(tmp_path, [{"outcome": FaxOutcome.FAILED}], copies=False,
                                         copy_to=["admin@example.com"])
    try:
        assert received == [] and await store.outbox_backlog() == 1      # only the reply's row
        due = await store.outbox_due(FakeClock().now().replace(year=2100), ["mail", COPY_KIND])
        assert [item.kind for item in due] == ["mail"]
    finally:
        await store.close()


async def test_a_copy_waits_for_the_smarthost(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator", notices=[COPY_KIND])
    cfg = cfg_for(tmp_path, None, copy_to=["admin@example.com"])
    await final_job(store, clock, outcome=FaxOutcome.FAILED)
    with structlog.testing.capture_logs() as logs:
        assert await OutboxWorker(store, clock, COPY_KIND, make_copy_deliver(
            cfg, clock, document=store.spool.document_path)).run_once() == 1
    await store.close()
    assert "notify.copy_not_sent" in [e["event"] for e in logs]


def test_bad_settings_are_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        cfg_for(tmp_path, 25, attach="thumbnail", copy_on="always", copy_to=["not an address"])
    text = str(caught.value)
    assert "notify.attach" in text and "none, preview, document" in text
    assert "notify.copy_on" in text and "failed, final" in text
    assert "notify.copy_to" in text


@pytest.mark.parametrize(("e164", "shown"), [("+15555551212", "+15555551212 (United States)"),
                                             ("+442079460000", "+442079460000 (United Kingdom)"),
                                             ("+16135550100", "+16135550100 (Canada)"),
                                             ("+4930123456", "+4930123456 (Germany)"),
                                             ("+999", "+999")])
def test_the_receipt_says_the_number_as_read_with_its_country(e164: str, shown: str) -> None:
    assert mail.number_as_read(e164) == shown
