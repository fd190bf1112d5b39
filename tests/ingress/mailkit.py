"""Test helpers for mail: a real SMTP sink (the smarthost), an in-process daemon, messages as clients write them.

The message builders mirror what real clients send (structure, headers, encodings), so the listener is
tested against the shapes it meets: Outlook (octet-stream PDF, multipart/alternative in mixed, cid logos),
Apple Mail (inline PDF inside the HTML alternative), Gmail (multipart/related logo), Thunderbird (RFC 2231
names, format=flowed 8-bit text), scan-to-email devices (a PDF and one line, often no Message-ID) and a
forwarded message carrying the PDF in a message/rfc822 part.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import smtplib
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from faxbridge.app import Daemon
from faxbridge.clock import SystemClock
from faxbridge.config import Config, load
from faxbridge.ingress.smtp.listener import SmtpListener, make_listener
from faxbridge.notify.mail import notices_of
from faxbridge.providers.limits import header_limit
from faxbridge.store import Store, open_store
from faxbridge.workers import Engine
from tests.conftest import async_wait_until, free_port
from tests.support import base_settings, make_pdf, write_config

# --- the smarthost ---------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _SinkHandler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content or b"")
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 2.0.0 OK"


class _SinkSMTP(SMTP):
    """aiosmtpd as a smarthost: it also takes the null sender ``MAIL FROM:<>`` (aiosmtpd refuses it;
    RFC 5321 and every real smarthost take it), which reply mail is sent with."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        rest = self._strip_command_keyword("FROM:", arg) if arg else None
        if rest is not None and rest.startswith("<>") and self.session is not None \
                and self.session.host_name and self.envelope is not None and not self.envelope.mail_from:
            self.envelope.mail_from = "<>"
            await self.push("250 OK")
            return
        await super().smtp_MAIL(arg)


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)


class MailSink:
    """A real aiosmtpd server in its own thread, catching reply mail; can be taken down and brought back."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = _SinkHandler()
        self.controller: _SinkController | None = None

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def up(self) -> MailSink:
        self.controller = _SinkController(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@contextlib.contextmanager
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink().up()
    try:
        yield sink
    finally:
        sink.down()


# --- the daemon ------------------------------------------------------------------------------------------


def smtp_settings(tmp: Path, **smtp: Any) -> dict[str, Any]:
    settings = base_settings(tmp)
    settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}", **smtp}
    return settings


def config_of(tmp: Path, settings: dict[str, Any]) -> Config:
    return load(write_config(tmp / "faxbridge.toml", settings), {})


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Daemon]:
    """The real daemon in this event loop (start, yield once ready, stop and wait)."""
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.ensure_future(daemon.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
        raise AssertionError("daemon stopped before it was ready")
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass
class Bench:
    """The SMTP listener alone on a real store (no dispatcher: jobs stay queued)."""

    store: Store
    listener: SmtpListener
    clock: SystemClock
    engine: Engine                       # the listener's worker engine (the one the daemon runs)

    @property
    def address(self) -> tuple[str, int]:
        assert self.listener.address is not None
        return self.listener.address


@contextlib.asynccontextmanager
async def listening(cfg: Config) -> AsyncIterator[Bench]:
    """The listener alone, committing to a job store and its intake on a worker engine, both made
    and closed here as the daemon does; ``store``: the test's own connection to read what it made."""
    store = Store(cfg.state_dir, "simulator")
    clock = SystemClock()
    jobs, engine = await open_store(cfg.state_dir, "simulator", notices=notices_of(cfg)), Engine(cfg)
    smtp = make_listener(cfg, jobs, clock, engine, header_limit=header_limit)
    try:
        await smtp.start()
        try:
            yield Bench(store, smtp, clock, engine)
        finally:
            await smtp.stop()
            await smtp.close(5.0)
    finally:
        await engine.close()
        await jobs.close()
        store.close()


def listener(daemon: Daemon) -> SmtpListener:
    return next(c for c in daemon.components if isinstance(c, SmtpListener))


def address(daemon: Daemon) -> tuple[str, int]:
    addr = listener(daemon).address
    assert addr is not None
    return addr


# --- a client --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    code: int
    text: str

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


def _answer(reply: tuple[int, bytes]) -> Answer:
    return Answer(reply[0], reply[1].decode("utf-8", "replace").replace("\n", " "))


class Dialogue:
    """A real smtplib session that records each reply (no exceptions: the test reads the codes)."""

    def __init__(self, addr: tuple[str, int], *, ehlo: bool = True, local_hostname: str = "client.test") -> None:
        self.client = smtplib.SMTP(addr[0], addr[1], local_hostname=local_hostname, timeout=30)
        if ehlo:
            self.client.ehlo()

    def mail(self, sender: str, options: Sequence[str] = ()) -> Answer:
        return _answer(self.client.mail(sender, list(options)))

    def rcpt(self, to: str) -> Answer:
        return _answer(self.client.rcpt(to))

    def data(self, message: bytes) -> Answer:
        try:
            return _answer(self.client.data(message))
        except smtplib.SMTPResponseException as exc:
            return Answer(exc.smtp_code, exc.smtp_error.decode("utf-8", "replace"))

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> list[Answer]:
        answers = [self.mail(sender)]
        answers += [self.rcpt(r) for r in recipients]
        answers.append(self.data(message))
        return answers

    def close(self) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.client.quit()
        self.client.close()


def send(addr: tuple[str, int], sender: str, recipients: Sequence[str], message: bytes) -> list[Answer]:
    d = Dialogue(addr)
    try:
        return d.send(sender, recipients, message)
    finally:
        d.close()


async def asend(addr: tuple[str, int], sender: str, recipients: Sequence[str], message: bytes) -> list[Answer]:
    return await asyncio.to_thread(send, addr, sender, recipients, message)


# --- messages as clients write them --------------------------------------------------------------------


def pdf_bytes(tmp: Path, pages: int = 1, name: str = "doc.pdf", text: str = "faxbridge test page") -> bytes:
    return make_pdf(tmp / name, pages=pages, text=text).read_bytes()


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")


def _finish(head: str, body: str) -> bytes:
    text = head.strip("\n") + "\n\n" + body.replace("\r\n", "\n")
    return text.replace("\n", "\r\n").encode("utf-8")


def outlook(pdf: bytes, *, sender: str = "alice@example.com", subject: str = "Invoice 42",
            message_id: str = "<AM0PR01MB1234@EURPRD01.prod.outlook.com>", name: str = "invoice.pdf",
            logo: bytes | None = None) -> bytes:
    """Outlook 16: mixed > (related > alternative(text, html with a cid logo), logo) + octet-stream PDF."""
    logo_part = ""
    if logo is not None:
        logo_part = f"""--rel
Content-Type: image/png; name="image001.png"
Content-Description: image001.png
Content-Disposition: inline; filename="image001.png"
Content-ID: <image001.png@01DA1234.56789AB0>
Content-Transfer-Encoding: base64

{_b64(logo)}
"""
    body = f"""This is a multi-part message in MIME format.

--mixed
Content-Type: multipart/related; boundary="rel"; type="multipart/alternative"

--rel
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Please fax the attached invoice.=0D
=0D
Alice Example | Accounts

--alt
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Please fax the attached invoice.</p><p><img src=3D"cid:image0=
01.png@01DA1234.56789AB0" alt=3D"logo"></p><p>Alice Example | Accounts</p></b=
ody></html>

--alt--

{logo_part}--rel--

--mixed
Content-Type: application/octet-stream; name="{name}"
Content-Description: {name}
Content-Disposition: attachment; filename="{name}"; size={len(pdf)}
Content-Transfer-Encoding: base64

{_b64(pdf)}
--mixed--
"""
    head = f"""From: Alice Example <{sender}>
To: "15555551212@fax.local" <15555551212@fax.local>
Subject: {subject}
Thread-Topic: {subject}
Thread-Index: AdoBAgMEBQYHCAkKCwwNDg8QEQ==
Date: Mon, 23 Nov 2026 09:15:02 +0000
Message-ID: {message_id}
Accept-Language: en-US
Content-Language: en-US
X-MS-Has-Attach: yes
X-MS-TNEF-Correlator:
X-Mailer: Microsoft Outlook 16.0
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed"
"""
    return _finish(head, body)


def apple_mail_inline(pdf: bytes, *, name: str = "Scan.pdf", subject: str = "Signed contract") -> bytes:
    """Apple Mail: alternative(text, mixed(html, inline PDF with x-unix-mode, html))."""
    head = f"""From: Bob Example <bob@example.com>
Content-Type: multipart/alternative; boundary="Apple-Mail=_A1"
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Subject: {subject}
Message-Id: <5F7D2E1A-1B2C-4D5E-8F90-ABCDEF012345@example.com>
Date: Tue, 24 Nov 2026 14:02:11 +0100
To: 15555551212@fax.local
X-Mailer: Apple Mail (2.3774.600.62)
"""
    body = f"""
--Apple-Mail=_A1
Content-Transfer-Encoding: 7bit
Content-Type: text/plain; charset=us-ascii

Here it is, signed.

--Apple-Mail=_A1
Content-Type: multipart/mixed; boundary="Apple-Mail=_B2"

--Apple-Mail=_B2
Content-Transfer-Encoding: 7bit
Content-Type: text/html; charset=us-ascii

<html><head></head><body>Here it is, signed.<div></div></body></html>
--Apple-Mail=_B2
Content-Disposition: inline; filename="{name}"
Content-Type: application/pdf; x-unix-mode=0644; name="{name}"
Content-Transfer-Encoding: base64

{_b64(pdf)}
--Apple-Mail=_B2
Content-Transfer-Encoding: 7bit
Content-Type: text/html; charset=us-ascii

<html><head></head><body><div><br></div></body></html>
--Apple-Mail=_B2--

--Apple-Mail=_A1--
"""
    return _finish(head, body)


def gmail(pdf: bytes, logo: bytes, *, name: str = "letter.pdf") -> bytes:
    """Gmail: mixed > related(alternative(text, html with cid logo), logo png) + application/pdf attachment."""
    head = """MIME-Version: 1.0
Date: Wed, 25 Nov 2026 08:00:00 -0800
Message-ID: <CAOx5Ld2Zq=gmail-test-0001@mail.gmail.com>
Subject: Letter for the bank
From: Carol Example <carol@gmail.com>
To: 15555551212@fax.local
Content-Type: multipart/mixed; boundary="000000000000aaaa"
"""
    body = f"""--000000000000aaaa
Content-Type: multipart/related; boundary="000000000000bbbb"

--000000000000bbbb
Content-Type: multipart/alternative; boundary="000000000000cccc"

--000000000000cccc
Content-Type: text/plain; charset="UTF-8"

Hi, the letter is attached.
--
Carol [image: logo]

--000000000000cccc
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Hi, the letter is attached.<br>--<br>Carol <img src="cid:ii_lq1w2e3r0" alt="logo"></div>

--000000000000cccc--
--000000000000bbbb
Content-Type: image/png; name="logo.png"
Content-Disposition: inline; filename="logo.png"
Content-Transfer-Encoding: base64
Content-ID: <ii_lq1w2e3r0>
X-Attachment-Id: ii_lq1w2e3r0

{_b64(logo)}
--000000000000bbbb--
--000000000000aaaa
Content-Type: application/pdf; name="{name}"
Content-Disposition: attachment; filename="{name}"
Content-Transfer-Encoding: base64
Content-ID: <f_lq1w2e3r1>
X-Attachment-Id: f_lq1w2e3r1

{_b64(pdf)}
--000000000000aaaa--
"""
    return _finish(head, body)


def thunderbird(pdf: bytes, text_file: bytes) -> bytes:
    """Thunderbird: 8-bit format=flowed text, an RFC 2231 UTF-8 PDF name, a text attachment, RFC 2047 subject."""
    head = """Message-ID: <7c1d2e3f-aaaa-bbbb-cccc-0123456789ab@example.de>
Date: Thu, 26 Nov 2026 11:22:33 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: de-DE
To: +49 30 1234567 <+49301234567@fax.local>
From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>
Subject: =?UTF-8?Q?Rechnung_f=C3=BCr_M=C3=A4rz?=
Content-Type: multipart/mixed; boundary="------------tb0123456789"
"""
    body = f"""This is a multi-part message in MIME format.
--------------tb0123456789
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

Guten Tag, anbei die Rechnung für März.
Grüße, Jürgen

--------------tb0123456789
Content-Type: application/pdf; name*=UTF-8''Rechnung%20M%C3%A4rz.pdf
Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf
Content-Transfer-Encoding: base64

{_b64(pdf)}
--------------tb0123456789
Content-Type: text/plain; charset=UTF-8; name="notiz.txt"
Content-Disposition: attachment; filename="notiz.txt"
Content-Transfer-Encoding: quoted-printable

{text_file.decode("ascii")}
--------------tb0123456789--
"""
    return (_finish(head, body))


def scanner(pdf: bytes, *, name: str = "Scan_0001.pdf", message_id: bool = False) -> bytes:
    """A scan-to-email device: one line of text, an application/pdf attachment, often no Message-ID."""
    mid = "Message-ID: <20261127101500.0001@ricoh.office.example>\n" if message_id else ""
    head = f"""From: scanner@office.example
To: 15555551212@fax.local
Subject: Scanned from a Xerox Multifunction Printer
Date: Fri, 27 Nov 2026 10:15:00 +0000
{mid}X-Mailer: RICOH Network Scanner
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_scan_boundary"
"""
    body = f"""--=_scan_boundary
Content-Type: text/plain; charset=US-ASCII
Content-Transfer-Encoding: 7bit

Please open the attached document. It was scanned and sent to you using a Xerox Multifunction Printer.

--=_scan_boundary
Content-Type: application/pdf; name="{name}"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="{name}"

{_b64(pdf)}
--=_scan_boundary--
"""
    return _finish(head, body)


def forwarded(pdf: bytes, *, name: str = "contract.pdf") -> bytes:
    """A mail forwarded as an attachment: the PDF sits inside the message/rfc822 part."""
    head = """From: Dave Example <dave@example.com>
To: 15555551212@fax.local
Subject: Fwd: contract
Date: Sat, 28 Nov 2026 12:00:00 +0000
Message-ID: <fwd-0001@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"
"""
    body = f"""--outer
Content-Type: text/plain; charset=utf-8

See the forwarded mail.

--outer
Content-Type: message/rfc822; name="Original.eml"
Content-Disposition: attachment; filename="Original.eml"

From: Erin <erin@example.org>
To: Dave <dave@example.com>
Subject: contract
Date: Fri, 27 Nov 2026 09:00:00 +0000
Message-ID: <orig-0001@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: text/plain; charset=utf-8

The contract, as promised.

--inner
Content-Type: application/pdf; name="{name}"
Content-Disposition: attachment; filename="{name}"
Content-Transfer-Encoding: base64

{_b64(pdf)}
--inner--

--outer--
"""
    return _finish(head, body)


def plain(text: str, *, subject: str = "Hello", sender: str = "alice@example.com", extra: str = "",
          message_id: str = "<plain-0001@example.com>") -> bytes:
    head = f"""From: {sender}
To: 15555551212@fax.local
Subject: {subject}
Date: Sun, 29 Nov 2026 10:00:00 +0000
Message-ID: {message_id}
MIME-Version: 1.0
{extra}Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit
"""
    return _finish(head, text)


def with_attachment(data: bytes, *, name: str, ctype: str, text: str = "",
                    message_id: str = "<att-0001@example.com>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "15555551212@fax.local"
    msg["Subject"] = "Attachment"
    msg["Message-ID"] = message_id
    msg.set_content(text or "see attached")
    maintype, _, subtype = ctype.partition("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=policy.SMTP)


def client_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


__all__ = ["async_wait_until"]
