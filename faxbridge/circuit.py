"""A circuit breaker per provider: a small pure state machine, the clock passed in.

::

            N transient failures in a row          the backoff has passed
    CLOSED ───────────────────────────────▶ OPEN ─────────────────────────▶ HALF-OPEN
      ▲  ▲                                   ▲                               │  one probe
      │  └─────────── the probe succeeds ────┼───────────────────────────────┤  submission
      │                                      └── the probe fails (backoff ×2)┘
      └── a success resets the count

- Only failures *before the provider took the fax* count (connection errors, timeouts, 5xx, 429:
  the dispatcher's ``TransientProviderError``); an answer about the fax itself (accepted, refused,
  an account problem) is the provider answering: :meth:`Circuit.succeeded`.
- ``available(now)`` says whether a new submission may go to this provider now: always when closed;
  never while open before ``reopen_at``; half-open (the backoff over), to one probe at a time:
  :meth:`Circuit.begin` marks it taken, and the next verdict (or :meth:`Circuit.release`, a call
  that ended with no verdict) frees it.
- Each failed probe doubles the backoff, up to ``open_max_s``; closing resets it.

Times are seconds on a monotonic clock (``Clock.monotonic()``), handed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class Circuit:
    failures_to_open: int = 3         # provider.circuit_failures
    open_s: float = 30.0              # provider.circuit_open: the first backoff before a probe
    open_max_s: float = 600.0         # ... doubling after each failed probe, up to this
    failures: int = 0                 # transient failures in a row
    opened: bool = False              # open or half-open (see state())
    reopen_at: float = 0.0            # when the open circuit lets a probe through
    backoff: float = 0.0              # the backoff now in force (0: closed)
    probing: bool = False             # a probe submission is under way
    opened_count: int = 0             # times it opened (a counter, for metrics)

    def state(self, now: float) -> CircuitState:
        if not self.opened:
            return CircuitState.CLOSED
        return CircuitState.HALF_OPEN if now >= self.reopen_at else CircuitState.OPEN

    def available(self, now: float) -> bool:
        """Whether a new submission may go to this provider now (see the module docstring)."""
        state = self.state(now)
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self.probing)

    def begin(self, now: float) -> bool:
        """A submission goes to this provider; True when it is the half-open circuit's probe."""
        if self.state(now) is CircuitState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self, now: float) -> None:
        """The provider answered (took the fax, or answered about it): the circuit closes."""
        self.failures = 0
        self.opened = self.probing = False
        self.backoff = 0.0

    def failed(self, now: float) -> None:
        """A transient failure before the provider took the fax."""
        self.failures += 1
        if self.opened:
            if self.state(now) is CircuitState.HALF_OPEN:       # the probe (or a late call) failed
                self.backoff = min(self.open_max_s, max(self.open_s, self.backoff * 2))
                self.reopen_at = now + self.backoff
            self.probing = False
            return
        if self.failures >= self.failures_to_open:
            self.opened = True
            self.opened_count += 1
            self.backoff = self.open_s
            self.reopen_at = now + self.backoff

    def release(self) -> None:
        """A call that ended with no verdict on the provider (our own error): the probe slot is free."""
        self.probing = False
