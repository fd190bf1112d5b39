"""The state table: every (state, outcome) pair that changes something, and those that must not."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from faxbridge.models import FaxOptions, FaxOutcome, Hold, Job, JobState, Paper, Source, StatusUpdate
from faxbridge.states import (
    Accepted,
    CancelFailed,
    CancelRequested,
    Claimed,
    FailureKind,
    Ignore,
    Outcome,
    Policy,
    Reconciled,
    Recovered,
    RetryRequested,
    Status,
    SubmitFailed,
    Transition,
    Unknown,
    backoff,
    decide,
    unknown_because,
)
from faxbridge.store import open_store, ts
from tests.test_store_threaded import _enqueue

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
POLICY = Policy(submit_retries=3, retry_initial=2.0, retry_max=60.0, reconcile_grace=60.0, max_recoveries=2,
                unknown_grace=3600.0)
S = JobState
K = FailureKind


def job(state: JobState, **kw: Any) -> Job:
    base = Job(
        id="01JTESTJOB0000000000000000", source=Source.CLI, to="+15555551212", state=state, reason=None,
        pages=2, paper=Paper.LETTER, attempts=0, provider="simulator", provider_id=None, status_code=None,
        duration_s=None, cost=None, sender=None, subject=None, document="a.pdf", options=FaxOptions(),
        meta={}, created_at=NOW - timedelta(minutes=5), updated_at=NOW - timedelta(minutes=1),
        finished_at=None, doc_sha256="x",
    )
    return replace(base, **kw)


def update(outcome: FaxOutcome, **kw: Any) -> Status:
    return Status(StatusUpdate(provider="simulator", provider_id="42", outcome=outcome, **kw))


HELD = {"hold": Hold.RECONCILE, "submit_started_at": NOW - timedelta(minutes=2)}
GONE = {"hold": Hold.UNKNOWN, "next_attempt_at": NOW - timedelta(seconds=1)}
HELD_FRESH = {"hold": Hold.RECONCILE, "submit_started_at": NOW - timedelta(seconds=5)}

# (id, job, outcome, expected state, expected event, reason contains, changes that must be set)
CHANGES: list[tuple[str, Job, Outcome, JobState, str, str | None, dict[str, Any]]] = [
    ("queued+claimed", job(S.QUEUED), Claimed(), S.SUBMITTING, "job.submitting", None,
     {"submit_started_at": NOW}),
    ("submitting+accepted", job(S.SUBMITTING), Accepted("42", "http://cb"), S.SUBMITTED, "job.submitted", None,
     {"provider_id": "42", "callback_url": "http://cb"}),
    ("submitting+transient", job(S.SUBMITTING), SubmitFailed(K.TRANSIENT, "HTTP 503"), S.QUEUED,
     "job.retry_scheduled", "HTTP 503", {"submit_tries": 1}),
    ("submitting+transient-last", job(S.SUBMITTING, submit_tries=3), SubmitFailed(K.TRANSIENT, "HTTP 503"),
     S.FAILED, "job.failed", "gave up after 4 tries: HTTP 503", {"submit_tries": 4}),
    ("submitting+maybe-sent", job(S.SUBMITTING), SubmitFailed(K.TRANSIENT, "timeout", maybe_sent=True),
     S.SUBMITTING, "job.outcome_unknown", "outcome unknown", {"hold": Hold.RECONCILE, "submit_tries": 1}),
    ("submitting+refused", job(S.SUBMITTING), SubmitFailed(K.REFUSED, "Bad number"), S.REJECTED,
     "job.rejected", "Bad number", {}),
    ("submitting+account", job(S.SUBMITTING), SubmitFailed(K.ACCOUNT, "bad credentials.", retry_after=120),
     S.QUEUED, "job.account_problem", "waiting: bad credentials; sending is paused",
     {"next_attempt_at": NOW + timedelta(seconds=120), "hold": None}),
    ("submitting+recovered", job(S.SUBMITTING), Recovered(), S.SUBMITTING, "job.outcome_unknown",
     "after a restart", {"hold": Hold.RECONCILE, "recoveries": 1}),
    ("held+found", job(S.SUBMITTING, **HELD), Reconciled("77"), S.SUBMITTED, "job.reconciled", None,
     {"provider_id": "77", "hold": None}),
    ("held+none-in-grace", job(S.SUBMITTING, **HELD_FRESH), Reconciled(None), S.SUBMITTING,
     "job.reconcile_pending", None, {}),
    ("held+none-after-grace", job(S.SUBMITTING, **HELD), Reconciled(None), S.QUEUED, "job.resend",
     "no record", {"hold": None, "next_attempt_at": NOW}),
    ("held+none-too-many-tries", job(S.SUBMITTING, submit_tries=4, **HELD), Reconciled(None), S.FAILED,
     "job.failed", "never confirmed", {}),
    ("held+none-too-many-tries-keeps-error",
     job(S.SUBMITTING, submit_tries=4, reason=unknown_because("Phaxio is unavailable (HTTP 504)"), **HELD),
     Reconciled(None), S.FAILED, "job.failed", "gave up after 4 tries: Phaxio is unavailable (HTTP 504)", {}),
    ("held+none-poison", job(S.SUBMITTING, recoveries=3, **HELD), Reconciled(None), S.FAILED,
     "job.quarantined", "quarantined", {}),
    ("held+status-pending", job(S.SUBMITTING, **HELD), update(FaxOutcome.PENDING), S.SUBMITTED,
     "job.reconciled", None, {"provider_id": "42"}),
    ("held+status-final", job(S.SUBMITTING, **HELD), update(FaxOutcome.DELIVERED, pages=2, attempts=1),
     S.DELIVERED, "job.delivered", None, {"provider_id": "42"}),
    ("submitted+delivered", job(S.SUBMITTED, provider_id="42"),
     update(FaxOutcome.DELIVERED, pages=2, attempts=2, duration_s=48.0, cost=0.14, status_code=0),
     S.DELIVERED, "job.delivered", None, {"pages": 2, "attempts": 2, "duration_s": 48.0, "cost": 0.14}),
    ("submitted+failed", job(S.SUBMITTED, provider_id="42"),
     update(FaxOutcome.FAILED, reason="No Answer: there was no answer on all 3 attempts", attempts=3),
     S.FAILED, "job.failed", "No Answer", {"attempts": 3}),
    ("submitted+failed-no-reason", job(S.SUBMITTED, provider_id="42"), update(FaxOutcome.FAILED), S.FAILED,
     "job.failed", "without a reason", {}),
    ("submitted+canceled", job(S.SUBMITTED, provider_id="42"), update(FaxOutcome.CANCELED), S.CANCELED,
     "job.canceled", "canceled", {}),
    ("submitted+progress", job(S.SUBMITTED, provider_id="42", attempts=1), update(FaxOutcome.PENDING, attempts=2),
     S.SUBMITTED, "job.progress", None, {"attempts": 2}),
    ("submitted+attention", job(S.SUBMITTED, provider_id="42"),
     update(FaxOutcome.ATTENTION, reason="Credit hold: add credit"), S.SUBMITTED, "job.attention",
     "Credit hold", {}),
    ("queued+cancel", job(S.QUEUED), CancelRequested(), S.CANCELED, "job.canceled", "canceled by the operator", {}),
    ("submitted+cancel", job(S.SUBMITTED, provider_id="42"), CancelRequested(), S.SUBMITTED,
     "job.cancel_requested", None, {"cancel_requested": True}),
    ("submitting+cancel", job(S.SUBMITTING), CancelRequested(), S.SUBMITTING, "job.cancel_requested", None,
     {"cancel_requested": True}),
    ("cancel-failed", job(S.SUBMITTED, provider_id="42", cancel_requested=True), CancelFailed("no cancel API"),
     S.SUBMITTED, "job.cancel_failed", "no cancel API", {"cancel_requested": False}),
    ("failed+retry", job(S.FAILED, provider_id="42", submit_tries=2), RetryRequested(), S.QUEUED, "job.retry",
     "sent again", {"provider_id": None, "submit_tries": 0, "next_attempt_at": NOW}),
    ("canceled+retry", job(S.CANCELED), RetryRequested(), S.QUEUED, "job.retry", "sent again", {}),
    # a fax the provider says it has no record of: held, then given up; cancel and retry act on it
    ("submitted+unknown", job(S.SUBMITTED, provider_id="42"), Unknown("42"), S.SUBMITTED, "job.provider_unknown",
     "the provider has no record of fax 42", {"hold": Hold.UNKNOWN, "next_attempt_at": NOW + timedelta(hours=1)}),
    ("unknown+unknown-after-grace", job(S.SUBMITTED, provider_id="42", **GONE), Unknown("42"), S.FAILED,
     "job.failed", "the provider has no record of fax 42: it was lost at the provider; `faxbridge retry`",
     {"hold": None}),
    ("unknown+status-again", job(S.SUBMITTED, provider_id="42", attempts=1, **GONE),
     update(FaxOutcome.PENDING, attempts=2), S.SUBMITTED, "job.progress", None,
     {"hold": None, "next_attempt_at": None}),
    ("unknown+cancel", job(S.SUBMITTED, provider_id="42", **GONE), CancelRequested(), S.CANCELED, "job.canceled",
     "canceled by the operator (the provider had no record of fax 42)", {"hold": None}),
    ("unknown+retry", job(S.SUBMITTED, provider_id="42", **GONE), RetryRequested(), S.QUEUED, "job.retry",
     "sent again", {"provider_id": None, "hold": None}),
]

IGNORED: list[tuple[str, Job, Outcome, bool]] = [
    ("delivered+status", job(S.DELIVERED, provider_id="42"), update(FaxOutcome.FAILED), False),
    ("failed+status-dup", job(S.FAILED, provider_id="42"), update(FaxOutcome.FAILED), False),
    ("submitted+no-news", job(S.SUBMITTED, provider_id="42"), update(FaxOutcome.PENDING), False),
    ("queued+status", job(S.QUEUED), update(FaxOutcome.DELIVERED), False),
    ("submitted+claimed", job(S.SUBMITTED), Claimed(), False),
    ("queued+accepted", job(S.QUEUED), Accepted("1"), False),
    ("delivered+submit-failed", job(S.DELIVERED), SubmitFailed(K.TRANSIENT, "x"), False),
    ("queued+recovered", job(S.QUEUED), Recovered(), False),
    ("submitted+recovered", job(S.SUBMITTED), Recovered(), False),
    ("not-held+reconciled", job(S.SUBMITTING), Reconciled("1"), False),
    ("delivered+cancel", job(S.DELIVERED), CancelRequested(), True),
    ("submitted+cancel-twice", job(S.SUBMITTED, cancel_requested=True), CancelRequested(), False),
    ("cancel-failed-none-pending", job(S.SUBMITTED), CancelFailed("x"), False),
    ("delivered+retry", job(S.DELIVERED), RetryRequested(), True),
    ("rejected+retry", job(S.REJECTED), RetryRequested(), True),
    ("queued+retry", job(S.QUEUED), RetryRequested(), True),
    ("submitted+retry", job(S.SUBMITTED, provider_id="42"), RetryRequested(), True),
    ("unknown-in-grace", job(S.SUBMITTED, provider_id="42", hold=Hold.UNKNOWN, next_attempt_at=NOW + timedelta(1)),
     Unknown("42"), False),
    ("unknown-other-fax", job(S.SUBMITTED, provider_id="43"), Unknown("42"), False),
    ("queued+unknown", job(S.QUEUED), Unknown("42"), False),
]


@pytest.mark.parametrize(("j", "outcome", "state", "event", "reason", "changes"),
                         [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_transitions(j: Job, outcome: Outcome, state: JobState, event: str, reason: str | None,
                     changes: dict[str, Any]) -> None:
    t = decide(j, outcome, NOW, POLICY)
    assert isinstance(t, Transition), t
    assert (t.state, t.event) == (state, event)
    if reason is None:
        assert t.reason is None or state is j.state  # progress keeps the old reason
    else:
        assert t.reason is not None and reason in t.reason
    for key, value in changes.items():
        assert t.changes[key] == value, key
    if state.final:
        assert t.changes["finished_at"] == NOW
        assert t.final


@pytest.mark.parametrize(("j", "outcome", "refused"), [c[1:] for c in IGNORED], ids=[c[0] for c in IGNORED])
def test_ignored(j: Job, outcome: Outcome, refused: bool) -> None:
    d = decide(j, outcome, NOW, POLICY)
    assert isinstance(d, Ignore)
    assert d.refused is refused


def test_every_state_and_outcome_is_decided_without_error() -> None:
    outcomes: list[Outcome] = [
        Claimed(), Accepted("1"), SubmitFailed(K.TRANSIENT, "t"),
        SubmitFailed(K.TRANSIENT, "t", maybe_sent=True), SubmitFailed(K.REFUSED, "r"),
        SubmitFailed(K.ACCOUNT, "a"), Recovered(), Reconciled(None), Reconciled("1"),
        *(update(o) for o in FaxOutcome), CancelRequested(), CancelFailed("c"), RetryRequested(),
    ]
    for state in JobState:
        for outcome in outcomes:
            d = decide(job(state, **HELD), outcome, NOW, POLICY)
            if state.final and isinstance(d, Transition):
                # the only way out of a final state is an operator's retry
                assert isinstance(outcome, RetryRequested), (state, outcome)


def test_transient_retry_is_delayed_by_backoff() -> None:
    t = decide(job(S.SUBMITTING, submit_tries=2), SubmitFailed(K.TRANSIENT, "503"), NOW, POLICY)
    assert isinstance(t, Transition)
    delay = (t.changes["next_attempt_at"] - NOW).total_seconds()
    assert 4.0 <= delay <= 8.0  # third try: step 8 s, jittered to 50-100 %


def test_retry_after_is_honoured() -> None:
    t = decide(job(S.SUBMITTING), SubmitFailed(K.TRANSIENT, "429", retry_after=30.0), NOW, POLICY)
    assert isinstance(t, Transition)
    assert (t.changes["next_attempt_at"] - NOW).total_seconds() == 30.0


@pytest.mark.parametrize("tries", range(1, 12))
def test_backoff_is_capped_and_jittered(tries: int) -> None:
    step = min(POLICY.retry_max, POLICY.retry_initial * 2 ** (tries - 1))
    values = {backoff(POLICY, tries, f"job{i}") for i in range(20)}
    assert all(step / 2 <= v <= step for v in values)
    assert len(values) > 1  # jobs that fail together spread out
    assert backoff(POLICY, tries, "same") == backoff(POLICY, tries, "same")  # pure


# ---- Hold and FailureKind: members in code, the same text in every database ----------


def test_the_enums_keep_the_words_databases_and_logs_already_hold() -> None:
    assert {h.value for h in Hold} == {"reconcile", "unknown"}
    assert {k.value for k in FailureKind} == {"transient", "refused", "account"}


@pytest.mark.parametrize(("outcome", "hold"), [
    (SubmitFailed(K.TRANSIENT, "timeout", maybe_sent=True), Hold.RECONCILE),
    (Recovered(), Hold.RECONCILE),
])
def test_a_held_submission_is_held_by_the_member(outcome: Outcome, hold: Hold) -> None:
    t = decide(job(S.SUBMITTING), outcome, NOW, POLICY)
    assert isinstance(t, Transition)
    assert t.changes["hold"] is hold


def test_a_fax_unknown_to_the_provider_is_held_by_the_member() -> None:
    t = decide(job(S.SUBMITTED, provider_id="42"), Unknown("42"), NOW, POLICY)
    assert isinstance(t, Transition)
    assert t.changes["hold"] is Hold.UNKNOWN


@pytest.mark.parametrize(("kind", "state", "event"), [
    (K.TRANSIENT, S.QUEUED, "job.retry_scheduled"),
    (K.REFUSED, S.REJECTED, "job.rejected"),
    (K.ACCOUNT, S.QUEUED, "job.account_problem"),
])
def test_each_failure_kind_decides_its_own_way(kind: FailureKind, state: JobState, event: str) -> None:
    t = decide(job(S.SUBMITTING), SubmitFailed(kind, "why"), NOW, POLICY)
    assert isinstance(t, Transition)
    assert (t.state, t.event) == (state, event)


def test_a_hold_written_as_text_reads_back_as_the_member_and_is_stored_as_the_same_text(tmp_path: Path) -> None:
    """A row as every database before the enum holds it (``hold = 'reconcile'``, plain text) reads
    back as ``Hold.RECONCILE`` and is found by the store's queries; a hold the store writes now is
    the same text."""
    job_id = "01JHOLDTEXT000000000000001"

    async def main() -> None:
        store = await open_store(tmp_path, "simulator")
        try:
            await _enqueue(store, job_id)
            raw = sqlite3.connect(tmp_path / "faxbridge.db", isolation_level=None)
            try:
                raw.execute("UPDATE jobs SET state = 'submitting', hold = 'reconcile', submit_started_at = ?, "
                            "next_attempt_at = ? WHERE id = ?", (ts(NOW), ts(NOW), job_id))
            finally:
                raw.close()
            held = await store.get(job_id)
            assert held.state is S.SUBMITTING and held.hold is Hold.RECONCILE
            assert await store.next_due() == NOW                   # found by its hold, due now
            claimed = await store.claim_due("test", NOW + timedelta(seconds=1), 10, 30.0, reconcile=True)
            assert [j.hold for j in claimed] == [Hold.RECONCILE]
            assert await store.abandoned(NOW, "test") == []          # held: not abandoned
            assert await store.next_due() == NOW + timedelta(seconds=31)   # leased: due when the lease ends

            found = decide(held, Reconciled("42"), NOW, POLICY)      # it reached the provider after all
            assert isinstance(found, Transition)
            submitted = await store.apply(held, found, NOW)
            assert submitted.state is S.SUBMITTED and submitted.hold is None
            lost = decide(submitted, Unknown("42"), NOW, POLICY)
            assert isinstance(lost, Transition)
            after = await store.apply(submitted, lost, NOW)
            assert after.hold is Hold.UNKNOWN and (await store.get(job_id)).hold is Hold.UNKNOWN
            assert await store.overdue(NOW - timedelta(days=1)) == 1  # found by its hold, not its age
        finally:
            await store.close()
        raw = sqlite3.connect(tmp_path / "faxbridge.db")
        try:
            assert raw.execute("SELECT hold, typeof(hold) FROM jobs WHERE id = ?", (job_id,)).fetchone() == (
                "unknown", "text")
        finally:
            raw.close()

    asyncio.run(main())


def test_a_hold_is_shown_in_words() -> None:
    from faxbridge.jobview import job_line, job_object, job_text

    held = job(S.SUBMITTING, hold=Hold.RECONCILE, next_attempt_at=NOW)
    assert job_object(held)["hold"].startswith("held: the outcome of the last submission is unknown")
    assert "next try at" in job_text(held, [])
    lost = job(S.SUBMITTED, provider_id="42", hold=Hold.UNKNOWN, next_attempt_at=NOW)
    text = job_text(lost, [])
    assert "held: the provider says it has no record of this fax" in text and "gives up at" in text
    assert "held: unknown to the provider" in job_line(lost)
    assert "held: checking the provider's records" in job_line(held)
