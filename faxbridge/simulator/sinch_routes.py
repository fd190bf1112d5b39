"""Sinch Fax API v3 endpoints (mounted under ``/v3/projects/{projectId}``, also ``/sinch/v3/...``).

``POST /faxes`` (multipart: ``to``, ``file``, ``headerText``, ``callbackUrl``,
``callbackUrlContentType``, ``labels[NAME]`` or a ``labels`` JSON object), ``GET /faxes/{id}`` and
``GET /faxes`` (``createTime>``/``createTime<`` for ``>=``/``<=``, a plain ``createTime`` prefix
such as ``2026-11``, ``status``, ``direction``, ``to`` as a prefix, ``pageSize`` up to 1000,
``page`` the ``nextPageToken`` of the previous page). Every error is
``{"code": HTTP status, "error": its name, "message": ...}``.

Outcomes by the last digit as for the other two (:mod:`.timing`); the fax object's error fields
are Phaxio's table (:mod:`.phaxio_model`) under Sinch's names: busy CALL_ERROR 17, no answer
CALL_ERROR 30, not a fax FAX_ERROR 6, an unreadable document DOCUMENT_CONVERSION_ERROR 4 (or 129
for a type that cannot be faxed). Decisions where Sinch publishes nothing: ``contentUrl`` and JSON
requests are refused (400; no internet here, and faxbridge sends multipart); one recipient a fax;
the inactive key's sends answer 402. A callback (``callbackUrl``) is sent when the fax is final:
multipart with ``event``, ``eventTime`` and ``fax`` (JSON) parts, or, with
``callbackUrlContentType = application/json``, one JSON object of the same three keys; the
simulator holds no document bytes, so neither carries the file.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from faxbridge.simulator import credentials
from faxbridge.simulator.forms import BadForm, BodyTooLarge, Form, basic_auth, read_form
from faxbridge.simulator.phaxio_model import recipient_error
from faxbridge.simulator.phaxio_submit import E164, MAX_PAGES, MAX_REQUEST_BYTES, RESTRICTED, document_of
from faxbridge.simulator.records import SimFax, SimRecipient, SimSend
from faxbridge.simulator.timing import CallResult, Phase, plan

if TYPE_CHECKING:
    from faxbridge.simulator.core import Simulator

ACCOUNTS = {
    credentials.SINCH_KEY_ID: credentials.SINCH_KEY_SECRET,
    credentials.SINCH_INACTIVE_KEY_ID: credentials.SINCH_KEY_SECRET,
}
NAMES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 402: "PAYMENT_REQUIRED", 403: "FORBIDDEN",
         404: "NOT_FOUND", 422: "UNPROCESSABLE_ENTITY", 429: "TOO_MANY_REQUESTS",
         500: "INTERNAL_SERVER_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}
MSG_AUTH = "Invalid credentials: the access key id or secret is wrong."
MSG_PROJECT = "Project not found."
MSG_FUNDS = "Insufficient funds: the account is out of funds; add funds to send faxes."
MSG_NOT_FOUND = "Fax not found."
MSG_NO_TO = "to is required."
MSG_BAD_NUMBER = "to must be a phone number in E.164 format."
MSG_ONE_TO = "The simulated network takes one recipient a fax."
MSG_RESTRICTED = "Sending faxes to this phone number is not allowed."
MSG_JSON = "The simulated network takes multipart/form-data requests only (the file as a part)."
MSG_CONTENT_URL = "contentUrl is not supported by the simulated network (it has no internet access)."
MSG_NO_FILE = "A file or contentUrl is required."
MSG_NO_FILENAME = "The file part must have a file name."
MSG_TOO_LARGE = "The request may not exceed 20MB."
MSG_TOO_MANY_PAGES = "A fax may not have more than 200 pages."
MSG_HEADER = "headerText must be 50 characters or fewer."
MSG_CALLBACK = "callbackUrl is not a valid URL."
MSG_CALLBACK_TYPE = "callbackUrlContentType must be multipart/form-data or application/json."
MSG_LABELS = "labels must be an object of strings."
MSG_LIST = "Invalid createTime, pageSize or page."
MAX_HEADER = 50
MAX_PAGE_SIZE = 1000
STATUSES = ("QUEUED", "IN_PROGRESS", "COMPLETED", "FAILURE")
LABEL = re.compile(r"^labels\[(?P<name>[^\]]+)\]$")
ERROR_TYPES = {"lineError": "CALL_ERROR", "faxError": "FAX_ERROR",
               "documentConversionError": "DOCUMENT_CONVERSION_ERROR", "fatalError": "FATAL_ERROR",
               "generalError": "GENERAL_ERROR"}
CALLBACK_TYPES = ("multipart/form-data", "application/json")


def error(status: int, message: str | None = None) -> JSONResponse:
    name = NAMES.get(status, "ERROR")
    text = message or name.replace("_", " ").capitalize()
    return JSONResponse({"code": status, "error": name, "message": text}, status_code=status)


def stamp(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fax_status(fax: SimFax, now: datetime) -> str:
    snap = fax.snapshot(fax.recipients[0], now)
    if snap.phase is Phase.DELIVERED:
        return "COMPLETED"
    if snap.phase in (Phase.FAILED, Phase.CANCELED):
        return "FAILURE"
    if snap.phase in (Phase.BATCHING, Phase.RENDERING):
        return "QUEUED"
    return "IN_PROGRESS"


def fax_json(fax: SimFax, now: datetime) -> dict[str, Any]:
    """The fax object at ``now``."""
    rec = fax.recipients[0]
    snap = fax.snapshot(rec, now)
    status = fax_status(fax, now)
    err = recipient_error(fax, rec, snap) if status == "FAILURE" else None
    sent = sum(a.pages_sent for a in snap.done if a.result is CallResult.DELIVERED)
    rendered = snap.rendered and rec.timeline.render_error is None
    cents = sum(a.pages_sent for a in snap.done) * 7
    final = status in ("COMPLETED", "FAILURE")
    data: dict[str, Any] = {
        "id": fax.id,
        "direction": "OUTBOUND",
        "from": None,
        "to": rec.number,
        "status": status,
        "numberOfPages": fax.pages if rendered else 0,
        "pagesSentSuccessfully": sent,
        "retryCount": max(0, snap.started - 1),
        "createTime": stamp(fax.accepted_at),
        "completedTime": stamp(fax.final_real()) if final else None,
        "price": {"amount": f"{cents / 100:.2f}", "currencyCode": "USD"},
        "labels": dict(fax.send.tags),
        "headerText": fax.send.header,
        "callbackUrl": fax.callback_url,
        "callbackUrlContentType": "application/json" if fax.callback_json else "multipart/form-data",
        "projectId": fax.account_project,
        "hasFile": True,
    }
    if err is not None:
        data.update(errorType=ERROR_TYPES.get(err[0], "GENERAL_ERROR"), errorCode=err[1], errorMessage=err[2])
    return data


def callback(fax: SimFax) -> tuple[list[tuple[str, str]], str | None]:
    """The FAX_COMPLETED callback, the fax as it stood when it became final: multipart fields, or
    (with callbackUrlContentType application/json) the JSON body."""
    when = fax.final_real()
    obj = fax_json(fax, when)
    if fax.callback_json:
        body = {"event": "FAX_COMPLETED", "eventTime": stamp(when), "fax": obj}
        return [], json.dumps(body, separators=(",", ":"))
    return [("event", "FAX_COMPLETED"), ("eventTime", stamp(when) or ""),
            ("fax", json.dumps(obj, separators=(",", ":")))], None


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


Endpoint = Callable[["Simulator", Request, Form, str], Awaitable[Response]]


def routes(sim: Simulator) -> list[BaseRoute]:
    def wrap(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            async def inner(req: Request) -> Response:
                creds = basic_auth(req)
                expected = ACCOUNTS.get(creds[0]) if creds else None
                if creds is None or expected is None or not hmac.compare_digest(
                        expected.encode(), creds[1].encode()):
                    return error(401, MSG_AUTH)
                if req.path_params.get("project_id") != credentials.SINCH_PROJECT_ID:
                    return error(404, MSG_PROJECT)
                if req.method == "POST" and (req.headers.get("content-type") or "").startswith("application/json"):
                    return error(400, MSG_JSON)
                try:
                    form = await read_form(req, MAX_REQUEST_BYTES)
                except BodyTooLarge:
                    return error(400, MSG_TOO_LARGE)
                except BadForm as exc:
                    return error(400, f"Invalid request: {exc}")
                return await endpoint(sim, req, form, creds[0])

            sim.runtime()
            return await sim.faults.run(request, inner, error)

        return handle

    return [
        Route("/faxes", wrap(create), methods=["POST"]),
        Route("/faxes", wrap(list_faxes), methods=["GET"]),
        Route("/faxes/{fax_id}", wrap(get_fax), methods=["GET"]),
    ]


def _labels(form: Form) -> dict[str, str]:
    labels = {m["name"]: value for name, value in form.fields if (m := LABEL.match(name))}
    raw = form.get("labels")
    if raw:
        try:
            given = json.loads(raw)
        except ValueError:
            raise Refused(400, MSG_LABELS) from None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise Refused(400, MSG_LABELS)
        labels.update(given)
    return labels


def parse_create(sim: Simulator, form: Form, account: str) -> SimFax:
    numbers = [v.strip() for v in form.getall("to") if v.strip()]
    if not numbers:
        raise Refused(400, MSG_NO_TO)
    if len(numbers) > 1:
        raise Refused(400, MSG_ONE_TO)
    number = numbers[0]
    if not E164.match(number):
        raise Refused(400, MSG_BAD_NUMBER)
    if number.startswith(RESTRICTED):
        raise Refused(400, MSG_RESTRICTED)
    if form.getall("contentUrl"):
        raise Refused(400, MSG_CONTENT_URL)
    if form.get("file") is not None:
        raise Refused(400, MSG_NO_FILENAME)
    files = [f for f in form.files if f.name in ("file", "files")]
    if not files:
        raise Refused(400, MSG_NO_FILE)
    if any(not f.filename for f in files):
        raise Refused(400, MSG_NO_FILENAME)
    header = form.get("headerText")
    if header is not None and len(header) > MAX_HEADER:
        raise Refused(400, MSG_HEADER)
    url = form.get("callbackUrl") or None
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise Refused(400, MSG_CALLBACK)
    ctype = (form.get("callbackUrlContentType") or form.get("callbackContentType") or CALLBACK_TYPES[0]).strip()
    if ctype not in CALLBACK_TYPES:
        raise Refused(400, MSG_CALLBACK_TYPE)
    labels = _labels(form)
    doc = document_of(files)
    if doc.pages > MAX_PAGES:
        raise Refused(400, MSG_TOO_MANY_PAGES)
    now = sim.clock.now()
    fax_id = sim.new_id("sinch")
    send = SimSend(
        provider="sinch", id=fax_id, to=number, pdf_sha256=doc.sha256, pdf_size=doc.size, pages=doc.pages,
        tags=labels, job_tag=labels.get("faxbridge_job"), header=header, resolution=None, paper=None,
        accepted_at=now, callback_url=url, filenames=doc.filenames,
        recipients=(number,), api_version="v3",
    )
    return SimFax(
        provider="sinch", id=fax_id, account=account, accepted_at=now, speed=sim.speed,
        recipients=[SimRecipient(number, plan(number, doc.pages, render_error=doc.error))], send=send,
        pages=doc.pages, api_version="v3", callback_url=url, callback_json=ctype == "application/json",
        account_project=credentials.SINCH_PROJECT_ID,
    )


async def create(sim: Simulator, request: Request, form: Form, account: str) -> Response:
    if account == credentials.SINCH_INACTIVE_KEY_ID:
        return error(402, MSG_FUNDS)
    try:
        fax = parse_create(sim, form, account)
    except Refused as exc:
        return error(exc.status, exc.message)
    sim.add(fax)
    return JSONResponse(fax_json(fax, sim.clock.now()))


async def get_fax(sim: Simulator, request: Request, form: Form, account: str) -> Response:
    fax = sim.get("sinch", str(request.path_params["fax_id"]))
    if fax is None or fax.account != account:
        return error(404, MSG_NOT_FOUND)
    return JSONResponse(fax_json(fax, sim.clock.now()))


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def list_faxes(sim: Simulator, request: Request, form: Form, account: str) -> Response:
    now = sim.clock.now()
    try:
        after = [_time(v) for v in form.getall("createTime>", "createTime>=")]
        before = [_time(v) for v in form.getall("createTime<", "createTime<=")]
        size = int(form.get("pageSize") or 100)
        token = form.get("page") or ""
        start = int(token.removeprefix("after-")) if token else 0
    except ValueError:
        return error(400, MSG_LIST)
    if not 1 <= size <= MAX_PAGE_SIZE or start < 0:
        return error(400, MSG_LIST)
    prefix = form.get("createTime") or ""
    status, direction, to = form.get("status"), form.get("direction"), form.get("to")
    if status and status not in STATUSES:
        return error(400, f"status must be one of {', '.join(STATUSES)}.")
    rows = []
    for fax in sim.faxes("sinch"):
        created = fax.accepted_at
        if fax.account != account or any(created < a for a in after) or any(created > b for b in before):
            continue
        if prefix and not (stamp(created) or "").startswith(prefix):
            continue
        if direction not in (None, "", "OUTBOUND") or (to and not fax.recipients[0].number.startswith(to)):
            continue
        if status and fax_status(fax, now) != status:
            continue
        rows.append(fax)
    rows.sort(key=lambda f: (f.accepted_at, f.id), reverse=True)
    chunk = rows[start:start + size]
    body: dict[str, Any] = {"faxes": [fax_json(f, now) for f in chunk], "totalItems": len(rows), "pageSize": size}
    if start + size < len(rows):
        body["nextPageToken"] = f"after-{start + size}"
    return JSONResponse(body)
