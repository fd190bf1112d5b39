"""Contract section 9, issue 11 finding 10: session caps (421 4.7.0 at connect, naming the cap), a per-read
timeout (an idle client is dropped with 421 4.4.2, a slow one that keeps sending is not), and per-connection
log lines within a budget. Real sockets against the real listener."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from faxbridge.store import new_job_id
from tests.conftest import async_wait_until
from tests.hostile.test_envelope import RawClient
from tests.ingress import mailkit
from tests.ingress.mailkit import Bench, config_of, listening, smtp_settings

PER_CLIENT = ("421 4.7.0 Too many SMTP sessions from your address (smtp.max_sessions_per_client = 3): "
              "try again later")
TOTAL = "421 4.7.0 Too many SMTP sessions at once (smtp.max_sessions = 5): try again later"
TIMED_OUT = "421 4.4.2 Timeout: nothing received for 2 seconds (smtp.timeout), closing the connection"


def connect(addr: tuple[str, int], source: str = "127.0.0.1") -> RawClient:
    return RawClient(addr, source)


def refused(addr: tuple[str, int], source: str = "127.0.0.1") -> tuple[str, bytes]:
    """Connect; the one reply line, and what follows it before the server closes (nothing)."""
    client = connect(addr, source)
    try:
        rest = client.buf
        while chunk := client.sock.recv(4096):
            rest += chunk
        return client.greeting, rest
    finally:
        client.close()


@asynccontextmanager
async def sessions(addr: tuple[str, int], *sources: str) -> AsyncIterator[list[RawClient]]:
    """Sessions held open (connected from a thread: the listener runs on this test's event loop)."""
    clients = []
    try:
        for source in sources:
            clients.append(await asyncio.to_thread(connect, addr, source))
        yield clients
    finally:
        for c in clients:
            c.close()


async def closed_all(bench: Bench) -> None:
    await async_wait_until(lambda: bench.listener.handler.sessions.open == 0, timeout=30, what="sessions closed")


async def good_mail(bench: Bench, source: str = "127.0.0.1") -> None:
    def send() -> list[str]:
        c = connect(bench.address, source)
        try:
            answers = [c.command(b"EHLO client.test"), c.command(b"MAIL FROM:<alice@example.com>"),
                       c.command(b"RCPT TO:<15555551212@fax.local>"), c.command(b"DATA")]
            c.sock.sendall(mailkit.plain("still works", message_id=f"<{new_job_id()}@example.com>") + b"\r\n.\r\n")
            answers.append(c.reply())
            c.command(b"QUIT")
            return answers
        finally:
            c.close()

    answers = await asyncio.to_thread(send)
    assert answers[:4] == ["250 HELP", "250 2.1.0 OK", "250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>"]
    assert answers[4].startswith("250 2.0.0 Queued as job"), answers


async def test_sessions_over_a_cap_get_421_naming_it_and_good_mail_goes_on(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, max_sessions=5, max_sessions_per_client=3))
    async with listening(cfg) as bench:
        addr = bench.address
        async with sessions(addr, "127.0.0.1", "127.0.0.1", "127.0.0.1") as open_now:
            assert {c.greeting[:4] for c in open_now} == {"220 "}
            assert await asyncio.to_thread(refused, addr) == (PER_CLIENT, b"")
            # another address is not over its own cap
            async with sessions(addr, "127.0.0.2", "127.0.0.2") as more:
                assert {c.greeting[:4] for c in more} == {"220 "}
                assert await asyncio.to_thread(refused, addr, "127.0.0.3") == (TOTAL, b"")
            await async_wait_until(lambda: bench.listener.handler.sessions.open == 3, timeout=30,
                                   what="the two sessions of 127.0.0.2 closed")
            await good_mail(bench, "127.0.0.2")
        await closed_all(bench)
        await good_mail(bench)
        assert len(bench.store.jobs()) == 2


async def test_an_idle_client_is_dropped_after_the_timeout(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, timeout="2s"))
    async with listening(cfg) as bench:
        def idle(after_ehlo: bool) -> tuple[str, bytes]:
            c = RawClient(bench.address)
            try:
                if after_ehlo:
                    assert c.command(b"EHLO client.test") == "250 HELP"
                    c.sock.sendall(b"MAIL FROM:<alice@exa")        # half a command, then silence
                line = c.reply()
                rest = c.buf
                while chunk := c.sock.recv(4096):
                    rest += chunk
                return line, rest
            finally:
                c.close()

        assert await asyncio.to_thread(idle, False) == (TIMED_OUT, b"")
        assert await asyncio.to_thread(idle, True) == (TIMED_OUT, b"")
        await closed_all(bench)
        await good_mail(bench)


async def test_a_slow_client_that_keeps_sending_is_not_cut(tmp_path: Path) -> None:
    """One byte-group every 0.3 s for three times the timeout (2 s): the timeout runs per read."""
    cfg = config_of(tmp_path, smtp_settings(tmp_path, timeout="2s"))
    message = mailkit.plain("slow but steady " * 4)
    async with listening(cfg) as bench:
        def slow() -> tuple[list[str], float]:
            c = RawClient(bench.address)
            try:
                answers = [c.command(b"EHLO client.test")]
                for byte in b"MAIL FROM:<alice@example.com>\r\n":   # a command line, slowly, too
                    c.sock.sendall(bytes([byte]))
                    time.sleep(0.1)
                answers.append(c.reply())
                answers += [c.command(b"RCPT TO:<15555551212@fax.local>"), c.command(b"DATA")]
                started = time.monotonic()
                cut = max(1, len(message) // 20)
                for i in range(0, len(message), cut):
                    c.sock.sendall(message[i:i + cut])
                    time.sleep(0.3)
                c.sock.sendall(b"\r\n.\r\n")
                answers.append(c.reply())
                return answers, time.monotonic() - started
            finally:
                c.close()

        answers, took = await asyncio.to_thread(slow)
        assert answers[:4] == ["250 HELP", "250 2.1.0 OK", "250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>"]
        assert answers[4].startswith("250 2.0.0 Queued as job"), answers
        assert took > 4.0           # the upload really lasted longer than the timeout (not a timing bound)
        (job,) = bench.store.jobs()
        assert job.sender == "alice@example.com"


async def test_a_flood_of_refused_connections_is_no_flood_of_log_lines(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, max_sessions_per_client=1))
    async with listening(cfg) as bench:
        with structlog.testing.capture_logs() as logs:
            async with sessions(bench.address, "127.0.0.1"):
                replies = [await asyncio.to_thread(refused, bench.address) for _ in range(200)]
        assert {r for r, _ in replies} == {"421 4.7.0 Too many SMTP sessions from your address "
                                           "(smtp.max_sessions_per_client = 1): try again later"}
        lines = [e for e in logs if e["event"] == "smtp.session_refused"]
        assert 1 <= len(lines) <= 60, len(lines)       # a burst of 20 per 10 s, not one per connection
        assert lines[0]["peer"] == "127.0.0.1"
        await closed_all(bench)
        await good_mail(bench)


async def test_accept_errors_are_logged_within_a_budget(tmp_path: Path) -> None:
    """Out of file descriptors, asyncio reports each failed accept() through the loop's exception
    handler (the "asyncio" logger); with the listener up, those lines stay within a budget."""
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    async with listening(cfg) as bench:
        keep = Keep()
        logger = logging.getLogger("asyncio")
        logger.addHandler(keep)
        try:
            loop = asyncio.get_running_loop()
            for _ in range(1000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
        finally:
            logger.removeHandler(keep)
        await good_mail(bench)
    assert 1 <= len(seen) <= 40, len(seen)
    assert seen[0].startswith("socket.accept() out of system resource")
