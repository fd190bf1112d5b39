"""Contract section 9, issue 11 finding 1: control characters in envelope addresses are refused at MAIL
(501 5.1.7) or RCPT (501 5.1.3); and one reply-mail row that cannot be composed never stops the notifier:
it is given up with its reason (visible in ``faxbridge job ID``), the other replies go out, and the daemon
starts again without meeting that row a second time."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbridge.clock import FakeClock
from faxbridge.models import Job, JobEvent
from faxbridge.notify.outbox import OutboxWorker
from faxbridge.store import OutboxItem, open_store
from tests.conftest import async_wait_until
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, listening, mail_sink, running, smtp_settings
from tests.notify.test_mail_delivery import final_smtp_job
from tests.support import cli, write_config


class RawClient:
    """An SMTP client on a bare socket: it sends the bytes it is given (smtplib would refuse CR/LF)."""

    def __init__(self, addr: tuple[str, int], source: str | None = None) -> None:
        self.sock = socket.create_connection(addr, timeout=30, source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.reply()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server; got so far: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """One whole reply (its last line for a multi-line one)."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line.decode("utf-8", "replace")

    def command(self, raw: bytes) -> str:
        self.sock.sendall(raw + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


# Each is put in the middle of an address's local part.
CONTROLS = {
    "CR": "\r", "LF": "\n", "NUL": "\x00", "TAB": "\t", "ESC": "\x1b", "VT": "\x0b", "FF": "\x0c",
    "FS": "\x1c", "DEL": "\x7f", "NEL": "\x85", "C1-CSI": "\x9b", "LSEP": "\u2028", "PSEP": "\u2029",
}


@pytest.mark.parametrize("char", list(CONTROLS.values()), ids=list(CONTROLS))
async def test_control_character_in_mail_from_and_rcpt_to_is_refused(tmp_path: Path, char: str) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        def dialogue() -> tuple[str, str, str, str]:
            c = RawClient(bench.address)
            try:
                c.command(b"EHLO client.test")
                bad_from = c.command(f"MAIL FROM:<ali{char}ce@example.com>".encode())
                good_from = c.command(b"MAIL FROM:<alice@example.com>")
                bad_to = c.command(f"RCPT TO:<1555555{char}1212@fax.local>".encode())
                good_to = c.command(b"RCPT TO:<15555551212@fax.local>")
                return bad_from, good_from, bad_to, good_to
            finally:
                c.close()


        bad_from, good_from, bad_to, good_to = await asyncio.to_thread(dialogue)
        assert bad_from == "501 5.1.7 Bad sender address syntax: a control character is not allowed in an address"
        assert good_from == "250 2.1.0 OK"
        assert bad_to == "501 5.1.3 Bad recipient address syntax: a control character is not allowed in an address"
        assert good_to == "250 2.1.5 OK"
        # a good mail still goes through afterwards
        answers = await mailkit.asend(bench.address, "alice@example.com", ["15555551212@fax.local"],
                                      mailkit.plain("hello"))
        assert answers[-1].code == 250, answers
        (job,) = bench.store.jobs()
        assert job.sender == "alice@example.com"


async def test_null_sender_with_control_character_and_bytes_not_utf8(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        def dialogue() -> list[str]:
            c = RawClient(bench.address)
            try:
                c.command(b"EHLO client.test")
                return [c.command(b"MAIL FROM:<>\x0bSIZE=10"),
                        c.command(b"MAIL FROM:<al\xffice@example.com>"),
                        c.command(b"MAIL FROM:<alice@example.com>"),
                        c.command(b"RCPT TO:<15555551212@fax\xc2\x85.local>")]
            finally:
                c.close()


        answers = await asyncio.to_thread(dialogue)
    assert answers == [
        "501 5.1.7 Bad sender address syntax: a control character is not allowed in an address",
        "501 5.1.7 Bad sender address syntax: a byte that is not UTF-8 is not allowed in an address",
        "250 2.1.0 OK",
        "501 5.1.3 Bad recipient address syntax: a control character is not allowed in an address",
    ]


async def test_poisoned_reply_rows_are_given_up_and_the_others_go_out_also_after_a_restart(tmp_path: Path) -> None:
    with mail_sink() as sink:
        settings = smtp_settings(tmp_path)
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}", "from_address": "fax@fax.local"}
        config = write_config(tmp_path / "faxbridge.toml", settings)
        cfg = config_of(tmp_path, settings)
        # Rows as an older faxbridge stored them: a sender with a bare CR (MAIL took it then), and a
        # row whose stored data makes composing the reply raise (a list that is not one).
        store = await open_store(cfg.state_dir, "simulator")
        clock = FakeClock(datetime.now(UTC))
        bad_sender = await final_smtp_job(store, clock, sender="eve\r@example.com")
        bad_header = await final_smtp_job(store, clock, skipped=5)
        await store.close()
        async with running(cfg) as daemon:
            answers = await mailkit.asend(mailkit.address(daemon), "alice@example.com", ["15555551212@fax.local"],
                                          mailkit.plain("good one"))
            assert answers[-1].code == 250, answers
            await async_wait_until(lambda: len(sink.received) >= 1, timeout=60, what="the good job's reply")
            running_store = daemon.store
            assert running_store is not None

            async def drained() -> bool:
                return await running_store.outbox_backlog() == 0
            await async_wait_until(drained, timeout=30, what="outbox drained")
            assert daemon.healthy()
            events = {j: await running_store.events(j) for j in (bad_sender, bad_header)}
        (reply,) = sink.received
        assert reply.rcpt_tos == ["alice@example.com"] and reply.mail_from == "<>"
        assert reply.message["X-Faxbridge-State"] == "delivered"
        given_up = {j: [e.reason for e in ev if e.event == "notify.given_up"] for j, ev in events.items()}
        assert given_up == {
            bad_sender: ["mail notification given up: undeliverable: the sender address cannot receive a reply: "
                         "it holds a control character"],
            bad_header: ["mail notification given up: undeliverable: internal error: TypeError: "
                         "'int' object is not iterable"],
        }
        shown = cli("job", bad_header, config=config)
        assert shown.returncode == 0, shown.stderr
        assert "notify.given_up  mail notification given up: undeliverable: internal error: TypeError" in shown.stdout
        # A restart: the given-up rows are not met again, and a new good job still gets its reply.
        async with running(cfg) as daemon:
            answers = await mailkit.asend(mailkit.address(daemon), "bob@example.com", ["15555551212@fax.local"],
                                          mailkit.plain("good two"))
            assert answers[-1].code == 250, answers
            await async_wait_until(lambda: len(sink.received) >= 2, timeout=60, what="the second reply")
            assert daemon.healthy()
            assert daemon.store is not None
            assert [e.event for e in await daemon.store.events(bad_sender)].count("notify.given_up") == 1
        assert [r.rcpt_tos for r in sink.received] == [["alice@example.com"], ["bob@example.com"]]


# --- finding 12: the hourly limit counts per client address too (a sender can be forged) --------------------


def send_from(addr: tuple[str, int], source: str, sender: str, n: int) -> list[tuple[int, bytes]]:
    client = smtplib.SMTP(addr[0], addr[1], local_hostname="client.test", timeout=30, source_address=(source, 0))
    try:
        client.ehlo()
        answers = [client.mail(sender), client.rcpt("15555551212@fax.local")]
        if answers[-1][0] == 250:
            answers.append(client.data(mailkit.plain(f"mail {n}", sender=sender, message_id=f"<m{n}@example.com>")))
        return answers
    finally:
        client.quit()


async def test_the_hourly_limit_counts_per_client_address_too(tmp_path: Path) -> None:
    settings = smtp_settings(tmp_path)
    settings["limits"] = {"per_sender_per_hour": 60, "per_client_per_hour": 2}
    cfg = config_of(tmp_path, settings)
    async with listening(cfg) as bench:
        mails = [("127.0.0.1", "a@example.com"), ("127.0.0.1", "b@example.com"),
                 ("127.0.0.1", "c@example.com"), ("127.0.0.2", "c@example.com")]
        answers = [await asyncio.to_thread(send_from, bench.address, source, sender, n)
                   for n, (source, sender) in enumerate(mails)]
        jobs = bench.store.jobs()
    assert [a[-1][0] for a in answers] == [250, 250, 451, 250]
    assert answers[2][-1] == (451, b"4.7.1 Too many faxes from this client address in the last hour (limit 2): "
                                   b"try again later")
    assert sorted((j.sender, j.meta["peer"]) for j in jobs) == [
        ("a@example.com", "127.0.0.1"), ("b@example.com", "127.0.0.1"), ("c@example.com", "127.0.0.2")]


async def test_an_outbox_round_that_still_raises_is_restarted_and_reported_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The net under the per-row handling: the worker's loop runs in a loops.Supervisor."""
    clock = FakeClock(datetime.now(UTC))
    store = await open_store(tmp_path / "var", "simulator")
    job_id = await final_smtp_job(store, clock, sender_check="any")
    delivered: list[str] = []

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> None:
        delivered.append(job.id)

    real = store.outbox_due
    calls = 0

    async def outbox_due(now: datetime, kinds: Sequence[str], limit: int = 100) -> list[OutboxItem]:
        nonlocal calls
        calls += 1
        if calls == 1:                      # a fault outside any row (injected into the store)
            raise RuntimeError("a bug outside any row")
        return await real(now, kinds, limit)

    monkeypatch.setattr(store, "outbox_due", outbox_due)
    worker = OutboxWorker(store, clock, "mail", deliver, interval=0.05)
    await worker.start()
    try:
        await async_wait_until(lambda: not worker.healthy(), timeout=30, what="the worker reported down")
        await async_wait_until(lambda: delivered == [job_id], timeout=30, what="the row delivered after the restart")
        assert worker.healthy()
        assert (worker.supervisor.restarts, worker.supervisor.last_error) == (1, "RuntimeError: a bug outside any row")
    finally:
        await worker.close(5.0)
        await store.close()
    assert worker.delivered == 1
