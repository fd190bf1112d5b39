"""Contract section 9, supervision: a core loop that dies is restarted with back-off, counted in
``faxbridge_loop_restarts_total{loop}`` and named by ``/healthz`` while it is down; one job that
breaks the dispatcher's work is held and retried while the others go on; a row that does not decode
is skipped by the store's list reads (``store.bad_row``), so it stops neither start-up nor a loop;
the daemon still stops cleanly (exit 0 on SIGTERM).

The faults are real: a Phaxio adapter subclass talking to the real simulator over HTTP (handed to
the daemon through ``Daemon(build=...)``, the same seam that builds the configured adapter) that
raises a non-provider error for one number, and job rows whose stored data cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from faxbridge import config
from faxbridge.app import Daemon
from faxbridge.balance import BalanceWatch
from faxbridge.config import Config
from faxbridge.metrics import Metrics
from faxbridge.models import Balance, PendingFax, PollResult, SubmitReceipt, SubmitRequest
from faxbridge.providers.base import Provider
from faxbridge.providers.phaxio import PhaxioProvider
from faxbridge.simulator import credentials
from tests.conftest import async_wait_until, free_port, wait_until
from tests.support import DaemonProcess, base_settings, cli, make_pdf, served_simulator, write_config
from tests.tracking.helpers import parts, queue, wait_job, web_url

GOOD = "+15555551210"          # the simulator delivers it on the first attempt
POISON_POLL = "+15555551211"   # polling a fax to this number trips the adapter's bug
POISON_SEND = "+15555551212"   # sending to this number trips the adapter's bug


class BuggyPhaxio(PhaxioProvider):
    """The real Phaxio adapter with a bug for one number: ``submit`` raises a plain RuntimeError for
    POISON_SEND (always); ``poll`` raises one while a fax to POISON_POLL is pending and
    ``poll_bug`` is on. Callbacks are not requested, so polling alone finishes jobs here."""

    poll_bug = True

    async def submit(self, req: SubmitRequest) -> SubmitReceipt:
        if req.to == POISON_SEND:
            raise RuntimeError(f"adapter bug for {req.to}")
        return await super().submit(dataclasses.replace(req, callback_url=None))

    async def poll(self, pending: Sequence[PendingFax], cursor: str | None) -> PollResult:
        if self.poll_bug and any(p.to == POISON_POLL for p in pending):
            raise RuntimeError(f"adapter bug polling {POISON_POLL}")
        return await super().poll(pending, cursor)


@contextlib.asynccontextmanager
async def buggy_daemon(tmp: Path, base: str) -> AsyncIterator[tuple[Daemon, BuggyPhaxio]]:
    made: list[BuggyPhaxio] = []

    def build(cfg: Config, client: httpx.AsyncClient, simulator_url: str | None) -> Provider:
        p = cfg.provider.phaxio
        made.append(BuggyPhaxio(client, base_url=p.base_url, api_key=p.api_key, api_secret=p.api_secret))
        return made[-1]

    port = free_port()
    values = base_settings(tmp, kind="phaxio",
                           phaxio={"base_url": base + "/v2.1", "api_key": credentials.PHAXIO_API_KEY,
                                   "api_secret": credentials.PHAXIO_API_SECRET,
                                   "callback_token": secrets.token_urlsafe(16)})   # polling finishes jobs
    values["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}
    cfg = config.load(write_config(tmp / "faxbridge.toml", values), {})
    # a long first back-off: the loop stays down long enough to be seen from outside
    daemon = Daemon(cfg, build=build, restart_initial=3.0, restart_max=6.0)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.ensure_future(daemon.ready.wait())
    await asyncio.wait([ready, task], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert daemon.ready.is_set(), "daemon not ready after 60 s"
    try:
        yield daemon, made[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def restarts(metrics_text: str, loop: str) -> float:
    m = re.search(rf'^faxbridge_loop_restarts_total\{{loop="{loop}"\}} (\S+)$', metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_dying_tracker_is_restarted_reported_and_the_jobs_go_on(tmp_path: Path) -> None:
    async with served_simulator(speed=2000.0) as (_, base), buggy_daemon(tmp_path, base) as (daemon, adapter):
        url = web_url(daemon)
        store, _ = parts(daemon)
        async with httpx.AsyncClient(timeout=30) as client:
            healthy = await client.get(url + "/healthz")
            assert healthy.status_code == 200
            assert healthy.json()["components"]["dispatcher"] is True
            assert healthy.json()["components"]["tracker"] is True

            poison = await queue(daemon, tmp_path, POISON_POLL)

            async def tracker_down() -> httpx.Response | None:
                r = await client.get(url + "/healthz")
                return r if r.status_code == 503 else None

            down = await async_wait_until(tracker_down, timeout=60, what="/healthz 503")
            assert down.json()["status"] == "unhealthy"
            assert down.json()["problems"] == ["tracker not healthy"]
            assert down.json()["components"]["tracker"] is False
            assert down.json()["components"]["dispatcher"] is True
            assert daemon.healthy() is False
            text = (await client.get(url + "/metrics")).text
            assert restarts(text, "tracker") >= 1
            assert restarts(text, "dispatcher") == 0

            # the dispatcher goes on meanwhile: a good job is submitted while the tracker is down
            good = await queue(daemon, tmp_path, GOOD)
            await wait_job(daemon, good, "submitted", "delivered", timeout=60)

            adapter.poll_bug = False          # the fault is gone: the next restart sticks

            async def tracker_up() -> bool:
                return (await client.get(url + "/healthz")).status_code == 200

            await async_wait_until(tracker_up, timeout=60, what="/healthz 200 again")
            await wait_job(daemon, poison, "delivered", timeout=60)
            await wait_job(daemon, good, "delivered", timeout=60)
            final = await client.get(url + "/healthz")
            assert final.status_code == 200 and final.json()["problems"] == []
            assert restarts((await client.get(url + "/metrics")).text, "tracker") >= 1
        assert (await store.get(poison)).attempts == 1


async def test_one_job_that_breaks_the_adapter_is_held_and_retried_the_others_go_on(tmp_path: Path) -> None:
    async with served_simulator(speed=2000.0) as (sim, base), buggy_daemon(tmp_path, base) as (daemon, _):
        url = web_url(daemon)
        store, _ = parts(daemon)
        bad = await queue(daemon, tmp_path, POISON_SEND)
        good = await queue(daemon, tmp_path, GOOD)
        await wait_job(daemon, good, "delivered", timeout=60)
        # the broken job is held for reconciliation, asked about, resent with back-off, then given up
        job = await wait_job(daemon, bad, "failed", timeout=90)
        # the give-up names the last error (the adapter's bug), not only that nothing was confirmed
        assert job.reason == (f"gave up after {job.submit_tries} tries: internal error: "
                              "RuntimeError('adapter bug for +15555551212')")
        events = await store.events(bad)
        unknown = [e for e in events if e.event == "job.outcome_unknown"]
        assert len(unknown) == job.submit_tries == daemon.policy.submit_retries + 1
        assert unknown[0].reason == ("outcome unknown (internal error: RuntimeError('adapter bug for "
                                     f"{POISON_SEND}')); checking with the provider before resending")
        assert any(e.event == "job.resend" for e in events)
        # the bug struck before the request went out: the simulator never had a fax to that number
        assert not [f for f in sim.faxes() if any(r.number == POISON_SEND for r in f.recipients)]
        assert [f for f in sim.faxes() if any(r.number == GOOD for r in f.recipients)]
        async with httpx.AsyncClient(timeout=30) as client:
            health = await client.get(url + "/healthz")
            assert health.status_code == 200, health.text
            assert restarts((await client.get(url + "/metrics")).text, "dispatcher") == 0
        # and a job after it still goes through
        after = await queue(daemon, tmp_path, GOOD)
        await wait_job(daemon, after, "delivered", timeout=60)


class GarbledBalance(PhaxioProvider):
    """The real adapter, whose first balance reading trips over a bug (not a provider error)."""

    readings = 0

    async def balance(self) -> Balance:
        self.readings += 1
        if self.readings == 1:
            raise KeyError("balance")
        return await super().balance()


async def test_the_balance_watch_survives_a_non_provider_error() -> None:
    async with served_simulator(speed=2000.0) as (_, base), httpx.AsyncClient(timeout=30) as client:
        provider = GarbledBalance(client, base_url=base + "/v2.1", api_key=credentials.PHAXIO_API_KEY,
                                  api_secret=credentials.PHAXIO_API_SECRET)
        metrics = Metrics()
        watch = BalanceWatch(provider, metrics, 5.0, label="phaxio", first_delay=0.0, interval=0.05)
        with capture_logs() as logs:
            await watch.start()
            try:
                await async_wait_until(lambda: watch.last is not None, timeout=30, what="a good reading")
                assert watch.healthy()
            finally:
                await watch.close(5)
    errors = [e for e in logs if e["event"] == "provider.balance_error"]
    assert len(errors) == 1 and errors[0]["error"] == "KeyError('balance')"
    assert provider.readings >= 2 and watch.supervisor.restarts == 0
    assert 'faxbridge_provider_balance{provider="phaxio"} 100.0' in metrics.render().decode()


# ---- the daemon in a subprocess: bad rows, start-up, SIGTERM ------------------------------------------


def _corrupt(db: Path, job_id: str, **columns: Any) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        sets = ", ".join(f"{k} = ?" for k in columns)
        conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*columns.values(), job_id])


def _send(cfg: Path, to: str, doc: Path) -> str:
    r = cli("send", "--to", to, str(doc), config=cfg)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _job(cfg: Path, job_id: str) -> dict[str, Any]:
    r = cli("job", job_id, "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def test_bad_rows_do_not_stop_start_up_or_other_jobs_and_sigterm_exits_0(tmp_path: Path) -> None:
    port = free_port()
    settings = base_settings(tmp_path)
    settings["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}
    cfg = write_config(tmp_path / "faxbridge.toml", settings)
    doc = make_pdf(tmp_path / "letter.pdf")
    unreadable_queued = _send(cfg, GOOD, doc)
    unreadable_sent = _send(cfg, GOOD, doc)
    db = tmp_path / "var" / "faxbridge.db"
    _corrupt(db, unreadable_queued, options="{not json")
    _corrupt(db, unreadable_sent, options="{not json", state="submitted", provider_id="999999999")
    url = f"http://127.0.0.1:{port}"

    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready(60)             # start-up does not fail on the bad rows
        good = _send(cfg, GOOD, doc)
        wait_until(lambda: _job(cfg, good)["state"] == "delivered", timeout=60, interval=0.2,
                   what="the good job delivered past the unreadable rows")

        # the rows that do not decode are skipped by every list read (logged once each): neither the
        # tracker nor the dispatcher dies on them, and /healthz stays green
        wait_until(lambda: {e.get("job_id") for e in daemon.events() if e.get("event") == "store.bad_row"}
                   == {unreadable_queued, unreadable_sent}, timeout=60, interval=0.2,
                   what="both bad rows logged")
        for _ in range(3):                                  # a few poll cycles go by
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
            tracked = _send(cfg, GOOD, doc)
            wait_until(lambda t=tracked: _job(cfg, t)["state"] == "delivered", timeout=60, interval=0.2,
                       what="another good job delivered")
        assert restarts(httpx.get(url + "/metrics", timeout=10).text, "tracker") == 0
        events = daemon.events()
        assert not [e for e in events if e.get("event") == "loop.crashed"]
        bad = [e["job_id"] for e in events if e.get("event") == "store.bad_row"]
        assert sorted(bad) == sorted([unreadable_queued, unreadable_sent])      # once each
        nofile = [e for e in events if e.get("event") in ("daemon.nofile", "daemon.nofile_raised")]
        assert nofile and nofile[0]["soft"] == nofile[0]["hard"]      # raised to the hard limit at start
        # `faxbridge job` names the row that cannot be read
        shown = cli("job", unreadable_sent, config=cfg)
        assert shown.returncode == 1 and unreadable_sent in shown.stderr and "does not decode" in shown.stderr

        # the row is repaired: it is read again like any other
        _corrupt(db, unreadable_sent, options="{}", state="failed", provider_id=None)
        assert _job(cfg, unreadable_sent)["state"] == "failed"
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-3000:]
    assert any(e.get("event") == "daemon.stopped" for e in daemon.events())

    # and it starts again with the other unreadable row still there; a new good job completes
    again = DaemonProcess(cfg, tmp_path / "daemon2.log").start()
    try:
        again.wait_ready(60)
        later = _send(cfg, GOOD, doc)
        wait_until(lambda: _job(cfg, later)["state"] == "delivered", timeout=60, interval=0.2,
                   what="a good job after the restart")
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        assert again.stop() == 0


# ---- the suite's own simulator process: nothing outlives a test ----------------------------------------


def test_sim_process_on_a_taken_port_starts_elsewhere_and_leaves_nothing(tmp_path: Path) -> None:
    import gc
    import socket

    from tests.support import SimProcess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sim = SimProcess(port, tmp_path / "sim.log")
        sim.start()
        try:
            assert sim.port != port
            assert httpx.get(sim.base + "/_sim/state", timeout=10).status_code == 200
        finally:
            sim.stop()
    assert sim.proc is not None and sim.proc.returncode is not None
    assert sim._log.closed
    sim.stop()                                  # a second stop is harmless
    gc.collect()                                # a leaked Popen or file would warn here (warnings are errors)
