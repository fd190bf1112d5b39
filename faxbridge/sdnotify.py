"""The systemd notify protocol, spoken directly on ``$NOTIFY_SOCKET`` (no extra dependency).

A datagram of ``KEY=VALUE`` lines to the unix socket systemd names (``@name`` is an abstract
socket). ``READY=1`` once every listener serves, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``
while the daemon is healthy, ``STOPPING=1`` when shutdown begins, ``STATUS=`` free text.
Without ``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("faxbridge.sdnotify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_interval: float | None = None
        self._stopping = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram; False (logged once per failure) if it could not be sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            log.warning("sdnotify.failed", error=str(exc), message=lines[0] if lines else "")
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "stopping") -> bool:
        self._stopping = True  # no watchdog ping after STOPPING=1
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    async def watchdog(self, healthy: Callable[[], bool], stop: asyncio.Event) -> None:
        """Ping at half of WATCHDOG_USEC while ``healthy()``; an unhealthy daemon stops pinging
        so systemd restarts it."""
        if self.watchdog_interval is None or not self.enabled:
            return
        while not stop.is_set() and not self._stopping:
            if healthy():
                self.notify("WATCHDOG=1")
            else:
                log.warning("sdnotify.watchdog_skipped", reason="a component is not healthy")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.watchdog_interval)
