"""Mail to fax end to end: the real daemon, smtplib in, the simulator as the provider, a real sink as the
smarthost catching the one reply per job; and a SIGKILL between the final state and the reply."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from faxbridge.models import JobState
from tests.conftest import async_wait_until, wait_until
from tests.ingress import mailkit
from tests.ingress.mailkit import MailSink, config_of, mail_sink, running, smtp_settings
from tests.support import DaemonProcess, cli, write_config


async def test_mail_in_fax_out_reply_back(tmp_path: Path) -> None:
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    with mail_sink() as sink:
        settings = smtp_settings(tmp_path)
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}", "from_address": "fax@fax.local"}
        cfg = config_of(tmp_path, settings)
        async with running(cfg) as daemon:
            answers = await mailkit.asend(mailkit.address(daemon), "alice@example.com",
                                          ["15555551212@fax.local", "15555551219@fax.local"], mailkit.outlook(pdf))
            assert answers[-1].code == 250
            await async_wait_until(lambda: len(sink.received) >= 2, timeout=60, what="two replies")
            store = daemon.store
            assert store is not None
            jobs = {j.to: j for j in await store.jobs()}

            async def drained() -> bool:
                return await store.outbox_backlog() == 0
            await async_wait_until(drained, timeout=30, what="outbox drained")
        replies = {r.message["X-Faxbridge-Job"]: r for r in sink.received}
    assert len(sink.received) == 2
    ok, busy = jobs["+15555551212"], jobs["+15555551219"]
    assert (ok.state, busy.state) == (JobState.DELIVERED, JobState.FAILED)
    assert ok.pages == 3 and ok.provider == "simulator"
    good = replies[ok.id].message
    assert good["Subject"] == "Re: Invoice 42 - fax to +1 555-555-1212 delivered"
    assert good["X-Faxbridge-State"] == "delivered"
    assert good["In-Reply-To"] == "<AM0PR01MB1234@EURPRD01.prod.outlook.com>"
    assert "Pages:     3 (including the cover page)" in good.get_content()
    bad = replies[busy.id].message
    assert bad["Subject"] == "Re: Invoice 42 - fax to +1 555-555-1219 failed"
    assert "Reason: Busy: the line was busy on all 3 attempts" in bad.get_content()
    assert replies[ok.id].rcpt_tos == ["alice@example.com"]


def jobs_json(config: Path) -> list[dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_killed_between_final_state_and_reply_sends_it_once_after_restart(tmp_path: Path) -> None:
    sink = MailSink()                                # down: the reply cannot go out yet
    settings = smtp_settings(tmp_path)
    settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}", "from_address": "fax@fax.local"}
    config = write_config(tmp_path / "faxbridge.toml", settings)
    smtp_port = int(settings["smtp"]["listen"].rsplit(":", 1)[1])
    daemon = DaemonProcess(config, tmp_path / "daemon1.log").start()
    try:
        daemon.wait_ready()
        answers = mailkit.send(("127.0.0.1", smtp_port), "alice@example.com", ["15555551212@fax.local"],
                               mailkit.scanner(mailkit.pdf_bytes(tmp_path), message_id=True))
        assert answers[-1].code == 250
        wait_until(lambda: any(e.get("event") == "notify.retry" for e in daemon.events()), timeout=60,
                   what="the reply failing while the smarthost is down")
    finally:
        daemon.stop(signal.SIGKILL)
    (job,) = jobs_json(config)
    assert job["state"] == "delivered"
    sink.up()
    try:
        again = DaemonProcess(config, tmp_path / "daemon2.log").start()
        try:
            again.wait_ready()
            wait_until(lambda: any(e.get("event") == "notify.delivered" for e in again.events()), timeout=60,
                       what="the reply after the restart")
        finally:
            assert again.stop() == 0
        received = sink.received
    finally:
        sink.down()
    assert len(received) == 1
    assert received[0].message["X-Faxbridge-Job"] == job["id"]
    assert received[0].message["Subject"] == (
        "Re: Scanned from a Xerox Multifunction Printer - fax to +1 555-555-1212 delivered")
