"""Phaxio API v2 / v2.1 endpoints (mounted under ``/v2`` and ``/v2.1``).

Auth: HTTP Basic (key:secret), or ``api_key``/``api_secret`` as query parameters or form
fields; otherwise 401. The inactive key authenticates, reads work, and ``POST /faxes``
answers **402** ``{"success":false,"message":"Insufficient funds: ..."}`` (Phaxio publishes
no status for this; 402 keeps it apart from a refused fax, 422).

Cancel (``POST /faxes/{id}/cancel``) takes effect at once: the fax ends ``failure`` with
generalError "Fax canceled (canceled by request)"; a final fax answers 422. Resend
(``POST /faxes/{id}/resend``, optional ``callback_url``) is allowed for final faxes only and
makes a new fax (a new id, counted in ``sim.sends``) with the same document and numbers.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from faxbridge.simulator import credentials
from faxbridge.simulator.forms import BadForm, BodyTooLarge, Form, basic_auth, read_form
from faxbridge.simulator.phaxio_model import fax_json, fax_status
from faxbridge.simulator.phaxio_submit import (
    MAX_REQUEST_BYTES,
    MSG_TOO_LARGE,
    TAG,
    Refused,
    build_fax,
    parse_create,
)
from faxbridge.simulator.records import SimFax

if TYPE_CHECKING:
    from faxbridge.simulator.core import Simulator

ACCOUNTS = {
    credentials.PHAXIO_API_KEY: credentials.PHAXIO_API_SECRET,
    credentials.PHAXIO_INACTIVE_KEY: credentials.PHAXIO_INACTIVE_SECRET,
    credentials.PHAXIO_TEST_KEY: credentials.PHAXIO_TEST_SECRET,
}
MSG_AUTH = "The API credentials you provided are invalid."
MSG_FUNDS = "Insufficient funds: add funds to your account to send faxes."
MSG_NOT_FOUND = "Fax not found"
MSG_NOT_CANCELABLE = "Fax cannot be canceled: it has already completed."
MSG_NOT_RESENDABLE = "Fax cannot be resent until it has completed."
STATUS_MESSAGES = {
    400: "Bad request", 401: MSG_AUTH, 403: "Forbidden", 404: "Not found", 422: "Invalid request",
    429: "Rate limited", 500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable",
    504: "Gateway timeout",
}
MAX_PER_PAGE = 1000


def error(status: int, message: str | None = None) -> JSONResponse:
    text = message or STATUS_MESSAGES.get(status, "Error")
    return JSONResponse({"success": False, "message": text}, status_code=status)


def ok(message: str, data: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"success": True, "message": message, "data": data, **extra})


def account_of(request: Request, form: Form) -> str | None:
    creds = basic_auth(request) or (form.get("api_key") or "", form.get("api_secret") or "")
    key, secret = creds
    expected = ACCOUNTS.get(key)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        return None
    return key


def parse_time(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "+"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


Endpoint = Callable[["Simulator", Request, Form, str, str], Awaitable[Response]]


def routes(sim: Simulator, version: str) -> list[BaseRoute]:
    def wrap(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            async def inner(req: Request) -> Response:
                try:
                    form = await read_form(req, MAX_REQUEST_BYTES)
                except BodyTooLarge:
                    return error(422, MSG_TOO_LARGE)
                except BadForm as exc:
                    return error(422, f"Invalid request: {exc}")
                account = account_of(req, form)
                if account is None:
                    return error(401, MSG_AUTH)
                return await endpoint(sim, req, form, account, version)

            sim.runtime()
            return await sim.faults.run(request, inner, error)

        return handle

    return [
        Route("/faxes", wrap(create), methods=["POST"]),
        Route("/faxes", wrap(list_faxes), methods=["GET"]),
        Route("/faxes/{fax_id}", wrap(get_fax), methods=["GET"]),
        Route("/faxes/{fax_id}/cancel", wrap(cancel), methods=["POST"]),
        Route("/faxes/{fax_id}/resend", wrap(resend), methods=["POST"]),
        Route("/account/status", wrap(account_status), methods=["GET"]),
    ]


async def create(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    if account == credentials.PHAXIO_INACTIVE_KEY:
        return error(402, MSG_FUNDS)
    try:
        req = parse_create(form)
    except Refused as exc:
        return error(422, exc.message)
    fax = build_fax(req, sim.new_id("phaxio"), account, version, sim.clock.now(), sim.speed)
    fax.is_test = account == credentials.PHAXIO_TEST_KEY
    sim.add(fax)
    return ok("Fax queued for sending", {"id": int(fax.id)})


def find(sim: Simulator, request: Request, account: str) -> SimFax | None:
    fax = sim.get("phaxio", str(request.path_params["fax_id"]))
    return fax if fax is not None and fax.account == account else None


async def get_fax(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    fax = find(sim, request, account)
    if fax is None:
        return error(404, MSG_NOT_FOUND)
    return ok("Metadata for fax", fax_json(fax, sim.clock.now(), version))


async def cancel(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    fax = find(sim, request, account)
    if fax is None:
        return error(404, MSG_NOT_FOUND)
    if fax.is_final(sim.clock.now()):
        return error(422, MSG_NOT_CANCELABLE)
    sim.cancel(fax, "canceled by request")
    return ok("Fax cancellation scheduled successfully.", {"id": int(fax.id)})


async def resend(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    old = find(sim, request, account)
    if old is None:
        return error(404, MSG_NOT_FOUND)
    now = sim.clock.now()
    if not old.is_final(now):
        return error(422, MSG_NOT_RESENDABLE)
    new_id = sim.new_id("phaxio")
    callback = form.get("callback_url") or old.send.callback_url
    send = dataclasses.replace(
        old.send, id=new_id, accepted_at=now, callback_url=callback, api_version=version)
    fax = SimFax(
        provider="phaxio", id=new_id, account=account, accepted_at=now, speed=sim.speed,
        recipients=[dataclasses.replace(r) for r in old.recipients], send=send, pages=old.pages,
        api_version=version, caller_id=old.caller_id,
        callback_url=callback if callback and not callback.startswith("mailto:") else None,
    )
    sim.add(fax)
    return ok("Fax queued for resending", {"id": int(new_id)})


async def list_faxes(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    now = sim.clock.now()
    try:
        before = parse_time(form.get("created_before"), now)
        after = parse_time(form.get("created_after"), now - timedelta(days=7))
        per_page = min(MAX_PER_PAGE, int(form.get("per_page") or 25))
        page = int(form.get("page") or 1)
    except ValueError:
        return error(422, "Invalid created_before, created_after, per_page or page.")
    if per_page < 1 or page < 1:
        return error(422, "per_page and page must be positive numbers.")
    direction, status, phone = form.get("direction"), form.get("status"), form.get("phone_number")
    tags = {m["name"]: value for name, value in form.fields if (m := TAG.match(name))}
    matches = []
    for fax in sim.faxes("phaxio"):
        if fax.account != account or not after <= fax.accepted_at <= before:
            continue
        if direction not in (None, "", "sent"):
            continue
        if status and fax_status(fax, [fax.snapshot(r, now) for r in fax.recipients]) != status:
            continue
        if phone and phone not in [r.number for r in fax.recipients]:
            continue
        if any(fax.send.tags.get(k) != v for k, v in tags.items()):
            continue
        matches.append(fax)
    matches.sort(key=lambda f: (f.accepted_at, int(f.id)), reverse=True)
    chunk = matches[(page - 1) * per_page: page * per_page]
    response = ok(
        "Retrieved faxes successfully",
        [fax_json(f, now, version) for f in chunk],
        paging={"total": len(matches), "per_page": per_page, "page": page},
    )
    response.headers.update({"X-Total": str(len(matches)), "X-Per-Page": str(per_page), "X-Page": str(page)})
    return response


async def account_status(
    sim: Simulator, request: Request, form: Form, account: str, version: str
) -> Response:
    now = sim.clock.now()
    mine = [f for f in sim.faxes("phaxio") if f.account == account]
    today = sum(1 for f in mine if f.accepted_at.date() == now.date())
    month = sum(1 for f in mine if (f.accepted_at.year, f.accepted_at.month) == (now.year, now.month))
    opening = 0 if account == credentials.PHAXIO_INACTIVE_KEY else credentials.PHAXIO_OPENING_BALANCE_CENTS
    data = {
        "balance": opening - sim.spent_cents("phaxio", account),
        "faxes_today": {"sent": today, "received": 0},
        "faxes_this_month": {"sent": month, "received": 0},
    }
    return ok("Account status retrieved successfully", data)
