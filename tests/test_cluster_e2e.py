"""Several bridges, one queue (contract section 10), end to end: two real daemons on one PostgreSQL,
each with its own state_dir and node, the simulator as their one provider; faxes queued with
`faxbridge send` from a third machine's config. Every job is delivered and reaches the provider
exactly once (counted at the simulator), whichever daemon took it.

(Mail and folder intake on PostgreSQL wait for the daemon to hand its one store to the listeners:
the SMTP listener and the folder workers still open their own SQLite store today.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port, wait_until
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


def machine(tmp_path: Path, name: str, url: str, sim: SimProcess) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings: dict[str, Any] = base_settings(folder)
    settings["provider"].update(sim.phaxio_settings())
    settings["store"] = {"url": url, "node": name}
    return write_config(folder / "faxbridge.toml", settings)


def jobs(config: Path) -> list[dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_two_daemons_share_one_queue_and_send_each_fax_once(tmp_path: Path, sim: SimProcess, pg_url: str) -> None:
    shell, left, right = (machine(tmp_path, name, pg_url, sim) for name in ("shell", "left", "right"))
    doc = make_pdf(tmp_path / "a.pdf", pages=2)
    ids = []
    for n in range(8):
        r = cli("send", "--to", f"+155555513{n}{n % 6}", str(doc), config=shell)
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip().splitlines()[0])
    daemons = [DaemonProcess(config, tmp_path / f"{config.parent.name}.log").start() for config in (left, right)]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        wait_until(lambda: all(j["final"] for j in jobs(shell)), timeout=90, interval=0.2, what="all final")
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0]
    states = {j["id"]: j["state"] for j in jobs(shell)}
    assert states == dict.fromkeys(ids, "delivered")
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)
    with psycopg.connect(pg_url) as db:
        nodes = {row[0] for row in db.execute("SELECT node FROM jobs")}
    assert nodes <= {"left", "right"} and nodes
