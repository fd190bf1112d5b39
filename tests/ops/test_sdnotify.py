"""The systemd notify protocol against a real unix datagram socket set as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faxbridge.sdnotify import Notifier
from tests.support import DaemonProcess, base_settings, write_config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield sock, path
    sock.close()


def read_messages(sock: socket.socket, until: float) -> list[str]:
    out = []
    while time.monotonic() < until:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_notifier_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.watchdog_interval == 1.5
    assert n.ready("serving")
    msg = sock.recv(4096).decode().split("\n")
    assert msg[0] == "READY=1" and "STATUS=serving" in msg and f"MAINPID={os.getpid()}" in msg
    assert n.stopping()
    assert sock.recv(4096).decode().startswith("STOPPING=1")


def test_abstract_socket_address() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"faxbridge-test-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("STATUS=hello")
        assert sock.recv(100) == b"STATUS=hello"
    finally:
        sock.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None and not n.ready()
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None


async def test_watchdog_pings_only_while_healthy(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    stop = asyncio.Event()
    healthy = True
    task = asyncio.create_task(n.watchdog(lambda: healthy, stop))
    got = await asyncio.to_thread(read_messages, sock, time.monotonic() + 0.3)
    assert got.count("WATCHDOG=1") >= 3
    healthy = False
    await asyncio.to_thread(read_messages, sock, time.monotonic() + 0.1)  # drain what was in flight
    assert await asyncio.to_thread(read_messages, sock, time.monotonic() + 0.2) == []
    stop.set()
    await task


def test_daemon_ready_watchdog_stopping_in_order(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    config = write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))
    daemon = DaemonProcess(config, tmp_path / "daemon.log",
                           env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}).start()
    daemon.wait_ready()
    got = read_messages(sock, time.monotonic() + 0.6)
    assert daemon.stop(signal.SIGTERM) == 0
    got += read_messages(sock, time.monotonic() + 0.3)
    kinds = [m.split("\n")[0] for m in got]
    assert kinds[0] == "READY=1", kinds
    assert kinds.count("WATCHDOG=1") >= 2
    assert kinds[-1] == "STOPPING=1"
    assert kinds.index("STOPPING=1") > max(i for i, k in enumerate(kinds) if k == "WATCHDOG=1")
