"""What the simulator remembers: the faxes it accepted, and the notifications it owes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from faxbridge.simulator.timing import Snapshot, Timeline, final_time, snapshot


@dataclass(frozen=True)
class SimSend:
    """One fax the simulator accepted (either protocol), as tests inspect it.

    ``pdf_sha256``/``pdf_size`` cover the uploaded bytes: the one file, or all files
    concatenated in order when a Phaxio request carried several. ``to`` is the first
    recipient; ``recipients`` has them all (Phaxio ``to[]``).
    """

    provider: str                      # "phaxio" | "openfax" | "sinch"
    id: str
    to: str                            # E.164
    pdf_sha256: str
    pdf_size: int
    pages: int                         # 0 when the document cannot be rendered
    tags: Mapping[str, str]
    job_tag: str | None                # tags.get("faxbridge_job")
    header: str | None                 # Phaxio header_text; Openfax fromHeader/frHeader
    resolution: str | None             # "standard" | "fine" (Openfax); None for Phaxio
    paper: str | None                  # "letter" | "legal" | "a4" (Openfax); None for Phaxio
    accepted_at: datetime
    to_header: str | None = None       # Openfax toHeader
    priority: str | None = None        # Openfax Priority
    callback_url: str | None = None    # Phaxio callback_url, exactly as submitted
    filenames: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    api_version: str | None = None     # Phaxio "v2" | "v2.1"; Sinch "v3"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = dict(self.tags)
        data["accepted_at"] = self.accepted_at.isoformat()
        data["filenames"] = list(self.filenames)
        data["recipients"] = list(self.recipients)
        return data


@dataclass(frozen=True)
class PostbackTarget:
    """Where Openfax postbacks go (the portal setting): a form POST, or a GET with a query."""

    url: str
    method: str = "POST"


@dataclass
class SimRecipient:
    number: str                        # E.164
    timeline: Timeline


@dataclass
class SimFax:
    provider: str
    id: str
    account: str
    accepted_at: datetime
    speed: float
    recipients: list[SimRecipient]
    send: SimSend
    pages: int
    api_version: str = ""              # Phaxio: "v2" | "v2.1"
    caller_id: str | None = None
    is_test: bool = False
    callback_url: str | None = None
    canceled_at: float | None = None   # nominal seconds since acceptance
    cancel_reason: str | None = None
    cancel_timeout_s: float | None = None
    finalized: bool = False            # the scheduler has seen it final (notification queued)
    callback_json: bool = False        # Sinch: callbackUrlContentType application/json
    account_project: str | None = None  # Sinch: the project id it was sent under
    history: set[int] = field(default_factory=set)   # Openfax: attempt numbers already reported

    def elapsed(self, now: datetime) -> float:
        # one microsecond of slack: real() rounds to whole microseconds, and an event must be
        # seen as happened at the very instant real() names for it
        return ((now - self.accepted_at).total_seconds() + 1e-6) * self.speed

    def real(self, nominal: float) -> datetime:
        return self.accepted_at + timedelta(seconds=nominal / self.speed)

    def effective_cancel(self) -> float | None:
        times = [t for t in (self.canceled_at, self.cancel_timeout_s) if t is not None]
        return min(times) if times else None

    def final_nominal(self) -> float:
        cancel = self.effective_cancel()
        return max(final_time(r.timeline, cancel) for r in self.recipients)

    def final_real(self) -> datetime:
        return self.real(self.final_nominal())

    def snapshot(self, recipient: SimRecipient, now: datetime) -> Snapshot:
        return snapshot(recipient.timeline, self.elapsed(now), self.effective_cancel())

    def is_final(self, now: datetime) -> bool:
        return self.elapsed(now) >= self.final_nominal()

    def canceled_by_timeout(self) -> bool:
        return self.cancel_timeout_s is not None and (
            self.canceled_at is None or self.cancel_timeout_s < self.canceled_at)


@dataclass
class Notification:
    """A webhook the simulator owes: Phaxio or Sinch callback, or Openfax postback."""

    key: tuple[str, str]               # (provider, fax id)
    url: str
    method: str                        # "POST" | "GET"
    fields: list[tuple[str, str]]
    multipart: bool                    # Phaxio: multipart/form-data; Openfax: urlencoded
    signature: str | None = None       # X-Phaxio-Signature
    attempts: int = 0
    json_body: str | None = None       # Sinch with callbackUrlContentType application/json: the body
