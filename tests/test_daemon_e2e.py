"""End to end: the real `faxbridge` command and daemon in subprocesses, the simulator as the provider.

- every outcome digit of contract section 6 through `faxbridge send` and the running daemon;
- restarts: SIGTERM and SIGKILL with jobs queued and in flight: none lost, none sent twice.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config


def jobs(config: Path) -> list[dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def send(config: Path, to: str, *files: Path) -> str:
    r = cli("send", "--to", to, *map(str, files), config=config)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert len(job_id) == 26, r.stdout
    return job_id


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


def test_outcome_digits_through_cli_and_daemon(tmp_path: Path) -> None:
    config = write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))
    doc = make_pdf(tmp_path / "letter.pdf", pages=2)
    expected = {
        **{f"1555555121{d}": ("delivered", 1, None) for d in range(6)},
        "15555551216": ("delivered", 2, None),
        "15555551217": ("failed", 3, "No Answer"),
        "15555551218": ("failed", 1, "fax machine"),
        "15555551219": ("failed", 3, "Busy"),
    }
    ids = {send(config, number, doc): number for number in expected}
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        wait_until(lambda: all(j["final"] for j in jobs(config)), timeout=60, interval=0.2, what="all final")
    finally:
        assert daemon.stop() == 0
    by_id = {j["id"]: j for j in jobs(config)}
    for job_id, number in ids.items():
        state, attempts, reason = expected[number]
        job = by_id[job_id]
        assert job["to"] == "+" + number
        assert (job["state"], job["attempts"], job["pages"], job["source"]) == (state, attempts, 2, "cli"), job
        assert job["provider"] == "simulator" and job["provider_id"]
        if reason:
            assert reason.lower() in job["reason"].lower(), job
        else:
            assert job["reason"] is None
            assert job["cost"] > 0 and job["duration_s"] is not None, job
        assert job["finished_at"] >= job["created_at"]
    r = cli("job", next(iter(ids)), "--json", config=config)
    detail = json.loads(r.stdout)
    assert [e["state"] for e in detail["events"]][:3] == ["queued", "submitting", "submitted"]
    assert all(json.loads(line) for line in daemon.log_path.read_text().splitlines())


def _restart_config(tmp_path: Path, sim: SimProcess, **provider: Any) -> Path:
    settings = base_settings(tmp_path)
    settings["provider"].update(sim.phaxio_settings(), **provider)
    # these tests put several faxes to one number at the provider at once (limits.per_destination
    # is tested in tests/test_dispatch_order.py and below)
    settings.setdefault("limits", {})["per_destination"] = 0
    return write_config(tmp_path / "faxbridge.toml", settings)


def finish_and_count(config: Path, sim: SimProcess, ids: list[str], log: Path) -> DaemonProcess:
    """Start the daemon again, let it finish everything, stop it (exit 0); then every job is
    delivered and reached the provider exactly once (counted at the simulator)."""
    daemon = DaemonProcess(config, log).start()
    try:
        daemon.wait_ready()
        wait_until(lambda: all(j["final"] for j in jobs(config)), timeout=60, interval=0.2, what="all final")
    finally:
        assert daemon.stop() == 0
    states = {j["id"]: j["state"] for j in jobs(config)}
    assert set(states) == set(ids)
    assert set(states.values()) == {"delivered"}
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert {i: counts[i] for i in ids} == {i: 1 for i in ids}
    return daemon


def test_sigterm_with_jobs_queued_and_in_flight(tmp_path: Path, sim: SimProcess) -> None:
    config = _restart_config(tmp_path, sim)
    doc = make_pdf(tmp_path / "a.pdf")
    ids = [send(config, f"+1555555121{n % 6}", doc) for n in range(12)]
    daemon = DaemonProcess(config, tmp_path / "d1.log").start()
    daemon.wait_ready()
    wait_until(lambda: len(sim.sends()) >= 3, timeout=30, what="some sends")
    assert daemon.stop(signal.SIGTERM) == 0
    assert any(e.get("event") == "daemon.stopped" for e in daemon.events())
    finish_and_count(config, sim, ids, tmp_path / "d2.log")


def test_sigkill_mid_submission_is_reconciled_not_resent(tmp_path: Path, sim: SimProcess) -> None:
    config = _restart_config(tmp_path, sim, request_timeout="20s")
    doc = make_pdf(tmp_path / "a.pdf")
    # the provider accepts the first three faxes and then hangs before answering: the daemon is
    # killed while it waits, so it never learns their ids
    sim.fault(kind="accept_then_hang", seconds=30.0, count=3)
    ids = [send(config, "+15555551212", doc) for _ in range(6)]
    daemon = DaemonProcess(config, tmp_path / "d1.log").start()
    daemon.wait_ready()
    wait_until(lambda: len(sim.sends()) >= 3, timeout=30, what="three accepted sends")
    daemon.kill()
    held = [j for j in jobs(config) if j["state"] == "submitting"]
    assert len(held) >= 3
    r = cli("job", held[0]["id"], config=config)
    assert "submitting" in r.stdout and "checks the provider's records before anything is sent again" in r.stdout
    daemon = finish_and_count(config, sim, ids, tmp_path / "d2.log")
    events = [e.get("event") for e in daemon.events()]
    assert events.count("job.reconciled") >= 3
    detail = json.loads(cli("job", held[0]["id"], "--json", config=config).stdout)
    assert "job.outcome_unknown" in [e["event"] for e in detail["events"]]


def test_sigkill_with_the_queue_full_loses_nothing(tmp_path: Path, sim: SimProcess) -> None:
    config = _restart_config(tmp_path, sim)
    doc = make_pdf(tmp_path / "a.pdf")
    ids = [send(config, "+15555551213", doc) for _ in range(20)]
    for round_ in range(3):
        daemon = DaemonProcess(config, tmp_path / f"k{round_}.log").start()
        daemon.wait_ready()
        wait_until(lambda r=round_: len(sim.sends()) >= 4 * (r + 1) or all(j["final"] for j in jobs(config)),
                   timeout=30, what="progress")
        daemon.kill()
    finish_and_count(config, sim, ids, tmp_path / "final.log")


def _balance(config: Path) -> float:
    r = cli("balance", config=config)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("balance: "), r.stdout
    return float(r.stdout.split()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_built_in_simulator_keeps_its_faxes_across_a_restart(tmp_path: Path, sig: int) -> None:
    """The default first run: faxes in flight at a stop go on after the restart and end as their
    numbers say; fax ids never repeat; `faxbridge balance` shows the daemon's network."""
    settings = base_settings(tmp_path)
    settings["provider"]["simulator"]["speed"] = 40.0          # redials minutes apart: seconds here
    config = write_config(tmp_path / "faxbridge.toml", settings)
    doc = make_pdf(tmp_path / "a.pdf")
    expected = {"+15555551210": "delivered", "+15555551216": "delivered", "+15555551217": "failed",
                "+15555551219": "failed"}
    ids = {send(config, number, doc): state for number, state in expected.items()}
    assert _balance(config) == 100.0                         # no daemon yet: the saved (empty) network
    daemon = DaemonProcess(config, tmp_path / "d1.log").start()
    daemon.wait_ready()
    wait_until(lambda: all(j["provider_id"] for j in jobs(config)), timeout=60, what="every job at the provider")
    assert not all(j["final"] for j in jobs(config))
    before = {j["id"]: j["provider_id"] for j in jobs(config)}
    assert daemon.stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    daemon = DaemonProcess(config, tmp_path / "d2.log").start()
    try:
        daemon.wait_ready()
        later = send(config, "+15555551211", doc)
        wait_until(lambda: all(j["final"] for j in jobs(config)), timeout=90, interval=0.2, what="all final")
        running = _balance(config)
    finally:
        assert daemon.stop() == 0
    final = {j["id"]: j for j in jobs(config)}
    for job_id, state in ids.items():
        assert final[job_id]["state"] == state, final[job_id]
        assert final[job_id]["provider_id"] == before[job_id]      # the same fax, followed to its end
    assert final[later]["state"] == "delivered"
    assert final[later]["provider_id"] not in before.values()      # ids never repeat
    assert running < 100.0 and _balance(config) == running          # the daemon's network, running or not
    events = [e.get("event") for e in daemon.events()]
    assert "simulator.restored" in events
