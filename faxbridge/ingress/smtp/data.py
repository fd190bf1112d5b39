"""DATA, the worker's half: a received message → each recipient's document staged, or the refusal.

Two halves, so that the CPU work runs in a worker process and only the daemon touches the store
(the daemon's half is :mod:`~faxbridge.ingress.smtp.commit`):

- in a worker (:func:`stage_mail`, run by the ``faxbridge.workers`` engine; no store, no clock):

  1. parse and pick the parts; refusals give 554 5.6.1 naming the part, nothing to fax 554 5.6.0;
  2. per recipient, the dedup key = sha256(Message-ID (or, without one, the whole message) +
     recipient + hash of what would be faxed);
  3. the attachments prepared ONCE per message (decoded, checked, converted: ``_prepare_once``),
     then per recipient only its cover page (with that recipient's number) set and joined to
     them; every recipient's document is staged (``spool.stage(job_id)``) before any job is
     committed. More than ``numbers.max_pages`` pages, or a cover text over
     ``limits.max_cover_pages``: 554 5.3.4. The answer is a :class:`MailPlan` (or the refusal);

- in the daemon (:class:`~faxbridge.ingress.smtp.commit.MailIntake`): each staged job committed (fsynced) through the
  :class:`~faxbridge.store.JobStore`, looking in the same transaction for a job with the same key
  made within :data:`DEDUP_WINDOW`: then the message was sent before (a relay retrying after our
  4xx, or a confused client, or the same mail on two connections at once): no second fax, and
  the 250 reply names the job it duplicates (no second reply mail either). Only when every
  recipient's job is committed is 250 answered. Our own trouble (database busy, disk full, any
  OSError, a worker that died) answers 451 4.3.0: the client keeps the message and retries, and
  the retry finds the jobs committed so far by their dedup keys. Over the job's CPU time or
  memory (``limits.job_cpu``, ``limits.job_memory``): 554 5.3.4.

Window: 5 days, Postfix's default ``maximal_queue_lifetime``: a relay stops retrying by then.
"""

from __future__ import annotations

import binascii
import contextlib
import email.errors
import hashlib
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import structlog

from faxbridge import intake
from faxbridge import options as fax_options
from faxbridge.config import Config
from faxbridge.documents import (
    OfficeSettings,
    copy_prepared,
    join,
    move_prepared,
    prepare,
    text_pages_at_least,
    text_to_pdf,
)
from faxbridge.errors import DocumentError
from faxbridge.ingress.smtp import mime, mime_bounds, replies
from faxbridge.ingress.smtp.mime_bounds import MailLimits
from faxbridge.ingress.smtp.mime_slim import Raw, digest
from faxbridge.ingress.smtp.policy import Recipient, normal_sender
from faxbridge.ingress.smtp.replies import (
    INTERNAL_ERROR,
    NO_CONTENT,
    OUR_TROUBLE,
    UNREADABLE_MESSAGE,
    too_many_pages,
    unreadable_part,
)
from faxbridge.models import FaxOptions, InputFile, NewJob, Paper, PreparedDocument, Source
from faxbridge.options import Asked, OptionError
from faxbridge.store import DOC_NAME, DocumentSpool, Staged

log = structlog.get_logger("faxbridge.smtp")

DEDUP_WINDOW = timedelta(days=5)


def message_bytes(raw: bytes | Path) -> Raw:
    """A message's bytes; a spooled one mapped read-only from its file, not read into memory
    (``mime_slim`` gives its pages back as it goes). OSError: our trouble (451)."""
    if not isinstance(raw, Path):
        return raw
    with raw.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def done_with(raw: Raw) -> None:
    """Unmap a mapped message (left to the garbage collector if a view of it is still alive)."""
    if isinstance(raw, mmap.mmap):
        with contextlib.suppress(BufferError):
            raw.close()


@dataclass(frozen=True)
class MailSettings:
    """What the worker half needs of the configuration (plain values: sent with each message)."""

    cover_mode: str
    limits: MailLimits
    max_pages: int
    max_cover_pages: int
    max_decompressed: int
    header_limit: int | None             # None: the configuration fixes the header text
    domains: tuple[str, ...]
    office: OfficeSettings | None = None   # documents.office: Office attachments converted (None: refused)
    zone: tzinfo = UTC                     # time_zone: how an X-Fax-Send-At of local time is read


def mail_settings(cfg: Config, header_limit: int | None) -> MailSettings:
    return MailSettings(cfg.smtp.cover_page, mail_limits(cfg), cfg.numbers.max_pages, cfg.limits.max_cover_pages,
                        cfg.limits.max_decompressed, header_limit, tuple(cfg.smtp.domains),
                        intake.office_settings(cfg), cfg.zone())


@dataclass(frozen=True)
class MailPlan:
    """The worker's answer for a message it could read: each fresh recipient's job, staged."""

    staged: tuple[Staged, ...]


@dataclass(frozen=True)
class _Plan:
    content: mime.MailContent
    cover: bool
    doc_hash: str
    message_key: str


# What the stdlib parser and our extraction may raise for input that can never be read: these
# are the message's fault, answered 554 5.6.0 and logged as a warning.
_UNREADABLE = (email.errors.MessageError, UnicodeError, binascii.Error)


DEFAULT_LIMITS = MailLimits()


def mail_limits(cfg: Config) -> MailLimits:
    lim = cfg.limits
    return MailLimits(max_parts=lim.max_parts, max_nesting=lim.max_nesting, max_headers=lim.max_headers,
                      max_parameters=lim.max_parameters)


def _plan(raw: Raw, cover_mode: str, limits: MailLimits = DEFAULT_LIMITS, office: bool = False) -> _Plan | str:
    """Parse and decide (pure work, in a worker). A reply string when the message is refused.

    Bounds first: the parsed tree's shape (parts, nesting, header and parameter counts) is checked
    before a header value is parsed or a part decoded (``mime_bounds``). A message nested so deep
    that the stdlib parser itself runs out of recursion gets the same "nested too deep" answer.

    Errors, and why each gets the answer it gets (contract section 9: 451 only when trying again
    can help):

    - the input's own fault (``_UNREADABLE``): 554 5.6.0, a warning;
    - anything else is a bug (ours or the stdlib's). It is deterministic: the same bytes fail the
      same way every time, so a 451 would only make the relay send the message again for days
      (Postfix: 5) while the sender hears nothing. It is answered 554 5.6.0 with a generic "could
      not be read" (the sender learns at once; the relay drops it), logged as an error with its
      traceback (``smtp.intake_bug``) and counted (:data:`INTERNAL_ERROR` replies are counted by
      :meth:`~faxbridge.ingress.smtp.commit.MailIntake.accept`), so the operator sees it and can fix it;
    - our trouble where retrying can help (OSError, the store) does not come from here: it is
      answered 451 4.3.0 (:func:`stage_mail`, ``commit.MailIntake``).
    """
    try:
        content = _read(raw, limits, office)
    except RecursionError:
        return replies.too_deep(limits.max_nesting)
    except _UNREADABLE as exc:
        log.warning("smtp.unparsable", error=f"{type(exc).__name__}: {exc}")
        return UNREADABLE_MESSAGE
    except (MemoryError, OSError):
        raise                   # the job's memory cap, or our trouble: decided by the caller
    except Exception as exc:
        log.error("smtp.intake_bug", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return INTERNAL_ERROR
    if isinstance(content, str):
        return content
    if content.refusals:
        return unreadable_part(content.refusals[0].why, len(content.refusals) - 1)
    cover = mime.wants_cover(cover_mode, content)
    if not content.parts and not content.body.strip():
        return NO_CONTENT
    if not content.parts and not cover:
        return NO_CONTENT
    message_key = content.headers.message_id or "sha256:" + digest(raw)
    return _Plan(content, cover, mime.content_hash(content, cover), message_key)


def _read(raw: Raw, limits: MailLimits, office: bool = False) -> mime.MailContent | str:
    """The message parsed, its shape checked, its content extracted (or the refusal of its shape)."""
    msg, stash = mime.parse_fast(raw)
    refusal = mime_bounds.verdict(mime_bounds.measure(msg, limits), limits)
    if refusal is not None:
        return refusal
    return mime.extract(msg, stash, office=office)


def dedup_key(message_key: str, to: str, doc_hash: str) -> str:
    return hashlib.sha256(f"smtp\0{message_key}\0{to}\0{doc_hash}".encode()).hexdigest()


# --- the worker half: a message in, a plan (or a refusal) out ----------------------------------------------


def stage_mail(settings: MailSettings, spool: DocumentSpool, sender: str, recipients: Sequence[Recipient],
               raw: bytes | Path, extra_meta: dict[str, Any], job_ids: Sequence[str]) -> MailPlan | str:
    """Everything of DATA but the commit (in a worker process): the plan with each recipient's
    document staged as ``job_ids[i]``, or the reply that refuses the message (the daemon removes
    the staging folders if the worker dies)."""
    try:
        message = message_bytes(raw)
    except OSError as exc:
        log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender)
        return OUR_TROUBLE
    try:
        plan = _plan(message, settings.cover_mode, settings.limits,
                     office=settings.office is not None and settings.office.enabled)
        if isinstance(plan, str):
            log.info("smtp.refused", stage="data", reply=plan, sender=sender)
            return plan
        try:
            asked = _asked(settings, plan, recipients)
        except OptionError as exc:
            reply = replies.bad_option(exc.reason)
            log.info("smtp.refused", stage="data", reply=reply, sender=sender)
            return reply
        try:
            return MailPlan(tuple(_stage_all(spool, settings, sender, recipients, plan, extra_meta, job_ids,
                                             asked)))
        except DocumentError as exc:
            reply = too_many_pages(exc.reason) if exc.too_many_pages else unreadable_part(exc.reason)
            log.info("smtp.refused", stage="data", reply=reply, sender=sender)
            return reply
        except OSError as exc:
            log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender)
            return OUR_TROUBLE
    finally:
        done_with(message)


def _asked(settings: MailSettings, plan: _Plan, recipients: Sequence[Recipient]) -> list[Asked]:
    """Each recipient's options: the message's ``X-Fax-*`` headers and its address flags (a flag,
    naming one recipient, wins over a header). OptionError names the header or flag."""
    now = datetime.now(UTC)
    headers = dict(plan.content.headers.fax)
    return [fax_options.from_headers(headers, zone=settings.zone, now=now, header_limit=settings.header_limit,
                                     flags=rcpt.flags) for rcpt in recipients]


def _message_paper(asked: Sequence[Asked]) -> Paper | None:
    """The paper images and text are set on, for the whole message: the one every recipient asked
    for (by header, or by the same flag), else the default."""
    papers = {a.paper for a in asked}
    return papers.pop() if len(papers) == 1 else None


def _with_cover(settings: MailSettings, plan: _Plan, asked: Asked) -> _Plan:
    """The plan for one recipient whose ``X-Fax-Cover`` / ``+cover`` / ``+nocover`` decides the cover
    page (a message with nothing attached keeps its text as the fax)."""
    if asked.cover is None or not plan.content.parts:
        return plan
    cover = mime.wants_cover(asked.cover, plan.content)
    if cover == plan.cover:
        return plan
    return replace(plan, cover=cover, doc_hash=mime.content_hash(plan.content, cover))


def _stage_all(spool: DocumentSpool, settings: MailSettings, sender: str, recipients: Sequence[Recipient],
               plan: _Plan, extra_meta: dict[str, Any], job_ids: Sequence[str],
               asked: Sequence[Asked] | None = None) -> list[Staged]:
    """Every recipient's document staged, before any job is committed: the work that may be
    refused (pages, content, the job's CPU or memory cap) never leaves half the jobs made.

    The first recipient's staging folder is the message's work folder: the parts are written
    there once, as that job keeps them as received (the other jobs link to them), and the
    attachments are prepared there (straight into its document when it is the only job and has
    no cover page: nothing copied or renamed). Scratch files made there are removed before the
    plan goes back."""
    staged: list[Staged] = []
    asked = list(asked) if asked is not None else [Asked()] * len(recipients)
    plans = [_with_cover(settings, plan, wants) for wants in asked]
    first = spool.stage(job_ids[0])
    scratch = first / ".attachments.pdf"
    try:
        originals = intake.write_received(first, [(part.name, part.data) for part in plan.content.parts])
        direct = len(recipients) == 1 and not plans[0].cover
        body = _prepare_once(settings, originals, first / DOC_NAME if direct else scratch, plan,
                             paper=_message_paper(asked))
        for index, (rcpt, job_id, wants, mine) in enumerate(zip(recipients, job_ids, asked, plans, strict=True)):
            key = dedup_key(mine.message_key, rcpt.number.e164, mine.doc_hash)
            folder = first if index == 0 else spool.stage(job_id)
            try:
                if index:
                    intake.keep_received(folder, originals)
                doc = _document(folder / DOC_NAME, settings=settings, rcpt=rcpt, plan=mine, body=body,
                                last=index == len(recipients) - 1)
                staged.append(Staged(job_id, _new_job(settings, sender, rcpt, key, mine, extra_meta, wants), doc))
            except BaseException:
                if index:
                    spool.discard_stage(job_id)
                raise
    except BaseException:
        spool.discard_stage(job_ids[0])
        for item in staged[1:]:
            spool.discard_stage(item.job_id)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    return staged


def _prepare_once(settings: MailSettings, files: Sequence[InputFile], out: Path, plan: _Plan,
                  paper: Paper | None = None) -> PreparedDocument | None:
    """The message's attachments (``files``) as one checked fax-ready PDF at ``out``, made ONCE
    for all its recipients (only the cover page, which names each recipient, is made per job);
    None without any.

    Bounds first: a cover page text that would fill more than ``limits.max_cover_pages`` pages
    (or, with the attachments, more than ``numbers.max_pages``) is refused (554 5.3.4) before
    anything is set in type: a 5 MB line of text is refused at once, not after minutes."""
    max_pages = settings.max_pages
    cover_pages = text_pages_at_least(plan.content.body, Paper.LETTER) if plan.cover else 0
    if cover_pages > settings.max_cover_pages:
        limit = settings.max_cover_pages
        raise DocumentError(f"the mail text would fill more than {limit} cover pages (the limit is {limit}); "
                            "send long text as an attached file", too_many_pages=True)
    if cover_pages > max_pages:
        raise DocumentError(f"the mail text would fill more than {max_pages} pages; the limit is {max_pages}",
                            too_many_pages=True)
    if not files:
        return None
    return prepare(files, out, max_pages=max_pages, paper=paper, max_decompressed=settings.max_decompressed,
                   office=settings.office, inputs_ours=True)     # (files: the parts as received, ours)

def _document(out: Path, *, settings: MailSettings, rcpt: Recipient, plan: _Plan,
          body: PreparedDocument | None, last: bool = False) -> PreparedDocument:
    """One recipient's document: its cover page and the message's prepared attachments (without a
    cover page, the attachments as prepared: kept where they were prepared, copied, or moved for
    the ``last`` recipient). The cover page is made beside ``out`` and removed once joined."""
    max_pages = settings.max_pages
    if not plan.cover:
        assert body is not None    # _plan: a message without a cover page has parts
        if body.path == out:
            return body
        return move_prepared(body, out) if last else copy_prepared(body, out)
    cover = out.parent / ".cover.pdf"
    try:
        text_to_pdf(plan.content.body, cover, name="the cover page",
                    heading=mime.cover_heading(plan.content, rcpt.number.e164))
        if body is None:
            return prepare([InputFile("the cover page", cover)], out, max_pages=max_pages)
        return join(cover, body, out, max_pages=max_pages)
    finally:
        with contextlib.suppress(FileNotFoundError):
            cover.unlink()


def _new_job(settings: MailSettings, sender: str, rcpt: Recipient, key: str, plan: _Plan,
         extra_meta: dict[str, Any], asked: Asked | None = None) -> NewJob:
    h = plan.content.headers
    names = [p.name for p in plan.content.parts]
    document = names[0] if names else "the mail text"
    if len(names) > 1:
        document += f" (+{len(names) - 1} more)"
    header = None if settings.header_limit is None else mime.fax_header(h.subject, settings.header_limit)
    meta: dict[str, Any] = {
        "message_id": h.message_id or None,
        "from": h.from_ or None,
        "reply_to": h.reply_to or None,
        "recipient": rcpt.address,
        "documents": names,
        "cover_page": plan.cover,
        "skipped": [{"name": s.name, "why": s.why} for s in plan.content.skipped],
        "no_reply": mime.no_reply_reason(sender, h, settings.domains),
        **extra_meta,
    }
    options = (asked or Asked()).options(FaxOptions(header=header))
    return NewJob(source=Source.SMTP, to=rcpt.number.e164, document=document,
                  options=options, sender=normal_sender(sender) or None,
                  subject=h.subject or None, meta=meta, dedup_key=key)
