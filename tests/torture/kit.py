"""What the crash tests share: a mail client that behaves like a relay, a reader of result files,
the store's integrity check after a kill, and the per-job counts the invariants are made of."""

from __future__ import annotations

import json
import smtplib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ingress.mailkit import Received


@dataclass
class Mail:
    message_id: str
    recipients: list[str]            # fax addresses (and maybe one of another domain)
    raw: bytes
    answer: int | None = None        # the final SMTP answer to DATA (250, 5xx); None: none yet
    text: str = ""                   # that answer's text


def send_mail(port: int, mail: Mail, sender: str = "alice@example.com") -> None:
    """One SMTP dialogue; records the DATA answer, or leaves None when the daemon died meanwhile
    (the answer is kept even when the connection breaks at QUIT afterwards)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo()
            client.mail(sender)
            codes = [client.rcpt(r)[0] for r in mail.recipients]
            if 250 not in codes:       # every recipient refused: for good (5xx), or for now (4xx)
                mail.answer = min(codes)
                return
            code, text = client.data(mail.raw)
            mail.answer, mail.text = code, text.decode("utf-8", "replace")
    except smtplib.SMTPResponseException as exc:
        mail.answer = exc.smtp_code
        mail.text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
    except (OSError, smtplib.SMTPException):
        return  # no answer: the sender's server keeps it and tries again


def needs_resend(mail: Mail) -> bool:
    """What a relay sends again: no answer, or a 4xx."""
    return mail.answer is None or 400 <= mail.answer < 500


def watch_results(folder: Path, stop: threading.Event, partial: list[str], seen: set[str] | None = None) -> None:
    """A reader polling the results folder: every result file it sees must parse whole (names that
    did not are appended to ``partial``; names seen, to ``seen``)."""
    while not stop.is_set():
        for path in folder.glob("*.result.json"):
            try:
                json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except ValueError:
                partial.append(path.name)
            else:
                if seen is not None:
                    seen.add(path.name)
        time.sleep(0.02)


def integrity(db_path: Path) -> str:
    """``PRAGMA integrity_check`` of the store as a new process would find it after a kill."""
    db = sqlite3.connect(db_path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def sends_per_job(sends: Iterable[dict[str, Any]]) -> Counter[str]:
    """Faxes the provider (the simulator) received, by the job that sent them."""
    return Counter(str(s["job_tag"]) for s in sends)


def replies_per_job(replies: Iterable[Received]) -> Counter[str]:
    """Reply mails the smarthost received, by job."""
    return Counter(str(m.message["X-Faxbridge-Job"]) for m in replies)
