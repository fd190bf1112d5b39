"""End to end: ``provider.kind = "sinch"``, the real daemon and CLI in subprocesses against a
``faxbridge simulate`` process speaking Sinch Fax API v3; callbacks come back to the daemon's
``/webhooks/sinch/{token}``."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, secret, write_config

TOKEN = secret("sinch-e2e-callback-token-42")


def jobs(config: Path) -> list[dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def send(config: Path, to: str, doc: Path) -> str:
    r = cli("send", "--to", to, str(doc), config=config)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


def config_for(tmp_path: Path, sim: SimProcess, **provider: Any) -> Path:
    settings = base_settings(tmp_path)
    settings["provider"].update(sim.sinch_settings(TOKEN), **provider)
    port = free_port()
    settings["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}
    settings.setdefault("limits", {})["per_destination"] = 0
    return write_config(tmp_path / "faxbridge.toml", settings)


def run_until_final(config: Path, log: Path) -> DaemonProcess:
    daemon = DaemonProcess(config, log).start()
    try:
        daemon.wait_ready()
        wait_until(lambda: all(j["final"] for j in jobs(config)), timeout=60, interval=0.2, what="all final")
    finally:
        assert daemon.stop() == 0
    return daemon


def test_outcome_digits_with_sinch(tmp_path: Path, sim: SimProcess) -> None:
    config = config_for(tmp_path, sim, poll_interval="1h")    # callbacks, confirmed by GET, finish the jobs
    check = cli("check-config", config=config)
    assert check.returncode == 0, check.stderr
    assert f"provider: sinch at {sim.base}/v3/projects/" in check.stdout and TOKEN not in check.stdout
    balance = cli("balance", config=config)      # Sinch's Fax API has no balance: said, not a crash
    assert balance.returncode != 0 and "offers no account balance" in balance.stderr, balance
    assert "Traceback" not in balance.stderr
    doc = make_pdf(tmp_path / "letter.pdf", pages=2)
    expected = {
        **{f"1555555121{d}": ("delivered", 1, None) for d in range(6)},
        "15555551216": ("delivered", 2, None),
        "15555551217": ("failed", 3, "No Answer"),
        "15555551218": ("failed", 1, "fax machine"),
        "15555551219": ("failed", 3, "Busy"),
    }
    ids = {send(config, number, doc): number for number in expected}
    daemon = run_until_final(config, tmp_path / "daemon.log")
    by_id = {j["id"]: j for j in jobs(config)}
    for job_id, number in ids.items():
        state, attempts, reason = expected[number]
        job = by_id[job_id]
        assert (job["state"], job["attempts"], job["pages"], job["provider"]) == (state, attempts, 2, "sinch"), job
        assert job["provider_id"].startswith("01SIMFAX")
        if reason:
            assert reason.lower() in job["reason"].lower(), job
        else:
            assert job["reason"] is None and job["cost"] > 0, job
    sends = sim.sends()
    assert Counter(s["job_tag"] for s in sends) == Counter(list(ids))
    assert all(s["provider"] == "sinch" and s["callback_url"] == f"http://127.0.0.1:{config_port(config)}"
               f"/webhooks/sinch/{TOKEN}" for s in sends)
    events = [e.get("event") for e in daemon.events()]
    assert events.count("webhook.rejected") == 0


def config_port(config: Path) -> str:
    """The webhook port written into ``config`` (its public_url)."""
    found = re.search(r'public_url = "http://127\.0\.0\.1:(\d+)"', config.read_text())
    assert found is not None
    return found.group(1)


def test_a_timed_out_send_is_found_by_its_label_not_resent(tmp_path: Path, sim: SimProcess) -> None:
    config = config_for(tmp_path, sim, request_timeout="1s", reconcile_grace="30s")
    doc = make_pdf(tmp_path / "a.pdf")
    # Sinch takes the first two faxes and answers only after the daemon gave up waiting
    sim.fault(kind="accept_then_hang", seconds=5.0, count=2, path="/faxes", method="POST")
    ids = [send(config, "+15555551212", doc) for _ in range(4)]
    daemon = run_until_final(config, tmp_path / "daemon.log")
    assert {j["id"]: j["state"] for j in jobs(config)} == dict.fromkeys(ids, "delivered")
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)
    events = [e.get("event") for e in daemon.events()]
    # both timed-out sends were held as outcome unknown and never sent again; each is then found
    # either by the label lookup (job.reconciled) or, on a slow machine, by Sinch's callback saying
    # COMPLETED first (straight to delivered): one fax per job either way (asserted above)
    assert events.count("job.outcome_unknown") >= 2 and "job.resend" not in events, events


async def test_the_balance_watch_asks_sinch_once_and_stays_up() -> None:
    import asyncio

    from faxbridge.balance import BalanceWatch
    from faxbridge.errors import PermanentProviderError
    from faxbridge.metrics import Metrics
    from faxbridge.models import Balance

    class NoBalance:
        name = "sinch"
        asked = 0

        async def balance(self) -> Balance:
            self.asked += 1
            raise PermanentProviderError("Sinch's Fax API offers no account balance", provider="sinch",
                                         code="not_offered")

    provider = NoBalance()
    watch = BalanceWatch(provider, Metrics(), 1.0, label="sinch", first_delay=0.0, interval=0.01)  # type: ignore[arg-type]
    await watch.start()
    for _ in range(200):
        if provider.asked:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)                 # ten intervals: it does not ask again
    assert watch.healthy() and watch.offered is False
    await watch.stop()
    await watch.close(5.0)
    assert provider.asked == 1
