"""Reply mail through a real smarthost (an aiosmtpd sink on a free port): once per final job, retried while
the smarthost is down, never repeated, never sent where RFC 3834 forbids, given up on 5xx."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from faxbridge.clock import FakeClock
from faxbridge.config import Config
from faxbridge.models import FaxOutcome, NewJob, Paper, PreparedDocument, Source, StatusUpdate
from faxbridge.notify.mail import build, make_deliver
from faxbridge.notify.outbox import OutboxWorker
from faxbridge.states import Accepted, Claimed, Policy, Status
from faxbridge.store import DOC_NAME, JobStore, new_job_id, open_store
from faxbridge.workflow import advance
from tests.conftest import free_port
from tests.ingress.mailkit import MailSink, config_of, mail_sink
from tests.support import base_settings


def cfg_for(tmp: Path, port: int | None) -> Config:
    settings = base_settings(tmp)
    settings["notify"] = {"smarthost": f"127.0.0.1:{port}" if port else "", "from_address": "fax@fax.local"}
    return config_of(tmp, settings)


async def final_smtp_job(store: JobStore, clock: FakeClock, *, sender: str | None = "alice@example.com",
                   outcome: FaxOutcome = FaxOutcome.DELIVERED, **meta: Any) -> str:
    job_id = new_job_id()
    path = store.spool.stage(job_id) / DOC_NAME
    path.write_bytes(b"%PDF-1.4")
    doc = PreparedDocument(path, 2, Paper.LETTER, hashlib.sha256(b"%PDF-1.4").hexdigest(), 8)
    new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", sender=sender, subject="Hello",
                 meta={"message_id": "<m1@example.com>", "no_reply": None, **meta})
    await store.enqueue(job_id, new, doc, clock.now())
    reason = None if outcome is FaxOutcome.DELIVERED else "Busy: the line was busy on all 3 attempts"
    update = StatusUpdate("simulator", "9", outcome, reason=reason, attempts=3, duration_s=30.0, cost=0.07)
    for step in (Claimed(), Accepted("9"), Status(update)):
        await advance(store, job_id, step, clock, Policy())
    return job_id


async def test_smarthost_down_then_up_exactly_one_reply(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    sink = MailSink()                                   # its port is chosen, nothing listens yet
    cfg = cfg_for(tmp_path, sink.port)
    worker = OutboxWorker(store, clock, "mail", make_deliver(cfg, clock), retry_initial=10, retry_max=60)
    job_id = await final_smtp_job(store, clock, outcome=FaxOutcome.FAILED)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await worker.run_once() == 0          # refused: retried later
            assert await worker.run_once() == 0          # not due yet
            sink.up()
            clock.advance(11)
            assert await worker.run_once() == 1
            clock.advance(3600)
            assert await worker.run_once() == 0
            # a restart: a new worker on the same store sends nothing again
            assert await OutboxWorker(store, clock, "mail", make_deliver(cfg, clock)).run_once() == 0
        received = sink.received
    finally:
        sink.down()
        await store.close()
    assert [e["event"] for e in logs if e["event"].startswith("notify.")] == [
        "notify.retry", "notify.mail_sent", "notify.delivered"]
    assert len(received) == 1
    got = received[0]
    assert (got.mail_from, got.rcpt_tos) == ("<>", ["alice@example.com"])   # the null sender (issue 11)
    msg = got.message
    assert msg["Subject"] == "Re: Hello - fax to +1 555-555-1212 failed"
    assert (msg["X-Faxbridge-Job"], msg["X-Faxbridge-State"]) == (job_id, "failed")
    assert msg["In-Reply-To"] == msg["References"] == "<m1@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    text = msg.get_content()
    assert "Reason: Busy: the line was busy on all 3 attempts" in text
    assert "What to do: The line was busy each time: try again later by sending the mail again." in text


async def test_no_reply_to_bounces_or_auto_submitted_mail(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    with mail_sink() as sink:
        cfg = cfg_for(tmp_path, sink.port)
        await final_smtp_job(store, clock, sender=None, no_reply="the envelope sender is empty (a bounce)")
        await final_smtp_job(store, clock, no_reply="the mail is marked Auto-Submitted")
        worker = OutboxWorker(store, clock, "mail", make_deliver(cfg, clock))
        with structlog.testing.capture_logs() as logs:
            assert await worker.run_once() == 2
        received = sink.received
    await store.close()
    assert received == []
    assert [e["why"] for e in logs if e["event"] == "notify.mail_suppressed"] == [
        "the envelope sender is empty (a bounce)", "the mail is marked Auto-Submitted"]
    # handled, nothing sent: not logged or counted as delivered
    assert "notify.delivered" not in [e["event"] for e in logs]
    assert (worker.delivered, worker.not_sent, worker.given_up) == (0, 2, 0)


async def test_without_smarthost_reply_mail_is_not_sent(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    cfg = cfg_for(tmp_path, None)
    job_id = await final_smtp_job(store, clock)
    worker = OutboxWorker(store, clock, "mail", make_deliver(cfg, clock))
    with structlog.testing.capture_logs() as logs:
        assert await worker.run_once() == 1
    assert await store.outbox_backlog() == 0
    await store.close()
    assert [(e["event"], e.get("job_id")) for e in logs if e["event"].startswith("notify.")] == [
        ("notify.mail_not_sent", job_id)]          # handled, not "delivered": nothing was sent
    assert (worker.delivered, worker.not_sent, worker.given_up) == (0, 1, 0)


async def test_without_smarthost_the_daemons_mail_worker_marks_every_row_unsent_in_one_round(tmp_path: Path) -> None:
    """The worker the daemon builds (mail.build) knows no reply can go: the rows are marked done with
    the same log lines, without composing anything."""
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    cfg = cfg_for(tmp_path, None)
    job_ids = [await final_smtp_job(store, clock) for _ in range(3)]
    worker = build(cfg, store, clock)
    assert worker.unsent == "notify.smarthost is empty"
    with structlog.testing.capture_logs() as logs:
        assert await worker.run_once() == 3
        assert await worker.run_once() == 0
    assert await store.outbox_backlog() == 0
    await store.close()
    unsent = [(e["job_id"], e["why"]) for e in logs if e["event"] == "notify.mail_not_sent"]
    assert sorted(unsent) == sorted((job_id, "notify.smarthost is empty") for job_id in job_ids)
    assert {e["event"] for e in logs if e["event"].startswith("notify.")} == {"notify.mail_not_sent"}
    assert (worker.delivered, worker.not_sent, worker.given_up) == (0, 3, 0)


async def test_with_a_smarthost_the_daemons_mail_worker_delivers(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    with mail_sink() as sink:
        cfg = cfg_for(tmp_path, sink.port)
        await final_smtp_job(store, clock)
        worker = build(cfg, store, clock)
        assert worker.unsent is None
        assert await worker.run_once() == 1
        received = sink.received
    await store.close()
    assert len(received) == 1 and received[0].rcpt_tos == ["alice@example.com"]


class _Refusing:
    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        return "550 5.1.1 No such mailbox"


async def test_recipient_refused_for_good_is_given_up(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    port = free_port()
    controller = Controller(_Refusing(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        job_id = await final_smtp_job(store, clock)
        with structlog.testing.capture_logs() as logs:
            worker = OutboxWorker(store, clock, "mail", make_deliver(cfg_for(tmp_path, port), clock))
            assert await worker.run_once() == 1
    finally:
        controller.stop()
    assert await store.outbox_backlog() == 0
    await store.close()
    undeliverable = [e for e in logs if e["event"] == "notify.undeliverable"]
    assert [(e["job_id"], e["error"]) for e in undeliverable] == [
        (job_id, "the smarthost refused the recipient (550)")]
