"""Dispatcher and tracker against the real simulator over real HTTP, with a real SQLite store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.clock import SystemClock
from faxbridge.dispatcher import Dispatcher
from faxbridge.errors import StoreBusy
from faxbridge.intake import accept
from faxbridge.models import FaxOptions, FaxOutcome, InputFile, JobState, NewJob, Paper, Source, StatusUpdate
from faxbridge.providers.base import Provider
from faxbridge.providers.openfax import OpenfaxProvider
from faxbridge.providers.phaxio import PhaxioProvider
from faxbridge.simulator import Fault, Simulator, SimulatorServer, credentials
from faxbridge.states import Ignore, Policy
from faxbridge.store import JobStore, open_store
from faxbridge.tracker import Tracker
from faxbridge.workflow import advance
from tests.conftest import async_wait_until
from tests.support import sim_provider

POLICY = Policy(submit_retries=4, retry_initial=0.05, retry_max=0.2, reconcile_grace=0.5)


@dataclass
class Env:
    sim: Simulator
    store: JobStore
    provider: Provider
    dispatcher: Dispatcher
    tracker: Tracker
    pdf: Path

    async def enqueue(self, to: str, pages_pdf: Path | None = None) -> str:
        new = NewJob(source=Source.CLI, to=to, document="doc.pdf")
        return (await accept(self.store, SystemClock(), new, [InputFile("doc.pdf", pages_pdf or self.pdf)],
                             max_pages=200)).id

    async def finish(self, timeout: float = 60.0) -> None:
        """Submit everything due and poll until every job is final."""
        async def all_final() -> bool:
            await self.dispatcher.run_until_idle()
            await self.tracker.poll_once()
            return all(j.final for j in await self.store.jobs())

        await async_wait_until(all_final, timeout=timeout, interval=0.05, what="every job final")

    async def sends(self, job_id: str) -> int:
        if self.provider.name == "openfax":
            job = await self.store.get(job_id)
            return sum(1 for s in self.sim.sends if s.provider == "openfax" and s.id == job.provider_id)
        return sum(1 for s in self.sim.sends if s.job_tag == job_id)


@pytest.fixture(params=["phaxio", "openfax"])
async def env(request: pytest.FixtureRequest, tmp_path: Path, pdf: Callable[..., Path]) -> AsyncIterator[Env]:
    yield_env = await _make_env(request.param, tmp_path, pdf)
    try:
        yield yield_env
    finally:
        await _close_env(yield_env)


async def _make_env(kind: str, tmp_path: Path, pdf: Callable[..., Path], *, timeout: float = 5.0,
                    max_in_flight: int = 50, speed: float = 5000.0, openfax_rows: str = "snapshot",
                    **policy: Any) -> Env:
    sim = Simulator(speed=speed, openfax_rows=openfax_rows)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    client = httpx.AsyncClient(timeout=timeout)
    # Openfax: search its report for a lost submission for 1 s, not the production 10 minutes
    provider = sim_provider(kind, client, base, **({'lookup_grace_s': 1.0, 'lookup_grace_per_page_s': 0.0}
                                                   if kind == 'openfax' else {}))
    store = await open_store(tmp_path / "var", kind)
    pol = Policy(**{**POLICY.__dict__, **policy})
    d = Dispatcher(store, provider, SystemClock(), pol, max_in_flight=max_in_flight, owner="test")
    t = Tracker(store, provider, SystemClock(), pol, interval=0.05)
    e = Env(sim, store, provider, d, t, pdf("doc.pdf", pages=2))
    e._closers = (server, client)  # type: ignore[attr-defined]
    return e


async def _close_env(e: Env) -> None:
    server, client = e._closers  # type: ignore[attr-defined]
    await client.aclose()
    await server.stop()
    await e.store.close()


EXPECTED = [
    ("15555551210", JobState.DELIVERED, 1, None),
    ("15555551213", JobState.DELIVERED, 1, None),
    ("15555551215", JobState.DELIVERED, 1, None),
    ("15555551216", JobState.DELIVERED, 2, None),
    ("15555551217", JobState.FAILED, 3, "No Answer"),
    ("15555551218", JobState.FAILED, 1, "fax machine"),
    ("15555551219", JobState.FAILED, 3, "Busy"),
]


async def test_every_outcome_digit(env: Env) -> None:
    ids = {await env.enqueue("+" + number): (state, attempts, reason) for number, state, attempts, reason in EXPECTED}
    await env.finish()
    for job_id, (state, attempts, reason) in ids.items():
        job = await env.store.get(job_id)
        assert job.state is state, (job.to, job.state, job.reason)
        assert job.attempts == attempts, (job.to, job.attempts)
        assert job.pages == 2
        if reason is None:
            assert job.reason is None
        else:
            assert job.reason is not None and reason.lower() in job.reason.lower(), job.reason
        assert await env.sends(job_id) == 1
        events = [e.event for e in await env.store.events(job_id)]
        assert events[:3] == ["job.queued", "job.submitting", "job.submitted"]
        assert events[-1] == f"job.{state.value}"


async def test_max_in_flight_is_respected(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e = await _make_env("phaxio", tmp_path, pdf, max_in_flight=3)
    try:
        ids = [await e.enqueue("+15555551211") for _ in range(8)]
        await e.dispatcher.run_until_idle()
        assert await e.store.in_flight() == 3
        assert len(e.sim.sends) == 3
        await e.finish()
        assert all([(await e.store.get(i)).state is JobState.DELIVERED for i in ids])
        assert sorted([await e.sends(i) for i in ids]) == [1] * 8
    finally:
        await _close_env(e)


def on_send(env: Env, **fault: Any) -> Fault:
    """A fault on the send request only (not the lookups that reconcile it)."""
    path = "faxSendSubmit" if env.provider.name == "openfax" else "/faxes"
    return Fault(path=path, method="POST", **fault)


async def test_transient_errors_are_retried_then_sent_once(env: Env) -> None:
    env.sim.inject(on_send(env, kind="status", status=503, count=2))
    env.sim.inject(on_send(env, kind="status", status=429, retry_after=0.2, count=1))
    job_id = await env.enqueue("+15555551212")
    await env.finish()
    job = await env.store.get(job_id)
    assert job.state is JobState.DELIVERED
    assert job.submit_tries == 3
    assert await env.sends(job_id) == 1
    events = [e.event for e in await env.store.events(job_id)]
    # a 503 may have been taken: reconciled (no record) before the resend; a 429 was not: retried
    assert events.count("job.outcome_unknown") == 2 and events.count("job.resend") == 2, events
    assert events.count("job.retry_scheduled") == 1, events


async def test_a_submissions_last_change_ends_its_lease_without_a_release_call(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted, or refused for now and retried: the change that ends each try also ends the
    dispatcher's lease (one store write a try fewer), so the retry is claimed as soon as it is due."""
    released: list[str] = []
    real = env.store.release

    async def spy(job_id: str, owner: str) -> None:
        released.append(job_id)
        await real(job_id, owner)

    monkeypatch.setattr(env.store, "release", spy)
    env.sim.inject(on_send(env, kind="status", status=429, retry_after=0.2, count=1))
    ids = [await env.enqueue("+15555551212"), await env.enqueue("+15555551213")]
    await env.finish()
    assert [(await env.store.get(i)).state for i in ids] == [JobState.DELIVERED] * 2
    assert [await env.sends(i) for i in ids] == [1, 1]
    assert released == []
    assert await env.store.renew("test", set(ids), datetime.now(UTC), 600) == set()   # no lease left


async def test_too_many_transient_errors_fail_with_the_reason(env: Env) -> None:
    env.sim.inject(on_send(env, kind="status", status=503, count=10))
    job_id = await env.enqueue("+15555551212")
    await env.finish()
    job = await env.store.get(job_id)
    assert job.state is JobState.FAILED
    assert job.reason is not None and job.reason.startswith("gave up after 5 tries") and "503" in job.reason
    assert await env.sends(job_id) == 0


@pytest.mark.parametrize("rows", ["snapshot", "in_place"])
async def test_openfax_polling_sees_the_end_whether_report_rows_are_added_or_updated_in_place(
        tmp_path: Path, pdf: Callable[..., Path], rows: str) -> None:
    """Polling alone (no postback): every job ends as its number says, whether the report adds a
    row per call attempt or keeps one row per fax and changes it where it stands."""
    e = await _make_env("openfax", tmp_path, pdf, speed=100.0, openfax_rows=rows)
    try:
        ids = {await e.enqueue(number): (state, attempts) for number, state, attempts, _ in EXPECTED}
        await e.dispatcher.run_until_idle()
        # read the rows while the faxes are still under way, so in place they change after being read
        await async_wait_until(lambda: _any_row_read(e), timeout=30, interval=0.02, what="a row read early")
        await e.finish()
        for job_id, (state, attempts) in ids.items():
            job = await e.store.get(job_id)
            assert (job.state, job.attempts) == (state, attempts), job
        history = e.sim.history()
        if rows == "in_place":
            assert len(history) == len(ids)                       # one row per fax, changed in place
        else:
            assert len(history) == sum(a for _, a in ids.values() if a)
    finally:
        await _close_env(e)


async def _any_row_read(e: Env) -> bool:
    await e.tracker.poll_once()
    return e.tracker.requests > 0 and any(r.current_state < 8 for r in e.sim.history())


async def test_timeout_after_accept_is_reconciled_not_resent(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    for kind in ("phaxio", "openfax"):
        e = await _make_env(kind, tmp_path / kind, pdf, timeout=0.5)
        try:
            e.sim.inject(Fault(kind="accept_then_hang", seconds=3.0))
            job_id = await e.enqueue("+15555551211")
            await e.finish()
            job = await e.store.get(job_id)
            assert job.state is JobState.DELIVERED, job
            assert len(e.sim.sends) == 1, kind
            events = [ev.event for ev in await e.store.events(job_id)]
            assert "job.outcome_unknown" in events and "job.reconciled" in events, events
            assert "job.resend" not in events
        finally:
            await _close_env(e)


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_error_after_the_fax_was_created_is_reconciled_not_resent(
        env: Env, status: int) -> None:
    """A gateway that forwarded the send, then answered 502/504: the fax exists; one fax per job."""
    env.sim.inject(Fault(kind="accept_then_status", status=status))
    job_id = await env.enqueue("+15555551211")
    other = await env.enqueue("+15555551213")
    await env.finish()
    for jid in (job_id, other):
        assert (await env.store.get(jid)).state is JobState.DELIVERED
        assert await env.sends(jid) == 1, jid
    assert len(env.sim.sends) == 2
    events = [ev.event for ev in await env.store.events(job_id)] + [ev.event for ev in await env.store.events(other)]
    assert "job.outcome_unknown" in events and "job.reconciled" in events, events
    assert "job.resend" not in events


async def test_5xx_before_anything_was_created_is_resent_after_reconciling(env: Env) -> None:
    """A 503 that took nothing: the lookup finds no record, and the job is sent once, later."""
    env.sim.inject(Fault(kind="status", status=503))
    job_id = await env.enqueue("+15555551211")
    await env.finish()
    assert (await env.store.get(job_id)).state is JobState.DELIVERED
    assert await env.sends(job_id) == 1
    events = [ev.event for ev in await env.store.events(job_id)]
    assert events.index("job.outcome_unknown") < events.index("job.resend"), events


async def test_timeout_before_accept_is_resent_after_grace(env: Env) -> None:
    env.sim.inject(Fault(kind="hang", seconds=3.0))
    env.provider._client.timeout = httpx.Timeout(0.5)  # type: ignore[attr-defined]
    job_id = await env.enqueue("+15555551211")
    await env.finish()
    job = await env.store.get(job_id)
    assert job.state is JobState.DELIVERED
    assert await env.sends(job_id) == 1
    events = [e.event for e in await env.store.events(job_id)]
    assert "job.outcome_unknown" in events and "job.resend" in events, events


async def test_an_account_problem_pauses_sending_and_the_jobs_wait(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    """An inactive account (or bad credentials) concerns every fax: sending pauses, the job waits
    queued saying why, no other job is tried meanwhile; once the account works they all go."""
    sim = Simulator(speed=5000.0)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    async with httpx.AsyncClient(timeout=5) as client:
        pairs: list[tuple[Provider, Provider]] = [
            (PhaxioProvider(client, base_url=base + "/v2", api_key=credentials.PHAXIO_INACTIVE_KEY,
                            api_secret=credentials.PHAXIO_API_SECRET),
             sim_provider("phaxio", client, base)),
            (OpenfaxProvider(client, base_url=base, send_path="/faxSendSubmit.php",
                             balance_path="/getAvailableCredit.php", report_path="/outboundDetailsbyDate.php",
                             account_id=credentials.OPENFAX_INACTIVE_ACCOUNT_ID, api_key=credentials.OPENFAX_API_KEY),
             sim_provider("openfax", client, base)),
        ]
        for n, (inactive, working) in enumerate(pairs):
            store = await open_store(tmp_path / f"var{n}", inactive.name)
            d = Dispatcher(store, inactive, SystemClock(), POLICY, max_in_flight=1, owner="t", pause_s=0.3)
            ids = [(await accept(store, SystemClock(), NewJob(source=Source.CLI, to=to, document="doc.pdf"),
                                 [InputFile("doc.pdf", pdf())], max_pages=200)).id
                   for to in ("+15555551212", "+15555551213")]
            await d.run_until_idle()
            tried = [i for i in ids if "job.account_problem" in [e.event for e in await store.events(i)]]
            assert len(tried) == 1, inactive.name              # the second job is not tried while paused
            job = await store.get(tried[0])
            assert job.state is JobState.QUEUED and job.submit_tries == 0
            assert job.reason and job.reason.startswith("waiting: ") and job.reason.endswith(
                "; sending is paused and is tried again every few minutes"), job.reason
            assert d.account_problem and ("inactive" in d.account_problem.lower()
                                          or "fund" in d.account_problem.lower())
            assert sim.sends == [] or all(s.provider != inactive.name for s in sim.sends)
            d.provider = working                                # the operator fixed the account

            async def sent(d: Dispatcher = d, store: JobStore = store, ids: list[str] = ids) -> bool:
                await d.run_until_idle()
                return all([(await store.get(i)).state is JobState.SUBMITTED for i in ids])
            d.max_in_flight = 5
            await async_wait_until(sent, timeout=30, interval=0.05, what="both sent after the pause")
            assert d.account_problem is None
            await store.close()
    await server.stop()


async def test_number_the_provider_refuses_is_rejected(env: Env) -> None:
    # intake would refuse it; here it reaches the provider, as a number the provider's rules forbid
    job_id = await env.enqueue("+1900555121")
    await env.finish()
    job = await env.store.get(job_id)
    assert job.state is JobState.REJECTED, job
    assert job.reason
    assert await env.sends(job_id) == 0


async def test_a_bug_during_submit_holds_the_job_for_reconciliation(tmp_path: Path,
                                                                    pdf: Callable[..., Path]) -> None:
    e = await _make_env("phaxio", tmp_path, pdf)
    real_submit = e.provider.submit
    calls = 0

    async def buggy_submit(req: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await real_submit(req)  # the fax goes out...
            raise RuntimeError("bug after the provider accepted it")  # ...and we crash before recording it
        return await real_submit(req)

    e.provider.submit = buggy_submit  # type: ignore[method-assign]
    try:
        job_id = await e.enqueue("+15555551212")
        await e.finish()
        job = await e.store.get(job_id)
        assert job.state is JobState.DELIVERED
        assert await e.sends(job_id) == 1  # reconciled, not sent twice
        events = [ev.event for ev in await e.store.events(job_id)]
        assert "job.outcome_unknown" in events and "job.reconciled" in events
    finally:
        await _close_env(e)


async def test_a_store_failure_after_the_provider_accepted_is_reconciled_without_a_restart(
        tmp_path: Path, pdf: Callable[..., Path]) -> None:
    """The disk fills (or the database is locked) just as the accepted fax is to be recorded: the
    job is left in ``submitting`` with no lease. The running dispatcher finds it, holds it and
    reconciles it (no restart needed, as ``recover`` would at start): faxed once, delivered."""
    e = await _make_env("phaxio", tmp_path, pdf)
    real_apply = e.store.apply
    failed: list[str] = []

    async def apply_failing_once(job: Any, t: Any, now: Any, *args: Any, **kwargs: Any) -> Any:
        if t.event == "job.submitted" and not failed:
            failed.append(job.id)
            raise StoreBusy("job store busy: database or disk is full")
        return await real_apply(job, t, now, *args, **kwargs)

    e.store.apply = apply_failing_once  # type: ignore[method-assign]
    try:
        job_id = await e.enqueue("+15555551212")
        await e.finish(timeout=30)
        assert failed == [job_id]
        job = await e.store.get(job_id)
        assert job.state is JobState.DELIVERED
        assert await e.sends(job_id) == 1
        events = [ev.event for ev in await e.store.events(job_id)]
        assert "job.outcome_unknown" in events and "job.resend" not in events, events
    finally:
        await _close_env(e)


async def test_openfax_reconciliation_never_adopts_another_jobs_fax(tmp_path: Path,
                                                                  pdf: Callable[..., Path]) -> None:
    """Two held jobs to one number with one page count, and a retried job whose earlier fax is in the
    report: each adopts its own fax, none is sent twice, none is left unsent."""
    from faxbridge.states import RetryRequested

    e = await _make_env("openfax", tmp_path, pdf, timeout=0.5)
    try:
        e.sim.inject(Fault(kind="accept_then_hang", seconds=3.0, count=2))
        a, b = await e.enqueue("+15555551212"), await e.enqueue("+15555551212")
        await e.finish()
        ja, jb = await e.store.get(a), await e.store.get(b)
        assert ja.state is jb.state is JobState.DELIVERED
        assert ja.provider_id != jb.provider_id
        assert len(e.sim.sends) == 2
        c = await e.enqueue("+15555551219")  # always busy: fails, then the operator retries it
        await e.finish()
        first = await e.store.get(c)
        assert first.state is JobState.FAILED
        _, decision = await advance(e.store, c, RetryRequested(), SystemClock(), POLICY)
        assert not isinstance(decision, Ignore)
        e.sim.inject(Fault(kind="accept_then_hang", seconds=3.0))
        await e.finish()
        again = await e.store.get(c)
        assert again.state is JobState.FAILED and again.provider_id != first.provider_id
        assert "job.reconciled" in [ev.event for ev in await e.store.events(c)]
        assert len(e.sim.sends) == 4
        assert {s.id for s in e.sim.sends} == {ja.provider_id, jb.provider_id, first.provider_id, again.provider_id}
    finally:
        await _close_env(e)


async def test_cancel_reaches_the_provider_where_it_can(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    """`faxbridge cancel` on a submitted fax: Phaxio cancels it (the job ends canceled); Openfax has no
    cancel call, so the job says so and goes on to its own end."""
    from faxbridge.states import CancelRequested

    for kind, final, words in (("phaxio", JobState.CANCELED, "Canceled"),
                               ("openfax", JobState.FAILED, "No Answer")):
        # at speed 100 the 4 minutes between redials take 2.4 s: time to cancel in between
        e = await _make_env(kind, tmp_path / kind, pdf, speed=100.0)
        try:
            job_id = await e.enqueue("+15555551217")  # never answers: redials, 4 minutes apart (simulated)
            await e.dispatcher.run_until_idle()
            assert (await e.store.get(job_id)).state is JobState.SUBMITTED
            await advance(e.store, job_id, CancelRequested("faxbridge cancel"), SystemClock(), POLICY)
            assert (await e.store.get(job_id)).cancel_requested
            await e.finish(timeout=90)
            job = await e.store.get(job_id)
            assert job.state is final, (kind, job.state, job.reason)
            assert job.reason is not None and words in job.reason, job.reason
            events = [ev.event for ev in await e.store.events(job_id)]
            assert "job.cancel_requested" in events
            if kind == "openfax":
                assert "job.cancel_failed" in events
            assert await e.sends(job_id) == 1
        finally:
            await _close_env(e)


async def test_a_fax_the_provider_forgot_ends_its_job_failed_after_the_grace(tmp_path: Path,
                                                                            pdf: Callable[..., Path]) -> None:
    """Phaxio answers 404 for a fax it no longer knows: the job is held (its history says so), then
    ended failed with the reason in words, retryable; and `retry` works on such a job at once."""
    sim = Simulator(speed=1.0)                       # real time: the faxes stay in flight
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    client = httpx.AsyncClient(timeout=10)
    store = await open_store(tmp_path / "var", "phaxio")
    try:
        provider = PhaxioProvider(client, base_url=base + "/v2.1", api_key=credentials.PHAXIO_API_KEY,
                                  api_secret=credentials.PHAXIO_API_SECRET, list_lag_s=0.0, recheck_s=0.0)
        pol = Policy(**{**POLICY.__dict__, "unknown_grace": 0.5})
        dispatcher = Dispatcher(store, provider, SystemClock(), pol, max_in_flight=10, owner="test")
        tracker = Tracker(store, provider, SystemClock(), pol, interval=0.05)
        env = Env(sim, store, provider, dispatcher, tracker, pdf("doc.pdf", pages=1))
        lost, kept = await env.enqueue("+15555551212"), await env.enqueue("+15555551217")
        await dispatcher.run_until_idle()
        lost_fax = (await store.get(lost)).provider_id
        assert lost_fax and (await store.get(kept)).provider_id
        sim.forget("phaxio", lost_fax)

        async def given_up() -> bool:
            await tracker.poll_once()
            return (await store.get(lost)).final
        await async_wait_until(given_up, timeout=30, interval=0.1, what="the lost fax given up")
        job = await store.get(lost)
        assert job.state is JobState.FAILED
        assert job.reason == (f"the provider has no record of fax {lost_fax}: it was lost at the provider; "
                              "`faxbridge retry` sends it again")
        assert "job.provider_unknown" in [e.event for e in await store.events(lost)]
        assert (await store.get(kept)).state is JobState.SUBMITTED          # the other fax goes on
    finally:
        await client.aclose()
        await server.stop()
        await store.close()


async def test_a_fax_tagged_with_another_job_is_never_adopted(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    """A provider that reused a fax id (records lost): the update names another job in its tag, so the
    job waiting on that id does not take its outcome."""
    e = await _make_env("phaxio", tmp_path, pdf, speed=1.0)
    try:
        job_id = await e.enqueue("+15555551212")
        await e.dispatcher.run_until_idle()
        job = await e.store.get(job_id)
        assert job.state is JobState.SUBMITTED and job.provider_id
        other = StatusUpdate(provider="phaxio", provider_id=job.provider_id, outcome=FaxOutcome.FAILED,
                             reason="Busy: the line was busy on all 3 attempts", job_id="01ANOTHERJOB0000000000000")
        assert await e.tracker.apply(other) is None
        assert (await e.store.get(job_id)).state is JobState.SUBMITTED
        mine = StatusUpdate(provider="phaxio", provider_id=job.provider_id, outcome=FaxOutcome.DELIVERED,
                            job_id=job_id)
        applied = await e.tracker.apply(mine)
        assert applied is not None and applied[0].state is JobState.DELIVERED
    finally:
        await _close_env(e)


async def test_a_job_the_webhook_already_read_is_used_only_when_it_is_the_faxs_own(tmp_path: Path,
                                                                                    pdf: Callable[..., Path]) -> None:
    """tracker.apply(known=...): the job read by the webhook stands in for the lookup by fax id only when
    it is this provider's job for this fax; a stale copy is caught by the version check; a job of
    another fax is not taken for this one."""
    e = await _make_env("phaxio", tmp_path, pdf, speed=1.0)
    try:
        first, second = await e.enqueue("+15555551212"), await e.enqueue("+15555551213")
        await e.dispatcher.run_until_idle()
        one, two = await e.store.get(first), await e.store.get(second)
        assert one.provider_id and two.provider_id and one.provider_id != two.provider_id
        # the update is about the second fax; the copy handed in is the first job: looked up instead
        about_two = StatusUpdate(provider="phaxio", provider_id=two.provider_id, outcome=FaxOutcome.DELIVERED)
        applied = await e.tracker.apply(about_two, known=one)
        assert applied is not None and applied[0].id == second and applied[0].state is JobState.DELIVERED
        assert (await e.store.get(first)).state is JobState.SUBMITTED
        # a stale copy of the first job (the store has changed it since): applied on the store's own copy
        stale = dataclasses.replace(one, version=one.version - 1)
        about_one = StatusUpdate(provider="phaxio", provider_id=one.provider_id, outcome=FaxOutcome.FAILED,
                                 reason="Busy: the line was busy on all 3 attempts")
        applied = await e.tracker.apply(about_one, known=stale)
        assert applied is not None and applied[0].id == first and applied[0].state is JobState.FAILED
        assert applied[0].version == one.version + 1
    finally:
        await _close_env(e)


async def test_the_paper_asked_for_is_the_paper_sent(tmp_path: Path, pdf: Callable[..., Path]) -> None:
    e = await _make_env("openfax", tmp_path, pdf)
    try:
        new = NewJob(source=Source.CLI, to="+15555551212", document="doc.pdf",
                     options=FaxOptions(paper=Paper.LEGAL))
        job = await accept(e.store, SystemClock(), new, [InputFile("doc.pdf", e.pdf)], max_pages=200)
        assert job.paper is Paper.LEGAL
        await e.dispatcher.run_until_idle()
        (sent,) = e.sim.sends
        assert sent.paper == "legal"
    finally:
        await _close_env(e)


@pytest.mark.parametrize("when", ["queued", "submitted"])
@pytest.mark.parametrize("corruption", [
    "UPDATE jobs SET state = 'no-such-state' WHERE id = ?",
    "UPDATE jobs SET meta = '{not json' WHERE id = ?",
], ids=["state", "meta"])
async def test_a_row_that_does_not_decode_stops_neither_dispatcher_nor_tracker(
        tmp_path: Path, pdf: Callable[..., Path], corruption: str, when: str) -> None:
    """A job row written by hand (or by a broken disk) that does not decode: the list reads skip it
    (``store.bad_row``, once), ``get`` names it in a StoreError, and every other job is dispatched
    and tracked to delivered."""
    import sqlite3

    import structlog

    from faxbridge.errors import StoreError

    e = await _make_env("phaxio", tmp_path, pdf, speed=100.0)
    try:
        bad, good = await e.enqueue("+15555551212"), await e.enqueue("+15555551213")
        if when == "submitted":           # both faxes at the provider: its news names the bad job too
            await e.dispatcher.run_until_idle()
            assert {(await e.store.get(j)).state for j in (bad, good)} == {JobState.SUBMITTED}
        raw = sqlite3.connect(tmp_path / "var" / "faxbridge.db", isolation_level=None)
        try:
            raw.execute(corruption, (bad,))
        finally:
            raw.close()
        with structlog.testing.capture_logs() as logs:
            await e.finish()                       # every job that can be read ends
            await e.finish()
        assert (await e.store.get(good)).state is JobState.DELIVERED
        assert await e.sends(good) == 1 and len(e.sim.sends) == (2 if when == "submitted" else 1)
        assert [j.id for j in await e.store.jobs()] == [good]
        with pytest.raises(StoreError, match=bad):
            await e.store.get(bad)
        assert [x["job_id"] for x in logs if x["event"] == "store.bad_row"] == [bad]
        assert not [x for x in logs if x["event"] in ("dispatcher.store_error", "tracker.store_error")], logs
    finally:
        await _close_env(e)
