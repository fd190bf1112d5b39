"""Sinch Fax API v3 adapter (Phaxio's successor) and its callback parser.

Written from Sinch's public reference; what each point rests on (tags as in shared/providers.md:
[C] confirmed in the cited page, [I] inferred, [U] looked for and not found):

- Base ``https://fax.api.sinch.com/v3/projects/{projectId}``; regional hosts (``use1.``,
  ``eu1.`` ...) through ``base_url`` [C developers.sinch.com/docs/fax/api-reference/fax/faxes,
  "Servers"; shared/providers.md §3]. HTTP Basic with an access key id and secret [C same page,
  "Authentication", and the getting-started send-fax guide's ``Basic base64(key:secret)``].
- ``POST /faxes`` takes multipart/form-data or JSON and answers with the fax object [C Node SDK
  FaxesApi "Send a fax"]. Fields ``to``, ``file``, ``callbackUrl``, ``callbackUrlContentType``
  (``callbackContentType`` in the SDK before 1.2), ``headerText`` (50 characters maximum),
  ``labels`` [C Node SDK FaxRequestFormData / FaxRequestBase]. How ``labels`` (a map) is spelt in
  a multipart body is not shown [U]: ``labels[NAME]=value`` is sent, as Phaxio's ``tag[NAME]`` [I].
  Callbacks are multipart with the fax's content attached unless ``callbackUrlContentType`` is
  ``application/json`` [C FaxesApi]; JSON is asked for. Whether the JSON callback still carries the
  file (base64 ``file``/``files`` in FaxCompletedEventJson) cannot be chosen [C SDK types]: the
  webhook route takes a large body for Sinch (:mod:`faxbridge.web`).
- The fax object [C Node SDK Fax.Fax 1.0-1.5]: ``id`` (a string), ``status`` QUEUED | IN_PROGRESS
  | COMPLETED | FAILURE [C Fax.FaxStatus], ``errorType`` DOCUMENT_CONVERSION_ERROR | CALL_ERROR |
  FAX_ERROR | FATAL_ERROR | GENERAL_ERROR | LINE_ERROR [C Fax.ErrorType], ``errorCode`` (a number
  in SDK 1.5; in 1.0 a string beside a numeric ``errorId``: both read), ``errorMessage``,
  ``numberOfPages``, ``pagesSentSuccessfully``, ``price`` {``amount`` (a string), ``currencyCode``}
  [I from FaxMoney], ``retryCount``, ``labels``, ``createTime``, ``completedTime``, ``to``,
  ``direction`` OUTBOUND | INBOUND. The error codes are Phaxio's ids [C CallErrorCodeEnum 11, 15,
  16, 17, 19, 30, 32, 34, 43, 49; FaxErrorCodeEnum 6, 7, 8 ...], so providers/reasons.py's Phaxio
  table words them.
- ``GET /faxes/{id}`` answers the fax object [C SDK GetFaxRequestData]. ``GET /faxes`` filters
  ``createTime`` (``createTime>=...`` / ``createTime<=...`` for a range), ``status``,
  ``direction``, ``to`` (starts-with), ``pageSize`` (default 100, at most 1000), ``page`` (a value
  "returned from a previous List request") [C ListFaxesRequestData 0.0.4, 1.5]. The range is sent
  as the parameter ``createTime>`` with the value (the URL reads ``createTime%3E=...``, which a
  server decodes to ``createTime>=...``) [I: the reference writes it unencoded]. The reply holds
  ``faxes`` [C FaxesList]; the paging fields are not shown in the SDK [U]: ``nextPageToken`` is
  followed when present, else ``totalItems``/``pageSize`` with numbered pages [I, from a derived
  schema with page/pageSize/totalItems].
- Errors: JSON ``{code, error, message[, details]}``, HTTP 400/401/402/404/422/429/500 [C
  providers.md §3, S23]. 401/403 (and a 404 naming the project: a wrong ``project_id``) [I]: bad
  credentials; 402: out of funds (an account error); 429 and
  5xx: transient; any other 4xx refuses the fax with Sinch's message.
- No balance: the Fax API v3 reference has faxes, services, numbers, emails and cover pages, and no
  account balance or credit call [U: looked for, not found]; :meth:`SinchProvider.balance` raises
  a PermanentProviderError (code ``not_offered``), which the balance watch logs and skips.
- No cancel call for an outbound fax was found [U]: :meth:`SinchProvider.cancel` says so
  (PermanentProviderError), so a cancel request ends in "cancel failed" instead of waiting.
- Callbacks are unsigned ("No header validation is implemented for Fax API", Sinch's Node SDK,
  quoted in issue 17): the URL's token is the secret, and a callback is only a hint confirmed by
  ``GET /faxes/{id}`` before anything changes.
"""

from __future__ import annotations

import base64
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
    FaxOutcome,
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
from faxbridge.providers.reasons import SINCH_FINAL, sinch_verdict

NAME = "sinch"
DEFAULT_BASE = "https://fax.api.sinch.com/v3"
HEADER_MAX = 50                 # headerText: "50 characters maximum" [C FaxRequestBase]
PAGE_SIZE = 1000                # pageSize: at most 1000 [C ListFaxesRequestData]
MAX_PAGES = 1000
JOB_LABEL = "faxbridge_job"
MAX_LABELS = 10                 # Phaxio's tag limit; Sinch states none [U]
LABEL_CHECKS = 5                # list rows without labels checked one by one, at most, per lookup
_CREDIT_WORDS = ("insufficient", "funds", "credit", "balance")


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)   # "UTC unless otherwise specified" [C]


def _error_code(fax: Mapping[str, Any]) -> int | None:
    code = as_int(fax.get("errorCode"))
    return code if code is not None else as_int(fax.get("errorId"))


def _cost(price: Any) -> float | None:
    if isinstance(price, Mapping):
        return as_float(price.get("amount"))
    return as_float(price)


def fax_id_of(fax: Mapping[str, Any]) -> str | None:
    value = fax.get("id")
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def job_label(fax: Mapping[str, Any]) -> str | None:
    labels = fax.get("labels")
    value = labels.get(JOB_LABEL) if isinstance(labels, Mapping) else None
    return str(value) if value else None


def fax_update(fax: Mapping[str, Any], label: str = "Sinch") -> StatusUpdate:
    """A Sinch fax object (``GET /faxes/{id}``, a list row, a callback's ``fax``) → StatusUpdate."""
    status = str(fax.get("status") or "")
    code = _error_code(fax)
    message = fax.get("errorMessage")
    retry = as_int(fax.get("retryCount"))
    dialed = status.upper() not in ("", "QUEUED")
    attempts = retry + 1 if retry is not None and dialed else None
    verdict = sinch_verdict(status, str(fax.get("errorType") or "") or None, code,
                            str(message) if message else None, attempts, label)
    start, end = _timestamp(fax.get("createTime")), _timestamp(fax.get("completedTime"))
    duration = round((end - start).total_seconds(), 1) if start and end and end >= start else None
    pages = as_int(fax.get("pagesSentSuccessfully")) if verdict.outcome is FaxOutcome.DELIVERED else None
    return StatusUpdate(
        provider=NAME,
        provider_id=fax_id_of(fax) or "",
        outcome=verdict.outcome,
        reason=verdict.reason,
        status_code=code,
        pages=pages or as_int(fax.get("numberOfPages")) or None,
        attempts=attempts,
        duration_s=duration,
        cost=_cost(fax.get("price")),
        retryable=verdict.retryable,
        job_id=job_label(fax),
        raw_status=status or None,
    )


def parse_callback(fields: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """A callback's body (the JSON object, or a multipart form's fields with ``fax`` a JSON
    string) → (fax id, fax object); None for what is not about a sent fax (``INCOMING_FAX``, an
    INBOUND fax). Raises ValueError when there is no fax with an id."""
    event = str(fields.get("event") or "").strip().upper()
    if event and event != "FAX_COMPLETED":
        return None
    fax: Any = fields.get("fax")
    if isinstance(fax, str):
        try:
            fax = json.loads(fax)
        except ValueError as exc:
            raise ValueError("Sinch callback fax part is not JSON") from exc
    if not isinstance(fax, Mapping):
        raise ValueError("Sinch callback without a fax object")
    fax_id = fax_id_of(fax)
    if fax_id is None:
        raise ValueError("Sinch callback fax has no id")
    if str(fax.get("direction") or "OUTBOUND").upper() != "OUTBOUND":
        return None
    return fax_id, fax


# --- the adapter --------------------------------------------------------------------------------


class SinchProvider:
    name = NAME
    header_limit: int | None = HEADER_MAX

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        project_id: str,
        key_id: str,
        key_secret: str,
        header_text: str = "",
        clock: Clock | None = None,
        list_horizon_s: float = 3600.0,
        single_budget: int = 3,
        list_lag_s: float = 120.0,
        recheck_s: float = 300.0,
        label: str = "Sinch",
    ) -> None:
        self.label = label
        self._client = client
        self._base = f"{base_url.rstrip('/')}/projects/{project_id}"
        self._secrets = (key_id, key_secret)
        token = base64.b64encode(f"{key_id}:{key_secret}".encode()).decode()
        self._auth_header = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._header_text = header_text
        self._clock = clock or SystemClock()
        self.plan = PollPlan(NAME, horizon_s=list_horizon_s, budget=single_budget, lag_s=list_lag_s,
                             recheck_s=recheck_s)

    def _message(self, data: Any) -> str:
        message = None
        if isinstance(data, Mapping):
            message = data.get("message") or data.get("error")
            if isinstance(message, Mapping):       # {"error": {"message": ...}} as other Sinch APIs say it [I]
                message = message.get("message")
        return base.words(base.redact(str(message or ""), self._secrets))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str | int]] | None = None,
        body: MultipartBody | None = None,
        what: str = "the request",
        submit: bool = False,
    ) -> dict[str, Any]:
        headers = dict(self._auth_header)
        if body is not None:
            headers.update(body.headers)
        request = self._client.build_request(
            method, self._base + path, params=list(params) if params else None, content=body, headers=headers
        )
        response = await base.send(self._client, NAME, request)
        base.raise_for_transient_status(NAME, response)
        data = base.json_or_none(response)
        status = response.status_code
        if status < 300 and isinstance(data, dict):
            return data
        if status < 300:
            raise TransientProviderError(
                f"Sinch sent a reply that is not a JSON object (HTTP {status})",
                provider=NAME, code="not_json", maybe_sent=submit,
            )
        self._raise(status, self._message(data), what=what, submit=submit)

    def _raise(self, status: int, message: str, *, what: str, submit: bool) -> NoReturn:
        said = f": {message}" if message else ""
        code = str(status)
        if status == 402 or (status in (400, 403) and any(w in message.lower() for w in _CREDIT_WORDS)):
            raise AccountError(f"Insufficient credit: the Sinch account cannot pay for faxes{said}",
                               provider=NAME, code=code, kind="credit")
        if status in (401, 403) or (status == 404 and "project" in message.lower()):
            raise AccountError(f"Sinch rejected the access key id or secret, or the project id (HTTP {status}){said}",
                               provider=NAME, code=code, kind="auth")
        if submit:
            raise RefusedError(f"Sinch refused the fax{said or f' (HTTP {status})'}", provider=NAME, code=code)
        raise PermanentProviderError(f"Sinch refused {what}{said or f' (HTTP {status})'}", provider=NAME, code=code)

    # --- submit ----------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest) -> SubmitReceipt:
        fields: list[tuple[str, str]] = [("to", req.to)]
        header = (req.options.header or self._header_text)[:HEADER_MAX]
        if header:
            fields.append(("headerText", header))
        if req.callback_url:
            fields.append(("callbackUrl", req.callback_url))
            fields.append(("callbackUrlContentType", "application/json"))
        fields.append((f"labels[{JOB_LABEL}]", req.job_id))
        extra = [(k, v) for k, v in req.options.tags.items() if k != JOB_LABEL][: MAX_LABELS - 1]
        fields.extend((f"labels[{k}]", str(v)) for k, v in extra)
        filename = req.filename if req.filename.lower().endswith(".pdf") else f"{req.filename or 'fax'}.pdf"
        part = FilePart("file", req.pdf, filename=filename, content_type="application/pdf")
        data = await self._call("POST", "/faxes", body=MultipartBody(fields, [part]), submit=True)
        fax_id = fax_id_of(data)
        if fax_id is None:
            raise TransientProviderError("Sinch accepted the fax but sent no id", provider=NAME, code="no_id",
                                         maybe_sent=True)
        return SubmitReceipt(provider_id=fax_id, callback_url=req.callback_url)

    # --- status and polling ----------------------------------------------------------------

    async def _fax(self, provider_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/faxes/{provider_id}", what=f"the status request for fax {provider_id}")

    async def status(self, provider_id: str) -> StatusUpdate:
        fax = await self._fax(provider_id)
        if fax_id_of(fax) is None:
            raise TransientProviderError("Sinch sent a fax reply without an id", provider=NAME, code="no_data")
        return fax_update(fax, self.label)

    async def _list(self, params: list[tuple[str, str | int]], counter: list[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        token: str | None = None
        for page in range(1, MAX_PAGES + 1):
            counter[0] += 1
            query = [*params, ("pageSize", PAGE_SIZE)]
            if token is not None:
                query.append(("page", token))
            elif page > 1:
                query.append(("page", page))
            data = await self._call("GET", "/faxes", params=query, what="the fax list request")
            batch = [r for r in data.get("faxes") or [] if isinstance(r, dict)]
            rows.extend(batch)
            next_token = data.get("nextPageToken")
            total = as_int(data.get("totalItems"))
            if isinstance(next_token, str) and next_token:
                token = next_token
                continue
            if len(batch) < PAGE_SIZE or total is None or page * PAGE_SIZE >= total:
                break
        return rows

    def _window(self, since: datetime) -> list[tuple[str, str | int]]:
        return [("direction", "OUTBOUND"), ("createTime>", iso(since - timedelta(minutes=1)) or "")]

    async def poll(self, pending: Sequence[PendingFax], cursor: str | None) -> PollResult:
        """``GET /faxes`` for the bulk (created since the oldest fax listed; one list per final
        status, COMPLETED then FAILURE, 1,000 a page), ``GET /faxes/{id}`` for the few that are
        overdue: :class:`~faxbridge.providers.polling.PollPlan`, as for Phaxio."""
        if not pending:
            return PollResult([], cursor, 0)
        now = self._clock.now()
        by_id = {p.provider_id for p in pending}
        listed = self.plan.listed(pending, now)
        counter = [0]
        found: dict[str, StatusUpdate] = {}
        if listed:
            window = self._window(min(p.submitted_at for p in listed))
            for status in sorted(SINCH_FINAL):
                for row in await self._list([*window, ("status", status)], counter):
                    fax_id = fax_id_of(row)
                    if fax_id in by_id:
                        found[fax_id] = fax_update(row, self.label)
        unknown = await self.plan.look_up(pending, found, now, self.status, counter)
        return poll_result(pending, found, cursor, counter[0], unknown)

    async def find_submission(self, lookup: SubmissionLookup) -> str | None:
        """The fax a lost submission made: listed by ``createTime`` window and ``to``, told apart
        by the job's label (a row that shows no labels is read alone, a few at most)."""
        rows = await self._list([*self._window(lookup.since), ("to", lookup.to)], [0])
        ids: list[tuple[str, str]] = []
        checks = 0
        for row in rows:
            fax_id = fax_id_of(row)
            if fax_id is None or fax_id in lookup.known_ids or str(row.get("to") or lookup.to) != lookup.to:
                continue
            if not isinstance(row.get("labels"), Mapping) and checks < LABEL_CHECKS:
                checks += 1
                row = await self._fax(fax_id)
            if job_label(row) == lookup.job_id:
                ids.append((str(row.get("createTime") or ""), fax_id))
        return min(ids)[1] if ids else None

    async def cancel(self, provider_id: str) -> None:
        raise PermanentProviderError("Sinch's Fax API offers no way to cancel a fax once it is sent",
                                     provider=NAME, code="not_offered")

    async def balance(self) -> Balance:
        raise PermanentProviderError("Sinch's Fax API offers no account balance", provider=NAME,
                                     code="not_offered")

    async def aclose(self) -> None:
        await self._client.aclose()
