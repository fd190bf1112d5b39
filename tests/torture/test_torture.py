"""Crash-and-fault torture: the real daemon killed with SIGKILL at random moments while mail, files
and CLI sends arrive and the provider misbehaves; then the invariants, printed as figures.

A seeded random mix per round: mails (one to three fax recipients; some for another domain,
some with nothing to fax, some with a Word file), files dropped into the watched folder (named by
their number, numbered by a control file, or with no number; some written slowly in pieces), CLI
sends; faults injected at the simulator (503, 429 with Retry-After, hangs past the request
timeout, a fax accepted but never answered, webhooks dropped, duplicated and delayed past later
ones). The daemon is killed with SIGKILL after a random delay, the store's integrity is checked,
and the next round starts it again. Mails that got no answer (the daemon died mid-dialogue) or a
4xx are sent again, with the same Message-ID, as a mail server would. At the end the daemon runs
until every job is final and every notification delivered.

Invariants (each printed as a figure):
- every mail recipient answered 250 ends in exactly one final job and exactly one reply mail
  (or two with one Message-ID, when a kill fell between the smarthost taking the reply and the
  daemon recording it: counted and printed, never otherwise);
- every mail refused with 5xx left no job; a retried mail made exactly one job per recipient;
- every dropped file ends in exactly one result file, and no result file is ever seen half-written;
- each job reaches the provider at most once (sends counted at the simulator by job);
- `PRAGMA integrity_check` is "ok" after every kill.

Short by default; `--torture-rounds 40` for a long run; `--torture-seed N` replays a run.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from faxbridge.config import load
from faxbridge.store import Store
from tests.conftest import free_port, wait_until
from tests.ingress.mailkit import MailSink
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config
from tests.torture.kit import Mail, integrity, needs_resend, replies_per_job, send_mail, sends_per_job, watch_results

WORD_FILE = b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml word/document.xml" * 20

FAULTS: list[dict[str, Any]] = [
    {"kind": "status", "status": 503, "count": 2},
    {"kind": "status", "status": 429, "retry_after": 0.3, "count": 1},
    {"kind": "hang", "seconds": 2.5, "count": 1},
    {"kind": "accept_then_hang", "seconds": 2.5, "count": 1},
    {"kind": "accept_then_500", "count": 1},
    {"kind": "webhook_drop", "count": 2},
    {"kind": "webhook_dup", "count": 2},
    {"kind": "webhook_delay", "seconds": 1.0, "count": 2},
]


@dataclass
class World:
    root: Path
    rng: random.Random
    pdf: bytes
    mails: list[Mail] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    cli_jobs: list[str] = field(default_factory=list)
    kills: int = 0
    faults: int = 0
    integrity: list[str] = field(default_factory=list)
    partial_results: list[str] = field(default_factory=list)

    def new_mail(self, n: int) -> Mail:
        count = self.rng.randint(1, 3)
        rcpts = [f"1555555{self.rng.randint(0, 9999):04d}@fax.local" for _ in range(count)]
        kind = self.rng.random()
        if kind < 0.1:
            rcpts.append("15555551212@elsewhere.example")  # refused at RCPT; the others still go
        msg = EmailMessage()
        msg["From"] = "alice@example.com"
        msg["To"] = ", ".join(rcpts)
        msg["Subject"] = f"torture {n}"
        msg["Message-ID"] = f"<torture-{n}-{self.rng.randrange(1 << 30)}@example.com>"
        if kind > 0.92:
            msg.set_content("nothing to fax here")  # 554 5.6.0 with cover_page = never
        elif kind > 0.86:                           # 554 5.6.1: a Word file cannot be faxed
            msg.set_content(f"mail {n}")
            msg.add_attachment(WORD_FILE, maintype="application", filename=f"m{n}.docx",
                               subtype="vnd.openxmlformats-officedocument.wordprocessingml.document")
        else:
            msg.set_content(f"mail {n}")
            msg.add_attachment(self.pdf, maintype="application", subtype="pdf", filename=f"m{n}.pdf")
        return Mail(msg["Message-ID"], rcpts, msg.as_bytes())


def drop_file(world: World, outbox: Path) -> threading.Thread | None:
    """A file for the watched folder: named by its number, numbered by a control file written
    first, or neither (rejected); written at once, or by a slow writer in pieces (the thread)."""
    n = len(world.files)
    number = f"1555555{world.rng.randint(0, 9999):04d}"
    kind = world.rng.random()
    if kind < 0.15:
        name = f"no-number-{n}.pdf"
    elif kind < 0.35:
        name = f"letter-{n}.pdf"
        (outbox / f".letter-{n}.json.part").write_text(json.dumps({"to": number}))
        (outbox / f".letter-{n}.json.part").rename(outbox / f"letter-{n}.json")
    else:
        name = f"{number}_f{n}.pdf"
    world.files.append(name)
    if world.rng.random() < 0.25:
        pauses = [world.rng.uniform(0.05, 0.25) for _ in range(4)]
        writer = threading.Thread(target=slow_write, args=(outbox / name, world.pdf, pauses), daemon=True)
        writer.start()
        return writer
    (outbox / name).write_bytes(world.pdf)
    return None


def slow_write(path: Path, data: bytes, pauses: list[float]) -> None:
    """A scanner writing its file over a second or so, in pieces (no temporary name)."""
    step = len(data) // len(pauses) + 1
    with path.open("wb") as fh:
        for i, pause in enumerate(pauses):
            fh.write(data[i * step:(i + 1) * step])
            fh.flush()
            time.sleep(pause)


def test_crash_and_fault_torture(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    seed = request.config.getoption("--torture-seed") or random.randrange(1 << 30)
    rounds = request.config.getoption("--torture-rounds")
    print(f"\ntorture seed {seed}, {rounds} rounds (replay: pytest tests/torture --torture-seed {seed})")
    world = World(tmp_path, random.Random(seed), make_pdf(tmp_path / "doc.pdf").read_bytes())
    sim = SimProcess(free_port(), tmp_path / "sim.log").start()
    sink = MailSink().up()
    smtp_port, web_port = free_port(), free_port()
    outbox, results = tmp_path / "outbox", tmp_path / "results"
    s = base_settings(tmp_path)
    s["provider"].update(sim.phaxio_settings(), request_timeout="2s", reconcile_grace="1s")
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "cover_page": "never"}
    s["limits"] = {"per_sender_per_hour": 0}   # one sender sends it all; the limit is tested elsewhere
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"}
    s["notify"] = {"smarthost": f"127.0.0.1:{sink.port}"}
    s["watch"] = [{"path": str(outbox), "results": str(results), "done": str(tmp_path / "done"),
                   "failed": str(tmp_path / "failed"), "settle": "300ms"}]
    config = write_config(tmp_path / "faxbridge.toml", s)
    cfg = load(config, {})
    outbox.mkdir()
    results.mkdir()
    stop_reader = threading.Event()
    reader = threading.Thread(target=watch_results, args=(results, stop_reader, world.partial_results), daemon=True)
    reader.start()
    writers: list[threading.Thread] = []
    try:
        for r in range(rounds):
            for _ in range(world.rng.randint(0, 2)):
                sim.fault(**world.rng.choice(FAULTS))
                world.faults += 1
            daemon = DaemonProcess(config, tmp_path / f"round{r}.log").start()
            daemon.wait_ready()
            # resend what got no answer or a 4xx, as a mail server would; then new work
            pending = [m for m in world.mails if needs_resend(m)]
            new = [world.new_mail(len(world.mails) + n) for n in range(world.rng.randint(2, 5))]
            world.mails += new
            for _ in range(world.rng.randint(1, 4)):
                if (writer := drop_file(world, outbox)) is not None:
                    writers.append(writer)
            if world.rng.random() < 0.5:
                r_cli = cli("send", "--to", f"1555555{world.rng.randint(0, 9999):04d}", str(tmp_path / "doc.pdf"),
                            config=config)
                assert r_cli.returncode == 0, r_cli.stderr
                world.cli_jobs.append(r_cli.stdout.strip())
            senders = [threading.Thread(target=send_mail, args=(smtp_port, m)) for m in pending + new]
            for t in senders:
                t.start()
            time.sleep(world.rng.uniform(0.05, 1.5))   # the moment of the kill is the point of the test
            daemon.kill()
            world.kills += 1
            for t in senders:
                t.join(30)
            world.integrity.append(integrity(cfg.state_dir / "faxbridge.db"))
        # the last start: resend the unanswered, then run until everything is final and delivered
        for writer in writers:
            writer.join(10)
        daemon = DaemonProcess(config, tmp_path / "final.log").start()
        daemon.wait_ready()
        for _ in range(5):
            pending = [m for m in world.mails if needs_resend(m)]
            for m in pending:
                send_mail(smtp_port, m)
            if not [m for m in world.mails if needs_resend(m)]:
                break
        store = Store(cfg.state_dir, "phaxio")

        def settled() -> bool:
            jobs = store.jobs()
            return bool(jobs) and all(j.final for j in jobs) and store.outbox_backlog() == 0 and \
                len(list(results.glob("*.result.json"))) >= len(world.files)

        try:
            wait_until(settled, timeout=120, interval=0.25, what="every job final and every result delivered")
        finally:
            assert daemon.stop() == 0
        jobs = store.jobs()
        store.close()
    finally:
        stop_reader.set()
        reader.join(5)
        try:
            sends = sim.sends()
        finally:
            sim.stop()                 # even when the simulator no longer answers
            replies = sink.received
            sink.down()

    # ---- invariants -------------------------------------------------------------------------------------
    by_message: dict[str, list[Any]] = {}
    for job in jobs:
        mid = str(job.meta.get("message_id") or "")
        if job.source.value == "smtp":
            by_message.setdefault(mid.strip("<>"), []).append(job)
    answered = [m for m in world.mails if m.answer == 250]
    refused = [m for m in world.mails if m.answer is not None and m.answer >= 500]
    unanswered = [m for m in world.mails if needs_resend(m)]
    sent_per_job = sends_per_job(sends)
    replies_by_job = replies_per_job(replies)
    # The one window no mail system closes: the smarthost has taken a reply, the daemon is killed
    # before it records that, the reply goes again after the restart. Its copies carry the same
    # Message-ID (made from the job and its outbox row), so the receiving side can drop the copy.
    ids_by_job: dict[str, set[str]] = {}
    for m in replies:
        ids_by_job.setdefault(str(m.message["X-Faxbridge-Job"]), set()).add(str(m.message["Message-ID"]))
    repeated = [job for job, n in replies_by_job.items() if n == 2 and len(ids_by_job[job]) == 1]
    repeated_otherwise = [job for job, n in replies_by_job.items() if n > 1 and job not in repeated]
    smtp_jobs = [j for j in jobs if j.source.value == "smtp"]
    folder_jobs = [j for j in jobs if j.source.value == "folder"]
    result_files = sorted(p.name for p in results.glob("*.result.json"))
    print(f"kills survived: {world.kills}; faults injected: {world.faults}; mails: {len(world.mails)} "
          f"(250: {len(answered)}, refused: {len(refused)}, never answered: {len(unanswered)}); "
          f"files: {len(world.files)}; CLI sends: {len(world.cli_jobs)}; jobs: {len(jobs)}; "
          f"provider sends: {len(sends)}; reply mails: {len(replies)}")
    print(f"integrity checks: {Counter(world.integrity)}; partial result files seen: {len(world.partial_results)}; "
          f"jobs sent more than once: {sum(1 for n in sent_per_job.values() if n > 1)}; "
          f"replies sent twice (a kill between the smarthost's 250 and our record of it; the copies "
          f"share their Message-ID): {len(repeated)}; replies sent twice otherwise: {len(repeated_otherwise)}")
    assert world.integrity == ["ok"] * world.kills
    assert not world.partial_results
    assert all(n == 1 for n in sent_per_job.values()), sent_per_job.most_common(3)
    assert all(j.final for j in jobs)
    for m in answered:
        fax_rcpts = {r for r in m.recipients if r.endswith("@fax.local")}
        made = by_message.get(m.message_id.strip("<>"), [])
        assert len(made) == len(set(fax_rcpts)), (seed, m.message_id, len(made), fax_rcpts)
    for m in refused:
        assert not by_message.get(m.message_id.strip("<>")), (seed, m.message_id)
    assert not unanswered, (seed, [m.message_id for m in unanswered])
    assert {j.id for j in smtp_jobs} == set(replies_by_job), seed
    assert not repeated_otherwise, (seed, repeated_otherwise)
    assert len(repeated) <= world.kills, seed
    assert len(folder_jobs) == len(world.files), (seed, len(folder_jobs), len(world.files))
    assert len(result_files) == len(world.files), (seed, result_files)
    assert {j.id for j in jobs if j.source.value == "cli"} == set(world.cli_jobs)
    for job in jobs:
        if job.state.value == "delivered":
            assert sent_per_job[job.id] == 1, (seed, job.id)
