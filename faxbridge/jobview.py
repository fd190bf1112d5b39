"""The job object of contract section 7, and its human-readable forms.

The human-readable forms go to a terminal: every value in them (a file name, a subject, a reason
quoting either) is shown with its control characters escaped (``\\x1b``, ``\\u202e``), so that
no name dropped in a folder or sent in a mail can move the cursor, retitle the window or reorder
the text of whoever runs ``faxbridge jobs``. The JSON forms are JSON-escaped by their encoder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from faxbridge.clock import iso, shown_time
from faxbridge.models import Hold, Job, JobEvent, JobState

SUBMITTING_WORDS = ("the provider call is under way; if faxbridge stopped during it, the next start checks "
                    "the provider's records before anything is sent again")

HOLD_WORDS = {
    Hold.RECONCILE: "held: the outcome of the last submission is unknown; faxbridge is checking the "
                    "provider's records before it sends anything again",
    Hold.UNKNOWN: "held: the provider says it has no record of this fax; it is given up at the time below "
                  "unless it shows up (`faxbridge retry` or `cancel` act on it now)",
}
HOLD_SHORT = {Hold.RECONCILE: "held: checking the provider's records", Hold.UNKNOWN: "held: unknown to the provider"}


# C0 and C1 controls, DEL, and the format characters that reorder or hide text (bidi overrides and
# isolates, line/paragraph separators, zero-width marks).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def shown(value: object) -> str:
    """``value`` as text safe to print on a terminal: control characters escaped."""
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return _UNSAFE.sub(escape, str(value))


def job_object(job: Job, events: Sequence[JobEvent] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": job.id,
        "source": job.source.value,
        "to": job.to,
        "state": job.state.value,
        "final": job.final,
        "reason": job.reason,
        "pages": job.pages,
        "attempts": job.attempts,
        "provider": job.provider,
        "provider_id": job.provider_id,
        "status_code": job.status_code,
        "duration_s": job.duration_s,
        "cost": job.cost,
        "sender": job.sender,
        "subject": job.subject,
        "document": job.document,
        "paper": job.paper.value,
        "resolution": job.options.resolution.value,
        "header": job.options.header,
        "priority": job.options.priority,
        "tags": dict(job.options.tags),
        "hold": _hold(job),
        "submit_tries": job.submit_tries,
        "next_attempt_at": iso(job.next_attempt_at) if not job.final else None,
        "send_at": iso(job.options.send_at),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
        "node": job.node,
    }
    if events is not None:
        obj["events"] = [event_object(e) for e in events]
    return obj


def _hold(job: Job) -> str | None:
    if job.hold:
        return HOLD_WORDS.get(job.hold, job.hold)
    if job.state is JobState.SUBMITTING:
        return SUBMITTING_WORDS
    return None


def event_object(e: JobEvent) -> dict[str, Any]:
    return {"at": iso(e.at), "state": e.state.value, "event": e.event, "reason": e.reason,
            **({"detail": dict(e.detail)} if e.detail else {})}


def seconds(value: float | None) -> str | None:
    if value is None:
        return None
    s = round(value)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def dollars(value: float | None) -> str | None:
    """Provider costs are US dollars (Phaxio bills in cents; Openfax's credit is in dollars)."""
    return None if value is None else f"${value:.2f}"


def _note(job: Job) -> str:
    if job.hold:
        return HOLD_SHORT.get(job.hold, f"held: {job.hold}")
    return job.reason or ""


def _who(job: Job) -> str:
    who = job.sender or ""
    if job.subject:
        who = f"{who} \"{job.subject}\"" if who else f"\"{job.subject}\""
    return who


def job_line(job: Job, *, nodes: bool = False) -> str:
    """One row of ``faxbridge jobs``; ``nodes``: with the NODE column (a shared store)."""
    finished = shown_time(job.finished_at) if job.finished_at else "-"
    to = job.to or "(no number)"
    node = f"{shown(job.node or '-')[:12]:<12}  " if nodes else ""
    return (f"{job.id}  {shown_time(job.created_at):<23}  {job.state.value:<10}  {shown(to):<16}  "
            f"{job.pages:>5}  {job.source.value:<6}  {finished:<23}  {shown(_who(job))[:40]:<40}  "
            f"{node}{shown(_note(job))}").rstrip()


JOBS_HEADER = (f"{'ID':<26}  {'CREATED':<23}  {'STATE':<10}  {'TO':<16}  {'PAGES':>5}  SOURCE  "
               f"{'FINISHED':<23}  {'FROM / SUBJECT':<40}  NOTE")
JOBS_HEADER_NODES = JOBS_HEADER.removesuffix("NOTE") + f"{'NODE':<12}  NOTE"   # a shared store (contract 10)


def waiting(job: Job, now: datetime, *, at_provider: int = 0, per_destination: int = 0) -> str | None:
    """Why a queued job is not being sent yet, in words (``faxbridge job``), or None."""
    if job.state is not JobState.QUEUED:
        return None
    if job.options.send_at is not None and job.options.send_at > now:
        return f"until {shown_time(job.options.send_at)}, the time it was asked to go (send_at)"
    if per_destination > 0 and at_provider >= per_destination:
        faxes = "a fax" if at_provider == 1 else f"{at_provider} faxes"
        return (f"{faxes} to this number {'is' if at_provider == 1 else 'are'} at the provider; it goes when "
                f"{'that one is' if at_provider == 1 else 'one of them is'} done (limits.per_destination = "
                f"{per_destination})")
    return None


def job_text(job: Job, events: Sequence[JobEvent], *, waits: str | None = None) -> str:
    """``faxbridge job ID``: what a person wants to know, in words and units; no internal fields.
    ``waits``: why a queued job is not sent yet (:func:`waiting`)."""
    o = job_object(job)
    rows: list[tuple[str, object]] = [
        ("state", o["state"]), ("waiting", waits), ("reason", o["reason"]), ("hold", o["hold"]),
        ("send at", shown_time(job.options.send_at) if job.options.send_at else None),
        ("gives up at" if job.hold is Hold.UNKNOWN else "next try at",
         shown_time(job.next_attempt_at) if job.next_attempt_at and not job.final else None),
        ("to", job.to or "(no number)"), ("pages", job.pages), ("attempts", job.attempts),
        ("header", job.options.header), ("resolution", job.options.resolution.value),
        ("priority", job.options.priority if job.options.priority != "Normal" else None),
        ("paper", job.paper.value), ("source", job.source.value), ("document", job.document),
        ("sender", job.sender), ("subject", job.subject), ("provider", job.provider),
        ("provider id", job.provider_id), ("status code", job.status_code),
        ("duration", seconds(job.duration_s)), ("cost", dollars(job.cost)),
        ("created", shown_time(job.created_at)),
        ("finished", shown_time(job.finished_at) if job.finished_at else None),
    ]
    lines = [f"job {job.id}"]
    lines += [f"  {label + ':':<16}{shown(value)}" for label, value in rows if value is not None and value != ""]
    lines.append("  history:")
    for e in events:
        reason = f"  {shown(e.reason)}" if e.reason else ""
        attempts = e.detail.get("attempts") if e.detail else None
        dial = f"  (dial attempt {attempts})" if attempts else ""
        lines.append(f"    {shown_time(e.at)}  {e.state.value:<10}  {shown(e.event)}{reason}{dial}")
    return "\n".join(lines)
