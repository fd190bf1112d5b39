"""The web console's HTTP layer (CONTRACT §13) with httpx against the real Starlette app, a real SQLite
store and real jobs: access (loopback only without users; logins, sessions, throttling with users),
CSRF, every action, filters, paging, the pages as sent, the overview."""

from __future__ import annotations

import asyncio
import html
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from PIL import Image

from faxbridge.clock import FakeClock
from faxbridge.config import Config
from faxbridge.console import ConsoleContext, build_app
from faxbridge.console.access import MAX_FAILURES
from faxbridge.ingress.smtp.auth import check_password
from faxbridge.intake import accept
from faxbridge.models import FaxOptions, FaxOutcome, InputFile, JobState, NewJob, Source, StatusUpdate
from faxbridge.notify.preview import render_page
from faxbridge.states import Accepted, Claimed, Policy, Status
from faxbridge.store import JobStore, open_store
from faxbridge.workflow import advance
from tests.ingress.mailkit import config_of
from tests.support import base_settings, make_pdf


@dataclass
class Console:
    store: JobStore
    clock: FakeClock
    app: Any
    cfg: Config
    pdf: Path
    ctx: ConsoleContext

    def client(self, host: str = "127.0.0.1") -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(host, 40000)),
                                 base_url="http://console.test", follow_redirects=False)

    async def job(self, to: str = "+15555551212", *, source: Source = Source.CLI, sender: str | None = None,
                  subject: str | None = None, send_at: timedelta | None = None, pages: int = 1) -> str:
        doc = make_pdf(self.pdf.parent / f"doc{pages}.pdf", pages=pages)
        options = FaxOptions(send_at=self.clock.now() + send_at if send_at else None)
        new = NewJob(source=source, to=to, document="invoice.pdf", sender=sender, subject=subject, options=options)
        return (await accept(self.store, self.clock, new, [InputFile("invoice.pdf", doc)], max_pages=50)).id

    async def finish(self, job_id: str, outcome: FaxOutcome) -> None:
        reason = None if outcome is FaxOutcome.DELIVERED else "Busy: the line was busy on all 3 attempts"
        update = StatusUpdate("simulator", "7", outcome, reason=reason, attempts=3, duration_s=20.0, cost=0.14)
        for step in (Claimed(), Accepted("7"), Status(update)):
            await advance(self.store, job_id, step, self.clock, Policy())


async def _render(pdf: Path, index: int) -> bytes:
    return await asyncio.to_thread(render_page, pdf, index)


async def make_console(tmp_path: Path, users: dict[str, bytes] | None = None,
                       settings: dict[str, Any] | None = None) -> Console:
    cfg = config_of(tmp_path, settings or base_settings(tmp_path))
    store = await open_store(cfg.state_dir, "simulator")
    clock = FakeClock()
    ctx = ConsoleContext(cfg, store, clock, Policy(), render=_render, health=lambda: {"smtp": True, "folder": False},
                         balance=lambda: 12.5, users=users, check_password=check_password)
    store.observe(ctx.changes.observe)                  # as app.py does: /events follows the store
    return Console(store, clock, build_app(ctx), cfg, tmp_path / "a.pdf", ctx)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    c = await make_console(tmp_path)
    try:
        yield c
    finally:
        await c.store.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


# --- access ----------------------------------------------------------------------------------------------


async def test_without_users_only_this_machine_is_served(console: Console) -> None:
    async with console.client("127.0.0.1") as local, console.client("::1") as local6, \
            console.client("192.0.2.7") as stranger:
        assert (await local.get("/")).status_code == 200
        assert (await local6.get("/")).status_code == 200
        for path in ("/", "/overview", "/fragments/queue", "/static/console.css", "/jobs/x"):
            r = await stranger.get(path)
            assert r.status_code == 403, path
            assert "serves only this machine" in r.text
        assert (await stranger.post("/jobs/x/cancel", data={"csrf": "x"})).status_code == 403


async def test_pages_carry_headers_that_keep_them_to_themselves(console: Console) -> None:
    async with console.client() as client:
        r = await client.get("/")
    assert r.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    cookie = r.headers["set-cookie"]
    assert "faxbridge_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie                                  # plain HTTP on loopback


async def test_with_users_a_login_is_needed_and_sessions_are_strict(tmp_path: Path) -> None:
    users = {"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}
    c = await make_console(tmp_path, users)
    try:
        async with c.client("192.0.2.7") as client:
            r = await client.get("/")
            assert (r.status_code, r.headers["location"]) == (303, "/login")
            assert (await client.get("/fragments/queue")).status_code == 401
            form = await client.get("/login")
            assert form.status_code == 200
            token = csrf_of(form.text)
            bad = await client.post("/login", data={"csrf": token, "user": "alice", "password": "nope"})
            assert bad.status_code == 401 and "not right" in bad.text
            ok = await client.post("/login", data={"csrf": token, "user": "alice", "password": "s3cret"})
            assert ok.status_code == 303
            cookie = ok.headers["set-cookie"]
            assert "faxbridge_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "Secure" not in cookie
            async with c.client("192.0.2.9") as behind_tls:
                tls_token = csrf_of((await behind_tls.get("/login")).text)
                r = await behind_tls.post("/login", data={"csrf": tls_token, "user": "alice", "password": "s3cret"},
                                          headers={"x-forwarded-proto": "https"})
                assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]      # behind TLS
            page = await client.get("/")
            assert page.status_code == 200 and "alice" in page.text
            await client.post("/logout", data={"csrf": csrf_of(page.text)})
            assert (await client.get("/")).status_code == 303
    finally:
        await c.store.close()


async def test_failed_logins_are_throttled_per_address_and_logged(tmp_path: Path) -> None:
    import structlog

    users = {"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}
    c = await make_console(tmp_path, users)
    try:
        async with c.client("192.0.2.7") as attacker, c.client("192.0.2.8") as alice:
            token = csrf_of((await attacker.get("/login")).text)
            with structlog.testing.capture_logs() as logs:
                for _ in range(MAX_FAILURES):
                    r = await attacker.post("/login", data={"csrf": token, "user": "alice", "password": "guess"})
                    assert r.status_code == 401
                r = await attacker.post("/login", data={"csrf": token, "user": "alice", "password": "s3cret"})
            assert r.status_code == 429 and "Too many failed logins" in r.text   # even the right password
            failed = [e for e in logs if e["event"] == "console.login_failed"]
            assert len(failed) == MAX_FAILURES and failed[0]["client"] == "192.0.2.7"
            assert all("guess" not in str(e) for e in logs)
            other = csrf_of((await alice.get("/login")).text)
            r = await alice.post("/login", data={"csrf": other, "user": "alice", "password": "s3cret"})
            assert r.status_code == 303                            # another address is not locked out
    finally:
        await c.store.close()


# --- the queue ---------------------------------------------------------------------------------------------


async def test_the_queue_filters_and_pages(console: Console) -> None:
    mail = await console.job("+15555551212", source=Source.SMTP, sender="alice@example.com", subject="Invoice 42")
    other = await console.job("+15555551299", source=Source.FOLDER, subject="Order 7")
    await console.finish(other, FaxOutcome.FAILED)
    for _ in range(60):
        await console.job("+15555551230")
    async with console.client() as client:
        first = (await client.get("/")).text
        assert "queued <b>61</b>" in first and "failed <b>1</b>" in first
        assert "62 jobs; page 1 of 2" in first and 'rel="next"' in first
        second = (await client.get("/", params={"page": "2"})).text
        assert "page 2 of 2" in second and 'rel="prev"' in second
        by_state = (await client.get("/", params={"state": "failed"})).text
        assert f'data-job="{other}"' in by_state and f'data-job="{mail}"' not in by_state
        by_sender = (await client.get("/", params={"sender": "alice"})).text
        assert f'data-job="{mail}"' in by_sender and "1 job;" in by_sender
        by_number = (await client.get("/", params={"number": "+1 555-555-1299"})).text
        assert f'data-job="{other}"' in by_number and "1 job;" in by_number
        by_text = (await client.get("/", params={"text": "order"})).text
        assert f'data-job="{other}"' in by_text and "1 job;" in by_text
        by_source = (await client.get("/", params={"source": "smtp"})).text
        assert "1 job;" in by_source
        odd = (await client.get("/", params={"text": "100%_x", "state": "bogus", "page": "-3"}))
        assert odd.status_code == 200 and "No job matches." in odd.text
        fragment = (await client.get("/fragments/queue", params={"state": "failed"})).text
        assert "<html" not in fragment and f'data-job="{other}"' in fragment
        assert "The result file invoice.result.json is not there" in (await client.get(f"/jobs/{other}")).text


async def test_values_are_escaped(console: Console) -> None:
    await console.job(subject='<script>alert("x")</script>')
    async with console.client() as client:
        text = (await client.get("/")).text
    assert "<script>alert" not in text and "&lt;script&gt;" in text


# --- a job and the actions --------------------------------------------------------------------------------


async def test_a_job_page_shows_its_history_and_pages(console: Console) -> None:
    job_id = await console.job(pages=2)
    await console.finish(job_id, FaxOutcome.FAILED)
    async with console.client() as client:
        page = (await client.get(f"/jobs/{job_id}")).text
        assert 'id="state">failed' in page and "Busy: the line was busy on all 3 attempts" in page
        assert "job.queued" in page and "job.failed" in page and "(fax 7)" in page
        assert f'src="/jobs/{job_id}/pages/1.png"' in page and f"/jobs/{job_id}/pages/2.png" in page
        png = await client.get(f"/jobs/{job_id}/pages/2.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (850, 1100)
        assert (await client.get(f"/jobs/{job_id}/pages/3.png")).status_code == 404
        pdf = await client.get(f"/jobs/{job_id}/fax.pdf")
        assert pdf.status_code == 200 and pdf.content == console.store.spool.document_path(job_id).read_bytes()
        assert f'<a href="/jobs/{job_id}/received/0" download>invoice.pdf</a>' in page     # as given to send
        original = await client.get(f"/jobs/{job_id}/received/0")
        assert original.content == (console.pdf.parent / "doc2.pdf").read_bytes()
        assert original.headers["content-disposition"] == 'attachment; filename="invoice.pdf"'
        assert "Sent from the command line: no reply" in page
        assert (await client.get("/jobs/01NOSUCHJOB")).status_code == 404


async def test_a_job_page_says_where_its_reply_stands(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    settings["notify"] = {"smarthost": "127.0.0.1:2526"}
    c = await make_console(tmp_path, settings=settings)
    try:
        job_id = await c.job(source=Source.SMTP, sender="alice@example.com", subject="Invoice 42")
        async with c.client() as client:
            assert "A reply mail goes to alice@example.com when the fax is done." in \
                (await client.get(f"/jobs/{job_id}")).text
            await c.finish(job_id, FaxOutcome.FAILED)
            assert "<li>the reply mail: to be sent</li>" in (await client.get(f"/jobs/{job_id}")).text
            [item] = await c.store.outbox_due(c.clock.now(), ["mail"])
            await c.store.outbox_failed(item.id, "smarthost down", c.clock.now() + timedelta(minutes=5))
            page = (await client.get(f"/jobs/{job_id}")).text
            assert "<li>the reply mail: not sent yet: 1 try failed, the last with smarthost down; next try " in page
            await c.store.outbox_delivered(item.id, c.clock.now(), error="undeliverable: 550 no such user")
            page = (await client.get(f"/jobs/{job_id}")).text
            assert "the reply mail: given up " in page and "undeliverable: 550 no such user" in page
            text = html.unescape(page)
            assert "Subject: Re: Invoice 42 - fax to +1 555-555-1212 failed" in text
            assert "Reason: Busy: the line was busy on all 3 attempts" in text
    finally:
        await c.store.close()


async def act(client: httpx.AsyncClient, job_id: str, action: str) -> httpx.Response:
    confirm = await client.get(f"/jobs/{job_id}/confirm/{action}")
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    return await client.post(f"/jobs/{job_id}/{action}", data={"csrf": csrf_of(confirm.text)})


async def test_cancel_retry_and_send_now(console: Console) -> None:
    queued = await console.job()
    failed = await console.job("+15555551219")
    await console.finish(failed, FaxOutcome.FAILED)
    later = await console.job(send_at=timedelta(hours=5))
    async with console.client() as client:
        page = (await client.get(f"/jobs/{queued}")).text
        assert 'id="action-cancel"' in page and 'id="action-retry"' not in page
        r = await act(client, queued, "cancel")
        assert (r.status_code, r.headers["location"]) == (303, f"/jobs/{queued}?done=cancel")
        assert "Cancel requested." in (await client.get(r.headers["location"])).text
        assert (await console.store.get(queued)).state is JobState.CANCELED
        assert (await act(client, failed, "retry")).status_code == 303
        assert (await console.store.get(failed)).state is JobState.QUEUED
        assert 'id="action-send-now"' in (await client.get(f"/jobs/{later}")).text
        assert (await act(client, later, "send-now")).status_code == 303
        job = await console.store.get(later)
        assert job.options.send_at is None and job.next_attempt_at == console.clock.now()
        again = await act(client, later, "send-now")
        assert again.status_code == 409 and "Not done: only a queued job waiting" in again.text
        events = [e.event for e in await console.store.events(queued)]
        assert events[-1] == "job.canceled"
        reason = (await console.store.get(queued)).reason or ""
        assert "the console at 127.0.0.1" in reason


async def test_an_action_without_its_csrf_token_changes_nothing(console: Console) -> None:
    queued = await console.job()
    async with console.client() as client:
        await client.get("/")                                        # the browser has its cookie
        for data in ({}, {"csrf": "forged"}):
            r = await client.post(f"/jobs/{queued}/cancel", data=data)
            assert r.status_code == 403 and "did not come from this console" in r.text
    async with console.client() as fresh:                            # no cookie at all
        r = await fresh.post(f"/jobs/{queued}/cancel", data={"csrf": "x"})
        assert r.status_code == 403
    assert (await console.store.get(queued)).state is JobState.QUEUED


# --- the overview -------------------------------------------------------------------------------------------


async def test_the_overview(console: Console) -> None:
    ok = await console.job()
    await console.finish(ok, FaxOutcome.DELIVERED)
    bad = await console.job("+15555551219")
    await console.finish(bad, FaxOutcome.FAILED)
    async with console.client() as client:
        text = (await client.get("/overview")).text
    assert 'id="sent">1<' in text and 'id="failed">1<' in text and 'id="pages">1<' in text
    assert 'id="cost">$0.28<' in text and 'id="balance">$12.50<' in text
    assert "smtp: up" in text and "folder: DOWN" in text
    assert "provider: simulator" in text                            # the effective configuration
    assert "reply mail: off (no notify.smarthost); 0 notifications waiting to go out" in text
    assert "<th>provider.simulator.speed</th><td>2000.0</td>" in text    # every setting, as run with
    assert "<th>limits.per_destination</th><td>1</td>" in text           # ... defaults included


async def test_the_overview_shows_every_setting_but_never_a_secret(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    settings["provider"] = {"kind": "phaxio", "poll_interval": "100ms",
                            "phaxio": {"api_key": "KEY-d0n7-5h0w", "api_secret": "SECRET-d0n7-5h0w",
                                       "callback_token": "TOKEN-d0n7-5h0w"}}
    settings["notify"] = {"smarthost": "127.0.0.1:2526", "username": "USER-d0n7-5h0w",
                          "password": "PASS-d0n7-5h0w"}
    settings["store"] = {"url": "postgresql://bridge:PGPASS-d0n7-5h0w@db.example/fax"}
    c = await make_console(tmp_path, settings=settings)
    try:
        mail = await c.job(source=Source.SMTP, sender="alice@example.com")
        await c.finish(mail, FaxOutcome.DELIVERED)                 # owes a reply: one row in the outbox
        async with c.client() as client:
            text = (await client.get("/overview")).text
            fragment = (await client.get("/fragments/overview")).text
    finally:
        await c.store.close()
    assert "d0n7-5h0w" not in text and "d0n7-5h0w" not in fragment
    for key in ("provider.phaxio.api_key", "provider.phaxio.api_secret", "provider.phaxio.callback_token",
                "notify.username", "notify.password", "store.url"):
        assert f"<th>{key}</th><td>(set, not shown)</td>" in text, key
    assert "<th>provider.openfax.api_key</th><td>(not set)</td>" in text
    assert "<th>notify.smarthost</th><td>&#34;127.0.0.1:2526&#34;</td>" in text       # (quotes escaped)
    assert "reply mail: through 127.0.0.1:2526; 1 notification waiting to go out" in text
    assert "<html" not in fragment and 'id="sent">1<' in fragment          # the part that refreshes itself
