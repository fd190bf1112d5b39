"""Phaxio callbacks over real HTTP into the daemon's web server: genuine ones finish jobs on their
own; forged, tampered, replayed, duplicate, late and out-of-order ones change nothing (twice)."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx

from faxbridge.simulator import phaxio_signature
from tests.tracking.conftest import Start, settings
from tests.tracking.helpers import (
    callback_fields,
    callback_token,
    fax_now,
    parts,
    post_callback,
    queue,
    wait_job,
    web_url,
)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_signed_callbacks_alone_finish_every_job(tmp_path: Path, start: Start) -> None:
    # polling once an hour: every job below is finished by the simulator's signed callbacks
    daemon = await start(settings(tmp_path, poll_interval="1h"))
    store, rt = parts(daemon)
    expected = {d: ("delivered" if d <= 6 else "failed") for d in range(10)}
    ids = {await queue(daemon, tmp_path, f"+1555555121{d}"): d for d in expected}
    for job_id, digit in ids.items():
        job = await wait_job(daemon, job_id, "delivered", "failed")
        assert job.state.value == expected[digit], job
        assert job.callback_url == f"{web_url(daemon)}/webhooks/phaxio?job={job_id}"
    assert rt.tracker.requests == 0                      # no poll asked the provider anything
    reasons = {ids[j.id]: j.reason for j in await store.jobs() if j.id in ids}
    assert reasons[9] == "Busy: the line was busy on all 3 attempts"
    assert reasons[7] == "No Answer: there was no answer on all 3 attempts"
    assert rt.simulator.webhook_log and all(status == 200 for _, status in rt.simulator.webhook_log)
    async with httpx.AsyncClient() as client:
        text = (await client.get(web_url(daemon) + "/metrics")).text
    assert metric(text, 'faxbridge_webhooks_total{provider="phaxio",result="applied"}') == 10
    assert metric(text, 'faxbridge_jobs{state="delivered"}') == 7
    assert metric(text, 'faxbridge_jobs{state="failed"}') == 3
    assert metric(text, "faxbridge_jobs_in_flight") == 0


async def test_forged_replayed_duplicate_and_out_of_order_callbacks(tmp_path: Path, start: Start) -> None:
    # real time: the faxes stay in flight while we post callbacks of our own
    daemon = await start(settings(tmp_path, poll_interval="1h", simulator={"speed": 1.0}))
    store, rt = parts(daemon)
    post = functools.partial(post_callback, token=callback_token(daemon))
    a = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    b = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551213"), "submitted")
    c = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551214"), "submitted")
    assert a.provider_id and b.provider_id and c.provider_id and a.callback_url and b.callback_url
    done = callback_fields(fax_now(daemon, a.provider_id, status="success", num_pages=1,
                                   recipient={"status": "success"}))

    async def unchanged(job_id: str, events: int) -> None:
        job = await store.get(job_id)
        assert job.state.value == "submitted" and len(await store.events(job_id)) == events

    events_a = len(await store.events(a.id))
    forged = [
        ("wrong token", await post(a.callback_url, done, token="not-the-token")),
        ("no signature", await post(a.callback_url, done, sign=False)),
        ("garbage signature", await post(a.callback_url, done, signature="0" * 40)),
        # signed, then the outcome changed on the way
        ("tampered", await post(a.callback_url, {**done, "success": "false"},
                                         signature=phaxio_signature(callback_token(daemon),
                                                                    a.callback_url, done.items()))),
        # a genuine callback for A replayed to B's URL: signed over A's URL, checked against B's
        ("replayed elsewhere", await post(b.callback_url, done, sign_url=a.callback_url)),
        # signed over a URL we never sent with any fax
        ("other url", await post(a.callback_url, done, sign_url=a.callback_url + "&x=1")),
        ("unknown fax", await post(web_url(daemon) + "/webhooks/phaxio",
                                            callback_fields({"id": 999, "status": "success"}))),
    ]
    for what, response in forged:
        assert response.status_code == 403, (what, response.text)
        assert response.json() == {"result": "forbidden"}
    await unchanged(a.id, events_a)
    await unchanged(b.id, len(await store.events(b.id)))

    # in flight: never final, even signed
    inflight = callback_fields(fax_now(daemon, a.provider_id, status="inprogress"), event="transmitting_page",
                               page="1", recipient_phone_number="+15555551212")
    response = await post(a.callback_url, inflight)
    assert (response.status_code, response.json()["result"]) == (200, "ignored")
    await unchanged(a.id, events_a)

    # the genuine final callback, then the same again (Phaxio retries), then late in-flight ones
    response = await post(a.callback_url, done)
    assert response.status_code == 200 and response.json() == {"result": "applied", "state": "delivered"}
    after = len(await store.events(a.id))
    late = [done,
            callback_fields(fax_now(daemon, a.provider_id, status="inprogress"), event="retry_scheduled",
                            retry_count="1", recipient_phone_number="+15555551212"),
            callback_fields(fax_now(daemon, a.provider_id, status="failure"), version="v2"),
            callback_fields(fax_now(daemon, a.provider_id, status="inprogress"), version="v2")]
    for fields in late:
        response = await post(a.callback_url, fields)
        assert response.status_code == 200 and response.json()["result"] == "ignored", response.text
    job = await store.get(a.id)
    assert job.state.value == "delivered" and len(await store.events(a.id)) == after
    assert [e.event for e in await store.events(a.id)].count("job.delivered") == 1

    # a v2 payload (no event_type, success flag, urlencoded body) that says busy
    busy = fax_now(daemon, b.provider_id, status="failure", recipient={
        "status": "failure", "retry_count": 2, "error_type": "lineError", "error_id": 17, "error_message": "Busy"})
    response = await post(b.callback_url, callback_fields(busy, version="v2"), multipart=False)
    assert response.status_code == 200, response.text
    job = await store.get(b.id)
    assert job.state.value == "failed" and job.reason == "Busy: the line was busy on all 3 attempts"
    assert job.status_code == 17

    # signed but malformed: 400, nothing changes
    assert c.callback_url
    response = await post(c.callback_url, {"fax": "{not json", "event_type": "fax_completed"})
    assert response.status_code == 400 and response.json()["result"] == "malformed"
    await unchanged(c.id, len(await store.events(c.id)))

    async with httpx.AsyncClient() as client:
        text = (await client.get(web_url(daemon) + "/metrics")).text
    assert metric(text, 'faxbridge_webhook_verification_failures_total{provider="phaxio",why="bad signature"}') == 6
    assert metric(text, 'faxbridge_webhook_verification_failures_total{provider="phaxio",why="unknown fax"}') == 1
    assert rt.tracker.requests == 0


async def test_a_callback_to_the_account_wide_url_is_matched_by_fax_id(tmp_path: Path, start: Start) -> None:
    """Phaxio's console callback URL carries no ?job=: the fax id names the job, and the signature is
    checked over the configured URL; one signed over any other URL is refused."""
    daemon = await start(settings(tmp_path, poll_interval="1h", simulator={"speed": 1.0}))
    store, _ = parts(daemon)
    token = callback_token(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.provider_id
    done = callback_fields(fax_now(daemon, job.provider_id, status="success", num_pages=1,
                                   recipient={"status": "success"}))
    account_url = f"{web_url(daemon)}/webhooks/phaxio"
    forged = await post_callback(account_url, done, token=token, sign_url=f"{web_url(daemon)}/elsewhere")
    assert forged.status_code == 403 and (await store.get(job.id)).state.value == "submitted"
    r = await post_callback(account_url, done, token=token)
    assert r.status_code == 200, r.text
    assert (await store.get(job.id)).state.value == "delivered"
