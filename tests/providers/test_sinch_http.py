"""Sinch adapter over real HTTP against canned replies: the wire details and the variants the
simulator does not produce (older SDK field names, numbered pages, rows without labels)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.clock import FakeClock
from faxbridge.errors import AccountError, RefusedError, TransientProviderError
from faxbridge.models import FaxOptions, FaxOutcome, Paper, PendingFax, SubmissionLookup, SubmitRequest
from faxbridge.providers import sinch
from faxbridge.providers.sinch import SinchProvider

from .conftest import Reply, Seen, StubServer

KEY, SECRET, PROJECT = "sinch-key-123456", "sinch-secret-abcdef", "proj-42"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FAXES = f"/v3/projects/{PROJECT}/faxes"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        yield c


def adapter(client: httpx.AsyncClient, stub: StubServer, **kw: Any) -> SinchProvider:
    return SinchProvider(client, base_url=stub.base + "/v3/", project_id=PROJECT, key_id=KEY, key_secret=SECRET,
                         clock=FakeClock(NOW), **kw)


def request(pdf: Path, **opts: Any) -> SubmitRequest:
    return SubmitRequest(job_id="J1", to="+15555551212", pdf=pdf, filename="letter.pdf", pages=2,
                         paper=Paper.LETTER, options=FaxOptions(**opts),
                         callback_url="https://fax.example/webhooks/sinch/tok")


def fax(fid: str, status: str, job: str | None = "J", **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": fid, "direction": "OUTBOUND", "to": "+15555551212", "status": status,
                           "createTime": "2026-11-22T09:59:00Z", "retryCount": 0}
    if job is not None:
        row["labels"] = {"faxbridge_job": job}
    return {**row, **over}


async def test_submit_fields_auth_and_file(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply(FAXES, Reply(fax("01ABC", "QUEUED")))
    tags = {f"t{i}": str(i) for i in range(12)}
    receipt = await adapter(client, stub, header_text="configured").submit(request(pdf, header="H" * 60, tags=tags))
    assert receipt.provider_id == "01ABC" and receipt.callback_url == "https://fax.example/webhooks/sinch/tok"
    seen = stub.seen[-1]
    assert (seen.method, seen.path) == ("POST", FAXES)
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    got = dict(seen.fields)
    assert got["to"] == "+15555551212" and got["headerText"] == "H" * 50
    assert got["callbackUrl"] == "https://fax.example/webhooks/sinch/tok"
    assert got["callbackUrlContentType"] == "application/json"
    assert got["labels[faxbridge_job]"] == "J1"
    assert len([k for k in got if k.startswith("labels[")]) == sinch.MAX_LABELS
    ((name, filename, ctype, data),) = seen.files
    assert (name, filename, ctype, data) == ("file", "letter.pdf", "application/pdf", pdf.read_bytes())
    assert int(seen.headers["content-length"]) == seen.raw_length


@pytest.mark.parametrize(("reply", "exc", "words"), [
    pytest.param(Reply({"code": 401, "error": "UNAUTHORIZED", "message": "Invalid key"}, 401), AccountError,
                 "access key id or secret", id="401"),
    pytest.param(Reply({"code": 403, "error": "FORBIDDEN", "message": "No access"}, 403), AccountError,
                 "No access", id="403"),
    pytest.param(Reply({"code": 402, "error": "PAYMENT_REQUIRED", "message": "Out of funds"}, 402), AccountError,
                 "Insufficient credit", id="402"),
    pytest.param(Reply({"code": 400, "error": "BAD_REQUEST", "message": "to is invalid"}, 400), RefusedError,
                 "Sinch refused the fax: to is invalid", id="400"),
    pytest.param(Reply({"code": 422, "error": "UNPROCESSABLE"}, 422), RefusedError,
                 "Sinch refused the fax: UNPROCESSABLE", id="422-error-only"),
    pytest.param(Reply({"error": {"code": 400, "message": "nested words"}}, 400), RefusedError, "nested words",
                 id="400-nested"),
    pytest.param(Reply("<html>oops</html>", 200), TransientProviderError, "not a JSON object", id="200-html"),
    pytest.param(Reply({"status": "QUEUED"}), TransientProviderError, "sent no id", id="200-no-id"),
])
async def test_submit_errors(client: httpx.AsyncClient, stub: StubServer, pdf: Path, reply: Reply,
                             exc: type[Exception], words: str) -> None:
    stub.reply(FAXES, reply)
    with pytest.raises(exc) as info:
        await adapter(client, stub).submit(request(pdf))
    assert words in str(info.value)
    if isinstance(info.value, TransientProviderError):
        assert info.value.maybe_sent            # a 200 came back: the fax may exist


async def test_an_echoed_secret_is_redacted(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply(FAXES, Reply({"code": 400, "message": f"bad key {SECRET}"}, 400))
    with pytest.raises(RefusedError) as info:
        await adapter(client, stub).submit(request(pdf))
    assert SECRET not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize(("row", "outcome", "code", "reason"), [
    pytest.param(fax("1", "FAILURE", errorType="CALL_ERROR", errorCode=17, errorMessage="Busy", retryCount=2),
                 FaxOutcome.FAILED, 17, "Busy: the line was busy on all 3 attempts", id="sdk-1.5-number"),
    pytest.param(fax("1", "FAILURE", errorType="LINE_ERROR", errorCode="NO_ANSWER", errorId=30),
                 FaxOutcome.FAILED, 30, "No Answer: there was no answer on the one attempt made", id="sdk-1.0-errorId"),
    pytest.param(fax("1", "FAILURE", errorType="DOCUMENT_CONVERSION_ERROR", errorCode=129,
                     errorMessage="Mimetype not supported."), FaxOutcome.FAILED, 129,
                 "Document conversion failed: Sinch could not read or convert the document "
                 "(Sinch: Mimetype not supported.)", id="conversion"),
    pytest.param(fax("1", "FAILURE", errorType="GENERAL_ERROR"), FaxOutcome.FAILED, None,
                 "Sinch error: the fax was not sent", id="general"),
    pytest.param(fax("1", "COMPLETED"), FaxOutcome.DELIVERED, None, None, id="completed"),
    pytest.param(fax("1", "IN_PROGRESS"), FaxOutcome.PENDING, None, None, id="in-progress"),
    pytest.param(fax("1", "SOMETHING_NEW"), FaxOutcome.PENDING, None, None, id="unknown-word"),
])
def test_fax_objects(row: dict[str, Any], outcome: FaxOutcome, code: int | None, reason: str | None) -> None:
    update = sinch.fax_update(row)
    assert (update.outcome, update.status_code, update.reason) == (outcome, code, reason)
    assert update.job_id == "J" and update.provider_id == "1"


def test_completed_fax_fields() -> None:
    row = fax("01X", "COMPLETED", numberOfPages=3, pagesSentSuccessfully=3, completedTime="2026-11-22T10:00:30Z",
              price={"amount": "0.21", "currencyCode": "USD"}, retryCount=1)
    update = sinch.fax_update(row)
    assert (update.pages, update.cost, update.duration_s, update.attempts) == (3, 0.21, 90.0, 2)


async def test_numbered_pages_when_no_token(client: httpx.AsyncClient, stub: StubServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinch, "PAGE_SIZE", 2)
    rows = [fax(str(n), "COMPLETED", job=f"J{n}") for n in range(3)]

    def page(seen: Seen) -> Reply:
        query = dict(seen.query)
        if query.get("status") != "COMPLETED":
            return Reply({"faxes": [], "totalItems": 0})
        n = int(query.get("page", "1"))
        return Reply({"faxes": rows[(n - 1) * 2: n * 2], "totalItems": 3, "pageSize": 2})

    stub.handle(FAXES, page)
    pending = [PendingFax(f"J{n}", str(n), "+15555551212", 1, NOW) for n in range(3)]
    result = await adapter(client, stub).poll(pending, None)
    assert sorted(u.job_id or "" for u in result.updates) == ["J0", "J1", "J2"]
    first = dict(stub.seen[0].query)
    assert first["createTime>"] == "2026-11-22T09:59:00Z" and first["direction"] == "OUTBOUND"
    assert first["pageSize"] == "2"
    assert [dict(s.query).get("page") for s in stub.seen] == [None, "2", None]


async def test_find_submission_reads_unlabelled_rows_alone(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.reply(FAXES, Reply({"faxes": [fax("A", "QUEUED", job=None), fax("B", "QUEUED", job=None),
                                       fax("C", "QUEUED", job="J9")]}))
    stub.reply(f"{FAXES}/A", Reply(fax("A", "QUEUED", job="OTHER")))
    stub.reply(f"{FAXES}/B", Reply(fax("B", "QUEUED", job="J1")))
    found = await adapter(client, stub).find_submission(SubmissionLookup("J1", "+15555551212", 1, NOW))
    assert found == "B"
    assert dict(stub.seen[0].query)["to"] == "+15555551212"


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({"event": "FAX_COMPLETED", "fax": fax("X", "COMPLETED")}, "X", id="json"),
    pytest.param({"event": "FAX_COMPLETED", "fax": '{"id": "Y", "status": "FAILURE"}'}, "Y", id="form-part"),
    pytest.param({"fax": {"id": "Z", "direction": "INBOUND"}}, None, id="inbound"),
    pytest.param({"event": "INCOMING_FAX", "fax": {"id": "Z"}}, None, id="incoming"),
])
def test_parse_callback(body: dict[str, Any], expected: str | None) -> None:
    parsed = sinch.parse_callback(body)
    assert (parsed[0] if parsed else None) == expected


@pytest.mark.parametrize("body", [{}, {"fax": "not json"}, {"fax": {"status": "COMPLETED"}}, {"fax": []}])
def test_parse_callback_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sinch.parse_callback(body)
