"""Openfax adapter: faxSendSubmit.php, getAvailableCredit.php, outboundDetailsbyDate.php.

The wire protocol is the 2017 Openfax document (providers.md §2). Where it leaves a detail
open ([I]/[U] there) this adapter accepts every plausible variant:

- Requests are ``multipart/form-data`` POSTs, as PHP curl sends an array; ``PDF_encode`` is a
  plain form field (no filename, so PHP sees it in ``$_POST``), base64-encoded while streaming.
- The from-header goes out as both ``fromHeader`` (the code sample) and ``frHeader`` (the tables).
- Replies may be a JSON object or a one-element JSON array of it; ``Response`` is compared
  case-insensitively, ignoring spaces, so "Restricted Number" = "RestrictedFaxNumber"'s sibling
  and "InvalidPapersize" = "InvalidPaperSize". ``OutTransID`` may be a number or a string.
- Balance: ``AvailableCredit`` (the sample) or ``AccountBalance`` (the table), object or array.
- Report: a JSON array of rows, or an object holding one; rows may lack ``LastStatus``; numbers
  may arrive as strings. A ``Response`` of "No..." (no records) means an empty report.
- Openfax has no per-fax status call and no cancel call: status comes from the report.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NoReturn

import httpx

from faxbridge.clock import Clock, SystemClock, parse_iso
from faxbridge.errors import AccountError, PermanentProviderError, RefusedError, TransientProviderError
from faxbridge.models import (
    Balance,
    FaxOutcome,
    Paper,
    PendingFax,
    PollResult,
    Resolution,
    StatusUpdate,
    SubmissionLookup,
    SubmitReceipt,
    SubmitRequest,
)
from faxbridge.providers import base
from faxbridge.providers.base import FilePart, MultipartBody, as_float, as_int
from faxbridge.providers.reasons import OPENFAX_CONDITIONS, condition, openfax_verdict

NAME = "openfax"
HEADER_MAX = 15
PAGE_LIMIT = 1000  # the doc writes the maximum as "1,0000"; 1000 is the safe reading [I]
MAX_PAGES = 10_000  # a bound on report paging, so a misbehaving server cannot loop us forever
MAX_MARKS = 256  # report checkpoints kept (one per poll cycle: about two hours at the default 30 s)

_PAPER = {Paper.LETTER: "0", Paper.LEGAL: "1", Paper.A4: "2"}


def fax_number(e164: str) -> str:
    """E.164 → Openfax FaxNumber: the digits without "+" (NANP 1NPANXXXXXX, else CC + number)."""
    digits = e164.strip().removeprefix("+")
    if not digits.isdigit():
        raise RefusedError(f"Invalid fax number: {e164!r} is not in E.164 form", provider=NAME)
    return digits


def _first(data: Any) -> Any:
    """Openfax may wrap a reply object in a one-element array."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return data


def _raise_condition(cond_raw: object, *, submit: bool, secrets: Sequence[str] = ()) -> NoReturn:
    cond = condition(cond_raw)
    kind, reason = OPENFAX_CONDITIONS.get(cond, ("unknown", ""))
    code = base.words(base.redact(str(cond_raw), secrets), 60)
    if kind == "transient":
        raise TransientProviderError(reason, provider=NAME, code=code)
    if kind in ("auth", "inactive"):
        raise AccountError(reason, provider=NAME, code=code, kind=kind)
    if kind == "refused" and submit:
        raise RefusedError(reason, provider=NAME, code=code)
    if kind == "refused":
        raise PermanentProviderError(reason, provider=NAME, code=code)
    what = "refused the fax" if submit else "refused the request"
    raise RefusedError(f"Openfax {what}: it answered {code!r}", provider=NAME, code=code)


@dataclass
class _Fax:
    """What the report says of one OutTransID: its latest row and how many attempts we saw."""

    latest: dict[str, Any]
    latest_id: int
    attempts: int | None = None
    history: set[int] = field(default_factory=set)


def _row_update(out_id: str, fax: _Fax, job_id: str | None = None) -> StatusUpdate:
    row = fax.latest
    state = as_int(row.get("CurrentState"))
    last = as_int(row.get("LastStatus"))  # may be missing from report rows [U]
    # RetryCount is "the sequence number of this call of MaxAttempts" (0: never dialled, e.g. the
    # document failed to render). Rows without it [U]: count the attempt rows seen instead.
    attempts = fax.attempts if fax.attempts is not None else len(fax.history) or None
    verdict = openfax_verdict(state, last, attempts)
    if last is None and verdict.outcome is FaxOutcome.DELIVERED:
        last = 0
    pages = as_int(row.get("PagesSent")) or as_int(row.get("PageCount"))
    return StatusUpdate(
        provider=NAME,
        provider_id=out_id,
        outcome=verdict.outcome,
        reason=verdict.reason,
        status_code=last,
        pages=pages or None,
        attempts=attempts,
        duration_s=as_float(row.get("CallDuration")),
        cost=as_float(row.get("RealCost", row.get("Cost"))),
        retryable=verdict.retryable,
        job_id=job_id,
        raw_status=None if state is None else str(state),
    )


def parse_postback(fields: Mapping[str, str]) -> StatusUpdate:
    """An Openfax webhook postback (sent when the fax is final) → StatusUpdate.

    Fields: OutTransID, AccountID, From, To, PagesSent, CallDuration, LastStatus, RealCost.
    The HTTP method is [U] (PHP ``$_REQUEST``): the caller passes query or form fields alike.
    Raises ValueError when OutTransID is missing.
    """
    out_id = str(fields.get("OutTransID", "")).strip()
    if not out_id:
        raise ValueError("Openfax postback without OutTransID")
    last = as_int(fields.get("LastStatus"))
    attempts = as_int(fields.get("RetryCount"))  # not documented; used when present [U]
    state = as_int(fields.get("CurrentState"))  # not documented; used when present [U]
    verdict = openfax_verdict(state, last, attempts)
    return StatusUpdate(
        provider=NAME,
        provider_id=out_id,
        outcome=verdict.outcome,
        reason=verdict.reason,
        status_code=last,
        pages=as_int(fields.get("PagesSent")),
        attempts=attempts,
        duration_s=as_float(fields.get("CallDuration")),
        cost=as_float(fields.get("RealCost")),
        retryable=verdict.retryable,
        raw_status=None if last is None else f"LastStatus {last}",
    )


def _when(value: object) -> datetime | None:
    try:
        return parse_iso(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass
class Cursor:
    """The report cursor: the highest ``HistoryOutboundFaxID`` read, and checkpoints.

    A checkpoint (time a read completed, highest id then) says: every row created after that
    time has a greater id. So a fax sent at time T has all its rows above the last checkpoint
    taken at or before T. ``rows`` keeps, for each fax still pending, the id of the newest row
    read for it: the row that may still change in place. Stored as JSON in the store's kv; a
    bare number (older form) is read as a cursor without checkpoints.
    """

    high: int | None = None
    marks: list[tuple[datetime, int]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)   # pending OutTransID → its newest row's id

    @classmethod
    def load(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if isinstance(data, int | str) and as_int(data) is not None:
            return cls(high=as_int(data))
        if not isinstance(data, dict):
            return cls()
        marks = []
        for item in data.get("marks") or []:
            when = _when(item[0]) if isinstance(item, list) and len(item) == 2 else None
            mark = as_int(item[1]) if when is not None else None
            if when is not None and mark is not None:
                marks.append((when, mark))
        rows = data.get("rows")
        rows = {str(k): v for k, v in rows.items() if isinstance(v, int)} if isinstance(rows, dict) else {}
        return cls(high=as_int(data.get("high")), marks=marks, rows=rows)

    def before(self, when: datetime) -> int | None:
        """The highest id of the last checkpoint taken at or before ``when`` (None: none was)."""
        best = None
        for at, mark in self.marks:
            if at <= when:
                best = mark
        return best

    def add(self, when: datetime, high: int) -> None:
        self.high = high if self.high is None else max(self.high, high)
        self.marks.append((when, self.high))
        del self.marks[:-MAX_MARKS]

    def dump(self) -> str:
        return json.dumps({"high": self.high, "marks": [[at.isoformat(), mark] for at, mark in self.marks],
                           "rows": self.rows})


LOOKUP_GRACE = (600.0, 60.0)
"""Seconds, and seconds a page, that "no record" of a lost submission is not yet proof it was never
taken (the report may list a fax only once its first call attempt is over): the default when
``provider.reconcile_grace`` is not set."""


class OpenfaxProvider:
    name = NAME
    header_limit: int | None = HEADER_MAX    # toHeader and fromHeader: 15 characters

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        send_path: str,
        balance_path: str,
        report_path: str,
        account_id: str,
        api_key: str,
        to_header: str = "",
        from_header: str = "",
        priority: str = "Normal",
        clock: Clock | None = None,
        status_lookback_days: int = 14,
        horizon_s: float = 3600.0,
        recheck_s: float = 300.0,
        unlisted_s: float = 86400.0,
        lookup_grace_s: float = LOOKUP_GRACE[0],
        lookup_grace_per_page_s: float = LOOKUP_GRACE[1],
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._send_path = send_path
        self._balance_path = balance_path
        self._report_path = report_path
        self._account_id = account_id
        self._api_key = api_key
        self._secrets = (api_key,)
        self._to_header = to_header
        self._from_header = from_header
        self._priority = priority
        self._clock = clock or SystemClock()
        self._lookback = status_lookback_days
        self._grace = (lookup_grace_s, lookup_grace_per_page_s)
        self._horizon = horizon_s
        self._recheck = recheck_s
        self._unlisted = unlisted_s         # a fax never in the report for this long: unknown to Openfax
        self._swept = float("-inf")           # when a cycle last re-read the rows of every pending fax

    def _url(self, path: str) -> str:
        return self._base + "/" + path.lstrip("/")

    def _auth(self) -> list[tuple[str, str]]:
        return [("AccountID", self._account_id), ("APIKey", self._api_key)]

    async def _post(self, path: str, body: MultipartBody, *, submit: bool = False) -> Any:
        """POST a form; return the reply JSON (unwrapped from a one-element array)."""
        request = self._client.build_request("POST", self._url(path), content=body, headers=body.headers)
        response = await base.send(self._client, NAME, request)
        base.raise_for_transient_status(NAME, response)
        if response.status_code in (401, 403):
            raise AccountError(
                f"Openfax refused access (HTTP {response.status_code})",
                provider=NAME,
                code="http",
                kind="auth",
            )
        if response.status_code == 413:
            raise RefusedError("The document is too large for Openfax (HTTP 413)", provider=NAME, code="413")
        if response.status_code >= 400:
            raise TransientProviderError(
                f"Openfax answered HTTP {response.status_code} at {path}",
                provider=NAME,
                code=str(response.status_code),
            )
        data = base.json_or_none(response)
        if data is None:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            # A reply we cannot read to a send may still mean the fax was stored: reconcile.
            raise TransientProviderError(
                f"Openfax sent a reply that is not JSON ({kind})",
                provider=NAME,
                code="not_json",
                maybe_sent=submit,
            )
        return data

    # --- submit ----------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest) -> SubmitReceipt:
        to_header = (req.options.header or self._to_header)[:HEADER_MAX]
        from_header = self._from_header[:HEADER_MAX]
        wanted = req.options.priority if req.options.priority.capitalize() != "Normal" else self._priority
        priority = "Low" if wanted.strip().lower() == "low" else "Normal"
        fields = [
            *self._auth(),
            ("FaxNumber", fax_number(req.to)),
            ("toHeader", to_header),
            ("fromHeader", from_header),
            ("frHeader", from_header),
            ("paperSize", _PAPER[req.paper]),
            ("faxResolution", "1" if req.options.resolution is Resolution.FINE else "0"),
            ("Priority", priority),
        ]
        body = MultipartBody(fields, [FilePart("PDF_encode", req.pdf, base64=True)])
        reply = _first(await self._post(self._send_path, body, submit=True))
        if not isinstance(reply, dict) or "Response" not in reply:
            raise TransientProviderError(
                "Openfax sent a reply without a Response", provider=NAME, code="no_response", maybe_sent=True
            )
        if condition(reply["Response"]) != "success":
            _raise_condition(reply["Response"], submit=True, secrets=self._secrets)
        out_id = reply.get("OutTransID")
        if isinstance(out_id, list) and len(out_id) == 1:  # S21 shows "OutTransID": [id] [I]
            out_id = out_id[0]
        if as_int(out_id) is None:
            raise TransientProviderError(
                "Openfax accepted the fax but sent no OutTransID",
                provider=NAME,
                code="no_id",
                maybe_sent=True,
            )
        return SubmitReceipt(provider_id=str(as_int(out_id)), callback_url=None)

    # --- report ----------------------------------------------------------------------------

    async def _report_pages(
        self, from_date: date, to_date: date, cursor: int | None, counter: list[int]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of report rows with HistoryOutboundFaxID > cursor; counter[0] counts requests."""
        last = cursor
        for _ in range(MAX_PAGES):
            fields = [
                *self._auth(),
                ("FromDate", from_date.isoformat()),
                ("ToDate", to_date.isoformat()),
                ("DetailType", "1"),
                ("Limit", str(PAGE_LIMIT)),
            ]
            if last is not None:
                fields.append(("LastHistoryID", str(last)))
            counter[0] += 1
            rows = self._rows(await self._post(self._report_path, MultipartBody(fields)))
            yield rows
            ids = [i for i in (as_int(r.get("HistoryOutboundFaxID")) for r in rows) if i is not None]
            if len(rows) < PAGE_LIMIT or not ids or (last is not None and max(ids) <= last):
                return
            last = max(ids)

    def _rows(self, data: Any) -> list[dict[str, Any]]:
        if isinstance(data, dict):
            if "HistoryOutboundFaxID" in data:
                return [data]
            for value in data.values():
                if isinstance(value, list):
                    return self._rows(value)
            data = [data]
        if not isinstance(data, list):
            raise TransientProviderError("Openfax sent a report that is not a list", provider=NAME, code="report")
        rows = [r for r in data if isinstance(r, dict) and "HistoryOutboundFaxID" in r]
        if not rows:
            for item in data:
                if isinstance(item, dict) and "Response" in item:
                    cond = condition(item["Response"])
                    if not cond.startswith("no") and cond != "success":
                        _raise_condition(item["Response"], submit=False, secrets=self._secrets)
        return rows

    def _today(self) -> date:
        return self._clock.now().date()

    async def poll(self, pending: Sequence[PendingFax], cursor: str | None) -> PollResult:
        """The report's rows from the oldest pending fax's current row on, folded per fax.

        The Openfax document never says a report row is written once: a row read at
        ``CurrentState`` 5 may later say 8 under the same ``HistoryOutboundFaxID``. So a cycle
        does not read only the rows above the last id seen: it starts at the newest row already
        read for each pending fax (``Cursor.rows``), or, for a fax with no row read yet, at the
        last checkpoint taken before it was sent (:class:`Cursor`; none: the start of its date
        range). In steady state that is the rows of the faxes sent in the last few minutes, not
        the account's history. A fax pending longer than ``horizon_s`` (stuck in a credit hold,
        say) is re-read only every ``recheck_s``, so one old fax does not make every cycle read
        an hour of rows. 1,000 rows a request. A fax no such read has shown ``unlisted_s`` after it
        was sent is reported as unknown to Openfax (``PollResult.unknown``).
        """
        if not pending:
            return PollResult([], cursor, 0)
        by_id = {p.provider_id: p for p in pending}
        state = Cursor.load(cursor)
        now = self._clock.now()
        stamp = now.timestamp()
        sweep = stamp - self._swept >= self._recheck
        considered = [p for p in pending if sweep or (now - p.submitted_at).total_seconds() <= self._horizon]
        start_from = self._start(state, considered or list(pending))
        if sweep or not considered:
            self._swept = stamp
        start = min(p.submitted_at for p in pending).date() - timedelta(days=1)
        counter = [0]
        seen: dict[str, _Fax] = {}
        high = state.high
        async for rows in self._report_pages(start, self._today() + timedelta(days=1), start_from, counter):
            for row in rows:
                hid = as_int(row.get("HistoryOutboundFaxID"))
                if hid is not None and (high is None or hid > high):
                    high = hid
                out_id = str(as_int(row.get("OutTransID")))
                if out_id in by_id:
                    self._fold(seen, out_id, row, hid or 0)
        updates = [_row_update(i, fax, by_id[i].job_id) for i, fax in seen.items()]
        final = {u.provider_id for u in updates if u.outcome.final}
        # the newest row of each fax still pending: where the next cycle starts reading for it
        state.rows = {i: r for i, r in state.rows.items() if i in by_id and i not in final}
        state.rows.update({i: fax.latest_id for i, fax in seen.items() if i not in final and fax.latest_id})
        if high is not None:
            state.add(now, high)
        updates = [u for u in updates if u.outcome is not FaxOutcome.PENDING]
        # A fax that no read of its whole date range has ever shown, a day after it was sent: the
        # report lists a fax once its first call is over, so Openfax has no record of it.
        unknown = tuple(p.provider_id for p in pending if sweep and p.provider_id not in seen
                        and p.provider_id not in state.rows
                        and (now - p.submitted_at).total_seconds() > self._unlisted)
        return PollResult(updates, state.dump() if high is not None else cursor, counter[0], unknown=unknown)

    @staticmethod
    def _start(state: Cursor, pending: Sequence[PendingFax]) -> int | None:
        """``LastHistoryID`` for a read that sees every pending fax's current row (None: all rows)."""
        starts: list[int] = []
        for p in pending:
            row = state.rows.get(p.provider_id)
            mark = row - 1 if row is not None else state.before(p.submitted_at)
            if mark is None:
                return None
            starts.append(mark)
        return min(starts) if starts else state.high

    @staticmethod
    def _fold(seen: dict[str, _Fax], out_id: str, row: dict[str, Any], hid: int) -> None:
        fax = seen.get(out_id)
        if fax is None:
            fax = seen[out_id] = _Fax(latest=row, latest_id=hid)
        elif hid >= fax.latest_id:
            fax.latest, fax.latest_id = row, hid
        fax.history.add(hid)
        retry = as_int(row.get("RetryCount"))
        if retry is not None:
            fax.attempts = max(fax.attempts or 0, retry)

    async def status(self, provider_id: str) -> StatusUpdate:
        today = self._today()
        seen: dict[str, _Fax] = {}
        async for rows in self._report_pages(
            today - timedelta(days=self._lookback), today + timedelta(days=1), None, [0]
        ):
            for row in rows:
                if str(as_int(row.get("OutTransID"))) == provider_id:
                    self._fold(seen, provider_id, row, as_int(row.get("HistoryOutboundFaxID")) or 0)
        if provider_id not in seen:
            return StatusUpdate(provider=NAME, provider_id=provider_id, outcome=FaxOutcome.PENDING)
        return _row_update(provider_id, seen[provider_id])

    async def find_submission(self, lookup: SubmissionLookup) -> str | None:
        number = fax_number(lookup.to)
        # A day earlier than `since`: the report's dates are in Openfax's time zone [U].
        start = lookup.since.date() - timedelta(days=1)
        found: set[int] = set()
        async for rows in self._report_pages(start, self._today() + timedelta(days=1), None, [0]):
            for row in rows:
                out_id = as_int(row.get("OutTransID"))
                if out_id is None or str(out_id) in lookup.known_ids:
                    continue
                if str(row.get("FaxNumber", "")).strip().removeprefix("+") != number:
                    continue
                pages = as_int(row.get("PageCount"))
                # PageCount is 0 (or absent) until the document is rendered [I].
                if pages in (None, 0, lookup.pages):
                    found.add(out_id)
        if found:
            return str(min(found))
        # The report may list a fax only once its first call attempt is over (the simulator
        # does; real Openfax is [U]). Until then "no record" is not proof it was never taken:
        # answer "try again later" rather than let the caller send it a second time.
        grace = self._grace[0] + self._grace[1] * max(lookup.pages, 1)
        if (self._clock.now() - lookup.since).total_seconds() < grace:
            raise TransientProviderError(
                "Openfax does not list this submission yet; it is checked again later",
                provider=NAME,
                code="not_listed_yet",
            )
        return None

    async def cancel(self, provider_id: str) -> None:
        raise PermanentProviderError(
            "Openfax cannot cancel a fax: its API has no cancel call, so the fax goes on being sent",
            provider=NAME,
            code="no_cancel",
        )

    async def balance(self) -> Balance:
        reply = _first(await self._post(self._balance_path, MultipartBody(self._auth())))
        if isinstance(reply, dict):
            for key in ("AvailableCredit", "AccountBalance"):
                amount = as_float(reply.get(key))
                if amount is not None:
                    return Balance(amount=amount, currency=None)
            if "Response" in reply and condition(reply["Response"]) != "success":
                _raise_condition(reply["Response"], submit=False, secrets=self._secrets)
        raise TransientProviderError("Openfax sent a balance reply without an amount", provider=NAME, code="balance")

    async def aclose(self) -> None:
        await self._client.aclose()
