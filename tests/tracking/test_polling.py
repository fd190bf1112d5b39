"""Polling is the safety net: with every webhook lost it still finishes every job; provider
trouble (hangs past request_timeout, 503, 429 with Retry-After) never makes a second fax;
a crash between the provider accepting a fax and the store recording it is reconciled."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from faxbridge.simulator import Fault, PostbackTarget, Simulator, credentials
from faxbridge.states import TEST_FAX
from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config
from tests.tracking.conftest import Start, openfax_at, phaxio_at, settings
from tests.tracking.helpers import parts, queue, wait_job

OUTCOMES = {d: ("delivered" if d <= 6 else "failed") for d in range(10)}


@pytest.mark.parametrize("kind", ["phaxio", "openfax"])
async def test_every_webhook_lost_polling_finishes_every_job(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str], kind: str) -> None:
    sim, base = simulator
    dead = f"http://127.0.0.1:{free_port()}"          # nothing listens there: every webhook is lost
    values = settings(tmp_path, **(phaxio_at(base, sim) if kind == "phaxio" else openfax_at(base)))
    values["webhook"]["public_url"] = dead
    sim.openfax_postback = PostbackTarget(f"{dead}/webhooks/openfax/x")
    daemon = await start(values)
    _, rt = parts(daemon)
    ids = {await queue(daemon, tmp_path, f"+1555555121{d}"): d for d in OUTCOMES}
    for job_id, digit in ids.items():
        job = await wait_job(daemon, job_id, "delivered", "failed", "canceled")
        assert job.state.value == OUTCOMES[digit], job
    assert sim.webhook_log and all(status is None for _, status in sim.webhook_log)
    assert rt.tracker.requests > 0
    counts = Counter(s.id for s in sim.sends)
    assert len(sim.sends) == 10 and set(counts.values()) == {1}


async def test_hang_503_and_429_then_recovery_send_each_fax_once(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    # the first submission hangs past request_timeout (dropped unprocessed, so it must be looked
    # for and then sent again), then 503, then 429 with Retry-After, then all is well
    sim.inject(Fault(kind="hang", seconds=2.0, path="/faxes", method="POST"))
    sim.inject(Fault(kind="status", status=503, path="/faxes", method="POST"))
    sim.inject(Fault(kind="status", status=429, retry_after=1.0, path="/faxes", method="POST", count=2))
    values = settings(tmp_path, **phaxio_at(base, sim), request_timeout="500ms")
    daemon = await start(values)
    store, _ = parts(daemon)
    ids = [await queue(daemon, tmp_path, f"+1555555121{d}") for d in (1, 2, 3)]
    for job_id in ids:
        job = await wait_job(daemon, job_id, "delivered", "failed")
        assert job.state.value == "delivered", job
    assert not sim.faults.pending
    assert Counter(s.job_tag for s in sim.sends) == {i: 1 for i in ids}
    events = [e.event for i in ids for e in await store.events(i)]
    assert "job.outcome_unknown" in events and "job.resend" in events and "job.retry_scheduled" in events


async def test_openfax_honours_the_configured_reconcile_grace(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    """A send that timed out and never reached Openfax: with reconcile_grace = "1s" it is looked
    for for about a second and then sent again, not held for the adapter's own 10 minutes + 1 a page."""
    sim, base = simulator
    sim.inject(Fault(kind="hang", seconds=2.0, path="faxSendSubmit"))
    values = settings(tmp_path, **openfax_at(base), request_timeout="500ms", reconcile_grace="1s")
    daemon = await start(values)
    store, _ = parts(daemon)
    job_id = await queue(daemon, tmp_path, "+15555551212", pages=3)
    job = await wait_job(daemon, job_id, "delivered", "failed", timeout=60)
    assert job.state.value == "delivered", job
    assert len(sim.sends) == 1
    events = [e.event for e in await store.events(job_id)]
    assert events.index("job.outcome_unknown") < events.index("job.resend"), events


def test_openfax_crash_between_accept_and_record_is_reconciled_not_resent(tmp_path: Path) -> None:
    sim = SimProcess(free_port(), tmp_path / "sim.log").start()
    try:
        settings_ = base_settings(tmp_path, **openfax_at(sim.base), request_timeout="20s")
        config = write_config(tmp_path / "faxbridge.toml", settings_)
        doc = make_pdf(tmp_path / "a.pdf", pages=2)
        # the provider takes the first two faxes, then hangs before answering: the daemon is killed
        # while it waits, so it never learns their OutTransIDs
        sim.fault(kind="accept_then_hang", seconds=30.0, count=2, path="faxSendSubmit")
        numbers = ["+15555551211", "+15555551212", "+15555551213"]
        ids = []
        for number in numbers:
            r = cli("send", "--to", number, str(doc), config=config)
            assert r.returncode == 0, r.stderr
            ids.append(r.stdout.strip())
        daemon = DaemonProcess(config, tmp_path / "d1.log").start()
        daemon.wait_ready()
        wait_until(lambda: len(sim.sends()) >= 2, timeout=30, what="two accepted sends")
        daemon.kill()

        def jobs() -> list[dict[str, object]]:
            r = cli("jobs", "--json", config=config)
            assert r.returncode == 0, r.stderr
            return [json.loads(line) for line in r.stdout.splitlines()]

        assert sum(1 for j in jobs() if j["state"] == "submitting") >= 2
        daemon = DaemonProcess(config, tmp_path / "d2.log").start()
        try:
            daemon.wait_ready()
            wait_until(lambda: all(j["final"] for j in jobs()), timeout=60, interval=0.2, what="all final")
        finally:
            assert daemon.stop() == 0
        assert {j["state"] for j in jobs()} == {"delivered"}
        sends = Counter(s["to"] for s in sim.sends())
        assert sends == Counter(numbers)                  # one fax per job: nothing sent twice
        assert [e.get("event") for e in daemon.events()].count("job.reconciled") >= 2
        by_id = {j["id"]: j for j in jobs()}
        assert len({by_id[i]["provider_id"] for i in ids}) == 3
    finally:
        sim.stop()


async def test_phaxio_send_parameters_from_the_config_reach_phaxio(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    provider = phaxio_at(base)
    provider["phaxio"].update(caller_id="+15555550100", cancel_timeout="10m", test_fail="lineError")
    daemon = await start(settings(tmp_path, **provider))
    job_id = await queue(daemon, tmp_path, "+15555551212")
    job = await wait_job(daemon, job_id, "delivered", "failed", timeout=60)
    assert job.state.value == "failed" and job.reason is not None and job.reason.startswith("Line error"), job
    (fax,) = sim.faxes("phaxio")
    assert (fax.caller_id, fax.cancel_timeout_s) == ("+15555550100", 600.0)


async def test_a_test_key_in_production_is_noticed(tmp_path: Path, start: Start,
                                                   simulator: tuple[Simulator, str]) -> None:
    """Faxes the provider marks is_test are not really sent: the job says so, a metric counts it."""
    sim, base = simulator
    provider = phaxio_at(base, sim)
    provider["phaxio"]["api_key"] = credentials.PHAXIO_TEST_KEY
    daemon = await start(settings(tmp_path, **provider))
    ids = [await queue(daemon, tmp_path, "+15555551212"), await queue(daemon, tmp_path, "+15555551213")]
    for job_id in ids:
        job = await wait_job(daemon, job_id, "delivered", "failed", timeout=60)
        assert job.state.value == "delivered" and job.reason == TEST_FAX, job
    _, rt = parts(daemon)
    assert rt.tracker.test_faxes >= 2
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"http://{daemon.cfg.webhook.listen}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("faxbridge_provider_test_fax_updates{"))
    assert float(line.rsplit(" ", 1)[1]) >= 2


async def test_jobs_overdue_at_the_provider_show_in_healthz_and_metrics(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str]) -> None:
    sim, base = simulator
    sim.speed = 1.0                                    # the fax stays in flight
    daemon = await start(settings(tmp_path, **phaxio_at(base, sim), poll_interval="1h"))
    store, rt = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.provider_id
    sim.forget("phaxio", job.provider_id)              # the provider loses it
    rt.tracker.provider.plan.lag_s = 0.0               # type: ignore[attr-defined]   (ask for it alone now)
    await rt.tracker.poll_once()
    assert (await store.get(job.id)).hold == "unknown"
    async with httpx.AsyncClient(timeout=30) as client:
        health = await client.get(f"http://{daemon.cfg.webhook.listen}/healthz")
        text = (await client.get(f"http://{daemon.cfg.webhook.listen}/metrics")).text
    assert health.status_code == 200                   # worth a look, not a reason to restart
    assert health.json()["warnings"] == ["1 job(s) overdue at the provider (accepted over 24 h ago, or unknown "
                                         "to it): see `faxbridge jobs --state submitted`"]
    assert "faxbridge_jobs_overdue 1.0" in text
