"""aiosmtpd's SMTP protocol as faxbridge speaks it (the hooks are ``smtp.FaxHandler``).

:class:`FaxSMTP` is aiosmtpd's ``SMTP`` protocol with five changes: the size limit is answered
with the contract's 552 5.3.4 (at MAIL for a SIZE parameter, after DATA otherwise); the null
sender ``MAIL FROM:<>`` is accepted (RFC 5321 requires it; aiosmtpd refuses it); DATA is read in
large chunks (``readuntil(b".\\r\\n")``, the dot found by ``memchr``) instead of line by line,
which is what limits aiosmtpd's throughput for mail with attachments; a big message goes to a
file as it arrives (``stream``) instead of into memory; and the replies to a client that pipelines
(sends its next commands before the replies, as RFC 2920 allows) go out together, one write for
the group (:meth:`FaxSMTP.push`). Lines are not limited to 1000 octets here: clients that send
longer lines are common, and nothing downstream needs the limit.

A command line ends with CRLF only (RFC 5321 section 2.3.8): a bare LF inside a command is part of
the line (:class:`_CommandReader`), so ``MAIL FROM:<a\nb@example.com>`` is one command, refused
501 5.1.7 for its control character like a bare CR, NUL or U+2028 (``policy.address_problem``).

Connections (contract section 9): a session over ``smtp.max_sessions`` or
``smtp.max_sessions_per_client`` is answered 421 4.7.0 as it connects and closed
(``limits.SessionCaps``); ``smtp.timeout`` runs per read: every byte that arrives starts it
again, so a slow upload that keeps sending is never cut, and a client that sends nothing for that
long is answered 421 4.4.2 and dropped. While the server itself works on a command (DATA being
turned into jobs, a password being checked) the client is not expected to send: no timeout then.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, AnyStr, cast

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope

from faxbridge import crashpoints
from faxbridge.ingress.smtp import policy, replies
from faxbridge.ingress.smtp import stream as smtp_stream

if TYPE_CHECKING:
    from faxbridge.ingress.smtp.listener import FaxHandler

log = structlog.get_logger("faxbridge.smtp")

NULL_SENDER = "<>"
DATA_CHUNK_LIMIT = 1 << 20     # StreamReader limit while reading DATA: up to 1 MiB per read


SPOOL_OVER = 4 << 20           # a message bigger than this goes to a file as it arrives, not to memory
HOLD_MAX = 32                  # replies to pipelined commands held at most (then sent: push)
COMMAND_MAX = 64 << 10         # a command line joined across bare LFs stops growing here (then: 500 too long)


DATA_SEPARATOR = b".\r\n"


def find_dot_line_end(buf: bytes | bytearray, offset: int) -> int:
    """``buf.find(b".\r\n", offset)``, by ``memchr`` for the dot.

    ``bytes.find`` of the 3-byte needle stops at every LF of base64's lines (one every 78 bytes):
    190 us for a 280 KB mail, the DATA reader's largest cost. A base64 body holds no dot at all,
    so a search for the dot alone passes over it at memory speed; each dot found is checked."""
    at = buf.find(b".", offset)
    while at != -1:
        if buf[at + 1:at + 3] == b"\r\n":
            return at
        at = buf.find(b".", at + 1)
    return -1


class _CommandReader(asyncio.StreamReader):
    """aiosmtpd's reader, with command lines (``readuntil()`` with its default separator) ending at
    CRLF only: a part ended by a bare LF is joined with what follows, up to :data:`COMMAND_MAX`;
    and DATA's chunks (``readuntil(b".\r\n")``) found by :func:`find_dot_line_end`."""

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        if separator == DATA_SEPARATOR:
            return await self._until_dot_line_end()
        line = await super().readuntil(separator)
        if separator != b"\n":
            return line
        while not line.endswith(b"\r\n") and len(line) < COMMAND_MAX:
            line += await super().readuntil(separator)
        return line

    def has_line(self) -> bool:
        """Whether a whole command line is read and waiting, so that reading it waits for nothing:
        a CRLF is in the buffer (a part ended by a bare LF is joined with what follows, up to the
        next LF, which the CRLF's is at the latest)."""
        return b"\r\n" in self._buffer                           # type: ignore[attr-defined]

    async def _until_dot_line_end(self) -> bytes:
        """``StreamReader.readuntil(b".\r\n")`` (the same chunks, limit and errors: its own loop over
        the buffer, asyncio's reader internals), searching with :func:`find_dot_line_end`."""
        seplen = len(DATA_SEPARATOR)
        offset = 0
        while True:
            buf: bytearray = self._buffer                         # type: ignore[attr-defined]
            buflen = len(buf)
            if buflen - offset >= seplen:
                isep = find_dot_line_end(buf, offset)
                if isep != -1:
                    break
                offset = buflen + 1 - seplen   # a dot in the last two bytes is looked at again
                if offset > self._limit:                          # type: ignore[attr-defined]
                    raise asyncio.LimitOverrunError("Separator is not found, and chunk exceed the limit",
                                                    offset)
            if self._eof:                                         # type: ignore[attr-defined]
                chunk = bytes(buf)
                buf.clear()
                raise asyncio.IncompleteReadError(chunk, None)
            await self._wait_for_data("readuntil")                # type: ignore[attr-defined]
        if isep > self._limit:                                    # type: ignore[attr-defined]
            raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", isep)
        chunk = bytes(buf[:isep + seplen])
        del buf[:isep + seplen]
        self._maybe_resume_transport()                            # type: ignore[attr-defined]
        return chunk


class FaxEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.recipients: list[policy.Recipient] = []
        self.spooled: Path | None = None     # a big message's file (then ``content`` is empty)
        self.sender_check = ""              # how MAIL's sender passed: "login", "allowed_senders", "any"


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>[ \t]*")


def _size_param(rest: str) -> int | None:
    for word in rest.split()[1:]:
        key, _, value = word.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class FaxSMTP(SMTP):
    """aiosmtpd's protocol with the size replies of the contract, the null sender, a fast DATA path."""

    def __init__(self, handler: FaxHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        reader = getattr(self, "_stream_reader", None)
        if reader is not None and type(reader) is asyncio.StreamReader:
            reader.__class__ = _CommandReader
        self.fax_handler = handler
        self.client_ok = False
        self.loopback = False
        self.host: str | None = None
        self.refused = False            # over a session cap: answered 421 and closed at once
        self._admitted = False
        self.auth_failures = 0          # failed AUTH attempts on this connection (``smtp_auth``)
        self._working = 0               # commands the server is working on (no read timeout then)
        self._last_read = self.loop.time()
        self._held: list[bytes] = []    # replies to pipelined commands, sent with the next (push)

    def _create_envelope(self) -> FaxEnvelope:
        return FaxEnvelope()

    async def push(self, status: AnyStr) -> None:
        """A reply, sent as aiosmtpd sends it; a "250 " while the client's next command is already
        here (it pipelines, RFC 2920) is held and goes out with the next reply in one write
        (RFC 2920 section 4: a server should not send a reply while more commands wait to be
        read). Any other reply sends what was held with it, so nothing waits for more input."""
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        self.fax_handler.on_reply(text[:3])
        hold = self._may_hold(text)
        if not self._held and not hold:
            await super().push(status)
            return
        self._held.append(text.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") + b"\r\n")
        if hold:
            return
        held, self._held = b"".join(self._held), []
        self._writer.write(held)
        await self._writer.drain()

    def _may_hold(self, text: str) -> bool:
        """A positive reply, fewer than HOLD_MAX held, and a whole command line already read."""
        reader = getattr(self, "_stream_reader", None)
        return (text.startswith("250 ") and len(self._held) < HOLD_MAX and isinstance(reader, _CommandReader)
                and reader.has_line())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first:
            self.host = peer_host(transport.get_extra_info("peername"))
            refusal = self.fax_handler.sessions.admit(self.host)
            if refusal is not None:
                self.refused = True
                self.fax_handler.log_limited("smtp.session_refused", peer=self.host, reply=refusal)
                self.fax_handler.on_reply(refusal[:3])
                stream = cast(asyncio.WriteTransport, transport)   # uvloop's is one, not by subclass
                stream.write(refusal.encode("ascii") + b"\r\n")
                stream.close()
                return
            self._admitted = True
        self._last_read = self.loop.time()
        super().connection_made(transport)
        if first and self.session is not None:
            host = peer_host(self.session.peer)
            self.client_ok = policy.client_allowed(host, self.fax_handler.cfg.smtp.allowed_clients)
            self.loopback = policy.is_loopback(host)
            # AUTH in plain text only from this machine; from anywhere else only after STARTTLS.
            self._auth_require_tls = not self.loopback
            if not self.client_ok:
                self.fax_handler.log_limited("smtp.client_refused", peer=host)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self._admitted:
            self._admitted = False
            self.fax_handler.sessions.release(self.host)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        super().data_received(data)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """The server is busy on a command: the client is waiting for us, not idle."""
        self._working += 1
        try:
            yield
        finally:
            self._working -= 1
            self._last_read = self.loop.time()

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return
        limit = self._timeout_duration
        idle = self.loop.time() - self._last_read
        if self._working or idle < limit:
            self._reset_timeout(limit if self._working else max(limit - idle, 0.01))
            return
        self.fax_handler.log_limited("smtp.timeout", peer=self.host, idle_s=round(idle, 1))
        reply = replies.TIMED_OUT.format(seconds=limit)
        self.fax_handler.on_reply(reply[:3])
        transport = cast(asyncio.WriteTransport, self.transport)   # never an isinstance: uvloop's does not
        if not transport.is_closing():                              # subclass asyncio's (it writes all the same)
            transport.write(reply.encode("ascii") + b"\r\n")
        transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address reader, with the common shape read at once: ``<local@domain>`` with a
        dot-atom local part and a plain host name is what every client sends, and aiosmtpd reads it
        with the email package's header parser (a third of MAIL's and RCPT's CPU). Anything else
        (quoted local parts, address literals, source routes, no brackets) goes to aiosmtpd's."""
        plain = _PLAIN_PATH.match(arg)
        if plain is None or arg.startswith("(", plain.end()):      # (a comment after it: aiosmtpd's)
            return SMTP._getaddr(self, arg)
        address = plain.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[plain.end():]

    async def smtp_MAIL(self, arg: str | None) -> None:
        rest = self._strip_command_keyword("FROM:", arg) if arg else None
        why = policy.address_problem(rest) if rest is not None else None
        if why is not None:
            await self.push(replies.bad_sender_syntax(why))
            return
        if rest is not None:
            size = _size_param(rest)
            if size is not None and self.data_size_limit and size > self.data_size_limit:
                await self.push(replies.too_big(self.data_size_limit))
                return
            if rest.lstrip().startswith("<>"):
                await self._null_mail(rest.lstrip()[2:])
                return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        rest = self._strip_command_keyword("TO:", arg) if arg else None
        why = policy.address_problem(rest) if rest is not None else None
        if why is not None:
            await self.push(replies.bad_rcpt_syntax(why))
            return
        await super().smtp_RCPT(arg)

    async def _null_mail(self, params: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.envelope is not None and self.session is not None
        if self.envelope.mail_from:
            await self.push(replies.NESTED_MAIL)
            return
        options = params.upper().split()
        status = await self._call_handler_hook("MAIL", NULL_SENDER, options)
        if status is MISSING:
            self.envelope.mail_from = NULL_SENDER
            status = replies.SENDER_OK
        await self.push(status)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        await self.push(replies.START_DATA)
        content, too_much = await self._read_data()
        if too_much:
            assert self.data_size_limit is not None
            self.envelope = self._create_envelope()
            await self.push(replies.too_big(self.data_size_limit))
            return
        envelope = self.envelope
        assert isinstance(envelope, FaxEnvelope)
        if isinstance(content, Path):
            envelope.spooled = content
        else:
            envelope.content = envelope.original_content = content
        try:
            with self.working():
                status = await self._call_handler_hook("DATA")
        finally:
            smtp_stream.remove(envelope.spooled)
        self.envelope = self._create_envelope()
        crashpoints.hit("smtp.before_reply")
        await self.push(replies.DATA_OK if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes | Path, bool]:
        """Everything up to the lone dot, un-dot-stuffed (in memory, or in a file when big); and
        whether it passed the size limit (then nothing is kept)."""
        reader = self._reader
        limit = self.data_size_limit or 0
        spool = smtp_stream.DataSpool(self.fax_handler.data_dir, SPOOL_OVER)
        unstuff = smtp_stream.Unstuffer()
        size = 0
        too_much = False
        tail = b"\r\n"                      # the DATA command line ended with CRLF
        saved = reader._limit               # type: ignore[attr-defined]
        reader._limit = max(saved, DATA_CHUNK_LIMIT)   # type: ignore[attr-defined]
        try:
            while True:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                    ends = (tail + chunk[-5:])[-5:-3] == b"\r\n"     # (the whole chunk not copied)
                except asyncio.LimitOverrunError as exc:
                    chunk = await reader.read(exc.consumed)
                    ends = False
                crashpoints.hit("smtp.data")
                if ends:
                    chunk = chunk[:-3]
                size += len(chunk)
                if limit and size > limit and not too_much:
                    too_much = True
                    spool.discard()
                elif not too_much:
                    data = unstuff.feed(chunk)
                    if spool.in_memory(len(data)):
                        spool.write(data)
                    else:                   # to the file: the disk may be slow, the loop must not wait
                        await asyncio.to_thread(spool.write, data)
                if ends:
                    break
                tail = (tail + chunk[-2:])[-2:]
            if too_much:
                return b"", True
            spool.write(unstuff.end())
            return spool.result(), False
        except BaseException:
            spool.discard()
            raise
        finally:
            reader._limit = saved           # type: ignore[attr-defined]


def peer_host(peer: Any) -> str | None:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None
