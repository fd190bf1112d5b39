"""Signals on the real daemon: SIGHUP reloads live settings; SIGTERM during a burst loses nothing."""

from __future__ import annotations

import json
import signal
import smtplib
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config


def settings(tmp_path: Path, smtp_port: int, senders: list[str]) -> dict[str, Any]:
    s = base_settings(tmp_path)
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "allowed_senders": senders}
    return s


def rcpt_reply(port: int, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        code, _ = client.mail(sender)
        if code != 250:
            return code, b""
        return client.rcpt("15555551212@fax.local")


def test_sighup_changes_allowed_senders_without_a_restart(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "faxbridge.toml", settings(tmp_path, port, ["alice@example.com"]))
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        assert rcpt_reply(port, "alice@example.com")[0] == 250
        assert rcpt_reply(port, "bob@example.com")[0] == 550
        s = settings(tmp_path, port, ["*@example.com"])
        s["provider"]["poll_interval"] = "5s"          # needs a restart: reported, not applied
        write_config(config, s)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = wait_until(lambda: [e for e in daemon.events() if e.get("event") == "config.reloaded"],
                              timeout=30, what="config.reloaded")
        assert reloaded[0]["applied"] == ["smtp.allowed_senders"]
        [skipped] = [e for e in daemon.events() if e.get("event") == "config.not_reloaded"]
        assert skipped["keys"] == ["provider.poll_interval"]
        assert rcpt_reply(port, "bob@example.com")[0] == 250
        assert rcpt_reply(port, "mallory@evil.example")[0] == 550
        assert daemon.proc.poll() is None  # the same process, still serving
        # a broken file is refused and the daemon runs on
        config.write_text("[smtp]\nlisn = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e.get("event") == "config.reload_failed" for e in daemon.events()),
                   timeout=30, what="config.reload_failed")
        assert rcpt_reply(port, "bob@example.com")[0] == 250
    finally:
        assert daemon.stop() == 0


def test_sigterm_during_a_burst_loses_nothing(tmp_path: Path) -> None:
    sim = SimProcess(free_port(), tmp_path / "sim.log").start()
    try:
        port = free_port()
        s = settings(tmp_path, port, [])
        s["provider"].update(sim.phaxio_settings())
        config = write_config(tmp_path / "faxbridge.toml", s)
        doc = make_pdf(tmp_path / "a.pdf").read_bytes()
        daemon = DaemonProcess(config, tmp_path / "d1.log").start()
        daemon.wait_ready()
        accepted: list[str] = []
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for n in range(15):
                msg = EmailMessage()
                msg["From"] = "alice@example.com"
                msg["To"] = f"1555555121{n % 6}@fax.local"
                msg["Subject"] = f"burst {n}"
                msg["Message-ID"] = f"<burst-{n}@example.com>"
                msg.add_attachment(doc, maintype="application", subtype="pdf", filename=f"b{n}.pdf")
                client.send_message(msg)
                accepted.append(msg["Message-ID"])
                if n == 7:
                    assert daemon.proc is not None
                    daemon.proc.send_signal(signal.SIGTERM)  # mid-burst: the listener closes...
                    break
        assert daemon.stop() == 0                            # ...work in hand finishes, exit 0
        assert any(e.get("event") == "daemon.stopped" for e in daemon.events())
        daemon = DaemonProcess(config, tmp_path / "d2.log").start()
        daemon.wait_ready()

        def jobs() -> list[dict[str, Any]]:
            r = cli("jobs", "--json", config=config)
            return [json.loads(line) for line in r.stdout.splitlines()]

        try:
            wait_until(lambda: len(jobs()) == len(accepted) and all(j["final"] for j in jobs()), timeout=60,
                       interval=0.2, what="every accepted mail final")
        finally:
            assert daemon.stop() == 0
        assert {j["state"] for j in jobs()} == {"delivered"}
        counts = Counter(x["job_tag"] for x in sim.sends())
        assert sorted(counts[j["id"]] for j in jobs()) == [1] * len(accepted)
    finally:
        sim.stop()
