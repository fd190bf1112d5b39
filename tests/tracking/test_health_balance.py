"""/healthz and /metrics on the daemon's listener; the balance watch and `faxbridge balance`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from faxbridge.balance import BalanceWatch
from faxbridge.metrics import Metrics
from faxbridge.providers.phaxio import PhaxioProvider
from faxbridge.simulator import Simulator, credentials
from tests.conftest import async_wait_until
from tests.support import base_settings, cli, write_config
from tests.tracking.conftest import Start, settings
from tests.tracking.helpers import parts, web_url


class Broken:
    """A part that reports itself unhealthy (stands in for a listener that went down)."""

    name = "broken"

    def healthy(self) -> bool:
        return False


async def test_healthz_and_metrics(tmp_path: Path, start: Start) -> None:
    daemon = await start(settings(tmp_path))
    _, rt = parts(daemon)
    url = web_url(daemon)
    async with httpx.AsyncClient() as client:
        ok = await client.get(url + "/healthz")
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
        assert ok.json()["components"]["web"] is True and ok.json()["components"]["balance"] is True
        metrics = await client.get(url + "/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'faxbridge_jobs{state="queued"} 0.0' in metrics.text
        assert "faxbridge_jobs_in_flight 0.0" in metrics.text
        assert 'faxbridge_poll_requests_last_cycle{provider="simulator"}' in metrics.text
        rt.components.append(Broken())
        bad = await client.get(url + "/healthz")
        assert bad.status_code == 503 and bad.json()["problems"] == ["broken not healthy"]
        rt.components.remove(rt.components[-1])
        daemon.ready.clear()                  # what the daemon does while it stops
        stopping = await client.get(url + "/healthz")
        assert stopping.status_code == 503 and "daemon not ready" in stopping.json()["problems"]
        daemon.ready.set()
        assert (await client.post(url + "/healthz")).status_code == 405
        assert (await client.get(url + "/webhooks/phaxio")).status_code == 405
        assert (await client.get(url + "/nothing")).status_code == 404


async def test_balance_watch_warns_below_threshold(simulator: tuple[Simulator, str]) -> None:
    _, base = simulator
    async with httpx.AsyncClient() as client:
        provider = PhaxioProvider(client, base_url=base + "/v2.1", api_key=credentials.PHAXIO_API_KEY,
                                  api_secret=credentials.PHAXIO_API_SECRET)
        metrics = Metrics()
        with capture_logs() as logs:
            high = await BalanceWatch(provider, metrics, 500.0, label="phaxio").check()
            low = await BalanceWatch(provider, metrics, 5.0, label="phaxio").check()
    assert high is not None and low is not None and high.amount == low.amount == 100.0
    # (info lines may be filtered by an earlier logs.setup in this process; the warning never is)
    warned = [e for e in logs if e["event"] == "provider.balance_low"]
    assert len(warned) == 1 and warned[0]["threshold"] == 500.0 and warned[0]["balance"] == 100.0
    text = metrics.render().decode()
    assert 'faxbridge_provider_balance{provider="phaxio"} 100.0' in text
    assert 'faxbridge_provider_balance_low{provider="phaxio"} 0.0' in text


async def test_balance_watch_survives_a_provider_failure(simulator: tuple[Simulator, str]) -> None:
    _, base = simulator
    async with httpx.AsyncClient() as client:
        provider = PhaxioProvider(client, base_url=base + "/v2.1", api_key="wrong", api_secret="wrong")
        with capture_logs() as logs:
            assert await BalanceWatch(provider, Metrics(), 5.0, label="phaxio").check() is None
    assert logs[0]["event"] == "provider.balance_failed"


@pytest.mark.parametrize(("threshold", "warned"), [(5.0, False), (150.0, True)])
def test_balance_command(tmp_path: Path, threshold: float, warned: bool) -> None:
    values = base_settings(tmp_path, low_balance=threshold)
    r = cli("balance", config=write_config(tmp_path / "f.toml", values))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "balance: 100.00"
    warning = "faxbridge: warning: the balance is below provider.low_balance (150.00)"
    assert (warning in r.stderr) is warned, r.stderr


async def test_the_loop_serves_while_a_commit_waits_on_the_write_lock(
        tmp_path: Path, start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection (an intake worker, say) holds the database's write lock: a commit through
    the daemon's store waits for it, and meanwhile the event loop goes on: the web server answers,
    /healthz and /metrics wait for the store without holding anything up, the watchdog's
    ``healthy()`` follows the store probe (it never calls the store itself); once the lock is
    released everything answers as before."""
    import asyncio
    import sqlite3

    from faxbridge import app

    monkeypatch.setattr(app, "PROBE_S", 0.05)          # the probe asks often and
    monkeypatch.setattr(app, "PROBE_WAIT_S", 0.5)      # ... gives up on an answer soon
    daemon = await start(settings(tmp_path))
    store, _ = parts(daemon)
    url = web_url(daemon)
    other = sqlite3.connect(tmp_path / "var" / "faxbridge.db", isolation_level=None)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            assert (await client.get(url + "/healthz")).status_code == 200
            other.execute("BEGIN IMMEDIATE")           # the write lock, held
            write = asyncio.create_task(store.kv_set("waiting", "1"))
            health = asyncio.create_task(client.get(url + "/healthz"))
            scrape = asyncio.create_task(client.get(url + "/metrics"))
            # the loop is free: requests that need no store are answered while the commit waits
            for _ in range(5):
                assert (await client.post(url + "/healthz")).status_code == 405
                assert (await client.get(url + "/nothing")).status_code == 404
            assert not write.done()
            await async_wait_until(lambda: not daemon.healthy(), timeout=30, what="the probe noticing")
            assert not write.done() and not health.done()
            other.execute("COMMIT")                    # released
            await asyncio.wait_for(write, 30)
            answered = await asyncio.wait_for(health, 30)
            assert answered.status_code == 200, answered.json()
            scraped = await asyncio.wait_for(scrape, 30)
            assert scraped.status_code == 200 and 'faxbridge_jobs{state="queued"} 0.0' in scraped.text
            await async_wait_until(daemon.healthy, timeout=30, what="healthy again")
            assert await store.kv_get("waiting") == "1"
    finally:
        other.close()
