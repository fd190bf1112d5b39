"""What a job's page shows beside the fax: the documents as received, and what the job produced for
its sender (the reply mail's text, or the result file's content).

- The documents as received are the files intake kept beside the fax-ready PDF
  (:data:`~faxbridge.store.protocol.RECEIVED_DIR`, ``N-name``; :func:`faxbridge.intake.keep_received`);
  a mail job shows its attachments under their names from the mail (``meta["documents"]``).
- A mail job's reply is composed again from the job, exactly as :mod:`faxbridge.notify.mail` writes
  it (the text is made from the job and its history; only ``Date`` and ``Message-ID`` are the
  sending's own). A folder job's result is the file in its results folder, read as it is there now
  (:func:`faxbridge.ingress.folder.results.read_result`).

The readers touch the disk: the console calls them in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from faxbridge.clock import shown_time
from faxbridge.config import Config
from faxbridge.ingress.folder.control import result_name
from faxbridge.ingress.folder.results import FolderOrigin, read_result
from faxbridge.models import Job, JobEvent, Source
from faxbridge.notify import mail
from faxbridge.store import DocumentSpool
from faxbridge.store.protocol import Notice

NOTICE_WORDS = {"mail": "the reply mail", "sidecar": "the result file", "copy": "the copy for notify.copy_to",
                "receipt": "the receipt"}


@dataclass(frozen=True)
class Received:
    index: int
    name: str            # as the sender named it
    path: Path
    size: int


@dataclass(frozen=True)
class Produced:
    what: str                      # a sentence: what it is, where it went, or why there is none
    text: str | None = None        # its content


def received(spool: DocumentSpool, job: Job) -> list[Received]:
    """The documents as received, in the order given; [] when none were kept."""
    folder = spool.received_path(job.id)
    found: list[Received] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                index, dash, name = entry.name.partition("-")
                if dash and index.isdigit() and entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    found.append(Received(int(index), name, Path(entry.path), size))
    except OSError:
        return []
    found.sort(key=lambda r: r.index)
    names = job.meta.get("documents") if job.source is Source.SMTP else None
    if isinstance(names, list) and len(names) == len(found) and all(isinstance(n, str) for n in names):
        found = [Received(r.index, n, r.path, r.size) for r, n in zip(found, names, strict=True)]
    return found


def notice_state(n: Notice) -> str:
    """Where a notification stands, in words: ``sent 2026-12-03 09:10:06 UTC``."""
    done = "written" if n.kind == "sidecar" else "sent"
    if n.delivered_at is not None:
        if n.last_error and n.last_error.startswith("undeliverable"):
            return f"given up {shown_time(n.delivered_at)}: {n.last_error}"
        return f"{done} {shown_time(n.delivered_at)}"
    if n.attempts:
        return (f"not {done} yet: {n.attempts} tr{'y' if n.attempts == 1 else 'ies'} failed, the last with "
                f"{n.last_error or 'no error recorded'}; next try {shown_time(n.next_at)}")
    return f"to be {done}"


def notices_in_words(notices: Sequence[Notice]) -> list[str]:
    return [f"{NOTICE_WORDS.get(n.kind, n.kind)}: {notice_state(n)}" for n in notices]


def reply_mail(cfg: Config, job: Job, events: Sequence[JobEvent]) -> Produced:
    if not job.sender:
        return Produced("No reply mail: the mail had no sender to answer.")
    if cfg.notify.smarthost is None:
        return Produced("No reply mail: notify.smarthost is empty.")
    why = mail.no_reply_reason(job, cfg.smtp.allowed_senders)
    if why is not None:
        return Produced(f"No reply mail: {why}.")
    if not job.final:
        return Produced(f"A reply mail goes to {job.sender} when the fax is done.")
    head = (f"From: faxbridge <{cfg.notify.from_address}>\nTo: {job.sender}\nSubject: {mail.subject(job)}\n"
            f"In-Reply-To: {mail.message_id(job.meta.get('message_id')) or '(none)'}\n\n")
    return Produced(f"The reply mail to {job.sender}:", head + mail.body(job, events))


def result_file(job: Job) -> Produced:
    origin = FolderOrigin.of(job.meta)
    where = f" in {origin.results}" if origin is not None else ""
    if not job.final:
        return Produced(f"The result file {result_name(job.document)} is written{where} when the fax is done.")
    found = read_result(job)
    if found is None:
        return Produced(f"The result file {result_name(job.document)}{where} is not there (not written yet, "
                        "or taken away by whoever reads the results).")
    path, text = found
    return Produced(f"The result file {path}:", text)


def produced(cfg: Config, job: Job, events: Sequence[JobEvent]) -> Produced:
    if job.source is Source.SMTP:
        return reply_mail(cfg, job, events)
    if job.source is Source.FOLDER:
        return result_file(job)
    return Produced("Sent from the command line: no reply; `faxbridge job` and `faxbridge send --wait` "
                    "show how it went.")
