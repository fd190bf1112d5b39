"""Accepting a document for faxing: number policy, fax-ready PDF, durable job.

Every ingress (the CLI, SMTP, folders) ends here. The document is prepared into the store's
staging folder and the job committed by :meth:`Store.enqueue`, which fsyncs before it
commits: when ``accept`` returns, the job is durable. ``accept`` is ``stage_document`` (no
database: may run in a worker process) followed by ``commit_staged``; the SMTP listener calls the halves
itself, one job per recipient (staged in a worker process, committed through the async
:class:`~faxbridge.store.JobStore` with :func:`commit_staged`); the folder intake stages a round of
files and commits their jobs together (``JobStore.enqueue_many``, one transaction:
:mod:`faxbridge.ingress.folder.commit`).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import structlog

from faxbridge.clock import Clock
from faxbridge.config import Config, NumbersConfig
from faxbridge.documents import OfficeSettings, prepare
from faxbridge.documents._pdf import DEFAULT_MAX_DECOMPRESSED
from faxbridge.models import InputFile, Job, NewJob, Paper, PreparedDocument
from faxbridge.numbers import ParsedNumber, check_policy, parse
from faxbridge.store import DOC_NAME, DocumentSpool, JobStore, Staged, new_job_id
from faxbridge.store.protocol import RECEIVED_DIR

log = structlog.get_logger("faxbridge.intake")


def office_settings(cfg: Config) -> OfficeSettings:
    """How this configuration converts Office documents (``[documents]``; no converter: refused)."""
    return OfficeSettings(soffice=cfg.documents.soffice(), timeout=cfg.documents.convert_timeout)


@functools.lru_cache(maxsize=1024)
def destination(text: str, policy: NumbersConfig) -> ParsedNumber:
    """Parse and check a destination; NumberError with a reason for a person.

    Remembered for the last 1,024 numbers and policies (both immutable; a refusal is not kept):
    an office faxes the same few numbers, and reading one costs phonenumbers about half a
    millisecond at each RCPT, about 5 % of the daemon's CPU for a mail."""
    number = parse(text, policy.default_country, strict=policy.strict)
    check_policy(number, policy)
    return number


async def accept(store: JobStore, clock: Clock, new: NewJob, files: Sequence[InputFile], *,
                 max_pages: int) -> Job:
    """Prepare the documents and commit one queued job (``faxbridge send``: the document is made on
    the caller's thread, the CLI has nothing else to do meanwhile). Raises DocumentError /
    StoreError and leaves no trace then."""
    job_id = new_job_id()
    doc = stage_document(store.spool, job_id, files, max_pages=max_pages, paper=new.options.paper)
    keep_received(doc.path.parent, files)
    return await commit_staged(store, clock, Staged(job_id, new, doc))


def stage_document(spool: DocumentSpool, job_id: str, files: Sequence[InputFile], *, max_pages: int,
                   paper: Paper | None = None, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> PreparedDocument:
    """The first half of :func:`accept`: the fax-ready PDF in the job's staging folder, fsynced.
    Touches no database. On failure the staging folder is removed."""
    staged = spool.stage(job_id)
    try:
        return prepare(files, staged / DOC_NAME, max_pages=max_pages, paper=paper, max_decompressed=max_decompressed)
    except BaseException:
        spool.discard_stage(job_id)
        raise


async def commit_staged(store: JobStore, clock: Clock, item: Staged, *,
                        dedup_window: timedelta | None = None, sender_limit: int = 0) -> Job:
    """Commit a staged document's job through the :class:`~faxbridge.store.JobStore` (the
    second half of :func:`accept`; the daemon's side of a document staged in a worker
    process). On any failure, a :class:`DuplicateJob` too, the staging folder is removed.
    ``sender_limit`` (``limits.per_sender_per_hour``; 0: none): jobs of the sender in the last hour,
    counted by the store as it commits (:class:`~faxbridge.errors.SenderOverLimit`)."""
    now = clock.now()
    try:
        job = await store.enqueue(item.job_id, item.new, item.doc, now,
                                  dedup_since=None if dedup_window is None else now - dedup_window,
                                  sender_limit=(now - timedelta(hours=1), sender_limit) if sender_limit > 0 else None)
    except BaseException:
        store.spool.discard_stage(item.job_id)
        raise
    log.info("job.enqueued", job_id=job.id, source=job.source.value, to=job.to, pages=job.pages,
             document=job.document)
    return job


NAME_BYTES = 120          # of a received document's own name kept in its file name


def received_name(index: int, name: str) -> str:
    """``3-Rechnung März.pdf``: the position, then the name as given with anything that is not a
    letter, digit, space, dot, dash or underscore made ``_`` (no path, no control character), at
    most ``NAME_BYTES`` bytes of it, never hidden."""
    kept = "".join(ch if ch.isalnum() or ch in " ._-" else "_" for ch in name.rsplit("/", 1)[-1]).strip(" .")
    while len(kept.encode()) > NAME_BYTES:
        kept = kept[:-1]
    return f"{index}-{kept or 'document'}"


def write_received(staged: Path, documents: Sequence[tuple[str, bytes]]) -> list[InputFile]:
    """Documents received as bytes (a mail's parts) written where a job keeps them as received
    (``RECEIVED_DIR`` in its staging folder ``staged``, named by :func:`received_name`, 0600): the
    files its document is then made from, and that other recipients' jobs link to
    (:func:`keep_received`). Not fsynced: the document made from them is. A failure (a full disk)
    is raised: without them there is nothing to make the document from."""
    if not documents:
        return []
    folder = staged / RECEIVED_DIR
    folder.mkdir(mode=0o700)
    files: list[InputFile] = []
    for index, (name, data) in enumerate(documents):
        path = folder / received_name(index, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as fh:
            os.fchmod(fd, 0o600)                      # private whatever the umask (as the spool)
            fh.write(data)
        files.append(InputFile(name, path))
    return files


def keep_received(staged: Path, originals: Sequence[InputFile]) -> None:
    """Keep the documents as received beside a staged job's document (``RECEIVED_DIR`` in its
    staging folder ``staged``; the store moves it into the spool with the document), so the console
    can give them back. A hard link where the original is a file of ours in the staging area (a
    mail's parts, shared by its recipients' jobs), else a copy. Keeping them is a courtesy: a
    failure (a full disk) is logged and the job goes on without them."""
    if not originals:
        return
    folder = staged / RECEIVED_DIR
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        for index, original in enumerate(originals):
            target = folder / received_name(index, original.name)
            try:
                os.link(original.path, target)
            except OSError:
                shutil.copyfile(original.path, target)
            os.chmod(target, 0o600)                     # private whatever the umask (as the spool)
    except OSError as exc:
        log.warning("intake.received_not_kept", folder=str(staged), error=exc.strerror or str(exc))
        shutil.rmtree(folder, ignore_errors=True)
