"""DATA: a received message → one durable job per fax recipient, and the SMTP reply.

The I/O shell around the pure ``mime`` module and ``intake``:

1. parse and pick the parts; refusals give 554 5.6.1 naming the part, nothing to fax 554 5.6.0;
2. per recipient, the dedup key = sha256(Message-ID (or, without one, the whole message) +
   recipient + hash of what would be faxed). A job with that key made within
   :data:`DEDUP_WINDOW` means the message was sent before (a relay retrying after our 4xx, or a
   confused client): no second fax, and the 250 reply names the job it duplicates. No second
   reply mail either: the first job's reply is the one answer for that message. The key is
   looked for again inside the committing transaction, so the same mail arriving on two
   connections at once also makes one job;
3. the attachments prepared ONCE per message (decoded, checked, converted: ``_prepare_once``),
   then per recipient only its cover page (with that recipient's number) set and joined to them;
   every recipient's document is staged before any job is committed. More than
   ``numbers.max_pages`` pages, or a cover text over ``limits.max_cover_pages``: 554 5.3.4;
4. each job committed (fsynced); only when every recipient's job is committed is 250 answered.
   Our own trouble (database busy, disk full, any OSError) answers 451 4.3.0: the client keeps
   the message and retries, and the retry finds the jobs committed so far by their dedup keys.

All of this is :meth:`MailIntake.accept_now`, run away from the event loop: in the daemon in
worker processes (``intake_procs``: other cores, not the event loop's interpreter lock), in
tests and tools also in worker threads with their own store connections (``workers``).

Window: 5 days, Postfix's default ``maximal_queue_lifetime``: a relay stops retrying by then.
"""

from __future__ import annotations

import binascii
import contextlib
import email.errors
import functools
import hashlib
import mmap
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from faxbridge import crashpoints, intake
from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.documents import copy_prepared, join, prepare, text_pages_at_least, text_to_pdf
from faxbridge.errors import DocumentError, DuplicateJob, StoreError
from faxbridge.ingress import job_caps
from faxbridge.ingress.smtp import mime, mime_bounds
from faxbridge.ingress.smtp.mime_bounds import MailLimits
from faxbridge.ingress.smtp.mime_slim import Raw, digest
from faxbridge.ingress.smtp.policy import Recipient, normal_sender
from faxbridge.ingress.workers import StoreThreads
from faxbridge.models import FaxOptions, InputFile, NewJob, Paper, PreparedDocument, Source
from faxbridge.providers.openfax import HEADER_MAX as OPENFAX_HEADER_MAX
from faxbridge.providers.phaxio import HEADER_MAX as PHAXIO_HEADER_MAX
from faxbridge.store import Store, new_job_id

if TYPE_CHECKING:
    from faxbridge.ingress.intake_procs import IntakeProcesses

log = structlog.get_logger("faxbridge.smtp")

DEDUP_WINDOW = timedelta(days=5)

UNREADABLE_MESSAGE = "554 5.6.0 The message could not be read as a mail message"
INTERNAL_ERROR = ("554 5.6.0 The message could not be read: the fax server failed on it "
                  "(the error is logged for its operator)")
NO_CONTENT = ("554 5.6.0 Nothing to fax: attach a PDF, TIFF, JPEG, PNG, GIF or text file, "
              "or write the text in the mail body")
TOO_MUCH_WORK = ("554 5.3.4 Too much work: the message needs more CPU time or memory than the fax server "
                 "allows one message; send fewer or smaller documents")
_REFUSED_WORK = {INTERNAL_ERROR: "bug", TOO_MUCH_WORK: "too_much_work"}
OUR_TROUBLE = "451 4.3.0 Temporary trouble on the fax server: please try again later"
QUEUED = "250 2.0.0 Queued as job"     # how a reply that made new jobs begins


def unreadable_part(why: str, more: int = 0) -> str:
    extra = f" (and {more} more part{'s' if more > 1 else ''} that cannot be faxed)" if more else ""
    return f"554 5.6.1 {_line(why)}{extra}"


def too_many_pages(why: str) -> str:
    return f"554 5.3.4 Too many pages: {_line(why)}"


def queued(new_ids: Sequence[str], duplicates: Sequence[tuple[str, str]]) -> str:
    """250 naming the jobs made, and the jobs an earlier copy of this message already made."""
    words = []
    if new_ids:
        words.append(f"Queued as job{'s' if len(new_ids) > 1 else ''} {', '.join(new_ids)}")
    if duplicates:
        dup = ", ".join(sorted({job_id for _, job_id in duplicates}))
        words.append(f"Duplicate of job {dup}: already received, not faxed again")
    return "250 2.0.0 " + "; ".join(words)


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


def _line(text: str) -> str:
    return " ".join(text.split())


def header_policy(cfg: Config) -> tuple[int, bool]:
    """The provider's header length, and whether the configuration fixes the header text.

    Openfax takes the job's header as ``toHeader`` (``provider.openfax.to_header`` fixes it);
    Phaxio and the simulator as ``header_text`` (``provider.phaxio.header_text`` fixes it).
    """
    p = cfg.provider
    if p.kind == "openfax":
        return OPENFAX_HEADER_MAX, bool(p.openfax.to_header)
    return PHAXIO_HEADER_MAX, bool(p.phaxio.header_text)


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


def _plan(raw: Raw, cover_mode: str, limits: MailLimits = DEFAULT_LIMITS) -> _Plan | str:
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
      :meth:`MailIntake.accept`), so the operator sees it and can fix it;
    - our trouble where retrying can help (OSError, the store) does not come from here: it is
      answered 451 4.3.0 by :meth:`MailIntake.accept_now`.
    """
    try:
        content = _read(raw, limits)
    except RecursionError:
        return mime_bounds.too_deep(limits.max_nesting)
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


def _read(raw: Raw, limits: MailLimits) -> mime.MailContent | str:
    """The message parsed, its shape checked, its content extracted (or the refusal of its shape)."""
    msg, stash = mime.parse_fast(raw)
    refusal = mime_bounds.verdict(mime_bounds.measure(msg, limits), limits)
    if refusal is not None:
        return refusal
    return mime.extract(msg, stash)


def dedup_key(message_key: str, to: str, doc_hash: str) -> str:
    return hashlib.sha256(f"smtp\0{message_key}\0{to}\0{doc_hash}".encode()).hexdigest()


def _write_parts(work: Path, content: mime.MailContent) -> list[InputFile]:
    """Each part in a file named by its position: a part's own name never becomes a path."""
    files = []
    for index, part in enumerate(content.parts):
        path = work / f"part-{index}.{part.kind}"
        path.write_bytes(part.data)
        files.append(InputFile(part.name, path))
    return files


class MailIntake:
    """Turns one received message into jobs; ``accept`` returns the SMTP reply for DATA.

    The work runs in :class:`StoreThreads` (each with its own store connection), so the event loop
    keeps serving other sessions while documents are converted and fsynced.
    """

    def __init__(self, cfg: Config, open_store: Callable[[], Store], clock: Clock, *, threads: int = 4,
                 processes: IntakeProcesses | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.header_limit, self.header_fixed = header_policy(cfg)
        self.workers = StoreThreads(open_store, size=threads)
        self.processes = processes
        # Called with "bug" (INTERNAL_ERROR) or "too_much_work" (TOO_MUCH_WORK) for each such reply,
        # in the daemon's process whichever worker made it: the daemon counts them in a metric.
        self.on_refused_work: Callable[[str], None] = lambda kind: None

    async def start(self) -> None:
        if self.processes is not None:
            await self.processes.start()
        else:
            self.workers.start()

    async def close(self) -> None:
        if self.processes is not None:
            await self.processes.close()
        await self.workers.close()

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.header_limit, self.header_fixed = header_policy(cfg)
        if self.processes is not None:
            self.processes.reconfigure(cfg)

    async def accept(self, sender: str, recipients: Sequence[Recipient], raw: bytes | Path,
                     extra_meta: dict[str, Any] | None = None) -> str:
        """The reply to DATA; ``raw`` is the message, or the file a big one was spooled to."""
        extra = extra_meta or {}
        if self.processes is not None:
            reply = await self.processes.mail(sender, recipients, raw, extra)
        else:
            reply = await self.workers.run(lambda store: self.accept_file(store, sender, recipients, raw, extra))
        if reply in _REFUSED_WORK:
            self.on_refused_work(_REFUSED_WORK[reply])
        return reply

    def accept_file(self, store: Store, sender: str, recipients: Sequence[Recipient], raw: bytes | Path,
                    extra_meta: dict[str, Any]) -> str:
        """:meth:`accept_now` for a message given as bytes or as its spool file."""
        try:
            message = message_bytes(raw)
        except OSError as exc:
            log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender)
            return OUR_TROUBLE
        try:
            return self.accept_now(store, sender, recipients, message, extra_meta)
        finally:
            done_with(message)

    def accept_now(self, store: Store, sender: str, recipients: Sequence[Recipient], raw: Raw,
                   extra_meta: dict[str, Any]) -> str:
        """The whole DATA decision, blocking (in a worker thread, on that thread's store)."""
        plan = _plan(raw, self.cfg.smtp.cover_page, mail_limits(self.cfg))
        if isinstance(plan, str):
            log.info("smtp.refused", stage="data", reply=plan, sender=sender)
            return plan
        try:
            return self._jobs(store, sender, recipients, plan, extra_meta)
        except DocumentError as exc:
            reply = too_many_pages(exc.reason) if exc.too_many_pages else unreadable_part(exc.reason)
            log.info("smtp.refused", stage="data", reply=reply, sender=sender)
            return reply
        except (StoreError, OSError) as exc:
            log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender)
            return OUR_TROUBLE

    def _jobs(self, store: Store, sender: str, recipients: Sequence[Recipient], plan: _Plan,
              extra_meta: dict[str, Any]) -> str:
        fresh: list[tuple[Recipient, str]] = []
        duplicates: list[tuple[Recipient, str]] = []
        for rcpt in recipients:
            key = dedup_key(plan.message_key, rcpt.number.e164, plan.doc_hash)
            earlier = intake.find_duplicate(store, self.clock, key, DEDUP_WINDOW)
            if earlier is not None:
                duplicates.append((rcpt, earlier.id))
                log.info("smtp.duplicate", job_id=earlier.id, to=rcpt.number.e164,
                         message_id=plan.content.headers.message_id)
            else:
                fresh.append((rcpt, key))
        made: list[str] = []
        staged = self._stage_all(store, fresh, plan) if fresh else []
        job_caps.work_done()   # the CPU cap is for the work: committing what was staged is never cut short
        try:
            while staged:
                rcpt, key, job_id, doc = staged[0]
                new = self._new_job(sender, rcpt, key, plan, extra_meta)
                staged.pop(0)
                try:
                    made.append(intake.commit(store, self.clock, job_id, new, doc, dedup_window=DEDUP_WINDOW).id)
                except DuplicateJob as dup:   # the same mail on another connection, just now
                    duplicates.append((rcpt, dup.job_id))
                    log.info("smtp.duplicate", job_id=dup.job_id, to=rcpt.number.e164,
                             message_id=plan.content.headers.message_id)
                    continue
                crashpoints.hit("smtp.job_committed")
        finally:
            for _, _, job_id, _ in staged:     # not committed (our trouble): not left behind
                store.discard_stage(job_id)
        reply = queued(made, [(r.address, job_id) for r, job_id in duplicates])
        log.info("smtp.accepted", jobs=made, duplicates=[job_id for _, job_id in duplicates], sender=sender)
        return reply

    def _stage_all(self, store: Store, fresh: Sequence[tuple[Recipient, str]],
                   plan: _Plan) -> list[tuple[Recipient, str, str, PreparedDocument]]:
        """Every fresh recipient's document staged, before any job is committed: the work that may
        be refused (pages, content, the job's CPU or memory cap) never leaves half the jobs made."""
        staged: list[tuple[Recipient, str, str, PreparedDocument]] = []
        work = store.staging / f"mail-{new_job_id()}"
        try:
            work.mkdir(parents=True)
            body = self._prepare_once(work, plan)
            for rcpt, key in fresh:
                job_id = new_job_id()
                make = functools.partial(self._document, rcpt=rcpt, plan=plan, body=body, work=work)
                staged.append((rcpt, key, job_id, intake.stage_with(store, job_id, make)))
        except BaseException:
            for _, _, job_id, _ in staged:
                store.discard_stage(job_id)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return staged

    def _prepare_once(self, work: Path, plan: _Plan) -> PreparedDocument | None:
        """The message's attachments as one checked fax-ready PDF, made ONCE for all its recipients
        (only the cover page, which names each recipient, is made per job); None without any.

        Bounds first: a cover page text that would fill more than ``limits.max_cover_pages`` pages
        (or, with the attachments, more than ``numbers.max_pages``) is refused (554 5.3.4) before
        anything is set in type: a 5 MB line of text is refused at once, not after minutes."""
        max_pages = self.cfg.numbers.max_pages
        cover_pages = text_pages_at_least(plan.content.body, Paper.LETTER) if plan.cover else 0
        if cover_pages > self.cfg.limits.max_cover_pages:
            limit = self.cfg.limits.max_cover_pages
            raise DocumentError(f"the mail text would fill more than {limit} cover pages (the limit is {limit}); "
                                "send long text as an attached file", too_many_pages=True)
        if cover_pages > max_pages:
            raise DocumentError(f"the mail text would fill more than {max_pages} pages; the limit is {max_pages}",
                                too_many_pages=True)
        if not plan.content.parts:
            return None
        files = _write_parts(work, plan.content)
        return prepare(files, work / "attachments.pdf", max_pages=max_pages,
                       max_decompressed=self.cfg.limits.max_decompressed)

    def _document(self, out: Path, *, rcpt: Recipient, plan: _Plan, body: PreparedDocument | None,
                  work: Path) -> PreparedDocument:
        """One recipient's document: its cover page and the message's prepared attachments."""
        max_pages = self.cfg.numbers.max_pages
        if not plan.cover:
            assert body is not None    # _plan: a message without a cover page has parts
            return copy_prepared(body, out)
        cover = work / f"cover-{out.parent.name}.pdf"
        text_to_pdf(plan.content.body, cover, name="the cover page",
                    heading=mime.cover_heading(plan.content, rcpt.number.e164))
        if body is None:
            return prepare([InputFile("the cover page", cover)], out, max_pages=max_pages)
        return join(cover, body, out, max_pages=max_pages)

    def _new_job(self, sender: str, rcpt: Recipient, key: str, plan: _Plan, extra_meta: dict[str, Any]) -> NewJob:
        h = plan.content.headers
        names = [p.name for p in plan.content.parts]
        document = names[0] if names else "the mail text"
        if len(names) > 1:
            document += f" (+{len(names) - 1} more)"
        header = None if self.header_fixed else mime.fax_header(h.subject, self.header_limit)
        meta: dict[str, Any] = {
            "message_id": h.message_id or None,
            "from": h.from_ or None,
            "reply_to": h.reply_to or None,
            "recipient": rcpt.address,
            "documents": names,
            "cover_page": plan.cover,
            "skipped": [{"name": s.name, "why": s.why} for s in plan.content.skipped],
            "no_reply": mime.no_reply_reason(sender, h, self.cfg.smtp.domains),
            **extra_meta,
        }
        return NewJob(source=Source.SMTP, to=rcpt.number.e164, document=document,
                      options=FaxOptions(header=header), sender=normal_sender(sender) or None,
                      subject=h.subject or None, meta=meta, dedup_key=key)
