"""Openfax adapter over real HTTP against canned replies (what the simulator cannot produce)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.clock import FakeClock
from faxbridge.errors import AccountError, PermanentProviderError, RefusedError, TransientProviderError
from faxbridge.models import (
    FaxOptions,
    FaxOutcome,
    Paper,
    PendingFax,
    Resolution,
    SubmissionLookup,
    SubmitRequest,
)
from faxbridge.providers.openfax import Cursor, OpenfaxProvider, fax_number

from .conftest import Reply, Seen, StubServer, make_pdf

KEY = "openfax-secret-key-42"
SEND, BAL, REP = "/pfx/faxSendSubmit.php", "/pfx/getAvailableCredit.php", "/pfx/outboundDetailsbyDate.php"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        yield c


def adapter(client: httpx.AsyncClient, stub: StubServer, **kw: Any) -> OpenfaxProvider:
    return OpenfaxProvider(
        client, base_url=stub.base + "/pfx/", send_path="/faxSendSubmit.php",
        balance_path="getAvailableCredit.php", report_path="/outboundDetailsbyDate.php",
        account_id="123456789", api_key=KEY, clock=FakeClock(NOW), **kw,
    )


def request(pdf: Path, to: str = "+15555551212", **opts: Any) -> SubmitRequest:
    return SubmitRequest(job_id="J1", to=to, pdf=pdf, filename="doc.pdf", pages=2, paper=Paper.A4,
                         options=FaxOptions(**opts))


async def test_submit_sends_every_field(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply(SEND, Reply({"Response": "Success", "OutTransID": 779029}))
    p = adapter(client, stub, to_header="ignored", from_header="A Very Long Company Name")
    receipt = await p.submit(request(pdf, header="Invoice 42 for you all", resolution=Resolution.FINE,
                                     priority="Low"))
    assert receipt.provider_id == "779029"
    seen = stub.seen[-1]
    assert seen.method == "POST" and seen.path == SEND
    assert seen.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(seen.headers["content-length"]) == seen.raw_length
    assert "transfer-encoding" not in seen.headers
    assert seen.files == []          # PDF_encode is a plain field, as PHP's $_POST sees it
    got = dict(seen.fields)
    assert got == {
        "AccountID": "123456789", "APIKey": KEY, "FaxNumber": "15555551212",
        "toHeader": "Invoice 42 for ", "fromHeader": "A Very Long Com", "frHeader": "A Very Long Com",
        "paperSize": "2", "faxResolution": "1", "Priority": "Low",
        "PDF_encode": base64.b64encode(pdf.read_bytes()).decode(),
    }


@pytest.mark.parametrize("size", [0, 1, 2, 3, 786431, 786432, 786433, 2 * 786432 + 5])
async def test_pdf_encode_streams_exact_base64(client: httpx.AsyncClient, stub: StubServer, tmp_path: Path,
                                               size: int) -> None:
    blob = tmp_path / "b.pdf"
    blob.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    stub.reply(SEND, Reply({"Response": "Success", "OutTransID": "5"}))
    await adapter(client, stub).submit(request(blob))
    seen = stub.seen[-1]
    assert seen.field("PDF_encode") == base64.b64encode(blob.read_bytes()).decode()
    assert int(seen.headers["content-length"]) == seen.raw_length


@pytest.mark.parametrize(
    ("e164", "digits"), [("+15555551212", "15555551212"), ("+861069445000", "861069445000"),
                         ("+442079460958", "442079460958")])
def test_fax_number(e164: str, digits: str) -> None:
    assert fax_number(e164) == digits


def test_fax_number_refuses_non_digits() -> None:
    with pytest.raises(RefusedError):
        fax_number("+1 555 CALL")


async def test_defaults_letter_standard_normal(client: httpx.AsyncClient, stub: StubServer, pdf: Path) -> None:
    stub.reply(SEND, Reply({"Response": "Success", "OutTransID": 1}))
    p = adapter(client, stub, to_header="Dr Who", from_header="Tardis", priority="Low")
    req = SubmitRequest(job_id="J", to="+15555551212", pdf=pdf, filename="x.pdf", pages=1, paper=Paper.LEGAL)
    await p.submit(req)
    got = dict(stub.seen[-1].fields)
    assert (got["toHeader"], got["fromHeader"], got["paperSize"], got["faxResolution"], got["Priority"]) == (
        "Dr Who", "Tardis", "1", "0", "Low")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"Response": "Success", "OutTransID": 779029}, id="number"),
        pytest.param({"Response": "Success", "OutTransID": "779029"}, id="string"),
        pytest.param([{"Response": "Success", "OutTransID": 779029}], id="array-wrapped"),
        pytest.param({"Response": "success", "OutTransID": [779029]}, id="id-in-list-lowercase"),
        pytest.param({"Response": " SUCCESS ", "OutTransID": "779029.0"}, id="spaces-float-string"),
    ],
)
async def test_success_variants(client: httpx.AsyncClient, stub: StubServer, pdf: Path, body: Any) -> None:
    stub.reply(SEND, Reply(body))
    assert (await adapter(client, stub).submit(request(pdf))).provider_id == "779029"


@pytest.mark.parametrize(
    ("response", "exc", "kind", "words"),
    [
        pytest.param("Failed", TransientProviderError, None, "Failed", id="failed"),
        pytest.param("InvalidAuthentication", AccountError, "auth", "API key", id="auth"),
        pytest.param("AccountInactive", AccountError, "inactive", "inactive", id="inactive"),
        pytest.param("RestrictedFaxNumber", RefusedError, None, "Restricted number", id="restricted"),
        pytest.param("Restricted Number", RefusedError, None, "Restricted number", id="restricted-prose"),
        pytest.param("InvalidFaxNumberLength", RefusedError, None, "Invalid fax number", id="length"),
        pytest.param("InvalidFaxResolution", RefusedError, None, "resolution", id="resolution"),
        pytest.param("InvalidPapersize", RefusedError, None, "paper size", id="papersize"),
        pytest.param("InvalidPaperSize", RefusedError, None, "paper size", id="paperSize-prose"),
        pytest.param("InvalidPriority", RefusedError, None, "priority", id="priority"),
        pytest.param("invalid authentication", AccountError, "auth", "API key", id="spaced-lower"),
        pytest.param("InvalidMissingValue", AccountError, "auth", "provider.openfax.api_key", id="missing-value"),
        pytest.param("SomethingNew", RefusedError, None, "SomethingNew", id="unknown"),
    ],
)
@pytest.mark.parametrize("wrapped", [False, True], ids=["object", "array"])
async def test_every_response_condition(
    client: httpx.AsyncClient, stub: StubServer, pdf: Path, response: str, exc: type[Exception],
    kind: str | None, words: str, wrapped: bool,
) -> None:
    body: Any = {"Response": response}
    stub.reply(SEND, Reply([body] if wrapped else body))
    with pytest.raises(exc) as info:
        await adapter(client, stub).submit(request(pdf))
    err = info.value
    assert words.lower() in str(err).lower()
    assert KEY not in str(err)
    if kind is not None:
        assert isinstance(err, AccountError) and err.kind == kind
    if isinstance(err, TransientProviderError):
        assert not err.maybe_sent     # "Failed": Openfax says it did not take it


async def test_secret_echoed_in_response_is_redacted(client: httpx.AsyncClient, stub: StubServer,
                                                     pdf: Path) -> None:
    stub.reply(SEND, Reply({"Response": f"BadKey {KEY}"}))
    with pytest.raises(RefusedError) as info:
        await adapter(client, stub).submit(request(pdf))
    assert KEY not in str(info.value) and KEY not in str(info.value.code)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply("<html><body>Bad Gateway</body></html>"), id="html-200"),
        pytest.param(Reply("Warning: mysqli failed", content_type="text/plain"), id="php-warning"),
        pytest.param(Reply(""), id="empty"),
        pytest.param(Reply({"Status": "ok"}), id="json-without-response"),
        pytest.param(Reply({"Response": "Success"}), id="success-without-id"),
    ],
)
async def test_unreadable_reply_is_transient_maybe_sent(client: httpx.AsyncClient, stub: StubServer,
                                                        pdf: Path, reply: Reply) -> None:
    stub.reply(SEND, reply)
    with pytest.raises(TransientProviderError) as info:
        await adapter(client, stub).submit(request(pdf))
    assert info.value.maybe_sent


@pytest.mark.parametrize(
    ("reply", "exc"),
    [
        pytest.param(Reply("<html>oops</html>", 500), TransientProviderError, id="html-500"),
        pytest.param(Reply("<html>down</html>", 503, headers={"Retry-After": "7"}), TransientProviderError,
                     id="503"),
        pytest.param(Reply("<html>no</html>", 401), AccountError, id="401"),
        pytest.param(Reply("<html>no</html>", 403), AccountError, id="403"),
        pytest.param(Reply("<html>big</html>", 413), RefusedError, id="413"),
        pytest.param(Reply("<html>?</html>", 404), TransientProviderError, id="404"),
    ],
)
async def test_http_errors(client: httpx.AsyncClient, stub: StubServer, pdf: Path, reply: Reply,
                           exc: type[Exception]) -> None:
    stub.reply(SEND, reply)
    with pytest.raises(exc) as info:
        await adapter(client, stub).submit(request(pdf))
    if reply.status == 503:
        assert isinstance(info.value, TransientProviderError) and info.value.retry_after == 7


@pytest.mark.parametrize(
    ("body", "amount"),
    [
        pytest.param([{"AvailableCredit": 8956.6637749994}], 8956.6637749994, id="sample-array"),
        pytest.param({"AvailableCredit": "12.5"}, 12.5, id="object-string"),
        pytest.param({"AccountBalance": 100}, 100.0, id="table-name"),
        pytest.param([{"Response": "Success", "AccountBalance": "0"}], 0.0, id="zero"),
    ],
)
async def test_balance_variants(client: httpx.AsyncClient, stub: StubServer, body: Any, amount: float) -> None:
    stub.reply(BAL, Reply(body))
    assert (await adapter(client, stub).balance()).amount == pytest.approx(amount)
    assert dict(stub.seen[-1].fields) == {"AccountID": "123456789", "APIKey": KEY}


async def test_balance_errors(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.reply(BAL, Reply([{"Response": "InvalidAuthentication"}]))
    with pytest.raises(AccountError):
        await adapter(client, stub).balance()
    stub.reply(BAL, Reply({"Hello": 1}))
    with pytest.raises(TransientProviderError):
        await adapter(client, stub).balance()


async def test_cancel_is_not_offered(client: httpx.AsyncClient, stub: StubServer) -> None:
    with pytest.raises(PermanentProviderError, match="no cancel"):
        await adapter(client, stub).cancel("779029")
    assert stub.seen == []


# --- the report: poll, status, find_submission ---------------------------------------------------

def row(hid: int, out: int, state: int, retry: int = 1, last: int | None = 0, number: str = "15555551212",
        pages: int = 2, as_text: bool = False) -> dict[str, Any]:
    r: dict[str, Any] = {"HistoryOutboundFaxID": hid, "OutTransID": out, "AccountID": 123456789,
                         "FaxNumber": int(number), "CurrentState": state, "MaxAttempts": 3,
                         "RetryCount": retry, "PageCount": pages, "RenderStatus": 1}
    if last is not None:
        r["LastStatus"] = last
    if as_text:
        r = {k: str(v) for k, v in r.items()}
    return r


class Report:
    """A report endpoint over a list of rows, honouring LastHistoryID and Limit."""

    def __init__(self, rows: list[dict[str, Any]], wrap: str = "array") -> None:
        self.rows = rows
        self.wrap = wrap

    def __call__(self, seen: Seen) -> Reply:
        last = int(seen.field("LastHistoryID") or 0)
        limit = int(seen.field("Limit") or 1000)
        page = [r for r in self.rows if int(r["HistoryOutboundFaxID"]) > last][:limit]
        if self.wrap == "object":
            return Reply({"Response": "Success", "Data": page})
        if not page and self.wrap == "norecords":
            return Reply([{"Response": "NoRecordsFound"}])
        return Reply(page)


def pending(out: int, job: str = "J", at: datetime = NOW) -> PendingFax:
    return PendingFax(job_id=job, provider_id=str(out), to="+15555551212", pages=2, submitted_at=at)


@pytest.mark.parametrize("wrap", ["array", "object", "norecords"])
@pytest.mark.parametrize("as_text", [False, True], ids=["numbers", "strings"])
async def test_poll_pages_by_cursor_and_reports_finals(client: httpx.AsyncClient, stub: StubServer,
                                                       wrap: str, as_text: bool) -> None:
    # 2400 rows of other faxes, then ours: busy x3 (77), delivered on redial (78), still dialing (79)
    rows = [row(1000 + i, 10 + i, 8, as_text=as_text) for i in range(2400)]
    rows += [row(5000, 77, 7, 1, 2), row(5001, 78, 7, 1, 2), row(5002, 77, 7, 2, 2),
             row(5003, 78, 8, 2, 0), row(5004, 77, 9, 3, 2), row(5005, 79, 7, 1, 1)]
    if as_text:
        rows = [{k: str(v) for k, v in r.items()} for r in rows]
    stub.handle(REP, Report(rows, wrap))
    p = adapter(client, stub)
    earlier = datetime(2026, 11, 20, 23, 59, tzinfo=UTC)
    result = await p.poll([pending(77, "J77", earlier), pending(78, "J78"), pending(79, "J79")], None)
    assert result.requests == 3 and Cursor.load(result.cursor).high == 5005
    first = dict(stub.seen[0].fields)
    assert (first["FromDate"], first["ToDate"], first["DetailType"], first["Limit"]) == (
        "2026-11-19", "2026-11-23", "1", "1000")
    assert "LastHistoryID" not in first
    assert [dict(s.fields)["LastHistoryID"] for s in stub.seen[1:]] == ["1999", "2999"]
    by = {u.provider_id: u for u in result.updates}
    assert set(by) == {"77", "78"}               # 79 is still dialing: nothing to say
    assert by["77"].outcome is FaxOutcome.FAILED and by["77"].attempts == 3
    assert by["77"].reason == "Busy: the line was busy on all 3 attempts" and by["77"].job_id == "J77"
    assert by["78"].outcome is FaxOutcome.DELIVERED and by["78"].attempts == 2 and by["78"].pages == 2

    # the next cycle costs one request and sees only the new row
    rows.append(row(5006, 79, 9, 3, 1))
    stub.seen.clear()
    again = await p.poll([pending(79, "J79")], result.cursor)
    assert again.requests == 1 and Cursor.load(again.cursor).high == 5006
    # from 79's current row (5005) on, in case that row changed in place
    assert dict(stub.seen[0].fields)["LastHistoryID"] == "5004"
    (u,) = again.updates
    assert u.outcome is FaxOutcome.FAILED and "No Answer" in (u.reason or "") and u.attempts == 3


async def test_poll_rows_without_laststatus(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.handle(REP, Report([row(1, 50, 8, 1, None), row(2, 51, 9, 2, None), row(3, 52, 11, 0, None),
                             row(4, 53, 13, 1, None), row(5, 54, 10, 0, None)]))
    result = await adapter(client, stub).poll([pending(i) for i in range(50, 55)], "0")
    by = {u.provider_id: u for u in result.updates}
    assert by["50"].outcome is FaxOutcome.DELIVERED and by["50"].status_code == 0
    assert by["51"].outcome is FaxOutcome.FAILED
    assert by["52"].outcome is FaxOutcome.ATTENTION and "add credit" in (by["52"].reason or "")
    assert by["53"].outcome is FaxOutcome.CANCELED
    assert by["54"].outcome is FaxOutcome.FAILED and "Document conversion failed" in (by["54"].reason or "")


async def test_poll_nothing_pending_costs_nothing(client: httpx.AsyncClient, stub: StubServer) -> None:
    result = await adapter(client, stub).poll([], "42")
    assert (result.updates, result.cursor, result.requests) == ([], "42", 0)
    assert stub.seen == []


async def test_report_errors(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.reply(REP, Reply([{"Response": "InvalidAuthentication"}]))
    with pytest.raises(AccountError):
        await adapter(client, stub).poll([pending(1)], None)
    stub.reply(REP, Reply("<html>maintenance</html>"))
    with pytest.raises(TransientProviderError) as info:
        await adapter(client, stub).poll([pending(1)], None)
    assert not info.value.maybe_sent


async def test_status_from_report(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.handle(REP, Report([row(1, 60, 7, 1, 2), row(2, 61, 8), row(3, 60, 8, 2, 0)]))
    p = adapter(client, stub)
    u = await p.status("60")
    assert u.outcome is FaxOutcome.DELIVERED and u.attempts == 2
    assert dict(stub.seen[0].fields)["FromDate"] == "2026-11-08"
    assert (await p.status("99")).outcome is FaxOutcome.PENDING


async def test_find_submission(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.handle(REP, Report([
        row(1, 70, 8),                                  # known: owned by another job
        row(2, 71, 8, number="15555551213"),            # another number
        row(3, 72, 8, pages=5),                         # another page count
        row(4, 74, 1, 0, -1, pages=0),                  # ours, not yet rendered
        row(5, 73, 5, 1, -1),                           # ours
    ]))
    p = adapter(client, stub)
    since = datetime(2026, 11, 22, 0, 0, 30, tzinfo=UTC)
    look = SubmissionLookup(job_id="J", to="+15555551212", pages=2, since=since, known_ids=frozenset({"70"}))
    assert await p.find_submission(look) == "73"
    assert dict(stub.seen[0].fields)["FromDate"] == "2026-11-21"
    none = SubmissionLookup(job_id="J", to="+15555550000", pages=2, since=since)
    assert await p.find_submission(none) is None                 # 10 h ago: long past the grace
    recent = SubmissionLookup(job_id="J", to="+15555550000", pages=2, since=NOW)
    with pytest.raises(TransientProviderError, match="not list"):
        await p.find_submission(recent)


async def test_large_pdf_is_streamed(client: httpx.AsyncClient, stub: StubServer, tmp_path: Path) -> None:
    big = make_pdf(tmp_path / "big.pdf", 1)
    with big.open("ab") as fh:
        fh.write(b"\0" * (12 * 1024 * 1024))
    stub.reply(SEND, Reply({"Response": "Success", "OutTransID": 9}))
    assert (await adapter(client, stub).submit(request(big))).provider_id == "9"
    assert len(stub.seen[-1].field("PDF_encode") or "") == 4 * ((big.stat().st_size + 2) // 3)


async def test_header_limit_is_what_the_adapter_sends(client: httpx.AsyncClient, stub: StubServer,
                                                      pdf: Path) -> None:
    """``header_limit`` (what intake cuts a Subject to) is the longest header the adapter sends whole."""
    p = adapter(client, stub)
    assert p.header_limit == 15             # Openfax toHeader / fromHeader: 15 characters
    for header, sent in [("x" * 15, "x" * 15), ("y" * 15 + "z", "y" * 15)]:
        stub.reply(SEND, Reply({"Response": "Success", "OutTransID": 779029}))
        await p.submit(request(pdf, header=header))
        assert dict(stub.seen[-1].fields)["toHeader"] == sent
