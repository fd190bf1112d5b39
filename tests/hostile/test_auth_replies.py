"""Contract section 9, issue 11 finding 13: AUTH failures are throttled (421 4.7.0 and close after
``smtp.auth_max_failures`` on one connection; a growing delay and then a 454 4.7.0 lockout per client address
across connections) and every ``smtp.auth`` line names the client address; another address still logs in."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from pathlib import Path
from typing import Any

import structlog

from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, listening
from tests.ingress.test_smtp_auth import PASSWORD, auth_settings

INVALID = (535, b"5.7.8 Authentication credentials invalid")
CLOSED = (421, b"4.7.0 Too many failed AUTH attempts on this connection: closing it")
LOCKED = (454, b"4.7.0 Too many failed AUTH attempts from your address: try again in 15 minutes")
OK = (235, b"2.7.0 Authentication successful")


def plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def client(addr: tuple[str, int], source: str) -> smtplib.SMTP:
    c = smtplib.SMTP(addr[0], addr[1], local_hostname="client.test", timeout=30, source_address=(source, 0))
    c.ehlo()
    return c


def tries(addr: tuple[str, int], source: str, passwords: list[str]) -> list[tuple[int, bytes]]:
    """One connection, one AUTH PLAIN per password; the replies (the server may close the connection)."""
    c = client(addr, source)
    out: list[tuple[int, bytes]] = []
    try:
        for password in passwords:
            out.append(c.docmd("AUTH", plain("scanner", password)))
            if out[-1][0] == 421:
                try:
                    c.noop()
                except smtplib.SMTPServerDisconnected:
                    out.append((-1, b"closed"))
                break
    finally:
        c.close()
    return out


def login_and_send(addr: tuple[str, int], source: str, tmp: Path) -> tuple[Any, Any]:
    c = client(addr, source)
    try:
        got = c.docmd("AUTH", plain("scanner", PASSWORD))
        sent = c.sendmail("scanner@office.example", ["15555551212@fax.local"],
                          mailkit.scanner(mailkit.pdf_bytes(tmp), message_id=True))
        return got, sent
    finally:
        c.quit()


async def test_three_failures_on_one_connection_close_it(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, auth_settings(tmp_path))
    async with listening(cfg) as bench:
        with structlog.testing.capture_logs() as logs:
            replies = await asyncio.to_thread(tries, bench.address, "127.0.0.1", ["wrong1", "wrong2", "wrong3"])
            good = await asyncio.to_thread(login_and_send, bench.address, "127.0.0.2", tmp_path)
        jobs = bench.store.jobs()
    assert replies == [INVALID, INVALID, CLOSED, (-1, b"closed")]
    assert good == (OK, {})
    assert len(jobs) == 1 and jobs[0].meta["auth_user"] == "scanner"
    lines = [(e["user"], e["ok"], e["peer"], e.get("answer_in_s")) for e in logs if e["event"] == "smtp.auth"]
    # each failure from 127.0.0.1 is answered later than the one before; 127.0.0.2 has its own count
    assert lines == [("scanner", False, "127.0.0.1", 0.0), ("scanner", False, "127.0.0.1", 0.5),
                     ("scanner", False, "127.0.0.1", 1.0), ("scanner", True, "127.0.0.2", None)]
    assert PASSWORD not in repr(logs)


async def test_an_address_with_too_many_failures_is_locked_out_across_connections(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, auth_settings(tmp_path, auth_lockout_failures=4))
    async with listening(cfg) as bench:
        with structlog.testing.capture_logs() as logs:
            first = await asyncio.to_thread(tries, bench.address, "127.0.0.1", ["w1", "w2", "w3"])
            second = await asyncio.to_thread(tries, bench.address, "127.0.0.1", ["w4", PASSWORD, PASSWORD])
            good = await asyncio.to_thread(login_and_send, bench.address, "127.0.0.2", tmp_path)
        jobs = bench.store.jobs()
    assert first == [INVALID, INVALID, CLOSED, (-1, b"closed")]
    # the fourth failure locks the address: even the right password is not checked now
    assert second == [INVALID, LOCKED, LOCKED]
    assert good == (OK, {})
    assert len(jobs) == 1
    auth = [(e["ok"], e["peer"]) for e in logs if e["event"] == "smtp.auth"]
    assert auth == [(False, "127.0.0.1")] * 4 + [(True, "127.0.0.2")]
    assert [e["peer"] for e in logs if e["event"] == "smtp.auth_locked"] == ["127.0.0.1", "127.0.0.1"]
