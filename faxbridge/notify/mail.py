"""Reply mail for faxes sent by mail (contract section 5): composed purely, sent through the smarthost.

- ``compose`` (pure) makes the reply for a final job: ``Subject`` holding the state and the number,
  ``In-Reply-To``/``References`` the original Message-ID, ``X-Faxbridge-Job``,
  ``X-Faxbridge-State``, and ``Auto-Submitted: auto-replied`` (RFC 3834) so that no auto-responder
  answers it. The body says, in plain words, the number, pages, attempts, duration and cost, and on
  failure the reason and what to do.
- A reply goes only to a sender that passed the sender checks when its mail came in: the listener
  records how on the job (``meta["sender_check"]``: ``login`` (after AUTH, one of the login's
  senders), ``allowed_senders``, or ``any`` (``allowed_senders`` empty, an allowed client)); a job
  from before that was recorded gets a reply only if its sender passes ``allowed_senders`` now.
  Mail refused at MAIL, RCPT or DATA makes no job: the SMTP reply code is its only answer.
- No reply at all (RFC 3834, so no mail loop can start) when intake found a reason not to answer
  (``meta["no_reply"]``: a null sender, a bounce, ``MAILER-DAEMON``/``postmaster``, ``Return-Path:
  <>``, ``Auto-Submitted``, ``Precedence: bulk``, a mailing list, a sender at one of our own fax
  domains). That outbox row is marked done with a ``notify.mail_suppressed`` log line.
- ``deliver`` is the :class:`~faxbridge.notify.outbox.OutboxWorker` function: smtplib in a worker
  thread. Trouble that may pass (connection refused, timeouts, 4xx, a login refused while the
  operator fixes it) raises ``NotifyRetry`` (retried with backoff, forever); the smarthost refusing
  the recipient or the message with 5xx raises ``NotifyGiveUp``. The outbox marks a row delivered
  only after the smarthost accepted it, so a restart never repeats a reply that was marked, and a crash between
  the final state and the reply sends it after the restart. A crash after the smarthost took the reply
  and before the row is marked sends it again after the restart (at least once: no sender can do
  better without the receiver's help); both copies carry the same ``Message-ID`` (made from the job
  and its outbox row, :func:`reply_message_id`), so the receiving side can drop the second.
- With no ``notify.smarthost`` reply mail is not sent (contract section 2): the worker still runs and
  marks each "mail" row done with a ``notify.mail_not_sent`` log line, so nothing piles up and
  setting a smarthost later does not flood old results.
- The reply goes with the null envelope sender (``MAIL FROM:<>``, RFC 3834 and RFC 5321 section
  4.5.5): a reply that cannot be delivered makes no bounce, so no bounce can be reflected at anyone.
- A stored sender that no mail header can hold (a control character, no ``@``: rows written before
  MAIL refused them) is given up with that reason (``NotifyGiveUp``), never composed.
- A resent copy of a mail (a duplicate, see ``ingress.smtp_data``) makes no job and so no reply;
  the first job's reply is the answer for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import phonenumbers
import structlog

from faxbridge import crashpoints
from faxbridge.clock import Clock, shown_time
from faxbridge.config import Config, NotifyConfig
from faxbridge.countries import country_name
from faxbridge.ingress.smtp.policy import address_problem, sender_allowed
from faxbridge.models import Job, JobEvent, JobState, Source
from faxbridge.notify.outbox import Deliver, NotifyGiveUp, NotifyRetry, OutboxWorker
from faxbridge.store import COPY_KIND, RECEIPT_KIND, JobStore, OutboxItem

log = structlog.get_logger("faxbridge.notify.mail")

SEND_TIMEOUT = 60.0
NULL_SENDER = ""               # smtplib writes it as MAIL FROM:<>

HEADLINES = {
    JobState.DELIVERED: "Your fax to {number} was delivered.",
    JobState.FAILED: "Your fax to {number} could not be delivered.",
    JobState.REJECTED: "Your fax to {number} was not sent: it was refused.",
    JobState.CANCELED: "Your fax to {number} was canceled.",
}

ADVICE: tuple[tuple[str, str], ...] = (
    ("busy", "The line was busy each time: try again later by sending the mail again."),
    ("no answer", "Nobody answered: check that the number is a fax line, then try again later."),
    ("not a fax", "Check the number: it answered, but not as a fax machine."),
    ("bad number", "Check the number, and send the mail again to the right one."),
    ("document conversion", "Save the document as a PDF and send the mail again."),
    ("credit", "The fax service needs its operator: please tell your administrator."),
    ("canceled", "Send the mail again if you still want it faxed."),
)
DEFAULT_ADVICE = {
    JobState.FAILED: "If the number is right, try again later; if it keeps failing, tell your administrator.",
    JobState.REJECTED: "Correct what the reason says and send the mail again.",
    JobState.CANCELED: "Send the mail again if you still want it faxed.",
}


SUBJECT_MAX = 120           # characters of the original Subject kept in the reply's


def _one_line(text: str) -> str:
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


FINISHED = {JobState.DELIVERED: "Delivered", JobState.FAILED: "Ended", JobState.REJECTED: "Refused",
            JobState.CANCELED: "Canceled"}


def subject(job: Job, outcome: str | None = None) -> str:
    """``Re: Invoice 42 - fax to +1 555-555-1212 delivered`` (contract section 12), so the reply
    threads with the mail it answers; without a Subject, ``Fax to +1 555-555-1212 delivered``.
    ``outcome``: the last word instead of the job's state (a receipt: "accepted")."""
    what = f"fax to {pretty_number(job.to)} {outcome or job.state.value}"
    original = _one_line(job.subject or "")
    while original[:3].lower() == "re:":
        original = original[3:].lstrip()
    if not original:
        return what[0].upper() + what[1:]
    if len(original) > SUBJECT_MAX:
        original = original[: SUBJECT_MAX - 1] + "…"
    return f"Re: {original} - {what}"


def money(cost: float | None) -> str:
    """Provider costs are in US dollars (Phaxio bills in cents; Openfax's credit is in dollars)."""
    return "not known" if cost is None else f"${cost:.2f} (USD)"


def when(at: datetime | None) -> str:
    """A time for a person: local to this host, to the second, with its zone."""
    return "not known" if at is None else shown_time(at)


def pretty_number(e164: str) -> str:
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def advice(job: Job) -> str | None:
    if job.state is JobState.DELIVERED:
        return None
    reason = (job.reason or "").lower()
    for key, words in ADVICE:
        if key in reason:
            return words
    return DEFAULT_ADVICE.get(job.state)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not known"
    s = round(seconds)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def body(job: Job, events: Sequence[JobEvent] = ()) -> str:
    number = pretty_number(job.to)
    lines = [HEADLINES.get(job.state, "Your fax to {number} is " + job.state.value + ".").format(number=number), ""]
    if job.reason and job.state is not JobState.DELIVERED:
        lines += [f"Reason: {job.reason}"]
        what = advice(job)
        if what:
            lines += [f"What to do: {what}"]
        lines.append("")
    pages = str(job.pages) + (" (including the cover page)" if job.meta.get("cover_page") else "")
    rows = [
        ("Number", number),
        ("Pages", pages),
        ("Attempts", str(job.attempts)),
        ("Duration", _duration(job.duration_s)),
        ("Cost", money(job.cost)),
        (FINISHED.get(job.state, "Finished"), when(job.finished_at)),
        ("Document", job.document),
        ("Subject", job.subject or "(none)"),
        ("Job", job.id),
    ]
    lines += [f"{label + ':':<11}{value}" for label, value in rows]
    skipped = job.meta.get("skipped") or []
    if skipped:
        lines += ["", "Not faxed from your mail:"]
        lines += [f"  - {s.get('name')}: {s.get('why')}" for s in skipped if isinstance(s, dict)]
    lines += ["", "This is an automatic reply from faxbridge; replies to it are not read."]
    return "\n".join(lines) + "\n"


SENDER_CHECKS = ("login", "allowed_senders", "any")


def no_reply_reason(job: Job, allowed_senders: Sequence[str] = ()) -> str | None:
    if not job.sender:
        return "the envelope sender is empty (a bounce)"
    reason = job.meta.get("no_reply")
    if reason:
        return str(reason)
    check = job.meta.get("sender_check")
    if check in SENDER_CHECKS:
        return None
    if check is None and sender_allowed(job.sender, allowed_senders):
        return None     # a job from before the check was recorded: its sender passes the checks of now
    return "the sender did not pass the sender checks when the mail came in"


def sender_problem(sender: str) -> str | None:
    """Why a stored envelope sender cannot be a reply's recipient, or None."""
    why = address_problem(sender)
    if why is not None:
        return f"it holds {why}"
    local, at, domain = sender.rpartition("@")
    if not at or not local or not domain:
        return "it is not an address (no local part and domain)"
    return None


def message_id(value: object) -> str | None:
    """The original's Message-ID as a reply's In-Reply-To can carry it: ``<...>``, one line."""
    text = _one_line(str(value or "")).strip()
    if not text or any(ch in text for ch in " \t"):
        return None
    return text if text.startswith("<") and text.endswith(">") else f"<{text.strip('<>')}>"


def reply_message_id(job: Job, from_address: str, outbox_id: int | None = None) -> str:
    """The reply's Message-ID, the same each time this reply is sent: a reply sent again after a
    crash (the smarthost took it, the daemon died before marking it) can be dropped by the receiver."""
    domain = from_address.rpartition("@")[2] or socket.getfqdn()
    serial = "" if outbox_id is None else f".{outbox_id}"
    return f"<faxbridge.{job.id}{serial}@{domain}>"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a reply or copy carries (``notify.attach``), or why it carries none (``note``)."""

    data: bytes = b""
    filename: str = ""
    maintype: str = "application"
    subtype: str = "octet-stream"
    note: str | None = None      # said in the body instead: the document is too big, could not be shown...


ATTACH_MAX = 10_000_000          # bytes: a bigger PDF is not attached (smarthosts refuse big mail)
Render = Callable[[Path], Awaitable[bytes]]
"""The first page of a PDF as a PNG (``preview.render_first_page``, run in the worker engine)."""


async def attachment(job: Job, what: str, document: Path, render: Render) -> Attachment | None:
    """What ``notify.attach`` / ``copy_attach`` (``what``) asks a mail about ``job`` to carry."""
    if what == "none" or job.pages == 0:
        return None               # a job refused at intake has no document of ours to show
    try:
        size = document.stat().st_size
        if what == "document":
            if size > ATTACH_MAX:
                return Attachment(note=f"The document sent ({size / 1e6:.1f} MB) is too big to attach to this mail.")
            data = await asyncio.to_thread(document.read_bytes)
            return Attachment(data, f"fax-{job.id}.pdf", "application", "pdf")
        return Attachment(await render(document), f"fax-{job.id}-page1.png", "image", "png")
    except FileNotFoundError:
        return Attachment(note="The document sent is no longer kept, so it is not attached.")
    except Exception as exc:      # the preview is a courtesy: the reply goes without it
        log.warning("notify.attachment_failed", job_id=job.id, what=what, error=f"{type(exc).__name__}: {exc}")
        return Attachment(note="The first page could not be shown in this mail.")


def _attach(msg: EmailMessage, extra: Attachment | None) -> None:
    if extra is not None and extra.note is None:
        msg.add_attachment(extra.data, maintype=extra.maintype, subtype=extra.subtype, filename=extra.filename)


def _with_note(text: str, extra: Attachment | None) -> str:
    if extra is None or extra.note is None:
        return text
    head, sep, tail = text.rpartition("\n\nThis is an automatic")
    return f"{head}\n\n{extra.note}{sep}{tail}" if sep else f"{text}\n{extra.note}\n"


def _in_reply_to(msg: EmailMessage, job: Job) -> None:
    """``In-Reply-To`` and ``References``: the original's Message-ID, so the answer threads with it."""
    original = message_id(job.meta.get("message_id"))
    if original:
        msg["In-Reply-To"] = original
        msg["References"] = original


def compose(job: Job, events: Sequence[JobEvent], *, from_address: str, now: datetime,
            outbox_id: int | None = None, extra: Attachment | None = None) -> EmailMessage:
    """The reply for a final job of source smtp (see the module docstring); ``outbox_id`` (the
    outbox row) keeps the Message-ID of a job retried after its first reply apart from the first;
    ``extra``: the preview or document it carries (``notify.attach``)."""
    assert job.sender
    msg = EmailMessage()
    msg["From"] = f"faxbridge <{from_address}>"
    msg["To"] = job.sender
    msg["Subject"] = subject(job)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = reply_message_id(job, from_address, outbox_id)
    _in_reply_to(msg, job)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Faxbridge-Job"] = job.id
    msg["X-Faxbridge-State"] = job.state.value
    msg.set_content(_with_note(body(job, events), extra))
    _attach(msg, extra)
    return msg


COPY_FAILED = frozenset({JobState.FAILED, JobState.REJECTED, JobState.CANCELED})


def copy_recipients(job: Job, notify: NotifyConfig) -> list[str]:
    """Who gets a copy of ``job``'s result: ``copy_to`` when ``copy_on`` covers its state, never its
    own sender (who has the reply already)."""
    if notify.copy_on == "failed" and job.state not in COPY_FAILED:
        return []
    sender = (job.sender or "").lower()
    return [address for address in notify.copy_to if address.lower() != sender]


def _origin(job: Job) -> str:
    if job.source is Source.SMTP:
        return f"a mail from {job.sender or '(no sender)'}"
    if job.source is Source.FOLDER:
        return f"the file {job.document} in a watched folder"
    return f"faxbridge send ({job.document})"


def compose_copy(job: Job, events: Sequence[JobEvent], to: Sequence[str], *, from_address: str, now: datetime,
                 outbox_id: int | None = None, extra: Attachment | None = None) -> EmailMessage:
    """A copy of ``job``'s result for ``notify.copy_to``: marked as a copy (Subject ``[Copy]``,
    ``X-Faxbridge-Copy: yes``, a first line saying so), sent to ``to`` only."""
    msg = EmailMessage()
    msg["From"] = f"faxbridge <{from_address}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = "[Copy] " + subject(job)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = reply_message_id(job, from_address, outbox_id).replace("<faxbridge.", "<faxbridge.copy.", 1)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Faxbridge-Job"] = job.id
    msg["X-Faxbridge-State"] = job.state.value
    msg["X-Faxbridge-Copy"] = "yes"
    first = f"This is a copy for the fax server's administrator: the result of {_origin(job)}.\n\n"
    msg.set_content(first + _with_note(body(job, events), extra))
    _attach(msg, extra)
    return msg


def _send(cfg: NotifyConfig, msg: EmailMessage, to: str | Sequence[str]) -> None:
    """One reply through the smarthost (blocking: runs in a worker thread).

    Once the smarthost has taken the message (250 after DATA) the reply is delivered: QUIT is sent
    but its answer not awaited, so that the time between the smarthost taking it and our record of
    it (where a crash means it is sent again) is as short as it can be.
    """
    assert cfg.smarthost is not None
    client = smtplib.SMTP(cfg.smarthost.host, cfg.smarthost.port, timeout=SEND_TIMEOUT)
    try:
        client.ehlo()
        if cfg.starttls:
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if cfg.username:
            client.login(cfg.username, cfg.password)
        client.send_message(msg, from_addr=NULL_SENDER, to_addrs=[to] if isinstance(to, str) else list(to))
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.putcmd("quit")
    finally:
        client.close()


def _translate(exc: Exception) -> Exception:
    """smtplib's errors → NotifyRetry (may pass) or NotifyGiveUp (5xx for this reply)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return NotifyGiveUp(f"the smarthost refused the recipient ({codes[0]})")
        return NotifyRetry(f"the smarthost deferred the recipient ({codes[0] if codes else '?'})")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return NotifyRetry(f"the smarthost refused the login ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600 \
            and isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPDataError):
        return NotifyGiveUp(f"the smarthost refused the reply ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPResponseException):
        return NotifyRetry(f"the smarthost answered {exc.smtp_code}")
    return NotifyRetry(f"the smarthost cannot be reached: {type(exc).__name__}: {exc}")


NO_SMARTHOST = "notify.smarthost is empty"


async def _no_render(pdf: Path) -> bytes:
    raise NotifyRetry("no renderer for previews was given")


def _may_answer(cfg: Config, job: Job, what: str) -> bool:
    """Whether ``job``'s sender may get a ``what`` ("mail": the reply, or "receipt"): a smarthost,
    no reason not to answer (RFC 3834), an address that can receive mail (else NotifyGiveUp)."""
    if cfg.notify.smarthost is None:
        log.info(f"notify.{what}_not_sent", job_id=job.id, why=NO_SMARTHOST)
        return False
    why = no_reply_reason(job, cfg.smtp.allowed_senders)
    if why is not None:
        log.info(f"notify.{what}_suppressed", job_id=job.id, why=why)
        return False
    assert job.sender is not None
    bad = sender_problem(job.sender)
    if bad is not None:
        raise NotifyGiveUp(f"the sender address cannot receive a {'reply' if what == 'mail' else what}: {bad}")
    return True


async def _hand_over(notify: NotifyConfig, msg: EmailMessage, to: str | Sequence[str]) -> None:
    """One mail through the smarthost (in a thread); smtplib's errors as NotifyRetry / NotifyGiveUp."""
    try:
        await asyncio.to_thread(_send, notify, msg, to)
    except (smtplib.SMTPException, OSError) as exc:
        raise _translate(exc) from exc


def make_deliver(cfg: Config, clock: Clock, *, document: Callable[[str], Path] | None = None,
                 render: Render = _no_render) -> Deliver:
    """The "mail" rows' delivery; ``document`` (the spool's ``document_path``) and ``render`` give
    what ``notify.attach`` asks the reply to carry."""
    notify = cfg.notify

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> bool:
        if not _may_answer(cfg, job, "mail"):
            return False
        assert job.sender is not None
        extra = None if document is None else await attachment(job, notify.attach, document(job.id), render)
        msg = compose(job, events, from_address=notify.from_address, now=clock.now(), outbox_id=item.id,
                      extra=extra)
        crashpoints.hit("mail.before_send")
        await _hand_over(notify, msg, job.sender)
        crashpoints.hit("mail.sent")
        log.info("notify.mail_sent", job_id=job.id, state=job.state.value, to=job.to,
                 smarthost=str(notify.smarthost))
        return True

    return deliver


def number_as_read(e164: str) -> str:
    """``+15555551212 (United States)``: the number in E.164 and the country it dials."""
    try:
        parsed = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return e164
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0)
    name = country_name(region)
    return f"{e164} ({name})" if name else e164


def receipt_body(job: Job) -> str:
    """The receipt's words: the number as read, the pages that will go, each part faxed or skipped."""
    number = pretty_number(job.to)
    pages = str(job.pages) + (" (including the cover page)" if job.meta.get("cover_page") else "")
    faxed = [str(name) for name in job.meta.get("documents") or []]
    if job.meta.get("cover_page"):
        faxed.insert(0, "the mail text, as the cover page")
    lines = [f"Your fax to {number} was accepted and will be sent.", "",
             f"{'Number:':<11}{number_as_read(job.to)}",
             f"{'Pages:':<11}{pages}",
             f"{'Subject:':<11}{job.subject or '(none)'}",
             f"{'Job:':<11}{job.id}", "", "Faxed from your mail:"]
    lines += [f"  - {name}" for name in faxed] or ["  (nothing but the cover page)"]
    skipped = [s for s in job.meta.get("skipped") or [] if isinstance(s, dict)]
    if skipped:
        lines += ["", "Not faxed from your mail:"]
        lines += [f"  - {s.get('name')}: {s.get('why')}" for s in skipped]
    lines += ["", "You will get another mail when the fax has been delivered or has failed.",
              "", "This is an automatic reply from faxbridge; replies to it are not read."]
    return "\n".join(lines) + "\n"


def compose_receipt(job: Job, *, from_address: str, now: datetime) -> EmailMessage:
    """The receipt (``notify.receipt``): sent right after the 250, before the fax goes."""
    assert job.sender
    msg = EmailMessage()
    msg["From"] = f"faxbridge <{from_address}>"
    msg["To"] = job.sender
    msg["Subject"] = subject(job, "accepted")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = reply_message_id(job, from_address).replace("<faxbridge.", "<faxbridge.receipt.", 1)
    _in_reply_to(msg, job)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Faxbridge-Job"] = job.id
    msg["X-Faxbridge-Receipt"] = "accepted"
    msg.set_content(receipt_body(job))
    return msg


def make_receipt_deliver(cfg: Config, clock: Clock) -> Deliver:
    """The "receipt" rows' delivery: to the sender, under the same rules as the final reply."""
    notify = cfg.notify

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> bool:
        if not _may_answer(cfg, job, "receipt"):
            return False
        assert job.sender is not None
        await _hand_over(notify, compose_receipt(job, from_address=notify.from_address, now=clock.now()), job.sender)
        log.info("notify.receipt_sent", job_id=job.id, to=job.to)
        return True

    return deliver


def make_copy_deliver(cfg: Config, clock: Clock, *, document: Callable[[str], Path],
                      render: Render = _no_render) -> Deliver:
    """The "copy" rows' delivery (``notify.copy_to``, ``copy_on``, ``copy_attach``): one mail to
    every copy address, with the null envelope sender; a row whose job needs no copy is done."""
    notify = cfg.notify

    async def deliver(job: Job, events: Sequence[JobEvent], item: OutboxItem) -> bool:
        to = copy_recipients(job, notify)
        if not to:
            return False
        if notify.smarthost is None:
            log.info("notify.copy_not_sent", job_id=job.id, why=NO_SMARTHOST)
            return False
        extra = await attachment(job, notify.copy_attach, document(job.id), render)
        msg = compose_copy(job, events, to, from_address=notify.from_address, now=clock.now(), outbox_id=item.id,
                           extra=extra)
        await _hand_over(notify, msg, to)
        log.info("notify.copy_sent", job_id=job.id, state=job.state.value, copies=len(to))
        return True

    return deliver


def notices_of(cfg: Config) -> frozenset[str]:
    """The optional outbox rows the store must owe under ``cfg`` (copies, receipts)."""
    return frozenset({*((COPY_KIND,) if cfg.notify.copy_to else ()), *((RECEIPT_KIND,) if cfg.notify.receipt else ())})


def _unsent(cfg: Config) -> str | None:
    """Why no reply or receipt can go under ``cfg`` (the words ``_may_answer`` logs), or None."""
    return NO_SMARTHOST if cfg.notify.smarthost is None else None


def build(cfg: Config, store: JobStore, clock: Clock, render: Render = _no_render) -> OutboxWorker:
    """The reply-mail worker (always built: without a smarthost it marks rows done unsent);
    ``render``: the first page as a PNG (the daemon runs it in its worker engine)."""
    return OutboxWorker(store, clock, "mail", make_deliver(cfg, clock, document=store.spool.document_path,
                                                           render=render), keep_every=cfg.store.lease / 3,
                        unsent=_unsent(cfg))


def build_receipts(cfg: Config, store: JobStore, clock: Clock) -> OutboxWorker | None:
    """The receipts worker, with ``notify.receipt = true`` (the store then owes "receipt" rows)."""
    if not cfg.notify.receipt:
        return None
    return OutboxWorker(store, clock, RECEIPT_KIND, make_receipt_deliver(cfg, clock), keep_every=cfg.store.lease / 3,
                        unsent=_unsent(cfg))


def build_copies(cfg: Config, store: JobStore, clock: Clock, render: Render = _no_render) -> OutboxWorker | None:
    """The copies worker, when ``notify.copy_to`` names anyone (the store then owes "copy" rows)."""
    if not cfg.notify.copy_to:
        return None
    return OutboxWorker(store, clock, COPY_KIND, make_copy_deliver(cfg, clock, document=store.spool.document_path,
                                                                   render=render), keep_every=cfg.store.lease / 3)
