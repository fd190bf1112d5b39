"""Openfax's view of a simulated fax: call-history rows and the postback.

Each finished call attempt becomes one history row, numbered by ``HistoryOutboundFaxID``,
sequential across the account in the order the attempts finished (ties by OutTransID).
A row is written once and never changes: its ``CurrentState`` is the state right after
that attempt (7 waiting for redial, 8 delivered, 9 failed, 10 document conversion
failed). A document that cannot be rendered gets one row with ``RetryCount`` 0. Rows are
made lazily ("materialized") whenever the simulator looks, always for every attempt
finished by then, so ids grow with time and ``LastHistoryID`` is a safe cursor.

That is the "snapshot" mode. The Openfax document never says rows are immutable, so the
simulator also plays ``rows = "in_place"``: one row per fax, numbered when the fax is accepted
and updated where it stands as the fax moves (``CurrentState`` 1 Rendering with ``RenderStatus``
0 and ``PageCount`` 0, 5 Dialing, 7 Waiting for Redial, then 8/9/10), so a reader that only
asks for ids above the last one it saw never learns how a fax ended.

Numeric columns are JSON numbers (the doc types them Int/BigInt), text columns strings.
Rows carry ``LastStatus`` (0 Successful, 1 No Answer, 2 Busy, 3 Not Fax, 8 Doc Conversion
Failed). The summary report (DetailType 0) holds the final row of each finished fax.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from faxbridge.simulator.records import SimFax
from faxbridge.simulator.timing import MAX_ATTEMPTS, Attempt, CallResult

LAST_STATUS: dict[CallResult, int] = {
    CallResult.DELIVERED: 0,
    CallResult.NO_ANSWER: 1,
    CallResult.BUSY: 2,
    CallResult.NOT_FAX: 3,
    CallResult.SIM_LINE_ERROR: 7,
    CallResult.SIM_FAX_ERROR: 7,
}
DOC_CONVERSION_FAILED = 8
STATE_WAITING_REDIAL = 7
STATE_DELIVERED = 8
STATE_FAILED = 9
STATE_DOC_FAILED = 10
CALLER_ID = 15555550100
FIRST_HISTORY_ID = 921363
PAPERS = ("letter", "legal", "a4")


@dataclass(frozen=True)
class HistoryRow:
    history_id: int
    fax_id: str
    account: str
    fax_number: str                  # digits, as submitted
    submitted: date                  # the fax's submission date (UTC), for FromDate/ToDate
    current_state: int
    retry_count: int
    last_status: int
    render_status: int
    page_count: int
    to_header: str
    from_header: str
    resolution: int
    paper: int

    @property
    def final(self) -> bool:
        return self.current_state in (STATE_DELIVERED, STATE_FAILED, STATE_DOC_FAILED)

    def to_json(self) -> dict[str, Any]:
        return {
            "HistoryOutboundFaxID": self.history_id,
            "OutTransID": int(self.fax_id),
            "AccountID": int(self.account),
            "FaxNumber": int(self.fax_number),
            "CurrentState": self.current_state,
            "CallerID": CALLER_ID,
            "MaxAttempts": MAX_ATTEMPTS,
            "RetryCount": self.retry_count,
            "ToHeader": self.to_header,
            "FromHeader": self.from_header,
            "FaxResolution": self.resolution,
            "RenderStatus": self.render_status,
            "FaxDocURL": f"{self.fax_id}.tif",
            "PageCount": self.page_count,
            "PaperSize": self.paper,
            "LastStatus": self.last_status,
        }


def _row(fax: SimFax, history_id: int, attempt: Attempt | None) -> HistoryRow:
    send = fax.send
    timeline = fax.recipients[0].timeline
    if attempt is None:   # the document failed to render
        state, retry, last, render = STATE_DOC_FAILED, 0, DOC_CONVERSION_FAILED, 2
    else:
        is_last = attempt.number == len(timeline.attempts)
        if not is_last:
            state = STATE_WAITING_REDIAL
        else:
            state = STATE_DELIVERED if attempt.result is CallResult.DELIVERED else STATE_FAILED
        retry, last, render = attempt.number, LAST_STATUS[attempt.result], 1
    return HistoryRow(
        history_id=history_id,
        fax_id=fax.id,
        account=fax.account,
        fax_number=fax.recipients[0].number.lstrip("+"),
        submitted=fax.accepted_at.date(),
        current_state=state,
        retry_count=retry,
        last_status=last,
        render_status=render,
        page_count=fax.pages if render == 1 else 0,
        to_header=send.to_header or "",
        from_header=send.header or "",
        resolution=1 if send.resolution == "fine" else 0,
        paper=PAPERS.index(send.paper) if send.paper in PAPERS else 0,
    )


def materialize(faxes: list[SimFax], now: datetime, next_id: int) -> list[HistoryRow]:
    """New rows for every attempt finished by ``now`` and not yet written, in id order."""
    due: list[tuple[datetime, int, int, SimFax, Attempt | None]] = []
    for fax in faxes:
        timeline = fax.recipients[0].timeline
        elapsed = fax.elapsed(now)
        if timeline.render_error is not None:
            if elapsed >= timeline.render_end and 0 not in fax.history:
                due.append((fax.real(timeline.render_end), int(fax.id), 0, fax, None))
            continue
        for attempt in timeline.attempts:
            if attempt.end <= elapsed and attempt.number not in fax.history:
                due.append((fax.real(attempt.end), int(fax.id), attempt.number, fax, attempt))
    due.sort(key=lambda d: (d[0], d[1], d[2]))
    rows = []
    for offset, (_, _, number, owner, finished) in enumerate(due):
        owner.history.add(number)
        rows.append(_row(owner, next_id + offset, finished))
    return rows


STATE_RENDERING = 1
STATE_DIALING = 5
LAST_STATUS_PROCESSING = -1


def current_row(fax: SimFax, history_id: int, now: datetime) -> HistoryRow:
    """The fax's one row as it stands at ``now`` ("in_place" mode)."""
    timeline = fax.recipients[0].timeline
    elapsed = fax.elapsed(now)
    if timeline.render_error is not None and elapsed >= timeline.render_end:
        return _row(fax, history_id, None)
    done = [a for a in timeline.attempts if a.end <= elapsed]
    if done:
        return _row(fax, history_id, done[-1])
    row = _row(fax, history_id, timeline.attempts[0]) if timeline.attempts else _row(fax, history_id, None)
    rendered = elapsed >= timeline.render_end
    return replace(row, current_state=STATE_DIALING if rendered else STATE_RENDERING, retry_count=0,
                   last_status=LAST_STATUS_PROCESSING, render_status=1 if rendered else 0,
                   page_count=fax.pages if rendered else 0)


def postback_fields(fax: SimFax) -> list[tuple[str, str]]:
    """The postback Openfax sends when a fax is final (portal setting)."""
    timeline = fax.recipients[0].timeline
    last = timeline.attempts[-1] if timeline.attempts else None
    status = DOC_CONVERSION_FAILED if last is None else LAST_STATUS[last.result]
    duration = 0 if last is None else round(last.duration)
    return [
        ("OutTransID", fax.id),
        ("AccountID", fax.account),
        ("From", fax.send.header or ""),
        ("To", fax.send.to_header or ""),
        ("PagesSent", str(timeline.pages_sent)),
        ("CallDuration", str(duration)),
        ("LastStatus", str(status)),
        ("RealCost", f"{timeline.cost_cents / 100:.2f}"),
    ]
