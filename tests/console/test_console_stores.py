"""The console reads and acts through the JobStore protocol only, so it works alike on both stores
(SQLite, and a real PostgreSQL the tests start): the queue and its filters, a job's page with the
documents as received, the PDF and where its reply stands, an action, the overview."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from faxbridge.clock import FakeClock
from faxbridge.console import ConsoleContext, build_app
from faxbridge.intake import accept
from faxbridge.models import FaxOptions, FaxOutcome, InputFile, JobState, NewJob, Source, StatusUpdate
from faxbridge.notify.preview import render_page
from faxbridge.states import Accepted, Claimed, Policy, Status
from faxbridge.workflow import advance
from tests.ingress.mailkit import config_of
from tests.stores import Backend
from tests.support import base_settings, make_pdf


async def _render(pdf: Path, index: int) -> bytes:
    return await asyncio.to_thread(render_page, pdf, index)


async def test_the_console_on_either_store(backend: Backend, tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    settings["notify"] = {"smarthost": "127.0.0.1:2526"}
    cfg = config_of(tmp_path, settings)
    store = await backend.open()
    clock = FakeClock()
    ctx = ConsoleContext(cfg, store, clock, Policy(), render=_render)
    app = build_app(ctx)
    original = make_pdf(tmp_path / "letter.pdf", pages=2)
    mail = await accept(store, clock, NewJob(source=Source.SMTP, to="+15555551212", document="letter.pdf",
                                             sender="alice@example.com", subject="Order 7"),
                        [InputFile("letter.pdf", original)], max_pages=50)
    queued = await accept(store, clock, NewJob(source=Source.CLI, to="+15555551299", document="b.pdf",
                                               options=FaxOptions()), [InputFile("b.pdf", original)], max_pages=50)
    update = StatusUpdate("simulator", "7", FaxOutcome.DELIVERED, attempts=1, duration_s=20.0, cost=0.14, pages=2)
    for step in (Claimed(), Accepted("7"), Status(update)):
        await advance(store, mail.id, step, clock, Policy())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)),
                                 base_url="http://console.test") as client:
        queue = (await client.get("/", params={"sender": "alice"})).text
        assert f'data-job="{mail.id}"' in queue and f'data-job="{queued.id}"' not in queue and "1 job;" in queue
        page = (await client.get(f"/jobs/{mail.id}")).text
        assert 'id="state">delivered' in page and "(fax 7)" in page
        assert "<li>the reply mail: to be sent</li>" in page
        assert (await client.get(f"/jobs/{mail.id}/received/0")).content == original.read_bytes()
        assert (await client.get(f"/jobs/{mail.id}/fax.pdf")).content == \
            store.spool.document_path(mail.id).read_bytes()
        assert (await client.get(f"/jobs/{mail.id}/pages/2.png")).headers["content-type"] == "image/png"
        confirm = (await client.get(f"/jobs/{queued.id}/confirm/cancel")).text
        token = re.search(r'name="csrf" value="([^"]+)"', confirm)
        assert token
        r = await client.post(f"/jobs/{queued.id}/cancel", data={"csrf": token.group(1)})
        assert r.status_code == 303
        overview = (await client.get("/overview")).text
    assert (await store.get(queued.id)).state is JobState.CANCELED
    assert 'id="sent">1<' in overview and 'id="pages">2<' in overview
    assert "1 notification waiting to go out" in overview
