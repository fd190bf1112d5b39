"""A daemon killed with SIGKILL leaves no process behind: the worker processes of its one engine (mail
intake and the folder watcher share it) end with it, without systemd's cgroup to clean up after them.
(They used to wait forever: each daemon crash left five processes and some 170 MB behind.)"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, base_settings, make_pdf, process_tree, running, write_config


def test_sigkill_of_the_daemon_takes_its_worker_processes_with_it(tmp_path: Path) -> None:
    smtp_port = free_port()
    s = base_settings(tmp_path)
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "cover_page": "never"}
    s["watch"] = [{"path": str(tmp_path / "outbox"), "results": str(tmp_path / "results"), "settle": "200ms"}]
    s["limits"] = {"worker_idle": "120s"}       # the workers stay while the test looks at them
    (tmp_path / "outbox").mkdir()
    config = write_config(tmp_path / "faxbridge.toml", s)
    pdf = make_pdf(tmp_path / "doc.pdf")
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        assert daemon.proc is not None
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "15555551212@fax.local", "x"
        msg.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename="doc.pdf")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.send_message(msg)                 # a worker is started for the mail
        (tmp_path / "outbox" / "15555551213.pdf").write_bytes(pdf.read_bytes())   # and used for the file
        wait_until(lambda: (tmp_path / "results" / "15555551213.result.json").exists(), timeout=60,
                   what="the file's result")
        tree = process_tree(daemon.proc.pid)
        assert len(tree) >= 2, tree                  # the daemon and its worker(s), kept by worker_idle
        daemon.kill()
        wait_until(lambda: not any(running(pid) for pid in tree), timeout=20,
                   what="every process of the killed daemon's tree gone")
    finally:
        daemon.stop()
