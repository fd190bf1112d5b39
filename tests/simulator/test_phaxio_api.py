"""Phaxio reads and actions: get, list (filters, paging), cancel, resend, account status."""

from __future__ import annotations

import httpx

from faxbridge.simulator import Simulator, credentials
from tests.simulator.phaxio_helpers import AUTH, created_id, get, send


async def test_get_unknown_fax_is_404(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    for fax_id in ("1", "abc"):
        response = await client.get(f"{base}/v2.1/faxes/{fax_id}", auth=AUTH)
        assert response.status_code == 404
        assert response.json() == {"success": False, "message": "Fax not found"}


async def test_list_filters_and_paging(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    ids = []
    for i, number in enumerate(["+15555550100", "+15555550108", "+15555550101"]):
        ids.append(await created_id(await send(client, base, number, **{"tag[batch]": f"b{i % 2}"})))
    url = f"{base}/v2.1/faxes"

    response = await client.get(url, auth=AUTH)
    body = response.json()
    assert body["success"] is True and body["message"] == "Retrieved faxes successfully"
    assert [f["id"] for f in body["data"]] == ids[::-1]            # newest first
    assert body["paging"] == {"total": 3, "per_page": 25, "page": 1}
    assert (response.headers["X-Total"], response.headers["X-Per-Page"], response.headers["X-Page"]) == (
        "3", "25", "1")

    page1 = (await client.get(url, params={"per_page": 2, "page": 1}, auth=AUTH)).json()
    page2 = (await client.get(url, params={"per_page": 2, "page": 2}, auth=AUTH)).json()
    assert [f["id"] for f in page1["data"] + page2["data"]] == ids[::-1]
    assert page2["paging"] == {"total": 3, "per_page": 2, "page": 2}

    by_phone = (await client.get(url, params={"phone_number": "+15555550108"}, auth=AUTH)).json()
    assert [f["id"] for f in by_phone["data"]] == [ids[1]]
    by_tag = (await client.get(url, params={"tag[batch]": "b0"}, auth=AUTH)).json()
    assert [f["id"] for f in by_tag["data"]] == [ids[2], ids[0]]
    received = (await client.get(url, params={"direction": "received"}, auth=AUTH)).json()
    assert received["data"] == [] and received["paging"]["total"] == 0
    future = (await client.get(url, params={"created_after": "2999-01-01T00:00:00Z"}, auth=AUTH)).json()
    assert future["data"] == []
    past = (await client.get(url, params={"created_before": "2000-01-01T00:00:00"}, auth=AUTH)).json()
    assert past["data"] == []
    clamped = (await client.get(url, params={"per_page": 5000}, auth=AUTH)).json()
    assert clamped["paging"]["per_page"] == 1000

    await sim.idle(30)
    failed = (await client.get(url, params={"status": "failure"}, auth=AUTH)).json()
    assert [f["id"] for f in failed["data"]] == [ids[1]]
    bad = await client.get(url, params={"created_after": "yesterday"}, auth=AUTH)
    assert bad.status_code == 422 and bad.json()["success"] is False


async def test_cancel(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fax_id = await created_id(await send(client, base, "+15555550107"))
    response = await client.post(f"{base}/v2.1/faxes/{fax_id}/cancel", auth=AUTH)
    assert response.json() == {"success": True, "message": "Fax cancellation scheduled successfully.",
                               "data": {"id": fax_id}}
    await sim.idle(30)
    fax = await get(client, base, fax_id)
    assert fax["status"] == "failure"
    rec = fax["recipients"][0]
    assert (rec["status"], rec["error_type"], rec["error_message"]) == (
        "failure", "generalError", "Fax canceled (canceled by request)")
    again = await client.post(f"{base}/v2.1/faxes/{fax_id}/cancel", auth=AUTH)
    assert again.status_code == 422 and again.json()["success"] is False
    missing = await client.post(f"{base}/v2.1/faxes/999/cancel", auth=AUTH)
    assert missing.status_code == 404


async def test_cancel_timeout(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fax_id = await created_id(await send(client, base, "+15555550107", cancel_timeout="3"))
    await sim.idle(30)
    fax = await get(client, base, fax_id)
    assert fax["status"] == "failure"
    assert fax["error_message"] == "Fax canceled (cancel_timeout reached)"
    assert fax["recipients"][0]["retry_count"] == 0      # the redial would come after 290 s


async def test_resend(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fax_id = await created_id(await send(client, base, "+15555550109", **{"tag[faxbridge_job]": "J1"}))
    early = await client.post(f"{base}/v2.1/faxes/{fax_id}/resend", auth=AUTH)
    assert early.status_code == 422
    await sim.idle(30)
    response = await client.post(f"{base}/v2.1/faxes/{fax_id}/resend", auth=AUTH)
    body = response.json()
    assert body["success"] is True and body["message"] == "Fax queued for resending"
    new_id = body["data"]["id"]
    assert new_id != fax_id
    assert [s.id for s in sim.sends] == [str(fax_id), str(new_id)]
    assert sim.sends[1].job_tag == "J1" and sim.sends[1].pdf_sha256 == sim.sends[0].pdf_sha256
    await sim.idle(30)
    assert (await get(client, base, new_id))["status"] == "failure"


async def test_account_status_balance(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    await created_id(await send(client, base, "+15555550100"))
    await created_id(await send(client, base, "+15555550109"))
    await sim.idle(30)
    body = (await client.get(f"{base}/v2/account/status", auth=AUTH)).json()
    assert body["success"] is True and body["message"] == "Account status retrieved successfully"
    assert body["data"] == {"balance": credentials.PHAXIO_OPENING_BALANCE_CENTS - 14,
                            "faxes_today": {"sent": 2, "received": 0},
                            "faxes_this_month": {"sent": 2, "received": 0}}


async def test_sends_record(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fax_id = await created_id(await send(
        client, base, "+442079460958", header_text="Invoice 42", callback_url="http://127.0.0.1:9/h?x=1",
        **{"tag[faxbridge_job]": "01JOB"}))
    (sent,) = sim.sends
    assert (sent.provider, sent.id, sent.to, sent.pages, sent.job_tag, sent.header) == (
        "phaxio", str(fax_id), "+442079460958", 2, "01JOB", "Invoice 42")
    assert sent.callback_url == "http://127.0.0.1:9/h?x=1" and sent.api_version == "v2.1"
    assert len(sent.pdf_sha256) == 64 and sent.pdf_size > 0 and sent.accepted_at.tzinfo is not None
