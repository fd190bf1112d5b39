"""Contract section 9, issue 11 finding 13: AUTH failures are throttled (421 4.7.0 and close after
``smtp.auth_max_failures`` on one connection; a growing delay and then a 454 4.7.0 lockout per client address
across connections) and every ``smtp.auth`` line names the client address; another address still logs in.
Finding 12: after AUTH, MAIL FROM must be one of the login's senders (550 5.7.1); replies go from the null
sender, and only to senders that passed the sender checks."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import structlog

from faxbridge.clock import FakeClock
from faxbridge.errors import ConfigError
from faxbridge.ingress.smtp.auth import read_users
from faxbridge.notify.mail import make_deliver
from faxbridge.notify.outbox import OutboxWorker
from faxbridge.store import open_store
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, listening, mail_sink
from tests.ingress.test_smtp_auth import PASSWORD, auth_settings
from tests.notify.test_mail_delivery import final_smtp_job
from tests.support import base_settings

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


# --- finding 12: the login's senders, and replies only to checked senders, from the null sender ----------


def mapped_users(folder: Path) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = folder / "users"
    path.write_text(f"scanner:{hashed}:scanner@office.example,*@branch.example\n"
                    f"alice@example.com:{hashed}\n"
                    f"printer:{hashed}\n")
    return path


def as_login(addr: tuple[str, int], user: str, senders: list[str]) -> list[tuple[int, bytes]]:
    """Log in as ``user``, then try MAIL FROM each sender (RSET between); the replies."""
    c = client(addr, "127.0.0.1")
    try:
        out = [c.docmd("AUTH", plain(user, PASSWORD))]
        for s in senders:
            out.append(c.mail(s))
            c.rset()
        return out
    finally:
        c.quit()


def denied(user: str) -> tuple[int, bytes]:
    return (550, f"5.7.1 Sender address not allowed for the login {user}: see its senders in smtp.users_file".encode())


async def test_after_auth_mail_from_must_be_one_of_the_logins_senders(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path, allowed_senders=["*@office.example"])
    settings["smtp"]["users_file"] = str(mapped_users(tmp_path))   # type: ignore[index]
    cfg = config_of(tmp_path, settings)
    ok_mail = (250, b"2.1.0 OK")
    async with listening(cfg) as bench:
        scanner = await asyncio.to_thread(as_login, bench.address, "scanner",
                                          ["mallory@evil.example", "boss@office.example", "desk@branch.example"])
        alice = await asyncio.to_thread(as_login, bench.address, "alice@example.com",
                                        ["bob@example.com", "alice@example.com"])
        printer = await asyncio.to_thread(as_login, bench.address, "printer",
                                          ["mallory@evil.example", "printer@office.example"])

        def send() -> dict[str, tuple[int, bytes]]:
            c = client(bench.address, "127.0.0.1")
            try:
                c.docmd("AUTH", plain("scanner", PASSWORD))
                return c.sendmail("desk@branch.example", ["15555551212@fax.local"],
                                  mailkit.scanner(mailkit.pdf_bytes(tmp_path), message_id=True))
            finally:
                c.quit()
        sent = await asyncio.to_thread(send)
        (job,) = bench.store.jobs()
    # an explicit list decides (allowed_senders does not widen or narrow it)
    assert scanner == [OK, denied("scanner"), denied("scanner"), ok_mail]
    # a login that is an address may send as itself only
    assert alice == [OK, denied("alice@example.com"), ok_mail]
    # any other login: as allowed_senders allows
    assert printer == [OK, denied("printer"), ok_mail]
    assert sent == {}
    assert (job.sender, job.meta["auth_user"], job.meta["sender_check"]) == ("desk@branch.example", "scanner", "login")


def test_a_bad_sender_list_in_users_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"scanner:{bcrypt.hashpw(b'x', bcrypt.gensalt(rounds=4)).decode()}:office.example\n")
    with pytest.raises(ConfigError) as caught:
        read_users(path)
    assert caught.value.problems == [
        f"smtp.users_file: {path} line 1: the senders of scanner: expected an address or *@domain, "
        "got 'office.example'"]


async def test_replies_go_from_the_null_sender_and_only_to_checked_senders(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await open_store(tmp_path / "var", "simulator")
    with mail_sink() as sink:
        settings = base_settings(tmp_path)
        settings["smtp"] = {"enabled": False, "allowed_senders": ["*@example.com"]}
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}", "from_address": "fax@fax.local"}
        cfg = config_of(tmp_path, settings)
        checked = await final_smtp_job(store, clock, sender="alice@example.com", sender_check="any")
        old_ok = await final_smtp_job(store, clock, sender="bob@example.com")           # stored before the check
        old_bad = await final_smtp_job(store, clock, sender="victim@elsewhere.example")  # fails allowed_senders
        unchecked = await final_smtp_job(store, clock, sender="carol@example.com", sender_check="")
        worker = OutboxWorker(store, clock, "mail", make_deliver(cfg, clock))
        with structlog.testing.capture_logs() as logs:
            assert await worker.run_once() == 4
        received = sink.received
    await store.close()
    assert sorted((r.mail_from, tuple(r.rcpt_tos), r.message["X-Faxbridge-Job"]) for r in received) == sorted([
        ("<>", ("alice@example.com",), checked), ("<>", ("bob@example.com",), old_ok)])
    assert {e["job_id"]: e["why"] for e in logs if e["event"] == "notify.mail_suppressed"} == {
        old_bad: "the sender did not pass the sender checks when the mail came in",
        unchecked: "the sender did not pass the sender checks when the mail came in"}
