"""One call per fax machine and sending later (CONTRACT §11), against the real simulator over real HTTP
and a real SQLite store: ``limits.per_destination`` and ``send_at``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

from faxbridge.clock import FakeClock, SystemClock
from faxbridge.dispatcher import Dispatcher
from faxbridge.intake import accept
from faxbridge.jobview import job_object, job_text, waiting
from faxbridge.models import FaxOptions, InputFile, Job, JobState, NewJob, Source
from faxbridge.states import CancelRequested
from faxbridge.store import JobStore, open_store
from faxbridge.workflow import advance
from tests.test_dispatcher import POLICY, Env, _close_env, _make_env

AT_PROVIDER = (JobState.SUBMITTING, JobState.SUBMITTED)


def watch_concurrency(store: JobStore) -> dict[str, int]:
    """The most jobs to each number seen at the provider at once, from every committed change."""
    now: dict[str, set[str]] = {}
    peak: dict[str, int] = {}

    def seen(before: Job | None, after: Job, event: str) -> None:
        busy = now.setdefault(after.to, set())
        if after.state in AT_PROVIDER:
            busy.add(after.id)
        else:
            busy.discard(after.id)
        peak[after.to] = max(peak.get(after.to, 0), len(busy))

    store.observe(seen)
    return peak


async def test_jobs_to_one_number_go_one_at_a_time_and_others_are_not_held(
        tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e = await _make_env("phaxio", tmp_path, pdf, speed=200.0)
    e.dispatcher.per_destination = 1
    peak = watch_concurrency(e.store)
    submitted: list[tuple[str, str]] = []
    e.store.observe(lambda b, a, ev: submitted.append((a.id, a.to)) if ev == "job.submitting" else None)
    try:
        busy_line = [await e.enqueue("+15555551210") for _ in range(3)]
        other = await e.enqueue("+15555551211")
        await e.dispatcher.step()
        assert await e.dispatcher.drain(30)
        # the first to the busy number and the one to the other number went at once; two wait
        assert sorted(i for i, _ in submitted) == sorted([busy_line[0], other])
        waits = [waiting(await e.store.get(i), SystemClock().now(), at_provider=await e.store.at_provider(
            "+15555551210"), per_destination=1) for i in busy_line[1:]]
        assert waits == ["a fax to this number is at the provider; it goes when that one is done "
                         "(limits.per_destination = 1)"] * 2
        await e.finish()
    finally:
        await _close_env(e)
    assert peak["+15555551210"] == 1 and peak["+15555551211"] == 1
    assert [i for i, to in submitted if to == "+15555551210"] == busy_line       # first in, first out
    jobs = {j.id: j for j in await _reopen(tmp_path).__anext__()}
    assert all(jobs[i].state is JobState.DELIVERED for i in (*busy_line, other))


async def _reopen(tmp_path: Path) -> AsyncIterator[list[Job]]:
    store = await open_store(tmp_path / "var", "phaxio")
    try:
        yield await store.jobs()
    finally:
        await store.close()


async def test_without_the_limit_jobs_to_one_number_go_together(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e = await _make_env("phaxio", tmp_path, pdf, speed=200.0)
    started: list[str] = []
    e.store.observe(lambda b, a, ev: started.append(a.id) if ev == "job.submitting" else None)
    try:
        for _ in range(3):
            await e.enqueue("+15555551210")
        await e.dispatcher.step()
        assert await e.dispatcher.drain(30)
        assert len(started) == 3          # per_destination = 0: no limit
        await e.finish()
    finally:
        await _close_env(e)


async def test_a_limit_of_two_lets_two_go(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e = await _make_env("phaxio", tmp_path, pdf, speed=200.0)
    e.dispatcher.per_destination = 2
    peak = watch_concurrency(e.store)
    try:
        for _ in range(5):
            await e.enqueue("+15555551210")
        await e.dispatcher.step()
        assert await e.dispatcher.drain(30)
        assert await e.store.in_flight() == 2
        await e.finish()
    finally:
        await _close_env(e)
    assert peak["+15555551210"] == 2


async def test_a_blocked_number_is_not_due(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    """The dispatcher sleeps while the only queued jobs wait for their number (no busy polling)."""
    e = await _make_env("phaxio", tmp_path, pdf, speed=1.0)     # slow faxes: the first stays at the provider
    e.dispatcher.per_destination = 1
    try:
        for _ in range(2):
            await e.enqueue("+15555551210")
        await e.dispatcher.step()
        await e.dispatcher.drain(30)                       # the first is submitted (at the provider)
        assert await e.store.at_provider("+15555551210") == 1
        assert await e.store.next_due(1) is None           # nothing to wake up for until it is done
        assert await e.store.next_due(0) is not None       # without the limit the second is due
    finally:
        await _close_env(e)


# --- sending later ---------------------------------------------------------------------------------------


async def later_env(tmp_path: Path, pdf: Callable[..., Path]) -> tuple[Env, FakeClock]:
    e = await _make_env("phaxio", tmp_path, pdf)
    clock = FakeClock()
    e.dispatcher = Dispatcher(e.store, e.provider, clock, POLICY, max_in_flight=10, owner="test")
    return e, clock


async def enqueue_at(e: Env, clock: FakeClock, delay: timedelta) -> str:
    new = NewJob(source=Source.CLI, to="+15555551210", document="doc.pdf",
                 options=FaxOptions(send_at=clock.now() + delay))
    return (await accept(e.store, clock, new, [InputFile("doc.pdf", e.pdf)], max_pages=200)).id


async def test_a_job_to_send_later_waits_queued_until_its_time(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e, clock = await later_env(tmp_path, pdf)
    try:
        later = await enqueue_at(e, clock, timedelta(hours=2))
        now = await enqueue_at(e, clock, timedelta(hours=-1))         # a time in the past: at once
        assert await e.dispatcher.step() == 1
        assert await e.dispatcher.drain(30)
        job = await e.store.get(later)
        assert job.state is JobState.QUEUED and job.next_attempt_at == job.options.send_at
        assert await e.store.next_due() == job.options.send_at          # the dispatcher wakes then
        assert job.options.send_at is not None
        assert job_object(job)["send_at"] == job.options.send_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (waiting(job, clock.now()) or "").startswith("until ")
        assert "send at:" in job_text(job, [])
        assert (await e.store.get(now)).state is not JobState.QUEUED
        clock.advance(3600)
        assert await e.dispatcher.step() == 0
        clock.advance(3601)
        assert await e.dispatcher.step() == 1
        await e.dispatcher.drain(30)
        assert (await e.store.get(later)).state in AT_PROVIDER
    finally:
        await _close_env(e)


async def test_a_scheduled_job_survives_a_restart_and_goes_at_start_up_when_due(
        tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e, clock = await later_env(tmp_path, pdf)
    try:
        job_id = await enqueue_at(e, clock, timedelta(minutes=30))
        assert await e.dispatcher.step() == 0
    finally:
        await _close_env(e)
    # the daemon was down past the time: the new one sends it in its first round
    e, clock = await later_env(tmp_path, pdf)
    try:
        job = await e.store.get(job_id)
        assert job.state is JobState.QUEUED and job.options.send_at is not None
        clock.advance((job.options.send_at - clock.now()).total_seconds() + 300)
        assert await e.dispatcher.step() == 1
        await e.dispatcher.drain(30)
        assert (await e.store.get(job_id)).state in AT_PROVIDER
    finally:
        await _close_env(e)


async def test_a_scheduled_job_can_be_canceled_meanwhile(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e, clock = await later_env(tmp_path, pdf)
    try:
        job_id = await enqueue_at(e, clock, timedelta(days=1))
        await advance(e.store, job_id, CancelRequested(), clock, POLICY)
        assert (await e.store.get(job_id)).state is JobState.CANCELED
        clock.advance(2 * 86400)
        assert await e.dispatcher.step() == 0
        assert e.sim.sends == []
    finally:
        await _close_env(e)


# --- through the real daemon and CLI, on the defaults -----------------------------------------------------


def test_the_daemon_sends_one_at_a_time_to_a_number_by_default_and_says_why_the_others_wait(
        tmp_path: Path) -> None:
    import json

    from tests.conftest import wait_until
    from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config

    settings = base_settings(tmp_path)
    settings["provider"]["simulator"] = {"speed": 1.0}       # real time: a fax stays at the provider a while
    config = write_config(tmp_path / "faxbridge.toml", settings)
    doc = make_pdf(tmp_path / "a.pdf")

    def send(to: str) -> str:
        r = cli("send", "--to", to, str(doc), config=config)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    line = [send("+15555551210") for _ in range(3)]
    other = send("+15555551211")
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()

        def state(job_id: str) -> str:
            return str(json.loads(cli("job", job_id, "--json", config=config).stdout)["state"])

        wait_until(lambda: state(line[0]) == "submitted" and state(other) != "queued", timeout=60,
                   what="the first fax to each number at the provider")
        waiting_job = json.loads(cli("job", line[1], "--json", config=config).stdout)
        assert waiting_job["state"] == "queued"
        assert waiting_job["waiting"] == ("a fax to this number is at the provider; it goes when that one is "
                                          "done (limits.per_destination = 1)")
        text = cli("job", line[2], config=config).stdout
        assert "waiting:        a fax to this number is at the provider" in text
    finally:
        daemon.stop()


async def test_send_now_sends_a_waiting_job_at_once(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    from faxbridge.states import Ignore, SendNow

    e, clock = await later_env(tmp_path, pdf)
    try:
        job_id = await enqueue_at(e, clock, timedelta(days=1))
        assert await e.dispatcher.step() == 0
        await advance(e.store, job_id, SendNow(), clock, POLICY)
        job = await e.store.get(job_id)
        assert job.options.send_at is None and job.next_attempt_at == clock.now()
        assert job_object(job)["send_at"] is None and waiting(job, clock.now()) is None
        assert [ev.event for ev in await e.store.events(job_id)] == ["job.queued", "job.send_now"]
        assert await e.dispatcher.step() == 1
        assert await e.dispatcher.drain(30)
        # once it is under way, send now has nothing to do
        _, decision = await advance(e.store, job_id, SendNow(), clock, POLICY)
        assert isinstance(decision, Ignore) and decision.refused
        assert decision.why == "only a queued job waiting for its send time can be sent now; this one is submitted"
    finally:
        await _close_env(e)
