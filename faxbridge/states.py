"""The job state machine: ``decide(job, outcome, now, policy) -> Transition | Ignore``.

Pure: values in, values out. Every change of a stored job's state goes through here, and
the store applies the returned transition in one transaction (with an event row, and an
outbox row when the job becomes final). A job is born by the store: ``queued`` (intake
committed it) or, for an input that cannot be sent at all, ``rejected`` (``reject``).

States (contract section 7; ``received`` is listed there but no job is in it: intake
commits a job only once its documents are ready)::

    enqueue ──▶ queued ──claim──▶ submitting ──accepted──▶ submitted ──final status──▶ delivered
                ▲ ▲ ▲                │ │ │                    │                        failed
                │ │ └──transient─────┘ │ └─unknown outcome──▶ submitting, hold reconcile:   canceled
                │ │    (backoff)       │     found ──▶ submitted; no record after grace ──▶ queued
                │ └────account─────────┤                      │
                │    (sending paused)  └─refused──▶ rejected  └─no record─▶ submitted, hold unknown
                │                                                           ──after grace──▶ failed
                └──────────── retry (operator) ◀── failed, canceled (or hold unknown)
    reject ──▶ rejected                (an input that cannot be sent at all)

A ``submitting`` job is never sent again blindly: after a crash or a timeout it is held
and checked against the provider's records first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from faxbridge.models import FaxOutcome, Hold, Job, JobState, StatusUpdate


@dataclass(frozen=True)
class Policy:
    submit_retries: int = 5
    retry_initial: float = 2.0
    retry_max: float = 300.0
    reconcile_grace: float = 60.0
    max_recoveries: int = 5
    unknown_grace: float = 3600.0    # a fax the provider says it has no record of ends the job after this


TEST_FAX = ("a test fax: the provider marked it is_test (a test API key in use?); "
            "test faxes are not really sent")

OVERDUE_S = 86400.0
"""A fax the provider accepted this long ago and has not finished is *overdue* (``/healthz`` warns,
``faxbridge_jobs_overdue`` counts it), as is one the provider has no record of."""


class FailureKind(StrEnum):
    """What kind of failure a failed provider call was (:class:`SubmitFailed`)."""

    TRANSIENT = "transient"    # worth another try after a backoff (or a reconcile, when maybe sent)
    REFUSED = "refused"        # the provider refused this fax: the job is rejected
    ACCOUNT = "account"        # the account cannot send: the job waits while sending is paused


# ---- outcomes: what happened to a job -------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """The dispatcher is about to call the provider; ``provider`` names the one it calls (routing
    and failover, contract section 14), recorded on the job before the call so that an outcome
    never known is reconciled with that provider. None: the job keeps the provider it has."""

    provider: str | None = None


@dataclass(frozen=True)
class Accepted:
    provider_id: str
    callback_url: str | None = None


@dataclass(frozen=True)
class SubmitFailed:
    kind: FailureKind
    reason: str
    retry_after: float | None = None
    maybe_sent: bool = False


@dataclass(frozen=True)
class Status:
    update: StatusUpdate


@dataclass(frozen=True)
class Recovered:
    """A restart found the job mid-work (its worker died), or the running dispatcher found it
    abandoned mid-submission (a store failure after the provider was called)."""

    when: str = "after a restart"


@dataclass(frozen=True)
class Reconciled:
    provider_id: str | None        # None: the provider has no record of it (yet)


@dataclass(frozen=True)
class CancelRequested:
    by: str = "the operator"


@dataclass(frozen=True)
class CancelFailed:
    """The provider could not cancel the fax; it goes on."""

    reason: str


@dataclass(frozen=True)
class RetryRequested:
    by: str = "the operator"


@dataclass(frozen=True)
class SendNow:
    """Send a job waiting for its ``send_at`` now (the console's "send now")."""

    by: str = "the operator"


@dataclass(frozen=True)
class Unknown:
    """The provider says it has no record of the job's fax (a 404, absent from its records)."""

    provider_id: str


Outcome = (
    Claimed | Accepted | SubmitFailed | Status | Recovered | Reconciled
    | CancelRequested | CancelFailed | RetryRequested | SendNow | Unknown
)


# ---- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    state: JobState
    event: str                                   # stable event name, e.g. "job.submitted"
    reason: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)   # other job fields to set

    @property
    def final(self) -> bool:
        return self.state.final


@dataclass(frozen=True)
class Ignore:
    """Nothing changes. ``refused`` is True when a person asked for something impossible."""

    why: str
    refused: bool = False


Decision = Transition | Ignore


# ---- helpers ---------------------------------------------------------------------------


def backoff(policy: Policy, tries: int, job_id: str, retry_after: float | None = None) -> float:
    """Capped exponential backoff with deterministic jitter (50-100% of the step).

    The jitter comes from the job id and the try number, so decide stays pure and jobs that
    failed together spread out. A provider's Retry-After is honoured (never retried sooner).
    """
    step = min(policy.retry_max, policy.retry_initial * float(2 ** max(0, tries - 1)))
    digest = hashlib.sha256(f"{job_id}:{tries}".encode()).digest()
    jitter = 0.5 + (int.from_bytes(digest[:4], "big") / 0xFFFFFFFF) * 0.5
    delay: float = step * jitter
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _at(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _final_from_status(job: Job, u: StatusUpdate, now: datetime) -> Transition:
    state = {
        FaxOutcome.DELIVERED: JobState.DELIVERED,
        FaxOutcome.FAILED: JobState.FAILED,
        FaxOutcome.CANCELED: JobState.CANCELED,
    }[u.outcome]
    changes: dict[str, Any] = {"finished_at": now, "hold": None, "next_attempt_at": None}
    if u.provider_id and not job.provider_id:
        changes["provider_id"] = u.provider_id
    for name in ("pages", "attempts", "duration_s", "cost", "status_code"):
        value = getattr(u, name)
        if value is not None:
            changes[name] = value
    reason = u.reason if state is not JobState.DELIVERED else None
    if state is JobState.CANCELED and not reason:
        reason = "canceled at the provider"
    if state is JobState.FAILED and not reason:
        reason = "the provider reported the fax as failed without a reason"
    return Transition(state, f"job.{state.value}", reason, changes)


_UNKNOWN = ("outcome unknown (", "); checking with the provider before resending")


def unknown_because(error: str) -> str:
    """The reason a job holds while a submission that may have gone out is reconciled."""
    return f"{_UNKNOWN[0]}{error}{_UNKNOWN[1]}"


def last_error(reason: str | None) -> str | None:
    """The provider error inside :func:`unknown_because`'s words (None for any other reason)."""
    if reason and reason.startswith(_UNKNOWN[0]) and reason.endswith(_UNKNOWN[1]):
        return reason[len(_UNKNOWN[0]):-len(_UNKNOWN[1])]
    return None


# ---- decide ----------------------------------------------------------------------------


def decide(job: Job, outcome: Outcome, now: datetime, policy: Policy) -> Decision:
    s = job.state
    match outcome:
        case Claimed(provider=provider):
            if s is JobState.QUEUED:
                claim: dict[str, Any] = {"submit_started_at": now, "next_attempt_at": None, "hold": None}
                if provider is not None:
                    claim["provider"] = provider
                return Transition(JobState.SUBMITTING, "job.submitting", None, claim)
            return Ignore(f"job is {s.value}, not queued")

        case Accepted(provider_id=pid, callback_url=cb):
            if s is JobState.SUBMITTING:
                return Transition(
                    JobState.SUBMITTED, "job.submitted", None,
                    {"provider_id": pid, "callback_url": cb, "submitted_at": now, "hold": None,
                     "next_attempt_at": None},
                )
            return Ignore(f"job is {s.value}, not submitting")

        case SubmitFailed(kind=kind, reason=reason, retry_after=retry_after, maybe_sent=maybe_sent):
            if s is not JobState.SUBMITTING:
                return Ignore(f"job is {s.value}, not submitting")
            if kind is FailureKind.REFUSED:
                return Transition(JobState.REJECTED, "job.rejected", reason,
                                  {"finished_at": now, "hold": None})
            if kind is FailureKind.ACCOUNT:
                # The account, not this fax: the job waits while sending is paused (the
                # dispatcher alerts and tries again); it is not failed for a problem of the account.
                return Transition(
                    JobState.QUEUED, "job.account_problem",
                    f"waiting: {reason.rstrip('.')}; sending is paused and is tried again every few minutes",
                    {"hold": None, "next_attempt_at": _at(now, retry_after if retry_after is not None else 60.0)})
            tries = job.submit_tries + 1
            if maybe_sent:
                # The request may have reached the provider: find out before sending again.
                return Transition(
                    JobState.SUBMITTING, "job.outcome_unknown", unknown_because(reason),
                    {"submit_tries": tries, "hold": Hold.RECONCILE,
                     "next_attempt_at": _at(now, min(backoff(policy, tries, job.id, retry_after),
                                                     policy.reconcile_grace))},
                )
            if tries > policy.submit_retries:
                return Transition(
                    JobState.FAILED, "job.failed",
                    f"gave up after {tries} tries: {reason}", {"submit_tries": tries, "finished_at": now},
                )
            return Transition(
                JobState.QUEUED, "job.retry_scheduled", reason,
                {"submit_tries": tries,
                 "next_attempt_at": _at(now, backoff(policy, tries, job.id, retry_after))},
            )

        case Recovered(when=when):
            if s is not JobState.SUBMITTING:
                return Ignore(f"job is {s.value}: nothing to recover")
            return Transition(
                JobState.SUBMITTING, "job.outcome_unknown",
                f"outcome unknown {when}; checking with the provider before resending",
                {"recoveries": job.recoveries + 1, "hold": Hold.RECONCILE, "next_attempt_at": now},
            )

        case Reconciled(provider_id=pid):
            if s is not JobState.SUBMITTING or job.hold is not Hold.RECONCILE:
                return Ignore(f"job is {s.value}, not awaiting reconciliation")
            if pid is not None:
                return Transition(
                    JobState.SUBMITTED, "job.reconciled", None,
                    {"provider_id": pid, "submitted_at": now, "hold": None, "next_attempt_at": None},
                )
            started = job.submit_started_at or job.updated_at
            if (now - started).total_seconds() < policy.reconcile_grace:
                return Transition(
                    JobState.SUBMITTING, "job.reconcile_pending", job.reason,
                    {"next_attempt_at": _at(now, min(policy.reconcile_grace / 4, 30.0))},
                )
            if job.recoveries > policy.max_recoveries:
                return Transition(
                    JobState.FAILED, "job.quarantined",
                    f"quarantined: faxbridge stopped {job.recoveries} times while sending this job; "
                    "check the logs, then `faxbridge retry` it",
                    {"finished_at": now, "hold": None},
                )
            if job.submit_tries > policy.submit_retries:
                return Transition(
                    JobState.FAILED, "job.failed",
                    f"gave up after {job.submit_tries} tries: "
                    f"{last_error(job.reason) or 'the provider never confirmed the fax'}",
                    {"finished_at": now, "hold": None},
                )
            return Transition(
                JobState.QUEUED, "job.resend",
                "the provider has no record of the earlier attempt; sending again",
                {"hold": None, "next_attempt_at": now},
            )

        case Status(update=u):
            if s.final:
                return Ignore(f"job is already {s.value}")
            if s not in (JobState.SUBMITTED, JobState.SUBMITTING):
                return Ignore(f"job is {s.value}: not at the provider")
            if u.outcome.final:
                final = _final_from_status(job, u, now)
                if u.is_test and final.state is JobState.DELIVERED and final.reason is None:
                    final = Transition(final.state, final.event, TEST_FAX, final.changes)
                return final
            if u.is_test and job.reason != TEST_FAX and s is JobState.SUBMITTED:
                return Transition(s, "job.provider_test", TEST_FAX, {})
            changes: dict[str, Any] = {}
            if s is JobState.SUBMITTING and u.provider_id and job.hold is Hold.RECONCILE:
                return Transition(
                    JobState.SUBMITTED, "job.reconciled", None,
                    {"provider_id": u.provider_id, "submitted_at": now, "hold": None,
                     "next_attempt_at": None},
                )
            if job.hold is Hold.UNKNOWN:
                changes.update({"hold": None, "next_attempt_at": None})   # it is known again
            if u.attempts is not None and u.attempts != job.attempts:
                changes["attempts"] = u.attempts
            if u.outcome is FaxOutcome.ATTENTION and u.reason and u.reason != job.reason:
                return Transition(s, "job.attention", u.reason, changes)
            if changes:
                return Transition(s, "job.progress", job.reason, changes)
            return Ignore("no news")

        case Unknown(provider_id=pid):
            if s is not JobState.SUBMITTED or job.provider_id != pid:
                return Ignore(f"job is {s.value} with fax {job.provider_id}")
            if job.hold is not Hold.UNKNOWN or job.next_attempt_at is None:
                until = _at(now, policy.unknown_grace)
                return Transition(
                    s, "job.provider_unknown",
                    f"the provider has no record of fax {pid}; it is given up at {until:%Y-%m-%d %H:%M} UTC "
                    "unless it shows up again (`faxbridge retry` or `cancel` act on it now)",
                    {"hold": Hold.UNKNOWN, "next_attempt_at": until})
            if now < job.next_attempt_at:
                return Ignore("the provider still has no record; waiting")
            return Transition(
                JobState.FAILED, "job.failed",
                f"the provider has no record of fax {pid}: it was lost at the provider; "
                "`faxbridge retry` sends it again",
                {"finished_at": now, "hold": None, "next_attempt_at": None})

        case CancelRequested(by=by):
            if s.final:
                return Ignore(f"job is already {s.value}", refused=True)
            if s is JobState.SUBMITTED and job.hold is Hold.UNKNOWN:
                return Transition(JobState.CANCELED, "job.canceled",
                                  f"canceled by {by} (the provider had no record of fax {job.provider_id})",
                                  {"finished_at": now, "next_attempt_at": None, "hold": None})
            if s is JobState.QUEUED:
                return Transition(JobState.CANCELED, "job.canceled", f"canceled by {by}",
                                  {"finished_at": now, "next_attempt_at": None})
            if job.cancel_requested:
                return Ignore("cancel already requested")
            return Transition(s, "job.cancel_requested", job.reason, {"cancel_requested": True})

        case CancelFailed(reason=reason):
            if s.final or not job.cancel_requested:
                return Ignore("no cancel pending")
            return Transition(s, "job.cancel_failed", f"cannot cancel: {reason}", {"cancel_requested": False})

        case RetryRequested(by=by):
            stuck = s is JobState.SUBMITTED and job.hold is Hold.UNKNOWN
            if s not in (JobState.FAILED, JobState.CANCELED) and not stuck:
                return Ignore(f"only failed or canceled jobs, or one whose fax the provider has no record of, "
                              f"can be retried; this one is {s.value}", refused=True)
            return Transition(
                JobState.QUEUED, "job.retry", f"sent again by {by}",
                {"submit_tries": 0, "provider_id": None, "callback_url": None, "hold": None,
                 "finished_at": None, "next_attempt_at": now, "recoveries": 0, "status_code": None,
                 "cancel_requested": False, "submitted_at": None, "submit_started_at": None},
            )
        case SendNow(by=by):
            if s is not JobState.QUEUED or job.options.send_at is None or job.options.send_at <= now:
                return Ignore(f"only a queued job waiting for its send time can be sent now; this one is "
                              f"{s.value}" + (" and not waiting" if s is JobState.QUEUED else ""), refused=True)
            return Transition(JobState.QUEUED, "job.send_now", f"sent now by {by} (it was to go at a later time)",
                              {"next_attempt_at": now, "options": replace(job.options, send_at=None)})
    raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover
