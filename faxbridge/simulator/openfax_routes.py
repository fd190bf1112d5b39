"""Openfax endpoints: faxSendSubmit.php, getAvailableCredit.php, outboundDetailsbyDate.php.

Every answer is HTTP 200 with JSON (except scripted faults). Bodies may be multipart or
urlencoded; the two reporting endpoints also take GET query parameters. Send answers an
object (``{"Response":"Success","OutTransID":"779029"}`` or ``{"Response":"<Error>"}``);
the list-type endpoints answer arrays, errors included (``[{"Response":"..."}]``, as the
inbound endpoints do per S22).

Decisions: a missing faxResolution / paperSize / Priority takes its default (0 / 0 /
Normal); an empty value is missing. FaxNumber: digits only, ``1`` + 10 digits (NANP), or a
country code + number of 11-15 digits not starting with 0 or 1 (a bare 10-digit number is
taken for a NANP number missing its 1, and refused). Headers longer than 15 characters are
cut to 15. PDF_encode must be base64 (spaces read as ``+``, as from an unescaped form) of
bytes starting ``%PDF-``, at most 50 MiB, else ``Failed``; a PDF that pypdf cannot read is
accepted and fails at rendering (CurrentState 10, LastStatus 8). Report dates filter on the
day (UTC) the fax was submitted; a missing or malformed FromDate/ToDate/DetailType answers
``[{"Response":"InvalidMissingValue"}]``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from faxbridge.simulator import credentials
from faxbridge.simulator.documents import count_pdf
from faxbridge.simulator.forms import BadForm, BodyTooLarge, Form, read_form
from faxbridge.simulator.openfax_model import PAPERS
from faxbridge.simulator.records import SimFax, SimRecipient, SimSend
from faxbridge.simulator.timing import RenderError, plan

if TYPE_CHECKING:
    from faxbridge.simulator.core import Simulator

MAX_BODY = 80 * 1000 * 1000
MAX_PDF = 50 * 1024 * 1024
MAX_HEADER = 15
MAX_LIMIT = 1000
RESTRICTED = ("1900", "1976")
ACCOUNTS = {
    credentials.OPENFAX_ACCOUNT_ID: credentials.OPENFAX_API_KEY,
    credentials.OPENFAX_INACTIVE_ACCOUNT_ID: credentials.OPENFAX_INACTIVE_API_KEY,
}


def reply(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def fault_body(status: int) -> Response:
    return reply({"Response": "Failed"}, status)


def account_of(form: Form) -> str | None:
    account = (form.get("AccountID") or "").strip()
    key = form.get("APIKey") or ""
    expected = ACCOUNTS.get(account)
    if expected is None or not hmac.compare_digest(expected.encode(), key.strip().encode()):
        return None
    return account


def valid_number(number: str) -> bool:
    if not number.isdigit() or not number.isascii():
        return False
    if number.startswith("1"):
        return len(number) == 11
    return not number.startswith("0") and 11 <= len(number) <= 15


def decode_pdf(value: str | None) -> bytes | None:
    if not value:
        return None
    text = re.sub(r"[\r\n\t]", "", value).replace(" ", "+")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) > MAX_PDF or data.lstrip()[:5] != b"%PDF-":
        return None
    return data


Endpoint = Callable[["Simulator", Form], Awaitable[Response]]


def routes(sim: Simulator) -> list[BaseRoute]:
    def wrap(endpoint: Endpoint, listing: bool) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            async def inner(req: Request) -> Response:
                try:
                    form = await read_form(req, MAX_BODY)
                except (BodyTooLarge, BadForm):
                    return reply([{"Response": "Failed"}] if listing else {"Response": "Failed"})
                return await endpoint(sim, form)

            sim.runtime()
            return await sim.faults.run(request, inner, fault_body)

        return handle

    return [
        Route("/faxSendSubmit.php", wrap(send, False), methods=["POST"]),
        Route("/getAvailableCredit.php", wrap(balance, True), methods=["GET", "POST"]),
        Route("/outboundDetailsbyDate.php", wrap(report, True), methods=["GET", "POST"]),
    ]


def _choice(value: str | None, allowed: tuple[str, ...], default: str) -> str | None:
    value = (value or "").strip() or default
    return value if value in allowed else None


async def send(sim: Simulator, form: Form) -> Response:
    account = account_of(form)
    if account is None:
        return reply({"Response": "InvalidAuthentication"})
    if account == credentials.OPENFAX_INACTIVE_ACCOUNT_ID:
        return reply({"Response": "AccountInactive"})
    number = (form.get("FaxNumber") or "").strip()
    if not valid_number(number):
        return reply({"Response": "InvalidFaxNumberLength"})
    if number.startswith(RESTRICTED):
        return reply({"Response": "RestrictedFaxNumber"})
    resolution = _choice(form.get("faxResolution"), ("0", "1"), "0")
    if resolution is None:
        return reply({"Response": "InvalidFaxResolution"})
    paper = _choice(form.get("paperSize"), ("0", "1", "2"), "0")
    if paper is None:
        return reply({"Response": "InvalidPapersize"})
    priority = form.get("Priority") or "Normal"
    if priority not in ("Normal", "Low"):
        return reply({"Response": "InvalidPriority"})
    pdf = decode_pdf(form.get("PDF_encode"))
    if pdf is None:
        return reply({"Response": "Failed"})
    counted = count_pdf(pdf)
    render_error = RenderError.CONVERSION if counted.error else None
    from_header = form.get("fromHeader") or form.get("frHeader") or ""
    to_header = form.get("toHeader") or ""
    now = sim.clock.now()
    fax_id = sim.new_id("openfax")
    e164 = "+" + number
    sent = SimSend(
        provider="openfax", id=fax_id, to=e164, pdf_sha256=hashlib.sha256(pdf).hexdigest(),
        pdf_size=len(pdf), pages=counted.pages, tags={}, job_tag=None,
        header=from_header[:MAX_HEADER], resolution="fine" if resolution == "1" else "standard",
        paper=PAPERS[int(paper)], accepted_at=now, to_header=to_header[:MAX_HEADER],
        priority=priority, recipients=(e164,),
    )
    timeline = plan(e164, counted.pages, render_error=render_error)
    sim.add(SimFax(provider="openfax", id=fax_id, account=account, accepted_at=now, speed=sim.speed,
                   recipients=[SimRecipient(e164, timeline)], send=sent, pages=counted.pages))
    return reply({"Response": "Success", "OutTransID": fax_id})


async def balance(sim: Simulator, form: Form) -> Response:
    account = account_of(form)
    if account is None:
        return reply([{"Response": "InvalidAuthentication"}])
    if account == credentials.OPENFAX_INACTIVE_ACCOUNT_ID:
        return reply([{"AvailableCredit": 0.0}])
    credit = credentials.OPENFAX_OPENING_CREDIT - sim.spent_cents("openfax", account) / 100
    return reply([{"AvailableCredit": round(credit, 4)}])


def _date(value: str | None) -> date | None:
    if not value or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def _int(value: str | None, default: int) -> int | None:
    value = (value or "").strip()
    if not value:
        return default
    return int(value) if value.isdigit() else None


async def report(sim: Simulator, form: Form) -> Response:
    account = account_of(form)
    if account is None:
        return reply([{"Response": "InvalidAuthentication"}])
    first, last = _date(form.get("FromDate")), _date(form.get("ToDate"))
    detail = _int(form.get("DetailType"), 0)
    after = _int(form.get("LastHistoryID"), 0)
    limit = _int(form.get("Limit"), MAX_LIMIT)
    if first is None or last is None or detail not in (0, 1) or after is None or limit is None:
        return reply([{"Response": "InvalidMissingValue"}])
    limit = max(1, min(limit, MAX_LIMIT))
    rows = [
        row for row in sim.history()
        if row.account == account and first <= row.submitted <= last and row.history_id > after
        and (detail == 1 or row.final)
    ]
    out = [row.to_json() for row in rows[:limit]]
    if not sim.openfax_laststatus:
        for row_json in out:
            del row_json["LastStatus"]
    return reply(out)
