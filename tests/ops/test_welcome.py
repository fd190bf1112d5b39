"""`faxbridge run` on a terminal: a short summary in words once ready (and only on a terminal)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from faxbridge import config
from faxbridge.welcome import ready_lines
from tests.conftest import free_port
from tests.support import base_settings, write_config


def test_the_defaults_in_words(tmp_path: Path) -> None:
    lines = ready_lines(config.defaults(tmp_path))
    assert lines == [
        "faxbridge is ready.",
        "  Faxes go to the built-in simulated fax network: nothing leaves this machine; numbers ending 0-5 are "
        "delivered, 6 busy then delivered, 7 no answer, 8 not a fax machine, 9 busy.",
        "  Mail:    send to NUMBER@fax.local (e.g. 15555551212@fax.local) through the SMTP server at "
        "127.0.0.1:2525",
        f"  Folder:  drop NUMBER.pdf into {tmp_path / 'var/outbox'}; NAME.result.json appears in "
        f"{tmp_path / 'var/results'}",
        "  Web:     http://127.0.0.1:8025/healthz (health) and /metrics; the provider's status reports come here too",
        "  Console: open http://127.0.0.1:8026/ in a browser (from this machine only)",
        "  Replies: off. To get a reply mail for each fax, set notify.smarthost = \"HOST:PORT\" "
        "(or FAXBRIDGE_NOTIFY_SMARTHOST)",
        "  See the queue with `faxbridge jobs`; stop with Ctrl-C.",
    ]
    assert not any("kv" in line or "token" in line for line in lines)


def test_a_console_on_every_address_is_named_by_one_a_browser_can_open(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    settings["console"] = {"enabled": True, "listen": "0.0.0.0:8026", "users_file": str(tmp_path / "users")}
    (tmp_path / "users").write_text("")
    lines = ready_lines(config.load(write_config(tmp_path / "faxbridge.toml", settings), {}))
    assert ("  Console: open http://127.0.0.1:8026/ here, or http://THIS-MACHINE:8026/ from elsewhere, in a "
            "browser (log in with a user of console.users_file)") in lines


def test_printed_on_a_terminal(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
    cfg = write_config(tmp_path / "faxbridge.toml", settings)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "faxbridge", "run", "-c", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"stop with Ctrl-C" not in seen and time.monotonic() < deadline:
            if not select.select([leader], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:          # the terminal closed: the daemon is gone
                break
            seen += chunk
        text = seen.decode(errors="replace")
        assert "faxbridge is ready." in text, text
        assert "send to NUMBER@fax.local" in text and "Replies: off." in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        os.close(leader)
