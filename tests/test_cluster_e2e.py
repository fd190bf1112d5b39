"""Several bridges, one queue (contract section 10), end to end: two and three real daemons on one
PostgreSQL, each with its own state_dir and node, the simulator as their one provider; faxes queued
with `faxbridge send` from another machine's config. Every job is delivered and reaches the provider
exactly once (counted at the simulator), whichever daemon sent it; mails to each daemon's SMTP
port make their jobs in the shared queue, and each gets one reply mail; files dropped into each
daemon's own watched folder get their results in that folder; one daemon polls. And the database
restarted under running daemons: mail is answered 451 4.3.0 meanwhile, files wait in their
folders, and both daemons resume by themselves.
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
from tests.ingress.mailkit import MailSink, outlook, pdf_bytes
from tests.ingress.mailkit import send as send_mail
from tests.pg import PgServer
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


@pytest.fixture
def sink() -> Iterator[MailSink]:
    s = MailSink().up()
    yield s
    s.down()


def machine(tmp_path: Path, name: str, url: str, sim: SimProcess, *, watch: bool = False,
            smarthost: MailSink | None = None, lease: str = "30s") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings: dict[str, Any] = base_settings(folder)
    settings["provider"].update(sim.phaxio_settings())
    settings["store"] = {"url": url, "node": name, "lease": lease}
    if smarthost is not None:
        settings["notify"] = {"smarthost": f"127.0.0.1:{smarthost.port}"}
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


@pytest.mark.timeout(400)
def test_three_daemons_submit_each_job_once_and_send_each_reply_once(
        tmp_path: Path, sim: SimProcess, sink: MailSink, pg_url: str) -> None:
    shell = machine(tmp_path, "shell", pg_url, sim)
    names = ("n1", "n2", "n3")
    configs = [machine(tmp_path, name, pg_url, sim, watch=True, smarthost=sink) for name in names]
    doc = make_pdf(tmp_path / "a.pdf")
    for n in range(9):
        r = cli("send", "--to", f"+155555519{n}{n % 6}", str(doc), config=shell)
        assert r.returncode == 0, r.stderr
    daemons = [DaemonProcess(config, tmp_path / f"{config.parent.name}.log").start() for config in configs]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        for i, (name, config) in enumerate(zip(names, configs, strict=True)):
            for n in range(2):
                make_pdf(tmp_path / name / "outbox" / f"155555520{i}{n}.pdf")
            listen = load(config, {}).smtp.listen
            for m in range(2):                  # two mails to each daemon, two faxes each
                message = outlook(pdf_bytes(tmp_path / name, name=f"mail-{m}.pdf"), subject=f"{name} {m}")
                recipients = [f"15555552{i}{m}{n}@fax.local" for n in range(2)]
                answers = send_mail((listen.host, listen.port), "alice@example.com", recipients, message)
                assert [a.code for a in answers] == [250, 250, 250, 250], answers
        wait_until(lambda: all(len(results(tmp_path / name / "results")) == 2 for name in names),
                   timeout=120, interval=0.2, what="every folder's results")
        wait_until(lambda: len(sink.received) >= 12, timeout=120, interval=0.2, what="a reply per mail job")
        wait_until(lambda: all(j["final"] for j in jobs(shell)), timeout=120, interval=0.2, what="all final")
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0, 0]
    every = jobs(shell)
    assert len(every) == 9 + 6 + 12 and {j["state"] for j in every} == {"delivered"}
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert {j["id"]: counts[j["id"]] for j in every} == {j["id"]: 1 for j in every}     # each sent once
    replies = Counter(str(m.message["X-Faxbridge-Job"]) for m in sink.received)
    mail_jobs = {j["id"] for j in every if j["source"] == "smtp"}
    assert set(replies) == mail_jobs and set(replies.values()) == {1}                  # each reply once
    assert {j["node"] for j in every} <= set(names)
    # one daemon polls (until the first one stops: then another takes the role over)
    first_stop = min(e["timestamp"] for d in daemons for e in d.events() if e.get("event") == "daemon.stopping")
    pollers = [d.config.parent.name for d in daemons
               if any(e.get("event") == "store.lead_taken" and e.get("role") == "poller"
                      and e["timestamp"] < first_stop for e in d.events())]
    assert len(pollers) == 1, pollers


@pytest.mark.timeout(400)
def test_a_database_restart_under_running_daemons(tmp_path: Path, sim: SimProcess, pg_server: PgServer,
                                                  pg_url: str) -> None:
    left, right = (machine(tmp_path, name, pg_url, sim, watch=True, lease="3s") for name in ("left", "right"))
    daemons = [DaemonProcess(config, tmp_path / f"{config.parent.name}.log").start() for config in (left, right)]
    listens = [load(config, {}).smtp.listen for config in (left, right)]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        pg_server.stop()
        try:
            for side, listen in zip(("left", "right"), listens, strict=True):
                message = outlook(pdf_bytes(tmp_path / side, name="down.pdf"), subject="while down")
                answers = send_mail((listen.host, listen.port), "alice@example.com",
                                    ["15555552301@fax.local"], message)
                assert any(a.code == 451 and "4.3.0" in a.text for a in answers), answers
                make_pdf(tmp_path / side / "outbox" / "15555552302.pdf")
            wait_until(lambda: all(any(e.get("event") in ("folder.round_failed", "folder.round_crashed")
                                       for e in d.events()) for d in daemons),
                       timeout=60, interval=0.2, what="both folder watchers meeting the database down")
            for side in ("left", "right"):      # the file waits: neither failed nor answered
                assert not (tmp_path / side / "failed").is_dir() or not list((tmp_path / side / "failed").iterdir())
                assert not results(tmp_path / side / "results")
        finally:
            pg_server.start()
        for side, listen in zip(("left", "right"), listens, strict=True):   # the relay tries again

            def accepted(side: str = side, listen: Any = listen) -> bool:
                message = outlook(pdf_bytes(tmp_path / side, name="up.pdf"), subject="again")
                answers = send_mail((listen.host, listen.port), "alice@example.com",
                                    ["15555552303@fax.local"], message)
                return [a.code for a in answers][-1:] == [250]

            wait_until(accepted, timeout=90, interval=0.5, what=f"{side} taking mail again")
        wanted = {"15555552302.result.json": "delivered"}
        wait_until(lambda: all(results(tmp_path / side / "results") == wanted for side in ("left", "right")),
                   timeout=90, interval=0.2, what="the waiting files sent once the database is back")
        wait_until(lambda: all(j["final"] for j in jobs(left)) and len(jobs(left)) == 4, timeout=90,
                   interval=0.2, what="every job final")
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0]
    assert {j["state"] for j in jobs(left)} == {"delivered"}
    counts = Counter(s["job_tag"] for s in sim.sends())
    assert sorted(counts[j["id"]] for j in jobs(left)) == [1, 1, 1, 1]
