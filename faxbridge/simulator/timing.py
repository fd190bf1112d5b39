"""The call model: what happens to one recipient of one fax, and when. Pure values, no I/O.

Times here are *nominal* seconds since the fax was accepted, as a real network would take
them; the simulator divides them by its ``speed`` to get wall-clock time. A timeline is
decided once, at acceptance, from the destination's last digit (contract section 6):

=====  ===================================================
digit  calls
=====  ===================================================
0-5    delivered on the first attempt
6      busy, then delivered on the redial (2 attempts)
7      no answer on every attempt (3 attempts): failed
8      answered by something that is not a fax: failed, no redial
9      busy on every attempt (3 attempts): failed
=====  ===================================================

Durations: rendering 5 s; a call takes 20 s to connect, then 30 s per page; a busy call 5 s;
an unanswered one 45 s; a call answered by a voice line 20 s + 15 s of listening for a fax
tone; 240 s between redials (Openfax: "3 redial attempts with a 4-minute wait").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

RENDER_S = 5.0
CONNECT_S = 20.0
PER_PAGE_S = 30.0
BUSY_S = 5.0
NO_ANSWER_S = 45.0
NOT_FAX_S = CONNECT_S + 15.0
REDIAL_WAIT_S = 240.0
MAX_ATTEMPTS = 3
COST_PER_PAGE_CENTS = 7


class CallResult(StrEnum):
    DELIVERED = "delivered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    NOT_FAX = "not_fax"
    SIM_LINE_ERROR = "sim_line_error"   # Phaxio test_fail=lineError
    SIM_FAX_ERROR = "sim_fax_error"     # Phaxio test_fail=faxError


class RenderError(StrEnum):
    CONVERSION = "conversion"           # a file that is not a readable document
    MIMETYPE = "mimetype"               # a file of a type that cannot be faxed
    SIMULATED = "simulated"             # test_fail=documentConversionError
    FATAL = "fatal"                     # test_fail=fatalError (fails before dialing)
    GENERAL = "general"                 # test_fail=generalError (fails before dialing)


@dataclass(frozen=True)
class Attempt:
    number: int                  # 1-based: RetryCount in Openfax rows
    start: float
    end: float
    result: CallResult
    connected: float | None      # when the far end answered, None if it never did
    pages_sent: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    """One recipient's calls. ``render_end`` is when dialing may start."""

    render_start: float
    render_end: float
    render_error: RenderError | None
    attempts: tuple[Attempt, ...]

    @property
    def final_at(self) -> float:
        return self.attempts[-1].end if self.attempts else self.render_end

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].result is CallResult.DELIVERED

    @property
    def pages_sent(self) -> int:
        return sum(a.pages_sent for a in self.attempts)

    @property
    def cost_cents(self) -> int:
        return COST_PER_PAGE_CENTS * self.pages_sent


def results_for(number: str) -> tuple[CallResult, ...]:
    """The calls a destination gets, by its last digit."""
    digit = number[-1] if number and number[-1].isdigit() else "0"
    if digit == "6":
        return (CallResult.BUSY, CallResult.DELIVERED)
    if digit == "7":
        return (CallResult.NO_ANSWER,) * MAX_ATTEMPTS
    if digit == "8":
        return (CallResult.NOT_FAX,)
    if digit == "9":
        return (CallResult.BUSY,) * MAX_ATTEMPTS
    return (CallResult.DELIVERED,)


def call(number: int, start: float, result: CallResult, pages: int) -> Attempt:
    if result is CallResult.DELIVERED:
        connected: float | None = start + CONNECT_S
        end = start + CONNECT_S + PER_PAGE_S * max(pages, 1)
        sent = pages
    elif result in (CallResult.BUSY, CallResult.SIM_LINE_ERROR):
        connected, end, sent = None, start + BUSY_S, 0
    elif result is CallResult.NO_ANSWER:
        connected, end, sent = None, start + NO_ANSWER_S, 0
    else:  # NOT_FAX, SIM_FAX_ERROR: answered, but no fax handshake
        connected, end, sent = start + CONNECT_S, start + NOT_FAX_S, 0
    return Attempt(number, start, end, result, connected, sent)


def plan(
    number: str,
    pages: int,
    *,
    render_error: RenderError | None = None,
    results: tuple[CallResult, ...] | None = None,
    delay: float = 0.0,
) -> Timeline:
    """The timeline of one recipient. ``delay``: Phaxio batch_delay before rendering starts."""
    render_end = delay + RENDER_S
    if render_error is not None:
        return Timeline(delay, render_end, render_error, ())
    attempts: list[Attempt] = []
    start = render_end
    for i, result in enumerate(results or results_for(number), start=1):
        attempt = call(i, start, result, pages)
        attempts.append(attempt)
        start = attempt.end + REDIAL_WAIT_S
    return Timeline(delay, render_end, None, tuple(attempts))


class Phase(StrEnum):
    BATCHING = "batching"          # waiting for the batch to fire (Phaxio batch_delay)
    RENDERING = "rendering"
    RINGING = "ringing"            # a call is being placed, not answered yet
    CONNECTED = "connected"        # a call is answered and pages are going
    WAITING_REDIAL = "waiting_redial"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Snapshot:
    """A timeline seen at one moment (nominal seconds since acceptance)."""

    phase: Phase
    rendered: bool
    done: tuple[Attempt, ...]      # attempts finished by now
    started: int                   # attempts started by now
    final_at: float | None         # when it became final, if it is

    @property
    def final(self) -> bool:
        return self.phase in (Phase.DELIVERED, Phase.FAILED, Phase.CANCELED)

    @property
    def last(self) -> Attempt | None:
        return self.done[-1] if self.done else None


def final_time(tl: Timeline, canceled_at: float | None) -> float:
    return tl.final_at if canceled_at is None else min(tl.final_at, canceled_at)


def snapshot(tl: Timeline, elapsed: float, canceled_at: float | None = None) -> Snapshot:
    if canceled_at is not None and canceled_at < tl.final_at and elapsed >= canceled_at:
        done = tuple(a for a in tl.attempts if a.end <= canceled_at)
        started = sum(1 for a in tl.attempts if a.start <= canceled_at)
        return Snapshot(Phase.CANCELED, canceled_at >= tl.render_end, done, started, canceled_at)
    done = tuple(a for a in tl.attempts if a.end <= elapsed)
    started = sum(1 for a in tl.attempts if a.start <= elapsed)
    rendered = elapsed >= tl.render_end
    if elapsed >= tl.final_at:
        phase = Phase.DELIVERED if tl.delivered else Phase.FAILED
        return Snapshot(phase, tl.render_error is None, done, started, tl.final_at)
    if elapsed < tl.render_start:
        phase = Phase.BATCHING
    elif not rendered:
        phase = Phase.RENDERING
    elif started > len(done):
        current = tl.attempts[started - 1]
        answered = current.connected is not None and elapsed >= current.connected
        phase = Phase.CONNECTED if answered else Phase.RINGING
    else:
        phase = Phase.WAITING_REDIAL
    return Snapshot(phase, rendered, done, started, None)
