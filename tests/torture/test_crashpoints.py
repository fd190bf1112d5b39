"""SIGKILL pinned to named moments: the real daemon killed at each crash point, then restarted.

``test_torture`` kills at random moments; here each kill is pinned (``FAXBRIDGE_CRASHPOINT``, see
:mod:`faxbridge.crashpoints`): the daemon is started with the variable, the work that reaches the
point is driven (a mail over SMTP, or a PDF dropped into the watched folder), and the test waits
until the daemon died of SIGKILL (returncode -9: the point was reached). Then: ``PRAGMA
integrity_check``, what the store held at the kill, a restart without the variable, the mail sent
again (same Message-ID, as a relay would) when it got no answer, and the run until everything is
final and every notification delivered. The simulator runs in its own process, so the faxes it
received are counted across the restart, by job.

Invariants, exactly:
- every mail answered 250 and every file taken ends in exactly one final job per fax recipient,
  faxed exactly once (sends counted at the simulator, by job), with exactly one reply mail or one
  result file;
- a mail left without an answer made, with its retry, exactly one job and one fax per recipient;
  the retry's 250 names the jobs committed before the kill as duplicates;
- no result file is ever seen half-written (a reader polls the results folder throughout);
- integrity_check is "ok" after every kill.

Two windows are at-least-once by nature, and the tests say so exactly: a reply the smarthost took
just before the kill (``mail.sent``) is sent again after the restart, with the SAME Message-ID,
so the receiver can drop it; a fax the provider accepted just before the kill
(``dispatch.accepted``) is found again by reconciliation, and NOT sent twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from faxbridge import crashpoints
from faxbridge.config import load
from faxbridge.models import Job
from faxbridge.store import Store
from tests.conftest import free_port, wait_until
from tests.ingress.mailkit import MailSink
from tests.support import DaemonProcess, SimProcess, base_settings, cli, make_pdf, write_config
from tests.torture.kit import (
    Mail,
    integrity,
    needs_resend,
    replies_per_job,
    send_mail,
    sends_per_job,
    watch_results,
)

ANY_OPEN = frozenset({"queued", "submitting"})   # the dispatcher may or may not have claimed it yet


@dataclass(frozen=True)
class Case:
    point: str                          # the value of FAXBRIDGE_CRASHPOINT
    work: str                           # "mail" (one fax recipient), "mail2" (two), "file"
    jobs_at_kill: int = 1               # jobs committed when the daemon died
    states_at_kill: frozenset[str] = ANY_OPEN
    # Mail only: the first try got its 250 before the kill (True), did not (False), or either (None:
    # the job is committed before the 250 is sent, and the dispatcher may claim it in between).
    answered: bool | None = True
    sends_at_kill: int | None = None    # faxes at the simulator when the daemon died (None: any)
    replies_at_kill: int | None = None
    replies: int = 1                    # copies of the reply mail in the end (per job)
    webhook_only: bool = False          # polling slowed down: the webhook makes the final change
    event: str | None = None            # an event the job's history must show after the restart
    absent: str | None = None           # an event it must not show


DELIVERED = frozenset({"delivered"})

CASES = [
    Case("smtp.data", "mail", jobs_at_kill=0, answered=False),
    Case("smtp.job_committed:1", "mail2", jobs_at_kill=1, answered=False),
    Case("smtp.before_reply", "mail", answered=False),
    Case("folder.claimed", "file", jobs_at_kill=0),
    Case("folder.committed", "file"),
    Case("dispatch.submitting", "mail", states_at_kill=frozenset({"submitting"}), sends_at_kill=0,
         event="job.resend", answered=None),
    # Held for reconciliation at the restart; found again by it (job.reconciled) or by the provider's
    # retried webhook reaching the held job first: either way never sent again.
    Case("dispatch.accepted", "file", states_at_kill=frozenset({"submitting"}), sends_at_kill=1,
         event="job.outcome_unknown", absent="job.resend"),
    Case("webhook.parsed", "mail", states_at_kill=frozenset({"submitted"}), sends_at_kill=1, webhook_only=True),
    Case("webhook.applied", "file", states_at_kill=DELIVERED, sends_at_kill=1, webhook_only=True),
    Case("sidecar.temp_written", "file", states_at_kill=DELIVERED, sends_at_kill=1),
    Case("sidecar.written", "file", states_at_kill=DELIVERED, sends_at_kill=1),
    Case("mail.before_send", "mail", states_at_kill=DELIVERED, sends_at_kill=1, replies_at_kill=0),
    Case("mail.sent", "mail", states_at_kill=DELIVERED, sends_at_kill=1, replies_at_kill=1, replies=2),
]

FIGURES: list[str] = []


@dataclass
class Scene:
    """One test's daemon configuration, folders and work."""

    root: Path
    config: Path
    smtp_port: int
    state_dir: Path
    outbox: Path
    results: Path
    numbers: list[str]
    mail: Mail | None = None
    files: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def store(self) -> Store:
        return Store(self.state_dir, "phaxio")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    process = SimProcess(free_port(), tmp_path_factory.mktemp("sim") / "sim.log").start()
    yield process
    process.stop()
    if FIGURES:
        points = {f.split(":", 1)[0] for f in FIGURES}
        print(f"\ncrash points covered: {len(points)} of {len(crashpoints.POINTS)}; kills survived: {len(FIGURES)}")
        for line in FIGURES:
            print("  " + line)


@pytest.fixture(scope="module")
def sink() -> Iterator[MailSink]:
    server = MailSink().up()
    yield server
    server.down()


def scene(root: Path, sim: SimProcess, sink: MailSink, index: int, case: Case) -> Scene:
    smtp_port, web_port = free_port(), free_port()
    outbox, results = root / "outbox", root / "results"
    s = base_settings(root)
    s["provider"].update(sim.phaxio_settings(), request_timeout="2s", reconcile_grace="1s")
    if case.webhook_only:
        s["provider"]["poll_interval"] = "60s"    # the first poll runs at start; the next one too late
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "cover_page": "never"}
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"}
    s["notify"] = {"smarthost": f"127.0.0.1:{sink.port}"}
    s["watch"] = [{"path": str(outbox), "results": str(results), "done": str(root / "done"),
                   "failed": str(root / "failed"), "settle": "100ms"}]
    config = write_config(root / "faxbridge.toml", s)
    outbox.mkdir()
    results.mkdir()
    # Numbers of their own per test (last digit 1 or 2: delivered), so that reconciliation, which
    # looks the fax up at the shared simulator by number and time, can only find this test's fax.
    numbers = [f"1555557{index:03d}1", f"1555557{index:03d}2"]
    return Scene(root, config, smtp_port, load(config, {}).state_dir, outbox, results, numbers)


def new_mail(sc: Scene, n_rcpts: int, pdf: bytes, tag: str) -> Mail:
    rcpts = [f"{number}@fax.local" for number in sc.numbers[:n_rcpts]]
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = f"crash at {tag}"
    msg["Message-ID"] = f"<crash-{tag.replace(':', '-')}@example.com>"
    msg.set_content("please fax the attachment")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="letter.pdf")
    return Mail(msg["Message-ID"], rcpts, msg.as_bytes())


def wait_killed(daemon: DaemonProcess, point: str, timeout: float = 30.0) -> int:
    """Wait (with a deadline) until the daemon died; its exit code."""
    assert daemon.proc is not None
    try:
        daemon.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise AssertionError(f"crash point {point} was not reached within {timeout}s") from None
    return daemon.stop()       # already dead: only collects the code and closes the log


def job_ids(jobs: list[Job]) -> set[str]:
    return {j.id for j in jobs}


@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=[c.point for c in CASES])
def test_kill_at_point(index: int, case: Case, tmp_path: Path, sim: SimProcess, sink: MailSink) -> None:
    sc = scene(tmp_path, sim, sink, index, case)
    pdf = make_pdf(tmp_path / "doc.pdf").read_bytes()
    stop_reader = threading.Event()
    reader = threading.Thread(target=watch_results, args=(sc.results, stop_reader, sc.partial, sc.seen), daemon=True)
    reader.start()
    try:
        # ---- 1. run with the crash point armed, drive the work, wait for the SIGKILL ---------------------
        daemon = DaemonProcess(sc.config, tmp_path / "killed.log", env={crashpoints.ENV: case.point}).start()
        daemon.wait_ready()
        if case.work.startswith("mail"):
            sc.mail = new_mail(sc, 2 if case.work == "mail2" else 1, pdf, case.point)
            send_mail(sc.smtp_port, sc.mail)
            first_answer = sc.mail.answer
        else:
            name = f"{sc.numbers[0]}_letter.pdf"
            (sc.outbox / name).write_bytes(pdf)
            sc.files.append(name)
            first_answer = None
        code = wait_killed(daemon, case.point)
        assert code == -signal.SIGKILL, (case.point, code)
        check = integrity(sc.state_dir / "faxbridge.db")
        assert check == "ok"

        # ---- 2. what the store (and the simulator, and the smarthost) held at the kill -------------------
        store = sc.store()
        try:
            at_kill = store.jobs()
        finally:
            store.close()
        assert len(at_kill) == case.jobs_at_kill, [(j.id, j.state.value) for j in at_kill]
        if at_kill:
            assert {j.state.value for j in at_kill} <= case.states_at_kill, [j.state.value for j in at_kill]
        if case.sends_at_kill is not None:
            assert sum(sends_per_job(sim.sends())[i] for i in job_ids(at_kill)) == case.sends_at_kill
        if case.point == "dispatch.accepted":
            assert all(j.provider_id is None for j in at_kill)     # accepted, but not recorded
        if case.replies_at_kill is not None:
            assert sum(replies_per_job(sink.received)[i] for i in job_ids(at_kill)) == case.replies_at_kill
        if sc.mail is not None and case.answered is not None:
            assert (first_answer == 250) is case.answered, (case.point, first_answer, sc.mail.text)

        # ---- 3. restart without the variable; the relay sends an unanswered mail again ------------------
        daemon = DaemonProcess(sc.config, tmp_path / "restarted.log").start()
        try:
            daemon.wait_ready()
            if sc.mail is not None and needs_resend(sc.mail):
                send_mail(sc.smtp_port, sc.mail)
                assert sc.mail.answer == 250, sc.mail.text
            expected_jobs = len(sc.mail.recipients) if sc.mail is not None else len(sc.files)
            store = sc.store()
            try:
                def settled() -> bool:
                    jobs = store.jobs()
                    return len(jobs) == expected_jobs and all(j.final for j in jobs) \
                        and store.outbox_backlog() == 0 and len(list(sc.results.glob("*.result.json"))) >= len(sc.files)

                wait_until(settled, timeout=60, interval=0.1, what=f"every job final and notified after {case.point}")
                jobs = store.jobs()
                history = {j.id: [e.event for e in store.events(j.id)] for j in jobs}
            finally:
                store.close()
        finally:
            assert daemon.stop() == 0
    finally:
        stop_reader.set()
        reader.join(5)

    # ---- 4. the invariants ---------------------------------------------------------------------------------
    ids = job_ids(jobs)
    sends = sends_per_job(sim.sends())
    replies = [r for r in sink.received if str(r.message["X-Faxbridge-Job"]) in ids]
    by_job = replies_per_job(replies)
    result_files = sorted(sc.results.glob("*.result.json"))
    leftovers = sorted(p.name for p in sc.results.glob(".*.tmp"))
    assert all(j.state.value == "delivered" for j in jobs), [(j.id, j.state.value, j.reason) for j in jobs]
    assert {sends[i] for i in ids} == {1}, {i: sends[i] for i in ids}       # each job faxed exactly once
    assert not sc.partial, sc.partial
    if case.event is not None:
        assert all(case.event in history[i] for i in ids), history
    if case.absent is not None:
        assert not any(case.absent in history[i] for i in ids), history
    if sc.mail is not None:
        assert sorted(j.to for j in jobs) == sorted("+" + r.split("@")[0] for r in sc.mail.recipients)
        assert all(j.meta.get("message_id") == sc.mail.message_id for j in jobs)
        assert {by_job[i] for i in ids} == {case.replies}, by_job
        for i in ids:     # a reply sent again carries the same Message-ID: the receiver can drop it
            assert len({str(r.message["Message-ID"]) for r in replies if r.message["X-Faxbridge-Job"] == i}) == 1
        if first_answer != 250:            # the relay's retry: the jobs made before the kill are named
            made_before = sorted(j.id for j in at_kill)
            made_after = sorted(ids - set(made_before))
            words = []
            if made_after:
                words.append(f"Queued as job{'s' if len(made_after) > 1 else ''} {', '.join(made_after)}")
            if made_before:
                words.append(f"Duplicate of job {', '.join(made_before)}: already received, not faxed again")
            assert sc.mail.text == "2.0.0 " + "; ".join(words)
        assert result_files == []
    else:
        assert len(jobs) == 1 and not replies
        assert len(result_files) == 1, result_files
        result = json.loads(result_files[0].read_bytes())
        assert result["id"] == jobs[0].id and result["state"] == "delivered"
        assert sorted(p.name for p in (tmp_path / "done").iterdir()) == [sc.files[0]]
        assert list(sc.outbox.glob("*.pdf")) == []
        assert leftovers == []        # a write repeated after a kill before the rename replaced its temp file
    if sc.mail is not None:
        retry = sc.mail.answer if first_answer != 250 else "-"
        what = f"first answer {first_answer}, retry {retry}; replies per job {sorted(by_job[i] for i in ids)}"
    else:
        what = (f"result files {len(result_files)} (reader saw {len(sc.seen)}, half-written {len(sc.partial)}); "
                f"stray temp files {len(leftovers)}")
    if case.point.startswith("dispatch."):
        what += "; history: " + " / ".join(" > ".join(history[i][1:]) for i in sorted(ids))
    FIGURES.append(f"{case.point}: killed (-9), integrity {check}; jobs at kill {len(at_kill)}, after {len(jobs)}; "
                   f"faxes per job {sorted(sends[i] for i in ids)}; {what}")
    print(FIGURES[-1])


def test_every_point_has_a_case() -> None:
    """The closed set and the cases above agree: a new point without a test fails here."""
    assert {c.point.partition(":")[0] for c in CASES} == crashpoints.POINTS


def test_every_point_is_called_once_in_the_code() -> None:
    """Each known point has exactly one ``crashpoints.hit`` call, and no call names an unknown point."""
    source = Path(crashpoints.__file__).parent
    calls: list[str] = []
    for path in source.rglob("*.py"):
        text = path.read_text()
        for chunk in text.split('crashpoints.hit("')[1:]:
            calls.append(chunk.split('"', 1)[0])
    assert sorted(calls) == sorted(crashpoints.POINTS)


@pytest.mark.parametrize("value,words", [
    ("smtp.dta", "unknown crash point 'smtp.dta'"),
    ("mail.sent:0", "the count after ':' must be a whole number from 1"),
    ("mail.sent:x", "the count after ':' must be a whole number from 1"),
])
def test_unknown_point_refuses_to_start(value: str, words: str, tmp_path: Path) -> None:
    """A typo in a test must not silently test nothing: ``faxbridge run`` exits 2 naming it."""
    config = write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))
    result = cli("run", config=config, env={crashpoints.ENV: value}, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1]["event"] == "daemon.failed"
    assert words in lines[-1]["error"] and crashpoints.ENV in lines[-1]["error"]
    assert not (tmp_path / "var" / "faxbridge.db").exists()      # refused before anything started


def test_parse() -> None:
    assert crashpoints.parse("mail.sent") == ("mail.sent", 1)
    assert crashpoints.parse("smtp.job_committed:3") == ("smtp.job_committed", 3)
    with pytest.raises(ValueError, match="unknown crash point"):
        crashpoints.parse("nothing")


def test_unset_is_inert() -> None:
    """Without the variable (as in this test process) a hit does nothing."""
    assert os.environ.get(crashpoints.ENV) is None
    for name in crashpoints.POINTS:
        crashpoints.hit(name)
    assert crashpoints._ARMED is None
