"""Openfax over HTTP: outcomes, every send refusal, encodings, balance, report cursor, postbacks."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from faxbridge.simulator import PostbackTarget, Simulator, credentials
from tests.simulator.conftest import Receiver, make_pdf

ACCOUNT = {"AccountID": credentials.OPENFAX_ACCOUNT_ID, "APIKey": credentials.OPENFAX_API_KEY}
REPORT = {**ACCOUNT, "FromDate": "2000-01-01", "ToDate": "2999-12-31"}


def fields(number: str = "15555550100", pages: int = 1, **extra: str) -> dict[str, str]:
    return {**ACCOUNT, "FaxNumber": number, "toHeader": "My Customer", "fromHeader": "My Company",
            "paperSize": "0", "faxResolution": "0", "Priority": "Normal",
            "PDF_encode": base64.b64encode(make_pdf(pages)).decode(), **extra}


async def submit(client: httpx.AsyncClient, base: str, multipart: bool = True, **kw: Any) -> httpx.Response:
    data = fields(**kw)
    if multipart:   # as PHP curl sends an array: multipart/form-data
        parts = {k: (None, v) for k, v in data.items()}
        return await client.post(f"{base}/faxSendSubmit.php", files=parts)
    return await client.post(f"{base}/faxSendSubmit.php", data=data)


async def accepted(response: httpx.Response) -> str:
    assert response.status_code == 200
    body = response.json()
    assert body["Response"] == "Success" and body["OutTransID"].isdigit(), body
    return str(body["OutTransID"])


async def rows(client: httpx.AsyncClient, base: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.post(f"{base}/outboundDetailsbyDate.php", data={**REPORT, **params})
    assert response.status_code == 200
    body: list[dict[str, Any]] = response.json()
    return body


OUTCOMES = [
    *[(str(d), [8], [0], [1]) for d in range(6)],
    ("6", [7, 8], [2, 0], [1, 2]),
    ("7", [7, 7, 9], [1, 1, 1], [1, 2, 3]),
    ("8", [9], [3], [1]),
    ("9", [7, 7, 9], [2, 2, 2], [1, 2, 3]),
]


@pytest.mark.parametrize(("digit", "states", "statuses", "retries"), OUTCOMES, ids=[o[0] for o in OUTCOMES])
async def test_outcome_by_last_digit(sim: Simulator, base: str, client: httpx.AsyncClient,
                                     digit: str, states: list[int], statuses: list[int],
                                     retries: list[int]) -> None:
    fax_id = await accepted(await submit(client, base, number="1555555010" + digit, pages=2))
    await sim.idle(30)
    detail = [r for r in await rows(client, base, DetailType="1") if str(r["OutTransID"]) == fax_id]
    assert [r["CurrentState"] for r in detail] == states
    assert [r["LastStatus"] for r in detail] == statuses
    assert [r["RetryCount"] for r in detail] == retries
    ids = [r["HistoryOutboundFaxID"] for r in detail]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    row = detail[-1]
    assert {k: row[k] for k in ("FaxNumber", "MaxAttempts", "ToHeader", "FromHeader", "FaxResolution",
                                "RenderStatus", "PageCount", "PaperSize")} == {
        "FaxNumber": int("1555555010" + digit), "MaxAttempts": 3, "ToHeader": "My Customer",
        "FromHeader": "My Company", "FaxResolution": 0, "RenderStatus": 1, "PageCount": 2, "PaperSize": 0}
    summary = [r for r in await rows(client, base, DetailType="0") if str(r["OutTransID"]) == fax_id]
    assert summary == [row]


REFUSALS = [
    ("bad-key", {"APIKey": "wrong"}, "InvalidAuthentication"),
    ("bad-account", {"AccountID": "1"}, "InvalidAuthentication"),
    ("no-auth", {"AccountID": "", "APIKey": ""}, "InvalidAuthentication"),
    ("inactive", {"AccountID": credentials.OPENFAX_INACTIVE_ACCOUNT_ID}, "AccountInactive"),
    ("plus-sign", {"FaxNumber": "+15555550100"}, "InvalidFaxNumberLength"),
    ("ten-digits", {"FaxNumber": "5555550100"}, "InvalidFaxNumberLength"),
    ("nanp-12", {"FaxNumber": "155555501000"}, "InvalidFaxNumberLength"),
    ("leading-zero", {"FaxNumber": "02079460958"}, "InvalidFaxNumberLength"),
    ("dashes", {"FaxNumber": "1-555-555-0100"}, "InvalidFaxNumberLength"),
    ("missing-number", {"FaxNumber": ""}, "InvalidFaxNumberLength"),
    ("premium-900", {"FaxNumber": "19005550100"}, "RestrictedFaxNumber"),
    ("premium-976", {"FaxNumber": "19765550100"}, "RestrictedFaxNumber"),
    ("resolution", {"faxResolution": "2"}, "InvalidFaxResolution"),
    ("paper", {"paperSize": "3"}, "InvalidPapersize"),
    ("priority-case", {"Priority": "normal"}, "InvalidPriority"),
    ("priority-high", {"Priority": "High"}, "InvalidPriority"),
    ("not-base64", {"PDF_encode": "!!!not base64!!!"}, "Failed"),
    ("not-a-pdf", {"PDF_encode": base64.b64encode(b"GIF89a....").decode()}, "Failed"),
    ("no-pdf", {"PDF_encode": ""}, "Failed"),
]


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "urlencoded"])
@pytest.mark.parametrize(("override", "answer"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
async def test_send_refusals(sim: Simulator, base: str, client: httpx.AsyncClient,
                             override: dict[str, str], answer: str, multipart: bool) -> None:
    response = await submit(client, base, multipart, **override)
    assert response.status_code == 200
    assert response.json() == {"Response": answer}
    assert sim.sends == []


async def test_send_record_and_variants(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    pdf = make_pdf(3)
    data = fields("861069445000", faxResolution="1", paperSize="2", Priority="Low",
                  toHeader="A very long to header", fromHeader="")
    data.update({"frHeader": "Fr only", "PDF_encode": base64.b64encode(pdf).decode().replace("+", " ")})
    fax_id = await accepted(await client.post(f"{base}/faxSendSubmit.php", data=data))
    (sent,) = sim.sends
    assert (sent.provider, sent.id, sent.to, sent.pages, sent.resolution, sent.paper, sent.priority) == (
        "openfax", fax_id, "+861069445000", 3, "fine", "a4", "Low")
    assert (sent.header, sent.to_header) == ("Fr only", "A very long to ")
    import hashlib

    assert sent.pdf_sha256 == hashlib.sha256(pdf).hexdigest() and sent.pdf_size == len(pdf)
    minimal = {**ACCOUNT, "FaxNumber": "15555550101", "PDF_encode": base64.b64encode(pdf).decode()}
    second = await accepted(await client.post(f"{base}/faxSendSubmit.php", data=minimal))
    assert int(second) == int(fax_id) + 1
    assert (sim.sends[1].resolution, sim.sends[1].paper, sim.sends[1].priority) == ("standard", "letter", "Normal")


async def test_unreadable_pdf_fails_at_rendering(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    broken = base64.b64encode(b"%PDF-1.4\nnot really").decode()
    fax_id = await accepted(await submit(client, base, PDF_encode=broken))
    await sim.idle(30)
    (row,) = [r for r in await rows(client, base, DetailType="1") if str(r["OutTransID"]) == fax_id]
    assert (row["CurrentState"], row["LastStatus"], row["RenderStatus"], row["RetryCount"], row["PageCount"]) == (
        10, 8, 2, 0, 0)


async def test_balance(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    get = await client.get(f"{base}/getAvailableCredit.php", params=ACCOUNT)
    assert get.json() == [{"AvailableCredit": credentials.OPENFAX_OPENING_CREDIT}]
    await accepted(await submit(client, base, pages=3))
    await sim.idle(30)
    post = await client.post(f"{base}/getAvailableCredit.php", files={k: (None, v) for k, v in ACCOUNT.items()})
    assert post.json() == [{"AvailableCredit": round(credentials.OPENFAX_OPENING_CREDIT - 0.21, 4)}]
    bad = await client.post(f"{base}/getAvailableCredit.php", data={**ACCOUNT, "APIKey": "x"})
    assert bad.status_code == 200 and bad.json() == [{"Response": "InvalidAuthentication"}]
    inactive = {**ACCOUNT, "AccountID": credentials.OPENFAX_INACTIVE_ACCOUNT_ID}
    assert (await client.get(f"{base}/getAvailableCredit.php", params=inactive)).json() == [
        {"AvailableCredit": 0.0}]


async def test_report_cursor_and_limit(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    for digit in "0679":
        await accepted(await submit(client, base, number="1555555010" + digit))
    await sim.idle(30)
    everything = await rows(client, base, DetailType="1")
    assert len(everything) == 1 + 2 + 3 + 3
    ids = [r["HistoryOutboundFaxID"] for r in everything]
    assert ids == list(range(ids[0], ids[0] + 9))
    seen: list[dict[str, Any]] = []
    cursor = 0
    while True:
        batch = await rows(client, base, DetailType="1", LastHistoryID=str(cursor), Limit="2")
        if not batch:
            break
        assert len(batch) <= 2
        seen += batch
        cursor = batch[-1]["HistoryOutboundFaxID"]
    assert seen == everything
    via_get = (await client.get(f"{base}/outboundDetailsbyDate.php",
                                params={**REPORT, "DetailType": 0, "LastHistoryID": ids[4]})).json()
    assert all(r["HistoryOutboundFaxID"] > ids[4] and r["CurrentState"] in (8, 9) for r in via_get)
    today_only = await rows(client, base, DetailType="1", FromDate="2000-01-01", ToDate="2000-01-02")
    assert today_only == []


@pytest.mark.parametrize(("params", "answer"), [
    ({"FromDate": "05/27/2017"}, "InvalidMissingValue"),
    ({"ToDate": ""}, "InvalidMissingValue"),
    ({"DetailType": "2"}, "InvalidMissingValue"),
    ({"APIKey": "nope"}, "InvalidAuthentication"),
])
async def test_report_refusals(sim: Simulator, base: str, client: httpx.AsyncClient,
                               params: dict[str, str], answer: str) -> None:
    assert await rows(client, base, **params) == [{"Response": answer}]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_postback(sim: Simulator, base: str, client: httpx.AsyncClient, receiver: Receiver,
                        method: str) -> None:
    sim.openfax_postback = PostbackTarget(f"{receiver.url}/webhooks/openfax/tok?src=sim", method)
    fax_id = await accepted(await submit(client, base, number="15555550106", pages=2))
    await sim.idle(30)
    (hook,) = receiver.requests
    assert hook.method == method and hook.path == "/webhooks/openfax/tok"
    got = dict(hook.fields) if method == "POST" else {k: v for k, v in hook.query.items() if k != "src"}
    assert got == {"OutTransID": fax_id, "AccountID": credentials.OPENFAX_ACCOUNT_ID, "From": "My Company",
                   "To": "My Customer", "PagesSent": "2", "CallDuration": "80", "LastStatus": "0",
                   "RealCost": "0.14"}
    assert hook.query.get("src") == "sim"
    if method == "POST":
        assert hook.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_postback_for_failure_and_retry(sim: Simulator, base: str, client: httpx.AsyncClient,
                                              receiver: Receiver) -> None:
    receiver.statuses = [502]
    sim.openfax_postback = PostbackTarget(f"{receiver.url}/pb")
    fax_id = await accepted(await submit(client, base, number="15555550107"))
    await sim.idle(30)
    first, second = receiver.requests
    assert first.fields == second.fields
    assert dict(second.fields)["LastStatus"] == "1" and dict(second.fields)["OutTransID"] == fax_id
    assert dict(second.fields)["PagesSent"] == "0" and dict(second.fields)["RealCost"] == "0.00"
    assert [s for _, s in sim.webhook_log] == [502, 200]


async def test_prefix_mount(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{base}/openfax/getAvailableCredit.php", data=ACCOUNT)
    assert response.json()[0]["AvailableCredit"] == credentials.OPENFAX_OPENING_CREDIT
