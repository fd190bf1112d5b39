"""Plain values passed between the parts of faxbridge. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ulid import ULID


def new_job_id() -> str:
    """A fresh job id: a ULID (26 characters, sortable by creation time)."""
    return str(ULID())


class JobState(StrEnum):
    # No job is ever in ``received`` (intake commits a job only once its documents are ready, as
    # ``queued``, or rejects it), but the contract lists it (section 7's job object, and
    # ``faxbridge jobs --state received`` is a valid, empty query): kept for that promise.
    RECEIVED = "received"
    QUEUED = "queued"          # ready; waiting for its turn (or for a retry's backoff)
    SUBMITTING = "submitting"  # the provider call is under way, or its outcome is unknown
    SUBMITTED = "submitted"    # the provider accepted it (provider_id set); not yet final
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.CANCELED})


class Hold(StrEnum):
    """Why a job that is not final waits on something other than its turn (``Job.hold``).

    The store keeps the value as text (``jobs.hold``): the values are what every database
    already holds, so they never change."""

    RECONCILE = "reconcile"
    """A ``submitting`` job whose submission may have reached the provider (a crash, a timeout):
    its records are checked before anything is sent again."""

    UNKNOWN = "unknown"
    """A ``submitted`` job whose fax the provider says it has no record of; ``next_attempt_at``
    is then when the job is given up (ended failed) unless the fax shows up again."""


class Source(StrEnum):
    SMTP = "smtp"
    FOLDER = "folder"
    CLI = "cli"


class Resolution(StrEnum):
    STANDARD = "standard"
    FINE = "fine"


class Paper(StrEnum):
    LETTER = "letter"
    LEGAL = "legal"
    A4 = "a4"


@dataclass(frozen=True)
class FaxOptions:
    """What the sender asked for besides the number and the pages."""

    header: str | None = None
    resolution: Resolution = Resolution.STANDARD
    paper: Paper | None = None          # None: taken from the document's pages
    priority: str = "Normal"            # Openfax: "Normal" | "Low"
    tags: Mapping[str, str] = field(default_factory=dict)
    send_at: datetime | None = None     # contract section 11: not sent before this time (aware, UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "resolution": self.resolution.value,
            "paper": self.paper.value if self.paper else None,
            "priority": self.priority,
            "tags": dict(self.tags),
            "send_at": self.send_at.astimezone(UTC).isoformat() if self.send_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaxOptions:
        return cls(
            header=data.get("header"),
            resolution=Resolution(data.get("resolution") or "standard"),
            paper=Paper(data["paper"]) if data.get("paper") else None,
            priority=data.get("priority") or "Normal",
            tags=dict(data.get("tags") or {}),
            send_at=datetime.fromisoformat(data["send_at"]) if data.get("send_at") else None,
        )


@dataclass(frozen=True)
class InputFile:
    """One document as handed to us: its name (for messages only) and where its bytes are."""

    name: str
    path: Path


@dataclass(frozen=True)
class PreparedDocument:
    """One fax-ready PDF made from the input files."""

    path: Path
    pages: int
    paper: Paper
    sha256: str
    size: int


@dataclass(frozen=True)
class SubmitRequest:
    """One fax, as a provider adapter sends it."""

    job_id: str
    to: str                      # E.164: "+" and digits
    pdf: Path                    # the fax-ready PDF
    filename: str                # a name ending in .pdf, for the multipart part
    pages: int
    paper: Paper
    options: FaxOptions = FaxOptions()
    callback_url: str | None = None


@dataclass(frozen=True)
class SubmitReceipt:
    provider_id: str
    callback_url: str | None = None   # exactly as sent (Phaxio signs callbacks against it)


class FaxOutcome(StrEnum):
    PENDING = "pending"        # not final yet (queued, dialing, waiting for a redial)
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"
    ATTENTION = "attention"    # stuck until the operator acts (e.g. Openfax 11 Credit Hold)

    @property
    def final(self) -> bool:
        return self in (FaxOutcome.DELIVERED, FaxOutcome.FAILED, FaxOutcome.CANCELED)


@dataclass(frozen=True)
class StatusUpdate:
    """What a provider says about one fax, from a webhook or a poll."""

    provider: str
    provider_id: str
    outcome: FaxOutcome
    reason: str | None = None          # words for a person, for failed / attention
    status_code: int | None = None     # the provider's own code (Openfax LastStatus, Phaxio error_id)
    pages: int | None = None
    attempts: int | None = None        # dial attempts so far
    duration_s: float | None = None
    cost: float | None = None          # in the account's currency units (dollars), not cents
    retryable: bool = False            # a later `faxbridge retry` may succeed (busy, no answer)
    job_id: str | None = None          # when the provider echoes our job id (Phaxio tag)
    raw_status: str | None = None      # the provider's status word or state number, for logs
    is_test: bool = False              # the provider says it is a test fax (Phaxio is_test: a test key)


@dataclass(frozen=True)
class PendingFax:
    """A fax we wait on, as the poller hands it to a provider."""

    job_id: str
    provider_id: str
    to: str
    pages: int
    submitted_at: datetime


@dataclass(frozen=True)
class PollResult:
    updates: list[StatusUpdate]
    cursor: str | None = None          # provider-specific; stored and handed back next cycle
    requests: int = 0                  # HTTP requests this poll cost
    unknown: tuple[str, ...] = ()      # provider ids the provider said it has no record of (404)


@dataclass(frozen=True)
class SubmissionLookup:
    """Find a submission whose outcome we do not know (a crash or a timeout after sending)."""

    job_id: str
    to: str
    pages: int
    since: datetime                    # when the submission started
    known_ids: frozenset[str] = frozenset()   # provider ids already owned by other jobs


@dataclass(frozen=True)
class Balance:
    amount: float                      # in currency units (dollars), not cents
    currency: str | None = None


@dataclass(frozen=True)
class JobEvent:
    at: datetime
    state: JobState
    event: str
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewJob:
    """A job as intake hands it to the store (its document is already in the spool)."""

    source: Source
    to: str
    document: str                       # the name the user knows it by ("invoice.pdf")
    options: FaxOptions = FaxOptions()
    sender: str | None = None
    subject: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)   # source-specific: message id, reply address, file paths
    dedup_key: str | None = None        # intake's key for spotting a resent input (SMTP: message id + rcpt + hash)


@dataclass(frozen=True)
class Job:
    id: str
    source: Source
    to: str
    state: JobState
    reason: str | None
    pages: int
    paper: Paper
    attempts: int
    provider: str
    provider_id: str | None
    status_code: int | None
    duration_s: float | None
    cost: float | None
    sender: str | None
    subject: str | None
    document: str
    options: FaxOptions
    meta: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    doc_sha256: str
    submit_tries: int = 0               # provider calls that failed transiently (or ended unknown)
    next_attempt_at: datetime | None = None
    submit_started_at: datetime | None = None
    submitted_at: datetime | None = None
    hold: Hold | None = None            # why the job waits on something other than its turn
    callback_url: str | None = None
    recoveries: int = 0                 # times a restart found this job mid-work
    cancel_requested: bool = False
    version: int = 0
    node: str | None = None             # the daemon that handled it (a shared store, contract 10); None: SQLite

    @property
    def final(self) -> bool:
        return self.state.final
