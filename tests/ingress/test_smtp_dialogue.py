"""The SMTP dialogue over real loopback: a real smtplib client, the real listener, a real store.

Every refusal of contract section 3 with its exact code and text, the size limit, the null sender,
the relay refusal, the hourly limit, several recipients, and the listener's life cycle.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import types
from pathlib import Path

import pytest

from faxbridge.ingress.smtp import replies
from faxbridge.ingress.smtp.replies import NO_CONTENT
from faxbridge.models import JobState
from tests.ingress import mailkit
from tests.ingress.mailkit import Answer, Dialogue, config_of, listening, smtp_settings


def lines(answers: list[Answer]) -> list[str]:
    return [a.line for a in answers]


async def test_ehlo_advertises_size_8bitmime_smtputf8_and_no_auth_without_users(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, max_message_size="2MB"))
    async with listening(cfg) as bench:
        def ehlo() -> tuple[int, bytes]:
            with smtplib.SMTP(*bench.address, local_hostname="client.test") as client:
                return client.ehlo()
        code, text = await asyncio.to_thread(ehlo)
    features = text.decode().splitlines()[1:]
    assert code == 250
    assert features == ["SIZE 2000000", "8BITMIME", "SMTPUTF8", "HELP"]


async def test_rcpt_refusals_with_the_contract_codes(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        def dialogue() -> list[Answer]:
            d = Dialogue(bench.address)
            try:
                return [d.mail("alice@example.com"), d.rcpt("15555551212@example.com"), d.rcpt("alice@fax.local"),
                        d.rcpt("12@fax.local"), d.rcpt("+442079460958@fax.local"), d.rcpt("19005551212@fax.local"),
                        d.rcpt("15555551212@fax.local"), d.data(mailkit.plain("one line"))]
            finally:
                d.close()
        answers = await asyncio.to_thread(dialogue)
        jobs = bench.store.jobs()
    assert lines(answers)[:7] == [
        "250 2.1.0 OK",
        "550 5.7.1 Relaying denied: this server only accepts mail for fax numbers at fax.local",
        "550 5.1.1 Bad fax number: this is not a fax number: use digits, with an optional leading + and the "
        "separators - . ( ) or space",
        "550 5.1.1 Bad fax number: this is not a usable fax number: it is too short",
        "550 5.7.1 Fax number not allowed: calls to GB are not allowed (numbers.allowed_countries: US, CA)",
        "550 5.7.1 Fax number not allowed: numbers starting 1900 are blocked (numbers.blocked_prefixes)",
        "250 2.1.5 OK",
    ]
    assert answers[7].line == f"250 2.0.0 Queued as job {jobs[0].id}"
    assert [(j.to, j.state, j.pages, j.sender) for j in jobs] == [
        ("+15555551212", JobState.QUEUED, 1, "alice@example.com")]


async def test_not_an_open_relay_whatever_the_sender(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, domains=["fax.example.com"]))
    async with listening(cfg) as bench:
        def relay() -> list[Answer]:
            d = Dialogue(bench.address)
            try:
                return [d.mail("postmaster@fax.example.com"), d.rcpt("victim@gmail.com"),
                        d.rcpt("15555551212@fax.local"), d.data(b"Subject: spam\r\n\r\nbuy\r\n")]
            finally:
                d.close()
        answers = await asyncio.to_thread(relay)
        assert bench.store.jobs() == []
    refusal = "550 5.7.1 Relaying denied: this server only accepts mail for fax numbers at fax.example.com"
    assert lines(answers) == ["250 2.1.0 OK", refusal, refusal, "503 Error: need RCPT command"]


async def test_client_outside_allowed_clients_refused_at_mail(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, allowed_clients=["10.0.0.0/8"]))
    async with listening(cfg) as bench:
        answers = await mailkit.asend(bench.address, "alice@example.com", ["15555551212@fax.local"],
                                      mailkit.plain("x"))
        assert bench.store.jobs() == []
    assert lines(answers) == [replies.CLIENT_DENIED, "503 Error: need MAIL command", "503 Error: need RCPT command"]
    assert replies.CLIENT_DENIED == "550 5.7.1 Client address not allowed to send faxes"


async def test_allowed_senders_with_wildcards(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, allowed_senders=["boss@example.org", "*@example.com"]))
    async with listening(cfg) as bench:
        def senders() -> list[Answer]:
            d = Dialogue(bench.address)
            try:
                out = [d.mail("mallory@evil.example")]
                d.client.rset()
                out.append(d.mail("<>"))
                d.client.rset()
                out.append(d.mail("Bob@Example.com"))
                d.client.rset()
                out.append(d.mail("boss@example.org"))
                return out
            finally:
                d.close()
        answers = await asyncio.to_thread(senders)
    assert lines(answers) == [replies.SENDER_DENIED, replies.SENDER_DENIED, "250 2.1.0 OK", "250 2.1.0 OK"]
    assert replies.SENDER_DENIED == "550 5.7.1 Sender address not allowed to send faxes"


async def test_hourly_limit_per_sender(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, {**smtp_settings(tmp_path), "limits": {"per_sender_per_hour": 2}})
    async with listening(cfg) as bench:
        first = await mailkit.asend(bench.address, "Alice@Example.com",
                                    ["15555551212@fax.local", "15555551213@fax.local", "15555551214@fax.local"],
                                    mailkit.plain("three numbers"))
        second = await mailkit.asend(bench.address, "alice@example.com", ["15555551215@fax.local"],
                                     mailkit.plain("again", message_id="<again@example.com>"))
        other = await mailkit.asend(bench.address, "bob@example.com", ["15555551215@fax.local"],
                                    mailkit.plain("bob", message_id="<bob@example.com>"))
        jobs = bench.store.jobs()
    limited = "451 4.7.1 Too many faxes from this sender in the last hour (limit 2): try again later"
    assert lines(first)[:4] == ["250 2.1.0 OK", "250 2.1.5 OK", "250 2.1.5 OK", limited]
    assert first[4].line.startswith("250 2.0.0 Queued as jobs ")
    assert lines(second)[:2] == ["250 2.1.0 OK", limited]
    assert other[-1].code == 250
    assert sorted((j.sender, j.to) for j in jobs) == [
        ("alice@example.com", "+15555551212"), ("alice@example.com", "+15555551213"),
        ("bob@example.com", "+15555551215")]


async def test_hourly_limit_holds_across_concurrent_sessions(tmp_path: Path) -> None:
    """Three sessions of one sender all pass RCPT before any sends DATA: the limit (2) still holds,
    the third message is refused at DATA with the same 451 4.7.1 and leaves no job."""
    cfg = config_of(tmp_path, {**smtp_settings(tmp_path), "limits": {"per_sender_per_hour": 2}})
    async with listening(cfg) as bench:
        def three_sessions() -> list[list[mailkit.Answer]]:
            sessions = [mailkit.Dialogue(bench.address) for _ in range(3)]
            try:
                heads = [[d.mail("alice@example.com"), d.rcpt(f"1555555121{i}@fax.local")]
                         for i, d in enumerate(sessions)]
                return [[*head, d.data(mailkit.plain(f"message {i}", message_id=f"<m{i}@example.com>"))]
                        for i, (head, d) in enumerate(zip(heads, sessions, strict=True))]
            finally:
                for d in sessions:
                    d.close()
        answers = await asyncio.to_thread(three_sessions)
        jobs = bench.store.jobs()
    limited = "451 4.7.1 Too many faxes from this sender in the last hour (limit 2): try again later"
    assert [lines(a)[:2] for a in answers] == [["250 2.1.0 OK", "250 2.1.5 OK"]] * 3
    assert [a[2].code for a in answers[:2]] == [250, 250]
    assert answers[2][2].line == limited
    assert sorted(j.to for j in jobs) == ["+15555551210", "+15555551211"]
    assert bench.listener.handler.in_flight == {}


async def test_several_recipients_one_job_each(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    async with listening(cfg) as bench:
        answers = await mailkit.asend(
            bench.address, "alice@example.com",
            ["15555551212@fax.local", "+1-555-555-1213@fax.local", "1.555.555.1212@fax.local"],
            mailkit.outlook(pdf))
        jobs = sorted(bench.store.jobs(), key=lambda j: j.to)
    assert lines(answers)[:4] == ["250 2.1.0 OK"] + ["250 2.1.5 OK"] * 3
    assert answers[4].line == f"250 2.0.0 Queued as jobs {', '.join(sorted(j.id for j in jobs))}" or \
        answers[4].line == f"250 2.0.0 Queued as jobs {', '.join(j.id for j in jobs)}"
    assert [(j.to, j.pages, j.document, j.options.header) for j in jobs] == [
        ("+15555551212", 3, "invoice.pdf", "Invoice 42"), ("+15555551213", 3, "invoice.pdf", "Invoice 42")]
    assert jobs[0].meta["recipient"] == "15555551212@fax.local"


async def test_size_limit_at_mail_and_after_data(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, max_message_size="10KB"))
    big = mailkit.plain("x" * 70 + "\r\n" + ("y" * 70 + "\r\n") * 200)
    async with listening(cfg) as bench:
        def dialogue() -> list[Answer]:
            d = Dialogue(bench.address)
            try:
                out = [d.mail("alice@example.com", ["SIZE=20000"])]
                out += [d.mail("alice@example.com", ["SIZE=5000"]), d.rcpt("15555551212@fax.local"), d.data(big)]
                out += [d.mail("alice@example.com"), d.rcpt("15555551212@fax.local"), d.data(mailkit.plain("small"))]
                return out
            finally:
                d.close()
        answers = await asyncio.to_thread(dialogue)
        jobs = bench.store.jobs()
    too_big = "552 5.3.4 Message too big: the limit is 10000 bytes"
    assert lines(answers)[:4] == [too_big, "250 2.1.0 OK", "250 2.1.5 OK", too_big]
    assert answers[6].line == f"250 2.0.0 Queued as job {jobs[0].id}"
    assert len(jobs) == 1


async def test_null_sender_accepted_and_no_reply_owed(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        answers = await mailkit.asend(bench.address, "<>", ["15555551212@fax.local"], mailkit.plain("bounce text"))
        jobs = bench.store.jobs()
    assert answers[0].line == "250 2.1.0 OK" and answers[-1].code == 250
    assert jobs[0].sender is None
    assert jobs[0].meta["no_reply"] == "the envelope sender is empty (a bounce)"


async def test_no_faxable_content(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path, cover_page="never"))
    async with listening(cfg) as bench:
        body_only = await mailkit.asend(bench.address, "alice@example.com", ["15555551212@fax.local"],
                                        mailkit.plain("only text, no cover page wanted"))
        empty = await mailkit.asend(bench.address, "alice@example.com", ["15555551212@fax.local"],
                                    b"Subject: nothing\r\n\r\n")
        assert bench.store.jobs() == []
    assert body_only[-1].line == NO_CONTENT == ("554 5.6.0 Nothing to fax: attach a PDF, TIFF, JPEG, PNG, GIF or "
                                                "text file, or write the text in the mail body")
    assert empty[-1].line == NO_CONTENT


async def test_stop_refuses_new_connections_and_healthy_follows(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        assert bench.listener.healthy()
        await bench.listener.stop()
        assert not bench.listener.healthy()

        def connect() -> None:
            with socket.create_connection(bench.address, timeout=5):
                pass
        try:
            await asyncio.to_thread(connect)
        except ConnectionRefusedError:
            refused = True
        else:
            refused = False
        assert refused


PATHS = [
    "<alice@example.com>", "<alice@example.com> SIZE=1000 BODY=8BITMIME", " <a.b+c@mail.example.org>",
    "<O'Brien@Example.COM>", "<15555551212+cover@fax.local>", "<x@localhost>",
    # the shapes the fast path leaves to aiosmtpd: each must come out as aiosmtpd reads it
    '<"john doe"@example.com>', "<a..b@example.com>", "<.a@example.com>", "<a.@example.com>",
    "<a@[192.0.2.1]>", "<@relay.example:a@example.com>", "alice@example.com", "<a@-bad.example>",
    "<a@example.com.>", "<a@b>rest", "<>", "<a@example.com", "< a@example.com >", "<a(comment)@example.com>",
    "<ä@example.com>", "\t<alice@example.com>", "<a@example.com> (a comment) SIZE=1", "<a@example.com>\t SIZE=1",
]


@pytest.mark.parametrize("arg", PATHS)
@pytest.mark.parametrize("limit", [0, 4])
def test_a_path_is_read_as_aiosmtpd_reads_it(arg: str, limit: int) -> None:
    """FaxSMTP._getaddr's fast path gives what aiosmtpd's own (the email header parser) gives."""
    from aiosmtpd.smtp import SMTP

    from faxbridge.ingress.smtp.protocol import _PLAIN_PATH, FaxSMTP

    if PATHS.index(arg) < 6:           # the common shapes: these are read by the fast path
        assert _PLAIN_PATH.match(arg) is not None
    session = types.SimpleNamespace(local_part_limit=limit)
    assert FaxSMTP._getaddr(session, arg) == SMTP._getaddr(session, arg)  # type: ignore[arg-type]


# ---- clients that pipeline (RFC 2920): the replies to a group go out together ----------------------


async def _client(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    assert (await reader.readline()).startswith(b"220 ")
    writer.write(b"EHLO client.test\r\n")
    await writer.drain()
    while not (line := await reader.readline()).startswith(b"250 "):
        assert line.startswith(b"250-")
    return reader, writer


async def _replies(reader: asyncio.StreamReader, count: int) -> tuple[list[bytes], int]:
    """``count`` reply lines, and how many reads of the socket brought them."""
    data, reads = b"", 0
    while data.count(b"\r\n") < count:
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        assert chunk, f"closed after {data!r}"
        data, reads = data + chunk, reads + 1
    return data.split(b"\r\n")[:count], reads


async def test_a_pipelined_group_is_answered_in_order_in_one_write(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        reader, writer = await _client(bench.address)
        writer.write(b"MAIL FROM:<scanner@office.example>\r\nRCPT TO:<15555551212@fax.local>\r\n"
                     b"RCPT TO:<15555551213@fax.local>\r\nDATA\r\n")
        replies_, reads = await _replies(reader, 4)
        assert [r[:3] for r in replies_] == [b"250", b"250", b"250", b"354"]
        assert reads == 1                    # held while the next command waited, then sent at once
        message = mailkit.scanner(mailkit.pdf_bytes(tmp_path)).replace(b"\n", b"\r\n")
        writer.write(message + b"\r\n.\r\nQUIT\r\n")
        replies_, _ = await _replies(reader, 2)
        assert replies_[0].startswith(b"250 ") and replies_[1].startswith(b"221 ")
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        assert sorted(j.to for j in bench.store.jobs()) == ["+15555551212", "+15555551213"]
        # a refusal in the group is answered in its place, and sends what was held with it
        reader, writer = await _client(bench.address)
        writer.write(b"MAIL FROM:<scanner@office.example>\r\nRCPT TO:<nobody@elsewhere.example>\r\n"
                     b"RCPT TO:<15555551212@fax.local>\r\nRSET\r\nQUIT\r\n")
        replies_, _ = await _replies(reader, 5)
        assert [r[:3] for r in replies_] == [b"250", b"550", b"250", b"250", b"221"]
        writer.close()


async def test_a_command_alone_is_answered_at_once(tmp_path: Path) -> None:
    """Nothing is held when no further command waits: a client that does not pipeline gets each reply."""
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        reader, writer = await _client(bench.address)
        for command in (b"MAIL FROM:<scanner@office.example>\r\n", b"RCPT TO:<15555551212@fax.local>\r\n",
                        b"NOOP\r\n", b"RSET\r\n"):
            writer.write(command)
            replies_, _ = await _replies(reader, 1)
            assert replies_[0].startswith(b"250 ")
        writer.close()


async def test_a_reply_is_not_held_behind_a_command_line_that_is_not_whole_yet(tmp_path: Path) -> None:
    """A bare LF does not end a command (the reader joins it with what follows): a reply is never
    held for it, so a client that sent one gets its reply without sending more."""
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        reader, writer = await _client(bench.address)
        writer.write(b"NOOP\r\nNOOP\n")
        replies_, _ = await _replies(reader, 1)
        assert replies_[0].startswith(b"250 ")
        writer.write(b"\r\n")                   # the joined line ends now: answered too
        replies_, _ = await _replies(reader, 1)
        assert replies_[0] == b"250 OK"
        writer.close()


async def test_a_flood_of_pipelined_commands_is_answered_whole_and_in_order(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        reader, writer = await _client(bench.address)
        writer.write(b"NOOP\r\n" * 200 + b"VRFY x\r\nNOOP\r\nQUIT\r\n")
        replies_, _ = await _replies(reader, 203)
        assert all(r.startswith(b"250 ") for r in replies_[:200])
        assert replies_[200][:3] == b"252" and replies_[201].startswith(b"250 ")
        assert replies_[202].startswith(b"221 ")
        writer.close()
        # and the listener goes on: the next client's mail is taken
        answers = await mailkit.asend(bench.address, "scanner@office.example", ["15555551212@fax.local"],
                                      mailkit.scanner(mailkit.pdf_bytes(tmp_path)))
        assert [a.code for a in answers] == [250, 250, 250]
