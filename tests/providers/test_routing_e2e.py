"""End to end, contract section 14: one daemon (a subprocess) with three providers configured, all
three spoken over real HTTP by one ``faxbridge simulate`` process; routing by destination prefix,
and failover while the primary (Phaxio) answers 503 for a while (the simulator's scripted faults,
dropped by ``DELETE /_sim/faults`` when the outage ends). Faxes are counted at the simulator per
job: one fax per job throughout."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, secret, write_config

SINCH_TOKEN = secret("routing-e2e-sinch-token-7")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log", speed=50.0).start()
    yield s
    s.stop()


def config_for(tmp_path: Path, sim: SimProcess, *, routes: list[dict[str, Any]],
               **provider: Any) -> tuple[Path, str]:
    """Phaxio is provider.kind; Openfax and Sinch have their sections; the webhook listener is on."""
    settings = base_settings(tmp_path)
    p = settings["provider"]
    p.update(sim.phaxio_settings())
    p["openfax"] = sim.openfax_settings()["openfax"]
    p["sinch"] = sim.sinch_settings(SINCH_TOKEN)["sinch"]
    p.update(provider)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": url}
    settings["limits"] = {"per_destination": 0}
    settings["numbers"] = {"allowed_countries": ["US", "GB", "DE"]}
    if routes:
        settings["route"] = routes          # [[route]] tables, in order
    return write_config(tmp_path / "faxbridge.toml", settings), url


def jobs(config: Path) -> dict[str, dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return {j["id"]: j for j in (json.loads(line) for line in r.stdout.splitlines())}


def job(config: Path, job_id: str) -> dict[str, Any]:
    r = cli("job", job_id, "--json", config=config)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def send(config: Path, to: str, doc: Path) -> str:
    r = cli("send", "--to", to, str(doc), config=config)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split()[-1] if " " in r.stdout.strip() else r.stdout.strip()


def events_of(config: Path, job_id: str) -> list[str]:
    return [e["event"] for e in job(config, job_id)["events"]]


def faxes_per_job(sim: SimProcess, by_id: dict[str, dict[str, Any]]) -> Counter[str]:
    """Faxes the simulator accepted, per job: Phaxio and Sinch carry the job id as a tag/label;
    an Openfax fax is the job's by its fax id (Openfax takes no tag)."""
    openfax_owner = {j["provider_id"]: i for i, j in by_id.items() if j["provider"] == "openfax"}
    count: Counter[str] = Counter()
    for s in sim.sends():
        owner = s["job_tag"] if s["provider"] != "openfax" else openfax_owner.get(s["id"], f"stray-openfax-{s['id']}")
        count[owner or f"untagged-{s['provider']}-{s['id']}"] += 1
    return count


def healthz(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url + "/healthz", timeout=10).json()
    return data


def test_routing_by_prefix_across_three_providers(tmp_path: Path, sim: SimProcess) -> None:
    config, url = config_for(tmp_path, sim, routes=[{"prefixes": ["+44"], "provider": "sinch"},
                                                    {"prefixes": ["+1212", "+49"], "provider": "openfax"}])
    check = cli("check-config", config=config)
    assert check.returncode == 0, check.stderr
    assert "route 1: +44 to sinch" in check.stdout and "route 2: +1212, +49 to openfax" in check.stdout
    balance = cli("balance", config=config)          # each provider's, provider.kind's first
    lines = balance.stdout.splitlines()
    assert balance.returncode == 0 and lines[0].startswith("balance: ") and len(lines) == 3, balance
    assert lines[1].startswith("balance sinch: ") and "no account balance" in lines[1], lines
    assert re.fullmatch(r"balance openfax: \d+\.\d\d", lines[2]), lines
    doc = make_pdf(tmp_path / "letter.pdf", pages=2)
    expected = {"+15555551212": "phaxio", "+15555551213": "phaxio", "+442079460951": "sinch",
                "+442079460952": "sinch", "+12125551231": "openfax", "+4930123456780": "openfax"}
    ids = {send(config, to, doc): to for to in expected}
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        wait_until(lambda: all(j["final"] for j in jobs(config).values()), timeout=90, interval=0.3,
                   what="all final")
        health = healthz(url)
        metrics = httpx.get(url + "/metrics", timeout=10).text
    finally:
        assert daemon.stop() == 0
    by_id = jobs(config)
    for job_id, to in ids.items():
        j = by_id[job_id]
        assert (j["state"], j["provider"], j["pages"]) == ("delivered", expected[to], 2), j
    sends = sim.sends()
    assert Counter(s["provider"] for s in sends) == Counter(expected.values())
    assert {s["to"]: s["provider"] for s in sends} == expected
    assert faxes_per_job(sim, by_id) == Counter(list(ids))
    assert health["circuits"] == {"phaxio": "closed", "sinch": "closed", "openfax": "closed"}, health
    assert health["status"] == "ok" and {"tracker", "tracker:sinch", "tracker:openfax"} <= set(health["components"])
    for name in ("phaxio", "sinch", "openfax"):
        assert f'faxbridge_provider_circuit{{provider="{name}",state="closed"}} 1.0' in metrics
        assert f'faxbridge_poll_cycles{{provider="{name}"}}' in metrics
    events = daemon.events()
    assert not [e for e in events if e.get("event") in ("webhook.rejected", "provider.failover")]
    # the Sinch faxes were finished by their callbacks (confirmed by GET), the Phaxio ones by
    # theirs or by polling: each provider's callbacks reached its own route
    assert all(s["callback_url"].endswith(f"/webhooks/sinch/{SINCH_TOKEN}") for s in sends if s["provider"] == "sinch")


def test_failover_while_the_primary_answers_503(tmp_path: Path, sim: SimProcess) -> None:
    """Phaxio fails for a while: the fax in flight stays with it, the ambiguous ones are reconciled
    with it, new faxes go to Openfax, and once Phaxio answers again (a probe) traffic comes back."""
    config, url = config_for(tmp_path, sim, routes=[], fallback=["openfax"], circuit_failures=2,
                             circuit_open="30s", request_timeout="3s", reconcile_grace="1s")
    doc = make_pdf(tmp_path / "letter.pdf")
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        # A: in flight at Phaxio when the outage starts (busy, then the redial: minutes, simulated)
        a = send(config, "+15555551216", doc)
        wait_until(lambda: jobs(config)[a]["state"] == "submitted", timeout=60, interval=0.2, what="A submitted")
        # The outage: Phaxio takes B's fax but never answers in time (an ambiguous send), then
        # answers every request with 503 (sends, polls, lookups alike).
        sim.fault(kind="accept_then_hang", seconds=8.0, count=1, path="/v2.1/faxes", method="POST")
        sim.fault(kind="status", status=503, count=100_000, path="/v2.1/faxes")
        b = send(config, "+15555551221", doc)
        wait_until(lambda: "job.outcome_unknown" in events_of(config, b), timeout=60, interval=0.3,
                   what="B's outcome unknown")
        c = send(config, "+15555551222", doc)
        wait_until(lambda: "job.outcome_unknown" in events_of(config, c), timeout=60, interval=0.3,
                   what="C's outcome unknown (503)")
        # two transient failures in a row: Phaxio's circuit is open; new faxes go to Openfax
        d = send(config, "+15555551223", doc)
        e = send(config, "+15555551224", doc)
        wait_until(lambda: all(jobs(config)[i]["state"] == "delivered" for i in (d, e)), timeout=60,
                   interval=0.3, what="D and E delivered by the fallback")
        during = healthz(url)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        held = jobs(config)
        # B's fax is at Phaxio: its signed callback may finish it even now (it needs no answer from Phaxio)
        assert held[b]["state"] in ("submitting", "delivered") and held[b]["provider"] == "phaxio", held[b]
        assert held[c]["state"] == "submitting" and held[c]["provider"] == "phaxio", held[c]
        # the outage ends
        sim.clear_faults()
        # traffic comes back: a new fax goes to Phaxio once the circuit's probe has gone through
        later: list[str] = []

        def back_to_phaxio() -> bool:
            later.append(send(config, f"+1555555{1401 + 10 * len(later)}", doc))     # digit 1: delivered
            wait_until(lambda: jobs(config)[later[-1]]["state"] in ("submitted", "delivered"), timeout=60,
                       interval=0.2, what="a fax after the outage submitted")
            return bool(jobs(config)[later[-1]]["provider"] == "phaxio")

        wait_until(back_to_phaxio, timeout=90, interval=0.5, what="a new fax at Phaxio again")
        assert healthz(url)["circuits"]["phaxio"] == "closed"
        g = send(config, "+15555551311", doc)
        wait_until(lambda: all(j["final"] for j in jobs(config).values()), timeout=120, interval=0.3,
                   what="all final")
    finally:
        assert daemon.stop() == 0
    by_id = jobs(config)
    assert {i: j["state"] for i, j in by_id.items()} == dict.fromkeys(by_id, "delivered"), by_id
    assert by_id[a]["provider"] == "phaxio" and by_id[a]["attempts"] == 2     # in flight: never moved
    assert by_id[b]["provider"] == "phaxio"                   # ambiguous: stayed with Phaxio, which had it
    assert "job.outcome_unknown" in events_of(config, b)
    assert by_id[d]["provider"] == by_id[e]["provider"] == "openfax"
    assert by_id[g]["provider"] == "phaxio"
    # C's 503 left its outcome unknown: it stayed with Phaxio until Phaxio said it has no such fax
    c_events = events_of(config, c)
    assert by_id[c]["provider"] == "phaxio" or "job.resend" in c_events, c_events
    # one fax per job throughout
    assert faxes_per_job(sim, by_id) == Counter(list(by_id)), faxes_per_job(sim, by_id)
    assert during["status"] == "ok" and during["circuits"]["phaxio"] in ("open", "half-open"), during
    assert during["circuits"]["openfax"] == "closed"
    assert any(w.startswith("provider phaxio: circuit") for w in during["warnings"]), during
    assert 'faxbridge_provider_circuit{provider="phaxio",state="closed"} 0.0' in metrics
    log = daemon.events()
    failovers = [ev for ev in log if ev.get("event") == "provider.failover"]
    assert {ev["job_id"] for ev in failovers} >= {d, e}
    assert all(ev["provider"] == "openfax" and ev["routed"] == "phaxio" for ev in failovers)
    assert {ev["job_id"] for ev in failovers}.isdisjoint({a, b})
    assert any(ev.get("event") == "provider.circuit_open" and ev["provider"] == "phaxio" for ev in log)
    assert any(ev.get("event") == "provider.circuit_closed" and ev["provider"] == "phaxio" for ev in log)
