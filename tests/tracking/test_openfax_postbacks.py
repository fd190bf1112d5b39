"""Openfax postbacks over real HTTP: GET and POST, the token in the path, the postback as a hint
confirmed from the report (``confirm_postbacks``), and the token kept in the state dir."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from faxbridge.simulator import PostbackTarget, Simulator, credentials
from faxbridge.webserver import KV_TOKEN, webhook_token
from tests.support import secret
from tests.tracking.conftest import Start, openfax_at, settings
from tests.tracking.helpers import parts, queue, wait_job, web_url

TOKEN = secret("postback-token-0123456789")  # the suite fails if it is ever logged


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_postbacks_finish_jobs_after_the_report_confirms(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str], method: str) -> None:
    sim, base = simulator
    values = settings(tmp_path, poll_interval="1h", **openfax_at(base))
    values["webhook"]["token"] = TOKEN
    daemon = await start(values)
    store, rt = parts(daemon)
    sim.openfax_postback = PostbackTarget(f"{web_url(daemon)}/webhooks/openfax/{TOKEN}", method)
    ids = {await queue(daemon, tmp_path, f"+1555555121{d}"): d for d in (1, 6, 8, 9)}
    for job_id, digit in ids.items():
        job = await wait_job(daemon, job_id, "delivered", "failed")
        assert job.state.value == ("delivered" if digit in (1, 6) else "failed")
    await sim.idle(30)
    assert [status for _, status in sim.webhook_log] == [200] * 4
    # each postback triggered a report read; the tracker's own hourly poll never ran a second time
    assert 1 <= rt.tracker.cycles <= 4
    by_digit = {ids[j.id]: j for j in await store.jobs() if j.id in ids}
    assert by_digit[9].reason == "Busy: the line was busy on all 3 attempts" and by_digit[9].attempts == 3
    assert by_digit[8].reason == "Not a fax machine: the number answered but no fax machine did"


async def test_wrong_token_forged_postback_and_unconfirmed_hint(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    sim.speed = 1.0           # the fax stays in flight while we post
    values = settings(tmp_path, poll_interval="1h", **openfax_at(base))
    values["webhook"]["token"] = TOKEN
    daemon = await start(values)
    store, _ = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    fields = {"OutTransID": job.provider_id or "", "AccountID": credentials.OPENFAX_ACCOUNT_ID,
              "PagesSent": "1", "CallDuration": "40", "LastStatus": "0", "RealCost": "0.07"}
    url = f"{web_url(daemon)}/webhooks/openfax"
    events = len(await store.events(job.id))
    async with httpx.AsyncClient() as client:
        for response in (await client.post(f"{url}/wrong-token", data=fields),
                         await client.get(f"{url}/wrong-token", params=fields),
                         await client.post(f"{url}/{TOKEN}x", data=fields),
                         await client.post(f"{url}/{TOKEN}", data={**fields, "AccountID": "999"})):
            assert response.status_code == 403 and response.json() == {"result": "forbidden"}
        # the right token, but the report says the fax is still being sent: noted, nothing changes
        response = await client.post(f"{url}/{TOKEN}", data=fields)
        assert response.status_code == 202 and response.json()["result"] == "noted"
        response = await client.get(f"{url}/{TOKEN}", params={"AccountID": "x"})
        assert response.status_code == 403
        response = await client.get(f"{url}/{TOKEN}", params={})
        assert response.status_code == 400 and response.json()["result"] == "malformed"
        response = await client.post(f"{url}/{TOKEN}", data={**fields, "OutTransID": "1"})
        assert response.status_code == 200 and response.json()["result"] == "unknown fax"
    assert (await store.get(job.id)).state.value == "submitted" and len(await store.events(job.id)) == events


async def test_unconfirmed_postbacks_apply_at_once(tmp_path: Path, start: Start,
                                                    simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    sim.speed = 1.0
    values = settings(tmp_path, poll_interval="1h", **openfax_at(base, confirm_postbacks=False))
    values["webhook"]["token"] = TOKEN
    daemon = await start(values)
    store, rt = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    fields = {"OutTransID": job.provider_id or "", "LastStatus": "2", "PagesSent": "0", "RetryCount": "3"}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{web_url(daemon)}/webhooks/openfax/{TOKEN}", params=fields)
        assert response.status_code == 200 and response.json() == {"result": "applied", "state": "failed"}
        again = await client.post(f"{web_url(daemon)}/webhooks/openfax/{TOKEN}", data=fields)
        assert again.status_code == 200 and again.json()["result"] == "ignored"
    job = await store.get(job.id)
    assert job.state.value == "failed" and job.reason == "Busy: the line was busy on all 3 attempts"
    assert rt.tracker.requests == 0


async def test_generated_token_is_kept_and_never_logged(tmp_path: Path, start: Start,
                                                         simulator: tuple[Simulator, str],
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    _, base = simulator
    values = settings(tmp_path, **openfax_at(base))
    daemon = await start(values)
    store, _ = parts(daemon)
    token = await store.kv_get(KV_TOKEN)
    assert token and len(token) >= 32
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{web_url(daemon)}/webhooks/openfax/{token}")).status_code == 400
        assert (await client.get(f"{web_url(daemon)}/webhooks/openfax/guess")).status_code == 403
    assert await webhook_token(daemon.cfg, store) == token      # read back from the store, not made anew
    out, err = capfd.readouterr()
    assert token not in out + err


async def test_a_postbacks_reason_is_kept_when_the_report_says_none(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    """Report rows need not carry LastStatus: the postback that hinted at the end said why, and that
    reason stays (not "failed without saying why")."""
    sim, base = simulator
    sim.openfax_laststatus = False
    values = settings(tmp_path, poll_interval="1h", **openfax_at(base))
    values["webhook"]["token"] = TOKEN
    daemon = await start(values)
    sim.openfax_postback = PostbackTarget(f"{web_url(daemon)}/webhooks/openfax/{TOKEN}")
    busy, not_fax = await queue(daemon, tmp_path, "+15555551219"), await queue(daemon, tmp_path, "+15555551218")
    job = await wait_job(daemon, busy, "failed", "delivered")
    assert job.reason == "Busy: the line was busy on every attempt" and job.attempts == 3     # the postback's words
    job = await wait_job(daemon, not_fax, "failed", "delivered")
    assert job.reason == "Not a fax machine: the number answered but no fax machine did"
    assert job.status_code == 3
