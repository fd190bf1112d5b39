"""The job object of contract section 7, and its human-readable forms.

The human-readable forms go to a terminal: every value in them (a file name, a subject, a reason
quoting either) is shown with its control characters escaped (``\\x1b``, ``\\u202e``), so that
no name dropped in a folder or sent in a mail can move the cursor, retitle the window or reorder
the text of whoever runs ``faxbridge jobs``. The JSON forms are JSON-escaped by their encoder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from faxbridge.clock import iso
from faxbridge.models import Job, JobEvent, JobState

SUBMITTING_WORDS = ("the provider call is under way; if faxbridge stopped during it, the next start checks "
                    "the provider's records before anything is sent again")

HOLD_WORDS = {
    "reconcile": "held: the outcome of the last submission is unknown; faxbridge is checking the "
                 "provider's records before it sends anything again",
}


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
        "tags": dict(job.options.tags),
        "hold": _hold(job),
        "submit_tries": job.submit_tries,
        "next_attempt_at": iso(job.next_attempt_at) if not job.final else None,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
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


def job_line(job: Job) -> str:
    note = job.reason or ""
    if job.hold:
        note = "held for reconciliation"
    return (f"{job.id}  {job.created_at:%Y-%m-%d %H:%M}  {job.state.value:<10}  {shown(job.to):<16}  "
            f"{job.pages:>3}p  {job.source.value:<6}  {shown(note)}").rstrip()


JOBS_HEADER = f"{'ID':<26}  {'CREATED (UTC)':<16}  {'STATE':<10}  {'TO':<16}  {'PAGES':>4}  SOURCE  NOTE"


def job_text(job: Job, events: Sequence[JobEvent]) -> str:
    o = job_object(job)
    lines = [f"job {job.id}"]
    for key in ("state", "reason", "hold", "to", "pages", "attempts", "source", "document", "sender",
                "subject", "provider", "provider_id", "status_code", "duration_s", "cost", "submit_tries",
                "next_attempt_at", "created_at", "finished_at"):
        value = o.get(key)
        if value is not None and value != "":
            lines.append(f"  {key + ':':<16}{shown(value)}")
    lines.append("  history:")
    for e in events:
        reason = f"  {shown(e.reason)}" if e.reason else ""
        lines.append(f"    {iso(e.at)}  {e.state.value:<10}  {shown(e.event)}{reason}")
    return "\n".join(lines)
