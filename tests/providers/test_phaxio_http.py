"""Phaxio adapter over real HTTP against canned replies (what the simulator cannot produce)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.clock import FakeClock
from faxbridge.errors import AccountError, PermanentProviderError, RefusedError, TransientProviderError
from faxbridge.models import FaxOptions, FaxOutcome, Paper, PendingFax, SubmissionLookup, SubmitRequest
from faxbridge.providers.phaxio import PhaxioProvider

from .conftest import Reply, Seen, StubServer

KEY, SECRET = "phx-key-123456", "phx-secret-abcdef"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        yield c


def adapter(client: httpx.AsyncClient, stub: StubServer, **kw: Any) -> PhaxioProvider:
    return PhaxioProvider(client, base_url=stub.base + "/v2.1/", api_key=KEY, api_secret=SECRET,
                          clock=FakeClock(NOW), **kw)


def request(pdf: Path, **opts: Any) -> SubmitRequest:
    return SubmitRequest(job_id="J1", to="+15555551212", pdf=pdf, filename="letter.pdf", pages=2,
                         paper=Paper.LETTER, options=FaxOptions(**opts),
                         callback_url="https://fax.example/webhooks/phaxio?job=J1")


OK = Reply({"success": True, "message": "Fax queued for sending", "data": {"id": 323034811}})


async def test_submit_fields_auth_and_file(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply("/v2.1/faxes", OK)
    p = adapter(client, stub, header_text="configured header", cancel_timeout=30, caller_id="+15555550100",
                test_fail="lineError")
    tags = {f"t{i}": str(i) for i in range(12)}
    receipt = await p.submit(request(pdf, header="H" * 60, tags=tags))
    assert receipt.provider_id == "323034811"
    assert receipt.callback_url == "https://fax.example/webhooks/phaxio?job=J1"
    seen = stub.seen[-1]
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    got = dict(seen.fields)
    assert got["to"] == "+15555551212" and got["header_text"] == "H" * 50
    assert got["callback_url"] == "https://fax.example/webhooks/phaxio?job=J1"
    assert got["tag[faxbridge_job]"] == "J1"
    assert len([k for k in got if k.startswith("tag[")]) == 10
    assert (got["cancel_timeout"], got["caller_id"], got["test_fail"]) == ("30", "+15555550100", "lineError")
    assert "api_key" not in got and "api_secret" not in got
    ((name, filename, ctype, data),) = seen.files
    assert (name, filename, ctype, data) == ("file", "letter.pdf", "application/pdf", pdf.read_bytes())
    assert int(seen.headers["content-length"]) == seen.raw_length


async def test_submit_minimal(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply("/v2.1/faxes", OK)
    req = SubmitRequest(job_id="J2", to="+15555551212", pdf=pdf, filename="scan", pages=1, paper=Paper.A4)
    await adapter(client, stub).submit(req)
    got = dict(stub.seen[-1].fields)
    assert set(got) == {"to", "tag[faxbridge_job]"}
    assert stub.seen[-1].files[0][1] == "scan.pdf"
    await adapter(client, stub, header_text="Configured").submit(req)
    assert dict(stub.seen[-1].fields)["header_text"] == "Configured"


@pytest.mark.parametrize(
    ("reply", "exc", "kind", "words"),
    [
        pytest.param(Reply({"success": False, "message": "Invalid API key"}, 401), AccountError, "auth", "key",
                     id="401"),
        pytest.param(Reply({"success": False, "message": "Insufficient funds"}, 402), AccountError, "credit",
                     "Insufficient credit", id="402"),
        pytest.param(Reply({"success": False, "message": "Not allowed"}, 403), AccountError, "auth", "Not allowed",
                     id="403"),
        pytest.param(Reply({"success": False, "message": "Route not found"}, 404), RefusedError, None,
                     "Route not found", id="404"),
        pytest.param(Reply({"success": False, "message": "Phone number is not formatted correctly"}, 422),
                     RefusedError, None, "not formatted correctly", id="422"),
        pytest.param(Reply({"success": False, "message": "You do not have enough balance"}, 422), AccountError,
                     "credit", "balance", id="422-credit"),
        pytest.param(Reply({"success": False, "message": "Invalid phone number"}, 200), RefusedError, None,
                     "Invalid phone number", id="200-success-false"),
        pytest.param(Reply({"success": False, "message": "Rate limited"}, 429, headers={"Retry-After": "3"}),
                     TransientProviderError, None, "rate limiting", id="429"),
        pytest.param(Reply({"success": False, "message": "down"}, 503), TransientProviderError, None,
                     "unavailable", id="503"),
        pytest.param(Reply("<html>Bad gateway</html>", 502), TransientProviderError, None, "unavailable",
                     id="502-html"),
        pytest.param(Reply("<html>odd</html>", 200), TransientProviderError, None, "not JSON", id="200-html"),
        pytest.param(Reply({"success": True, "data": {}}), TransientProviderError, None, "no id", id="no-id"),
        pytest.param(Reply({"success": False}, 418), RefusedError, None, "HTTP 418", id="418-no-message"),
    ],
)
async def test_submit_errors(client: httpx.AsyncClient, stub: StubServer, pdf: Path, reply: Reply,
                             exc: type[Exception], kind: str | None, words: str) -> None:
    stub.reply("/v2.1/faxes", reply)
    with pytest.raises(exc) as info:
        await adapter(client, stub).submit(request(pdf))
    err = info.value
    assert words.lower() in str(err).lower()
    assert KEY not in str(err) and SECRET not in str(err)
    if kind:
        assert isinstance(err, AccountError) and err.kind == kind
    if reply.status == 429:
        assert isinstance(err, TransientProviderError) and err.retry_after == 3
    if isinstance(err, TransientProviderError) and reply.status == 200:
        assert err.maybe_sent


async def test_secret_echo_redacted(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply("/v2.1/faxes", Reply({"success": False, "message": f"bad pair {KEY}/{SECRET}"}, 422))
    with pytest.raises(RefusedError) as info:
        await adapter(client, stub).submit(request(pdf))
    assert KEY not in str(info.value) and SECRET not in str(info.value)


def fax(fid: int, status: str, job: str = "J", **over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {"id": fid, "direction": "sent", "num_pages": 2, "status": status, "cost": 14,
                         "tags": {"faxbridge_job": job},
                         "recipients": [{"phone_number": "+15555551212", "status": status, "retry_count": 0}]}
    f.update(over)
    return f


async def test_status_v1_error_code(client: httpx.AsyncClient, stub: StubServer) -> None:
    body = fax(5, "failure", recipients=[{"phone_number": "+15555551217", "status": "failure",
                                           "retry_count": 2, "error_type": "lineError",
                                           "error_code": "No answer from the fax machine"}])
    stub.reply("/v2.1/faxes/5", Reply({"success": True, "data": body}))
    u = await adapter(client, stub).status("5")
    assert u.outcome is FaxOutcome.FAILED and u.attempts == 3
    assert u.reason == "No Answer: there was no answer on all 3 attempts"
    assert u.cost == pytest.approx(0.14) and u.job_id == "J"


async def test_status_numeric_error_code_and_fax_level_error(client: httpx.AsyncClient,
                                                             stub: StubServer) -> None:
    body = fax(6, "failure", error_type="lineError", error_code=17,
               recipients=[{"phone_number": "+1", "status": None, "retry_count": 2}])
    stub.reply("/v2.1/faxes/6", Reply({"success": True, "data": body}))
    u = await adapter(client, stub).status("6")
    assert u.status_code == 17 and "Busy" in (u.reason or "")


async def test_status_errors(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.reply("/v2.1/faxes/7", Reply({"success": False, "message": "Fax not found"}, 404))
    with pytest.raises(PermanentProviderError, match="Fax not found"):
        await adapter(client, stub).status("7")


class Listing:
    def __init__(self, faxes: list[dict[str, Any]], total_as: str = "number") -> None:
        self.faxes = faxes
        self.total_as = total_as

    def __call__(self, seen: Seen) -> Reply:
        q = dict(seen.query)
        rows = [f for f in self.faxes if not q.get("tag[faxbridge_job]")
                or f["tags"].get("faxbridge_job") == q["tag[faxbridge_job]"]]
        per, page = int(q.get("per_page", 25)), int(q.get("page", 1))
        chunk = rows[(page - 1) * per: page * per]
        total: Any = len(rows) if self.total_as == "number" else ">10000" if self.total_as == "gt" else None
        body: dict[str, Any] = {"success": True, "message": "Retrieved faxes successfully", "data": chunk}
        if total is not None:
            body["paging"] = {"total": total, "per_page": per, "page": page}
        return Reply(body)


@pytest.mark.parametrize("total_as", ["number", "gt", "absent"])
async def test_poll_lists_and_pages(client: httpx.AsyncClient, stub: StubServer, total_as: str) -> None:
    others = [fax(100000 + i, "success", f"X{i}") for i in range(2100)]
    ours = [fax(11, "failure", "J11", recipients=[{"phone_number": "+15555551219", "status": "failure",
                                                   "retry_count": 2, "error_type": "lineError",
                                                   "error_id": 17, "error_message": "Busy"}]),
            fax(12, "success", "J12"), fax(13, "inprogress", "J13")]
    stub.handle("/v2.1/faxes", Listing(ours + others, total_as))
    stub.reply("/v2.1/faxes/14", Reply({"success": True, "data": fax(14, "success", "J14")}))
    p = adapter(client, stub, list_lag_s=0.0)     # missing from the list: asked for alone at once
    early = datetime(2026, 11, 22, 9, 0, 30, tzinfo=UTC)
    pend = [PendingFax("J11", "11", "+15555551219", 2, early)] + [
        PendingFax(f"J{i}", str(i), "+15555551212", 2, NOW) for i in (12, 13, 14)]
    result = await p.poll(pend, None)
    assert result.requests == 4           # 3 list pages + 1 GET for the fax missing from the list
    q = dict(stub.seen[0].query)
    assert (q["direction"], q["created_after"], q["per_page"], q["page"]) == (
        "sent", "2026-11-22T08:59:30Z", "1000", "1")
    by = {u.provider_id: u for u in result.updates}
    assert set(by) == {"11", "12", "14"}
    assert by["11"].reason == "Busy: the line was busy on all 3 attempts" and by["11"].job_id == "J11"
    assert by["12"].outcome is FaxOutcome.DELIVERED and by["12"].pages == 2
    assert stub.seen[-1].path == "/v2.1/faxes/14"


async def test_find_submission_by_tag(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.handle("/v2.1/faxes", Listing([fax(21, "queued", "JX"), fax(20, "queued", "JX"), fax(19, "success", "JY")]))
    p = adapter(client, stub)
    since = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    found = await p.find_submission(SubmissionLookup("JX", "+15555551212", 2, since))
    assert found == "20"
    q = dict(stub.seen[-1].query)
    assert (q["tag[faxbridge_job]"], q["created_after"]) == ("JX", "2026-11-22T08:59:00Z")
    assert await p.find_submission(SubmissionLookup("JX", "+1", 2, since, frozenset({"20", "21"}))) is None
    assert await p.find_submission(SubmissionLookup("JZ", "+1", 2, since)) is None


async def test_find_submission_ignores_server_that_drops_the_filter(client: httpx.AsyncClient,
                                                                    stub: StubServer) -> None:
    body = {"success": True, "data": [fax(30, "queued", "OTHER")], "paging": {"total": 1}}
    stub.reply("/v2.1/faxes", Reply(body))
    since = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert await adapter(client, stub).find_submission(SubmissionLookup("JX", "+1", 2, since)) is None


async def test_cancel_and_balance(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.reply("/v2.1/faxes/40/cancel",
               Reply({"success": True, "message": "Fax cancellation scheduled successfully.", "data": {"id": 40}}))
    stub.reply("/v2.1/faxes/41/cancel", Reply({"success": False, "message": "Fax already completed"}, 422))
    stub.reply("/v2.1/account/status", Reply({"success": True, "message": "ok", "data": {
        "balance": 1076, "faxes_today": {"sent": 0, "received": 0}}}))
    p = adapter(client, stub)
    await p.cancel("40")
    assert stub.seen[-1].method == "POST"
    with pytest.raises(PermanentProviderError, match="already completed"):
        await p.cancel("41")
    bal = await p.balance()
    assert bal.amount == pytest.approx(10.76) and bal.currency == "USD"


def test_callback_payload_roundtrip_matches_list_rows() -> None:
    from faxbridge.providers.phaxio import fax_update, parse_callback

    row = fax(50, "success", "J50")
    assert parse_callback({"fax": json.dumps(row)}) == fax_update(row)


async def test_header_limit_is_what_the_adapter_sends(client: httpx.AsyncClient, stub: StubServer,
                                                      pdf: Path) -> None:
    """``header_limit`` (what intake cuts a Subject to) is the longest header the adapter sends whole;
    the simulator path uses this adapter, so it is the simulator's limit too."""
    p = adapter(client, stub)
    assert p.header_limit == 50             # Phaxio header_text: 50 characters
    for header, sent in [("x" * 50, "x" * 50), ("y" * 50 + "z", "y" * 50)]:
        stub.reply("/v2.1/faxes", OK)
        await p.submit(request(pdf, header=header))
        assert dict(stub.seen[-1].fields)["header_text"] == sent
