"""/metrics on the real daemon parses with prometheus-client's parser and moves with the work."""

from __future__ import annotations

import json
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_the_work(tmp_path: Path) -> None:
    smtp_port, web_port = free_port(), free_port()
    outbox = tmp_path / "outbox"
    s: dict[str, Any] = base_settings(tmp_path)
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}"}
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"}
    s["watch"] = [{"path": str(outbox), "results": str(tmp_path / "results"), "done": str(tmp_path / "done"),
                   "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    config = write_config(tmp_path / "faxbridge.toml", s)
    url = f"http://127.0.0.1:{web_port}"
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        before = scrape(url)
        assert value(before, "faxbridge_jobs", state="delivered") == 0
        assert ("faxbridge_jobs_in_flight", ()) in before and ("faxbridge_outbox_backlog", ()) in before

        pdf = make_pdf(tmp_path / "a.pdf").read_bytes()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "15555551211@fax.local", "metrics"
            msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="a.pdf")
            client.send_message(msg)
            client.ehlo()
            client.mail("alice@example.com")
            assert client.rcpt("15555551211@elsewhere.example")[0] == 550
            client.rset()
        (outbox / "15555551212.pdf").write_bytes(pdf)
        (outbox / "no-number-here.pdf").write_bytes(pdf)

        def final() -> bool:
            jobs = [json.loads(line) for line in cli("jobs", "--json", config=config).stdout.splitlines()]
            return len(jobs) == 3 and all(j["final"] for j in jobs)

        wait_until(final, timeout=60, interval=0.2, what="three final jobs")

        def delivered() -> Samples | None:
            m = scrape(url)
            return m if value(m, "faxbridge_outbox_backlog") == 0 else None

        after = wait_until(delivered, timeout=30, what="outbox delivered")
    finally:
        assert daemon.stop() == 0

    assert value(after, "faxbridge_jobs", state="delivered") == 2
    assert value(after, "faxbridge_jobs", state="rejected") == 1
    assert value(after, "faxbridge_jobs_in_flight") == 0
    assert value(after, "faxbridge_submissions_total", provider="simulator", outcome="accepted") == 2
    assert value(after, "faxbridge_job_final_seconds_count", state="delivered") == 2
    assert value(after, "faxbridge_provider_request_seconds_count", provider="simulator", result="2xx") >= 2
    assert value(after, "faxbridge_smtp_replies_total", code="250") > value(before, "faxbridge_smtp_replies_total",
                                                                             code="250")
    assert value(after, "faxbridge_smtp_replies_total", code="550") == 1
    assert value(after, "faxbridge_folder_files_total", result="accepted") == 1
    assert value(after, "faxbridge_folder_files_total", result="rejected") == 1
    # webhooks and polling race to finish each job, so which of them counts is not fixed; the
    # poll gauge is there all the same
    assert ("faxbridge_poll_cycles", (("provider", "simulator"),)) in after


def test_a_scrape_while_the_store_waits_on_a_lock_shows_the_last_numbers(tmp_path: Path) -> None:
    """The store's gauges are read by an awaited refresh before the scrape: while a commit waits on
    a write lock another connection holds, a scrape neither blocks the loop nor fails, it shows
    the numbers last read (and says so once in the log); then the new ones."""
    import asyncio
    import sqlite3

    from structlog.testing import capture_logs

    from faxbridge.metrics import Metrics, watch_core
    from faxbridge.store import open_store
    from tests.support import LoopTicks
    from tests.test_store_threaded import _enqueue

    class Poller:
        cycles = requests = last_requests = last_pending = 0
        last_cpu_s = 0.0

    async def main() -> None:
        store = await open_store(tmp_path / "var", "simulator")
        metrics = Metrics()
        watch_core(metrics, store, Poller(), "simulator")
        other = sqlite3.connect(tmp_path / "var" / "faxbridge.db", isolation_level=None)
        try:
            await metrics.refresh()
            assert b'faxbridge_jobs{state="queued"} 0.0' in metrics.render()
            await store.kv_set("seen", "1")
            await _enqueue(store, "01JOBMETRICS00000000000001")    # not scraped yet
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE kv SET value = '2' WHERE key = 'seen'")
            write = asyncio.create_task(store.kv_set("seen", "3"))     # waits on the lock
            async with LoopTicks() as loop:
                with capture_logs() as logs:
                    await metrics.refresh(timeout=0.5)          # the store thread is busy: gives up
            assert loop.ticks > 0 and not write.done()
            assert b'faxbridge_jobs{state="queued"} 0.0' in metrics.render()     # the last numbers read
            assert [e["event"] for e in logs] == ["metrics.refresh_failed"]
            other.execute("COMMIT")
            await asyncio.wait_for(write, 30)
            await metrics.refresh()
            assert b'faxbridge_jobs{state="queued"} 1.0' in metrics.render()
        finally:
            other.close()
            await store.close()

    asyncio.run(main())
