"""A job's page shows what came in and what went out (CONTRACT §13), against the real daemon in this
event loop (its SMTP listener, folder watcher, simulator, outbox workers and console listener), a real
aiosmtpd smarthost catching the reply mail, and httpx to the console: the documents as received
(downloadable, byte for byte, one file shared by a mail's recipients), the reply mail's text as the
sender got it, and the result file as it lies in the results folder."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.console.server import ConsoleServer
from faxbridge.intake import received_name
from faxbridge.models import JobState
from faxbridge.store import JobStore
from tests.conftest import async_wait_until, free_port
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, running, smtp_settings
from tests.support import make_pdf

WAIT_S = 90.0      # a loaded 2-core machine


def console_url(daemon: Any) -> str:
    [console] = [c for c in daemon.components if isinstance(c, ConsoleServer)]
    return console.local_url


def pre(page: str, element_id: str) -> str:
    match = re.search(f'<pre id="{element_id}">(.*?)</pre>', page, re.S)
    assert match, page[-3000:]
    return html.unescape(match.group(1))


async def backlog_is(store: JobStore, n: int) -> bool:
    return await store.outbox_backlog() == n


async def all_final(store: JobStore, n: int) -> bool:
    jobs = await store.jobs()
    return len(jobs) == n and all(j.final for j in jobs)


async def test_a_mail_job_shows_its_attachments_and_its_reply(tmp_path: Path) -> None:
    settings: dict[str, Any] = smtp_settings(tmp_path, cover_page="never")
    settings["console"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    with mailkit.mail_sink() as sink:
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}"}
        async with running(config_of(tmp_path, settings)) as daemon:
            store = daemon.store
            assert store is not None
            answers = await mailkit.asend(mailkit.address(daemon), "alice@example.com",
                                          ["15555551212@fax.local", "15555551213@fax.local"],
                                          mailkit.outlook(pdf, name="Rechnung März.pdf"))
            assert answers[-1].code == 250
            await async_wait_until(lambda: all_final(store, 2), timeout=WAIT_S, what="both faxes done")
            await async_wait_until(lambda: len(sink.received) == 2, timeout=WAIT_S, what="both replies")
            await async_wait_until(lambda: backlog_is(store, 0), timeout=WAIT_S, what="both replies marked sent")
            jobs = await store.jobs()
            async with httpx.AsyncClient(base_url=console_url(daemon), timeout=WAIT_S) as client:
                pages = {j.id: (await client.get(f"/jobs/{j.id}")).text for j in jobs}
                downloads = [await client.get(f"/jobs/{j.id}/received/0") for j in jobs]
                missing = await client.get(f"/jobs/{jobs[0].id}/received/1")
    for job in jobs:
        page = pages[job.id]
        assert job.state is JobState.DELIVERED
        assert f'<a href="/jobs/{job.id}/received/0" download>Rechnung März.pdf</a>' in page
        reply = next(r.message for r in sink.received if r.message["X-Faxbridge-Job"] == job.id)
        shown = pre(page, "produced-text")
        head, _, body = shown.partition("\n\n")
        assert f"Subject: {reply['Subject']}" in head.splitlines()
        assert "To: alice@example.com" in head.splitlines()
        assert body == reply.get_content().replace("\r\n", "\n")  # the text the sender got
        assert "The reply mail to alice@example.com:" in page
        assert re.search(r"<li>the reply mail: sent \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page), page
    for r in downloads:
        assert r.status_code == 200 and r.content == pdf             # byte for byte, as mailed
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert "filename*=utf-8''Rechnung%20M%C3%A4rz.pdf" in r.headers["content-disposition"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert missing.status_code == 404
    kept = [store.spool.received_path(j.id) / "0-Rechnung März.pdf" for j in jobs]
    assert kept[0].stat().st_ino == kept[1].stat().st_ino           # one file for both recipients


async def test_a_folder_job_shows_the_dropped_file_and_its_result_file(tmp_path: Path) -> None:
    outbox, results = tmp_path / "outbox", tmp_path / "results"
    outbox.mkdir()
    settings: dict[str, Any] = smtp_settings(tmp_path)
    settings["smtp"] = {"enabled": False}
    settings["watch"] = [{"path": str(outbox), "results": str(results), "done": str(tmp_path / "done"),
                          "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    settings["console"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
    dropped = make_pdf(tmp_path / "letter.pdf", pages=1).read_bytes()
    async with running(config_of(tmp_path, settings)) as daemon:
        store = daemon.store
        assert store is not None
        (outbox / "15555551212 letter.pdf").write_bytes(dropped)
        result = results / "15555551212 letter.result.json"
        await async_wait_until(result.exists, timeout=WAIT_S, what="the result file")
        await async_wait_until(lambda: backlog_is(store, 0), timeout=WAIT_S, what="the result marked written")
        [job] = await store.jobs()
        async with httpx.AsyncClient(base_url=console_url(daemon), timeout=WAIT_S) as client:
            page = (await client.get(f"/jobs/{job.id}")).text
            download = await client.get(f"/jobs/{job.id}/received/0")
            written = result.read_text()
            result.unlink()                              # whoever reads the results took it
            gone = (await client.get(f"/jobs/{job.id}")).text
    assert download.status_code == 200 and download.content == dropped
    assert f"The result file {result}:" in page
    assert re.search(r"<li>the result file: written \d{4}-", page), page
    assert pre(page, "produced-text") == written                      # the file as it lies there
    assert '"state": "delivered"' in written and f'"id": "{job.id}"' in written
    assert "is not there (not written yet, or taken away by whoever reads the results)" in gone


@pytest.mark.parametrize(("index", "name", "kept"), [
    (0, "invoice.pdf", "0-invoice.pdf"),
    (2, "Rechnung März.pdf", "2-Rechnung März.pdf"),
    (1, "../../etc/passwd", "1-passwd"),
    (0, "a/b\\c.pdf", "0-b_c.pdf"),
    (3, "evil\x1b[2J\u202etxt.pdf", "3-evil__2J_txt.pdf"),
    (0, ".hidden", "0-hidden"),
    (0, "", "0-document"),
    (0, "x" * 300 + ".pdf", "0-" + "x" * 120),
], ids=["plain", "unicode", "a-path", "slashes", "controls-and-bidi", "hidden", "empty", "long"])
def test_a_received_document_keeps_a_safe_form_of_its_name(index: int, name: str, kept: str) -> None:
    assert received_name(index, name) == kept
