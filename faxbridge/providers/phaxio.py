"""Phaxio adapter (API v2 and v2.1: the paths are the same) and its webhook helpers.

providers.md §1 is the source. Variants accepted where it marks a detail [I]/[U]:

- Errors: HTTP 401/402/404/422/429/5xx, and HTTP 200 with ``success: false`` (the official
  clients treat both as errors). "Insufficient funds" may come as 402 or in a message.
- Fax objects: v2 ``error_type``/``error_id``/``error_message`` on the fax and on each
  recipient, or the v1 name ``error_code`` (a number or a message). ``cost`` is in cents.
  A recipient's ``status`` may be null. Ids may be numbers or strings.
- ``GET /faxes`` paging: ``paging.total`` may be the string ">10000"; stop on a short page.
- Webhooks: v2 (``fax``, ``success``, ``is_test``, ``direction``) and v2.1 (``event_type``:
  ``fax_completed``, or the in-flight ``transmitting_page``/``retry_scheduled``, never final).
  Booleans arrive as strings ("1", "true", "True").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import httpx

from faxbridge.clock import Clock, SystemClock, iso
from faxbridge.errors import (
    AccountError,
    PermanentProviderError,
    RefusedError,
    TransientProviderError,
)
from faxbridge.models import (
    Balance,
    PendingFax,
    PollResult,
    StatusUpdate,
    SubmissionLookup,
    SubmitReceipt,
    SubmitRequest,
)
from faxbridge.providers import base
from faxbridge.providers.base import FilePart, MultipartBody, as_float, as_int
from faxbridge.providers.polling import PollPlan, poll_result
from faxbridge.providers.reasons import phaxio_verdict


def label_for(provider: str) -> str:
    """Who speaks in the reasons' words: the built-in simulator speaks Phaxio's protocol but is not Phaxio."""
    return "the simulator" if provider == "simulator" else "Phaxio"


NAME = "phaxio"
HEADER_MAX = 50
MAX_TAGS = 10
PER_PAGE = 1000
MAX_PAGES = 1000
JOB_TAG = "faxbridge_job"
INFLIGHT_EVENTS = frozenset({"transmitting_page", "retry_scheduled"})
_CREDIT_WORDS = ("insufficient", "funds", "credit", "balance")


def _pick_recipient(fax: Mapping[str, Any]) -> Mapping[str, Any]:
    recipients = [r for r in fax.get("recipients") or [] if isinstance(r, Mapping)]
    for r in recipients:  # the one that failed says why
        if r.get("error_type") or r.get("error_id") or r.get("error_code"):
            return r
    return recipients[0] if recipients else {}


def _error_fields(src: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    error_id = as_int(src.get("error_id"))
    message = src.get("error_message")
    code = src.get("error_code")  # v1 naming: an id, or the message itself
    if error_id is None and as_int(code) is not None:
        error_id = as_int(code)
    elif code and not message and as_int(code) is None:
        message = code
    kind = src.get("error_type")
    return (str(kind) if kind else None), error_id, (str(message) if message else None)


def _duration(fax: Mapping[str, Any], recipient: Mapping[str, Any]) -> float | None:
    """Phaxio reports no call duration: use the seconds from creation to completion instead."""
    start = _timestamp(fax.get("created_at"))
    end = _timestamp(fax.get("completed_at") or recipient.get("completed_at"))
    if start is None or end is None or end < start:
        return None
    return round((end - start).total_seconds(), 1)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):  # v1: unix seconds
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fax_update(fax: Mapping[str, Any], label: str = "Phaxio") -> StatusUpdate:
    """A Phaxio fax object (GET /faxes/{id}, a list row, a callback's ``fax``) → StatusUpdate;
    ``label`` names the provider in the reason's words."""
    recipient = _pick_recipient(fax)
    kind, error_id, message = _error_fields(recipient)
    if not (kind or error_id or message):
        kind, error_id, message = _error_fields(fax)
    status = str(fax.get("status") or "")
    retry = as_int(recipient.get("retry_count"))
    dialed = recipient.get("status") is not None or status not in ("", "queued", "pendingbatch")
    attempts = retry + 1 if retry is not None and dialed else None
    verdict = phaxio_verdict(status, kind, error_id, message, attempts, label)
    cents = as_float(fax.get("cost"))
    tags = fax.get("tags") if isinstance(fax.get("tags"), Mapping) else {}
    job = tags.get(JOB_TAG) if tags else None
    return StatusUpdate(
        provider=NAME,
        provider_id=str(as_int(fax.get("id"))),
        outcome=verdict.outcome,
        reason=verdict.reason,
        status_code=error_id,
        pages=as_int(fax.get("num_pages")) or None,
        attempts=attempts,
        duration_s=_duration(fax, recipient),
        cost=None if cents is None else round(cents / 100.0, 4),
        retryable=verdict.retryable,
        job_id=str(job) if job else None,
        raw_status=status or None,
        is_test=fax.get("is_test") is True or str(fax.get("is_test")).lower() == "true",
    )


# --- webhooks -----------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_callback(fields: Mapping[str, str], label: str = "Phaxio") -> StatusUpdate | None:
    """A Phaxio send callback's non-file fields → StatusUpdate, or None for in-flight events
    and for anything that is not about a sent fax. Raises ValueError for a malformed ``fax``."""
    event = (fields.get("event_type") or "").strip()
    if event in INFLIGHT_EVENTS:
        return None
    raw = fields.get("fax")
    if not raw:
        raise ValueError("Phaxio callback without a fax field")
    try:
        fax = json.loads(raw)
    except ValueError as exc:
        raise ValueError("Phaxio callback fax field is not JSON") from exc
    if not isinstance(fax, dict) or as_int(fax.get("id")) is None:
        raise ValueError("Phaxio callback fax field has no id")
    direction = fax.get("direction") or fields.get("direction")
    if direction and str(direction) != "sent":
        return None
    if not fax.get("status"):
        ok = _truthy(fields.get("success"))  # v2: the top-level success flag
        if ok is not None:
            fax = {**fax, "status": "success" if ok else "failure"}
    if "is_test" not in fax and _truthy(fields.get("is_test")):   # v2: a top-level field too
        fax = {**fax, "is_test": True}
    return fax_update(fax, label)


def signature(token: str, url: str, fields: Mapping[str, str], files: Sequence[tuple[str, bytes]]) -> str:
    """X-Phaxio-Signature (providers.md §1.8): HMAC-SHA1 over url + sorted name+value fields +
    sorted part-name + sha1(file) for the file parts; lowercase hex."""
    text = url + "".join(k + v for k, v in sorted(fields.items()))
    text += "".join(n + hashlib.sha1(b).hexdigest() for n, b in sorted(files, key=lambda f: f[0]))
    return hmac.new(token.encode(), text.encode(), hashlib.sha1).hexdigest()


def verify_signature(
    token: str,
    url: str,
    fields: Mapping[str, str],
    files: Sequence[tuple[str, bytes]],
    header: str | None,
) -> bool:
    if not token or not header:
        return False
    expected = signature(token, url, fields, files)
    return hmac.compare_digest(expected, header.strip().lower())


# --- the adapter --------------------------------------------------------------------------------


class PhaxioProvider:
    name = NAME
    header_limit: int | None = HEADER_MAX    # header_text: 50 characters (the simulator's too)

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        api_secret: str,
        header_text: str = "",
        cancel_timeout: int | None = None,
        caller_id: str | None = None,
        test_fail: str | None = None,
        clock: Clock | None = None,
        list_horizon_s: float = 3600.0,
        single_budget: int = 3,
        list_lag_s: float = 120.0,
        recheck_s: float = 300.0,
        label: str = "Phaxio",
    ) -> None:
        self.label = label           # who speaks, in the reasons' words ("the simulator" for the built-in one)
        self._client = client
        self._base = base_url.rstrip("/")
        self._secrets = (api_key, api_secret)
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
        self._auth_header = {"Authorization": f"Basic {token}"}
        self._header_text = header_text
        self._cancel_timeout = cancel_timeout
        self._caller_id = caller_id
        self._test_fail = test_fail
        self._clock = clock or SystemClock()
        self.plan = PollPlan(NAME, horizon_s=list_horizon_s, budget=single_budget, lag_s=list_lag_s,
                             recheck_s=recheck_s)

    def _message(self, data: Any) -> str:
        message = data.get("message") if isinstance(data, Mapping) else None
        return base.words(base.redact(str(message or ""), self._secrets))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: MultipartBody | None = None,
        what: str = "the request",
        submit: bool = False,
    ) -> dict[str, Any]:
        headers = dict(self._auth_header)
        if body is not None:
            headers.update(body.headers)
        request = self._client.build_request(
            method, self._base + path, params=params, content=body, headers=headers
        )
        response = await base.send(self._client, NAME, request)
        base.raise_for_transient_status(NAME, response)
        data = base.json_or_none(response)
        status = response.status_code
        if status < 300 and isinstance(data, dict) and data.get("success") is not False:
            return data
        if status < 300 and not isinstance(data, dict):
            raise TransientProviderError(
                f"Phaxio sent a reply that is not JSON (HTTP {status})",
                provider=NAME,
                code="not_json",
                maybe_sent=submit,
            )
        self._raise(status, self._message(data), what=what, submit=submit)

    def _raise(self, status: int, message: str, *, what: str, submit: bool) -> NoReturn:
        said = f": {message}" if message else ""
        low = message.lower()
        code = str(status)
        if status == 402 or any(w in low for w in _CREDIT_WORDS):
            raise AccountError(
                f"Insufficient credit: the Phaxio account cannot pay for faxes{said}",
                provider=NAME,
                code=code,
                kind="credit",
            )
        if status in (401, 403) or "api key" in low or "authenticat" in low or "credential" in low:
            raise AccountError(
                f"Phaxio rejected the API key or secret (HTTP {status}){said}",
                provider=NAME,
                code=code,
                kind="auth",
            )
        if submit:
            raise RefusedError(
                f"Phaxio refused the fax{said or f' (HTTP {status})'}", provider=NAME, code=code
            )
        raise PermanentProviderError(
            f"Phaxio refused {what}{said or f' (HTTP {status})'}", provider=NAME, code=code
        )

    # --- submit ----------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest) -> SubmitReceipt:
        fields: list[tuple[str, str]] = [("to", req.to)]
        header = (req.options.header or self._header_text)[:HEADER_MAX]
        if header:
            fields.append(("header_text", header))
        if req.callback_url:
            fields.append(("callback_url", req.callback_url))
        fields.append((f"tag[{JOB_TAG}]", req.job_id))
        extra = [(k, v) for k, v in req.options.tags.items() if k != JOB_TAG][: MAX_TAGS - 1]
        fields.extend((f"tag[{k}]", str(v)) for k, v in extra)
        if self._cancel_timeout is not None:
            fields.append(("cancel_timeout", str(self._cancel_timeout)))
        if self._caller_id:
            fields.append(("caller_id", self._caller_id))
        if self._test_fail:
            fields.append(("test_fail", self._test_fail))
        filename = req.filename if req.filename.lower().endswith(".pdf") else f"{req.filename or 'fax'}.pdf"
        part = FilePart("file", req.pdf, filename=filename, content_type="application/pdf")
        data = await self._call("POST", "/faxes", body=MultipartBody(fields, [part]), submit=True)
        fax_id = as_int((data.get("data") or {}).get("id")) if isinstance(data.get("data"), dict) else None
        if fax_id is None:
            raise TransientProviderError(
                "Phaxio accepted the fax but sent no id", provider=NAME, code="no_id", maybe_sent=True
            )
        return SubmitReceipt(provider_id=str(fax_id), callback_url=req.callback_url)

    # --- status and polling ----------------------------------------------------------------

    async def status(self, provider_id: str) -> StatusUpdate:
        what = f"the status request for fax {provider_id}"
        data = await self._call("GET", f"/faxes/{provider_id}", what=what)
        fax = data.get("data")
        if not isinstance(fax, dict):
            raise TransientProviderError(
                "Phaxio sent a fax reply without data", provider=NAME, code="no_data"
            )
        return fax_update(fax, self.label)

    async def _list(self, params: dict[str, str | int], counter: list[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            counter[0] += 1
            data = await self._call(
                "GET",
                "/faxes",
                params={**params, "per_page": PER_PAGE, "page": page},
                what="the fax list request",
            )
            batch = [r for r in data.get("data") or [] if isinstance(r, dict)]
            rows.extend(batch)
            paging = data.get("paging")
            paging = paging if isinstance(paging, dict) else {}
            total = as_int(paging.get("total"))
            more_by_total = str(paging.get("total", "")).startswith(">") or (
                total is not None and page * PER_PAGE < total
            )
            if len(batch) < PER_PAGE or (paging and not more_by_total):
                break
        return rows

    def _after(self, pending_since: datetime) -> str:
        return iso(pending_since - timedelta(minutes=1)) or ""

    async def poll(self, pending: Sequence[PendingFax], cursor: str | None) -> PollResult:
        """The list endpoint for the bulk (created_after the oldest fax listed, 1,000 a page),
        ``GET /faxes/{id}`` for the few that are overdue: :class:`~faxbridge.providers.polling.PollPlan`."""
        if not pending:
            return PollResult([], cursor, 0)
        now = self._clock.now()
        by_id = {p.provider_id: p for p in pending}
        listed = self.plan.listed(pending, now)
        counter = [0]
        found: dict[str, StatusUpdate] = {}
        if listed:
            since = min(p.submitted_at for p in listed)
            rows = await self._list({"direction": "sent", "created_after": self._after(since)}, counter)
            for row in rows:
                fax_id = str(as_int(row.get("id")))
                if fax_id in by_id:
                    found[fax_id] = fax_update(row, self.label)
        unknown = await self.plan.look_up(pending, found, now, self.status, counter)
        return poll_result(pending, found, cursor, counter[0], unknown)

    async def find_submission(self, lookup: SubmissionLookup) -> str | None:
        params: dict[str, str | int] = {
            "direction": "sent",
            f"tag[{JOB_TAG}]": lookup.job_id,
            "created_after": self._after(lookup.since),
        }
        ids = []
        for row in await self._list(params, [0]):
            tags = row.get("tags")
            # The server filters on the tag; check it too where the row carries its tags.
            if isinstance(tags, Mapping) and tags and str(tags.get(JOB_TAG)) != lookup.job_id:
                continue
            fax_id = as_int(row.get("id"))
            if fax_id is not None and str(fax_id) not in lookup.known_ids:
                ids.append(fax_id)
        return str(min(ids)) if ids else None

    async def cancel(self, provider_id: str) -> None:
        await self._call("POST", f"/faxes/{provider_id}/cancel", what=f"to cancel fax {provider_id}")

    async def balance(self) -> Balance:
        data = await self._call("GET", "/account/status", what="the balance request")
        info = data.get("data")
        cents = as_float(info.get("balance")) if isinstance(info, dict) else None
        if cents is None:
            raise TransientProviderError(
                "Phaxio sent an account status without a balance", provider=NAME, code="balance"
            )
        return Balance(amount=round(cents / 100.0, 2), currency="USD")

    async def aclose(self) -> None:
        await self._client.aclose()

