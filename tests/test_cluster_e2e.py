"""Several bridges, one queue (contract section 10), end to end: two real daemons on one PostgreSQL,
each with its own state_dir and node, the simulator as their one provider; faxes queued with
`faxbridge send` from a third machine's config. Every job is delivered and reaches the provider
exactly once (counted at the simulator), whichever daemon sent it; mails to each daemon's SMTP
port make their jobs in the shared queue; files dropped into each daemon's own watched folder get
their results in that folder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from faxbridge.config import load
from tests.conftest import free_port, wait_until
from tests.ingress.mailkit import outlook, pdf_bytes
from tests.ingress.mailkit import send as send_mail
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


def machine(tmp_path: Path, name: str, url: str, sim: SimProcess, *, watch: bool = False) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings: dict[str, Any] = base_settings(folder)
    settings["provider"].update(sim.phaxio_settings())
    settings["store"] = {"url": url, "node": name}
    if watch:
        settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
        settings["watch"] = [{"path": str(folder / "outbox"), "results": str(folder / "results"),
                              "done": str(folder / "done"), "failed": str(folder / "failed"), "settle": "200ms"}]
    return write_config(folder / "faxbridge.toml", settings)


def results(folder: Path) -> dict[str, str]:
    found = folder.glob("*.result.json") if folder.is_dir() else []
    return {p.name: json.loads(p.read_text())["state"] for p in found}


def jobs(config: Path) -> list[dict[str, Any]]:
    r = cli("jobs", "--json", config=config)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_two_daemons_share_one_queue_and_send_each_fax_once(tmp_path: Path, sim: SimProcess, pg_url: str) -> None:
    shell = machine(tmp_path, "shell", pg_url, sim)
    left, right = (machine(tmp_path, name, pg_url, sim, watch=True) for name in ("left", "right"))
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
        for side in ("left", "right"):       # each daemon's own folder: files to numbers of their own
            for n in range(3):
                make_pdf(tmp_path / side / "outbox" / f"1555555{14 if side == 'left' else 15}{n}{n}.pdf")
        for side, config in (("left", left), ("right", right)):   # a mail to each daemon, two faxes each
            listen = load(config, {}).smtp.listen
            message = outlook(pdf_bytes(tmp_path / side, name=f"mail-{side}.pdf"), subject=f"From {side}")
            recipients = [f"1555555{16 if side == 'left' else 17}{n}{n}@fax.local" for n in range(2)]
            answers = send_mail((listen.host, listen.port), "alice@example.com", recipients, message)
            assert [a.code for a in answers] == [250, 250, 250, 250], answers
        wanted = {side: {f"1555555{14 if side == 'left' else 15}{n}{n}.result.json": "delivered" for n in range(3)}
                  for side in ("left", "right")}
        wait_until(lambda: all(results(tmp_path / side / "results") == wanted[side] for side in wanted),
                   timeout=90, interval=0.2, what="every folder's results, in its own folder")
        wait_until(lambda: all(j["final"] for j in jobs(shell)), timeout=90, interval=0.2, what="all final")
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0]
    states = {j["id"]: j["state"] for j in jobs(shell)}
    assert {j["node"] for j in jobs(shell)} <= {"left", "right"}          # the job object names the daemon
    table = cli("jobs", config=shell).stdout.splitlines()
    assert "NODE" in table[0] and all({"left", "right"} & set(row.split()) for row in table[1:])
    assert len(states) == len(ids) + 6 + 4 and set(states.values()) == {"delivered"}
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert {i: counts[i] for i in states} == dict.fromkeys(states, 1)               # each reached it once
    for side in ("left", "right"):
        assert sorted(p.name for p in (tmp_path / side / "done").iterdir()) == sorted(
            name.replace(".result.json", ".pdf") for name in wanted[side])
    with psycopg.connect(pg_url) as db:
        nodes = {row[0] for row in db.execute("SELECT node FROM jobs")}
    assert nodes <= {"left", "right"} and nodes
