"""Sinch callbacks over real HTTP to the daemon: the token in the path (403 when wrong, and nothing
changes), JSON and multipart bodies, and a callback being only a hint: what ``GET /faxes/{id}``
says is what the job becomes."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from faxbridge.simulator import Fault, Simulator, credentials
from faxbridge.simulator.sinch_routes import fax_json
from faxbridge.simulator.webhooks import encode_multipart
from tests.support import secret
from tests.tracking.conftest import Start, settings
from tests.tracking.helpers import parts, queue, wait_job, web_url

TOKEN = secret("sinch-callback-token-0123456789")   # the suite fails if it is ever logged


def sinch_at(base: str, token: str = TOKEN) -> dict[str, Any]:
    return {"kind": "sinch", "sinch": {"base_url": base + "/v3", "project_id": credentials.SINCH_PROJECT_ID,
                                       "key_id": credentials.SINCH_KEY_ID,
                                       "key_secret": credentials.SINCH_KEY_SECRET, "callback_token": token}}


async def test_callbacks_finish_jobs_once_sinch_confirms(tmp_path: Path, start: Start,
                                                         simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    daemon = await start(settings(tmp_path, poll_interval="1h", **sinch_at(base)))
    store, rt = parts(daemon)
    ids = {await queue(daemon, tmp_path, f"+1555555121{d}"): d for d in (1, 6, 8, 9)}
    for job_id, digit in ids.items():
        job = await wait_job(daemon, job_id, "delivered", "failed")
        assert job.state.value == ("delivered" if digit in (1, 6) else "failed")
        assert job.provider == "sinch" and job.provider_id
    await sim.idle(30)
    assert [status for _, status in sim.webhook_log] == [200] * 4
    assert {url for url, _ in sim.webhook_log} == {f"{web_url(daemon)}/webhooks/sinch/{TOKEN}"}
    assert all(f.callback_json for f in sim.faxes("sinch"))         # JSON asked for, not multipart
    by_digit = {ids[j.id]: j for j in await store.jobs() if j.id in ids}
    assert by_digit[9].reason == "Busy: the line was busy on all 3 attempts" and by_digit[9].attempts == 3
    assert by_digit[8].reason == "Not a fax machine: the number answered but no fax machine did"
    assert by_digit[6].attempts == 2 and by_digit[1].cost == 0.07
    assert rt.tracker.requests == 0          # the callbacks (each confirmed by a GET) did it, not polling


async def test_wrong_token_forged_and_unconfirmed_callbacks_change_nothing(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    sim.speed = 1.0           # the fax stays in flight while we post
    daemon = await start(settings(tmp_path, poll_interval="1h", **sinch_at(base)))
    store, _ = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.provider_id
    fax = sim.get("sinch", job.provider_id)
    assert fax is not None
    # what a forger would claim: delivered (Sinch itself says QUEUED or IN_PROGRESS)
    claim = {**fax_json(fax, sim.clock.now()), "status": "COMPLETED", "completedTime": "2026-11-22T10:00:00Z"}
    body = {"event": "FAX_COMPLETED", "eventTime": "2026-11-22T10:00:00Z", "fax": claim}
    url = f"{web_url(daemon)}/webhooks/sinch"
    events = len(await store.events(job.id))
    async with httpx.AsyncClient() as client:
        for wrong in ("wrong-token", f"{TOKEN}x", TOKEN[:-1]):
            response = await client.post(f"{url}/{wrong}", json=body)
            assert response.status_code == 403 and response.json() == {"result": "forbidden"}
        # the right token, JSON and multipart alike: a hint; Sinch says not final, so nothing changes
        response = await client.post(f"{url}/{TOKEN}", json=body)
        assert response.status_code == 202 and response.json()["result"] == "noted"
        # a callback carrying the fax's PDF (base64) may pass webhook.max_body (1MB): it is still read
        big = {**body, "file": base64.b64encode(b"%PDF-1.4 " + b"x" * 2_000_000).decode(), "fileType": "PDF"}
        response = await client.post(f"{url}/{TOKEN}", json=big)
        assert response.status_code == 202 and response.json()["result"] == "noted"
        form, ctype = encode_multipart([("event", "FAX_COMPLETED"), ("fax", json.dumps(claim))])
        response = await client.post(f"{url}/{TOKEN}", content=form, headers={"Content-Type": ctype})
        assert response.status_code == 202 and response.json()["result"] == "noted"
        for bad in (b"{not json", b"[]", json.dumps({"fax": {"status": "COMPLETED"}}).encode()):
            response = await client.post(f"{url}/{TOKEN}", content=bad, headers={"Content-Type": "application/json"})
            assert response.status_code == 400 and response.json()["result"] == "malformed"
        other = {**body, "fax": {**claim, "id": "01SIMFAX999", "labels": {}}}
        response = await client.post(f"{url}/{TOKEN}", json=other)
        assert response.status_code == 200 and response.json()["result"] == "unknown fax"
        incoming = {**body, "event": "INCOMING_FAX"}
        response = await client.post(f"{url}/{TOKEN}", json=incoming)
        assert response.status_code == 200 and response.json()["result"] == "ignored"
    assert (await store.get(job.id)).state.value == "submitted" and len(await store.events(job.id)) == events


async def test_the_confirmation_decides_not_the_callback(tmp_path: Path, start: Start,
                                                         simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    sim.speed = 1.0
    daemon = await start(settings(tmp_path, poll_interval="1h", **sinch_at(base)))
    store, _ = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.provider_id
    fax = sim.get("sinch", job.provider_id)
    assert fax is not None
    sim.inject(Fault("webhook_drop"))             # the simulator's own callback never comes
    fax.accepted_at -= timedelta(hours=1)          # at Sinch the fax is now long delivered
    sim.kick()
    claim = {**fax_json(fax, sim.clock.now()), "status": "FAILURE", "errorType": "CALL_ERROR",
             "errorCode": 17, "errorMessage": "Busy"}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{web_url(daemon)}/webhooks/sinch/{TOKEN}",
                                     json={"event": "FAX_COMPLETED", "fax": claim})
        assert response.status_code == 200 and response.json() == {"result": "applied", "state": "delivered"}
        again = await client.post(f"{web_url(daemon)}/webhooks/sinch/{TOKEN}",
                                  json={"event": "FAX_COMPLETED", "fax": claim})
        assert again.status_code == 200 and again.json()["result"] == "ignored"
    job = await store.get(job.id)
    assert job.state.value == "delivered" and job.reason is None and job.attempts == 1
