"""Contract section 9, the web server: bodies capped while they stream, forms parsed off the event
loop, partial requests dropped, malformed webhooks answered 4xx (never 500), and the simulator's
callback token a secret of its own. Real HTTP over raw sockets against the real daemon."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, base_settings, write_config

CHUNK = 64 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def web_daemon(tmp: Path, **webhook: Any) -> Iterator[tuple[DaemonProcess, str]]:
    """``faxbridge run`` (simulator provider, SMTP off) with its web server on a free port."""
    port = free_port()
    s = base_settings(tmp)
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
                    **webhook}
    proc = DaemonProcess(write_config(tmp / "faxbridge.toml", s), tmp / "daemon.log").start()
    try:
        proc.wait_ready()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    """The default body cap (1 MB), short header and read timeouts."""
    with web_daemon(tmp_path_factory.mktemp("web"), header_timeout="2s", read_timeout="2s") as running:
        yield running


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and whatever came (up to the close or a 60 s silence)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), data


def healthy(base: str) -> None:
    response = httpx.get(base + "/healthz", timeout=60)
    assert response.status_code == 200, response.text


def closed_without_answer(sock: socket.socket) -> bool:
    """True once the server has closed the connection without sending anything."""
    readable, _, _ = select.select([sock], [], [], 0.2)
    if not readable:
        return False
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    assert data == b"", data[:200]
    return True


# ---- finding 9: the body is capped while it streams ------------------------------------------------


def test_chunked_body_claiming_1gb_gets_413_while_streaming(daemon: tuple[DaemonProcess, str]) -> None:
    proc, base = daemon
    assert proc.proc is not None
    healthy(base)
    before = rss_kib(proc.proc.pid)
    sock = connect(base)
    sent = 0
    status = None
    try:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
        while sent < 256 * 1024 * 1024 and status is None:     # never the terminating 0-chunk
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                status, data = read_response(sock)
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
        if status is None:
            status, data = read_response(sock)
    finally:
        sock.close()
    assert status == 413, data[:300]
    assert b'{"result":"too large"}' in data
    assert 1_000_000 < sent < 64 * 1024 * 1024         # past the cap, and answered long before the end
    grown = (rss_kib(proc.proc.pid) - before) * 1024
    assert grown < 16 * 1024 * 1024, (grown, sent)     # not the body: at most the 1 MB cap and buffers
    healthy(base)


def test_declared_length_over_the_cap_is_refused_before_the_body(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as sock:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nfax=")
        status, data = read_response(sock)
    assert status == 413 and b"connection: close" in data.lower()
    healthy(base)


# ---- finding 9: forms are parsed off the event loop -----------------------------------------------


def test_healthz_answers_while_a_big_form_is_parsed(tmp_path: Path) -> None:
    """A 9 MB urlencoded field of %-escapes takes seconds to parse: /healthz is answered meanwhile,
    before the big post's own answer (on the event loop it would wait behind the parse)."""
    with web_daemon(tmp_path, max_body="20MB") as (_, base):
        big_form_and_healthz(base)


def big_form_and_healthz(base: str) -> None:
    body = b"fax=" + b"%41" * 3_000_000
    result: dict[str, Any] = {}
    sent = threading.Event()

    def post() -> None:
        with connect(base) as sock:
            sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % len(body))
            sock.sendall(body)
            sent.set()
            result["status"], _ = read_response(sock)
            result["at"] = time.monotonic()

    thread = threading.Thread(target=post)
    thread.start()
    answered: list[float] = []
    try:
        assert sent.wait(60)
        while "at" not in result:
            healthy(base)
            answered.append(time.monotonic())
    finally:
        thread.join(60)
    assert result["status"] == 403                     # parsed: a fax field that names no job
    assert [t for t in answered if t < result["at"]], "no /healthz answer while the form was parsed"
    healthy(base)


# ---- finding 9: partial requests are dropped --------------------------------------------------------


def test_slow_loris_headers_are_dropped_after_the_header_timeout(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as idle, connect(base) as slow:
        slow.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\n")
        sent_bytes = 0

        def dropped() -> bool:
            nonlocal sent_bytes
            if closed_without_answer(slow):
                return True
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                slow.sendall(b"X-Slow-%d: y\r\n" % sent_bytes)   # one header line at a time, never the end
                sent_bytes += 1
            return False

        wait_until(dropped, timeout=60, what="the slow request dropped")
        wait_until(lambda: closed_without_answer(idle), timeout=60, what="the silent connection dropped")
    assert sent_bytes >= 1                               # it was still sending when it was dropped
    healthy(base)


def test_a_stalled_body_is_dropped_after_the_read_timeout(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as sock:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nfax=")
        wait_until(lambda: closed_without_answer(sock), timeout=60, what="the stalled body dropped")
    healthy(base)
