"""Phaxio's view of a simulated fax: the fax object of ``GET /faxes/{id}`` and the callback.

Shaped like the recorded v2.1 reply (providers.md 1.3): RFC 3339 timestamps with an offset,
``cost`` in integer cents, ``num_pages`` 0 until rendered, recipient ``status`` null while
rendering. ``retry_count`` is the number of redials made so far (attempts - 1).

Error mapping (decided here, documented in the simulator's README section of the report):

=====================  ====================  ====  =====================================
outcome                error_type            id    error_message
=====================  ====================  ====  =====================================
busy                   lineError             17    Busy
no answer              lineError             30    No answer from the fax machine.
not a fax machine      faxError              6     Timed out waiting for initial
                                                   communication (no fax answered)
unreadable document    documentConversion…   4     There was a problem in converting …
unsupported file type  documentConversion…   129   Mimetype not supported.
test_fail              (that type)           122 / 121 / 6 / null / null (faxError: There
                                                   was an error communicating with the far side.)
canceled               generalError          null  Fax canceled (…)
=====================  ====================  ====  =====================================
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from faxbridge.simulator.records import SimFax, SimRecipient
from faxbridge.simulator.timing import CallResult, Phase, RenderError, Snapshot

ErrorTriple = tuple[str, int | None, str]

CALL_ERRORS: dict[CallResult, ErrorTriple] = {
    CallResult.BUSY: ("lineError", 17, "Busy"),
    CallResult.NO_ANSWER: ("lineError", 30, "No answer from the fax machine."),
    CallResult.NOT_FAX: ("faxError", 6, "Timed out waiting for initial communication"),
    CallResult.SIM_LINE_ERROR: ("lineError", 121, "User requested simulated lineError"),
    CallResult.SIM_FAX_ERROR: ("faxError", 6, "There was an error communicating with the far side."),
}
RENDER_ERRORS: dict[RenderError, ErrorTriple] = {
    RenderError.CONVERSION: (
        "documentConversionError", 4,
        "There was a problem in converting and merging files to the output file format. Contact support.",
    ),
    RenderError.MIMETYPE: ("documentConversionError", 129, "Mimetype not supported."),
    RenderError.SIMULATED: ("documentConversionError", 122, "User simulated Document Conversion Error"),
    RenderError.FATAL: ("fatalError", None, "User requested simulated fatalError"),
    RenderError.GENERAL: ("generalError", None, "User requested simulated generalError"),
}
ERROR_TYPES = ("documentConversionError", "lineError", "faxError", "fatalError", "generalError")
BITRATE = 14400
RESOLUTION_PX_PER_M = 8040
FINAL = ("success", "failure", "partialsuccess")


def rfc3339(dt: datetime | None) -> str | None:
    """2026-11-22T10:00:00.000+00:00, like Phaxio's ``2021-11-04T16:28:30.000-05:00``."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def recipient_error(fax: SimFax, rec: SimRecipient, snap: Snapshot) -> ErrorTriple | None:
    if snap.phase is Phase.CANCELED:
        why = "cancel_timeout reached" if fax.canceled_by_timeout() else "canceled by request"
        return ("generalError", None, f"Fax canceled ({why})")
    if rec.timeline.render_error is not None and snap.final:
        return RENDER_ERRORS[rec.timeline.render_error]
    last = snap.last
    waiting = snap.phase in (Phase.WAITING_REDIAL, Phase.FAILED)
    if waiting and last is not None and last.result is not CallResult.DELIVERED:
        return CALL_ERRORS[last.result]
    return None


def recipient_status(snap: Snapshot) -> str | None:
    return {
        Phase.BATCHING: "queued",
        Phase.RENDERING: None,
        Phase.RINGING: "ringing",
        Phase.CONNECTED: "callactive",
        Phase.WAITING_REDIAL: "willretry",
        Phase.DELIVERED: "success",
        Phase.FAILED: "failure",
        Phase.CANCELED: "failure",
    }[snap.phase]


def recipient_json(fax: SimFax, rec: SimRecipient, now: datetime) -> dict[str, Any]:
    snap = fax.snapshot(rec, now)
    error = recipient_error(fax, rec, snap)
    delivered = snap.phase is Phase.DELIVERED
    return {
        "phone_number": rec.number,
        "status": recipient_status(snap),
        "retry_count": max(0, snap.started - 1),
        "completed_at": rfc3339(fax.real(snap.final_at)) if snap.final_at is not None else None,
        "bitrate": BITRATE if delivered else None,
        "resolution": RESOLUTION_PX_PER_M if delivered else None,
        "error_type": error[0] if error else None,
        "error_id": error[1] if error else None,
        "error_message": error[2] if error else None,
    }


def fax_status(fax: SimFax, snaps: list[Snapshot]) -> str:
    if all(s.final for s in snaps):
        delivered = sum(1 for s in snaps if s.phase is Phase.DELIVERED)
        if delivered == len(snaps):
            return "success"
        return "failure" if delivered == 0 else "partialsuccess"
    if any(s.phase is Phase.BATCHING for s in snaps):
        return "pendingbatch"
    if all(s.phase in (Phase.BATCHING, Phase.RENDERING) for s in snaps):
        return "queued"
    return "inprogress"


def fax_json(fax: SimFax, now: datetime, version: str | None = None) -> dict[str, Any]:
    """The fax object at ``now``. ``version`` ("v2" | "v2.1"): the API it is read through."""
    snaps = [fax.snapshot(r, now) for r in fax.recipients]
    recipients = [recipient_json(fax, r, now) for r in fax.recipients]
    status = fax_status(fax, snaps)
    rendered = any(s.rendered for s in snaps) and fax.recipients[0].timeline.render_error is None
    cost = sum(a.pages_sent for s in snaps for a in s.done) * 7
    failed = next((r for r in recipients if r["error_type"] and r["status"] == "failure"), None)
    data: dict[str, Any] = {
        "id": int(fax.id),
        "direction": "sent",
        "num_pages": fax.pages if rendered else 0,
        "status": status,
        "is_test": fax.is_test,
        "created_at": rfc3339(fax.accepted_at),
        "caller_id": fax.caller_id,
        "from_number": None,
        "completed_at": rfc3339(fax.final_real()) if status in FINAL else None,
        "caller_name": None,
        "cost": cost,
        "tags": dict(fax.send.tags),
        "recipients": recipients,
        "to_number": None,
        "error_id": failed["error_id"] if failed and status != "success" else None,
        "error_type": failed["error_type"] if failed and status != "success" else None,
        "error_message": failed["error_message"] if failed and status != "success" else None,
    }
    if (version or fax.api_version) == "v2.1":
        data["barcodes"] = []
    return data


def callback_fields(fax: SimFax) -> list[tuple[str, str]]:
    """The non-file fields of the send callback, the fax as it stood when it became final."""
    fax_obj = fax_json(fax, fax.final_real(), fax.api_version)
    fields = [
        ("fax", json.dumps(fax_obj, separators=(",", ":"))),
        ("success", "true" if fax_obj["status"] == "success" else "false"),
        ("is_test", "true" if fax.is_test else "false"),
        ("direction", "sent"),
    ]
    if fax.api_version == "v2.1":
        fields.append(("event_type", "fax_completed"))
    return fields
