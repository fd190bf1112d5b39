"""Connection limits of the SMTP listener (contract section 9): session caps, AUTH throttling, log budgets.

- :class:`SessionCaps`: at most ``smtp.max_sessions`` sessions at once, and at most
  ``smtp.max_sessions_per_client`` from one client address. A session over a cap is answered
  ``421 4.7.0`` naming the cap as soon as it connects, and closed (``protocol``).
- :class:`AuthThrottle`: failed AUTH attempts, per connection and per client address. The
  ``smtp.auth_max_failures``-th failure on one connection is answered ``421 4.7.0`` and the
  connection closed (``auth``). Across connections, each failure from an address within
  ``smtp.auth_lockout`` makes that address's next failure answer later (:data:`DELAY_STEP` more
  each time, at most :data:`DELAY_MAX`); after ``smtp.auth_lockout_failures`` failures within that
  window the address may not try AUTH at all (``454 4.7.0``, no password is checked) until the
  window since its last failure has passed. Other addresses are not affected. A success does not
  clear the address's count (one right guess among many wrong ones must not reset the throttle).
- :class:`LogBudget` and :class:`RateLimitFilter`: per-connection log lines (a refused client, a
  session over a cap, a timeout, an AUTH failure, aiosmtpd's warnings, asyncio's accept errors) are
  limited to a burst per interval, so a flood of connections cannot flood the log; the next line
  let through says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from faxbridge.ingress.smtp.replies import AUTH_LOCKED, TOO_MANY_FROM_CLIENT, TOO_MANY_SESSIONS

DELAY_STEP = 0.5
DELAY_MAX = 5.0


class SessionCaps:
    """Sessions open now, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def admit(self, host: str | None) -> str | None:
        """Count a new session in and return None, or return the 421 reply for a session over a cap."""
        key = host or "?"
        if self.open >= self.total:
            return TOO_MANY_SESSIONS.format(limit=self.total)
        if self.by_client[key] >= self.per_client:
            return TOO_MANY_FROM_CLIENT.format(limit=self.per_client)
        self.open += 1
        self.by_client[key] += 1
        return None

    def release(self, host: str | None) -> None:
        key = host or "?"
        self.open = max(0, self.open - 1)
        self.by_client[key] -= 1
        if self.by_client[key] <= 0:
            del self.by_client[key]


class AuthThrottle:
    """Failed AUTH attempts by client address, over the last ``window`` seconds."""

    def __init__(self, lockout: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 step: float = DELAY_STEP, maximum: float = DELAY_MAX) -> None:
        self.clock = clock
        self.lockout = lockout
        self.window = window
        self.step = step
        self.maximum = maximum
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, host: str) -> deque[float]:
        times = self._failures.get(host)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[host]
        return times

    def locked(self, host: str | None) -> str | None:
        """The 454 reply while ``host`` is locked out, else None."""
        times = self._recent(host or "?")
        if len(times) < self.lockout:
            return None
        minutes = max(1, round((times[-1] + self.window - self.clock()) / 60))
        return AUTH_LOCKED.format(minutes=minutes)

    def failed(self, host: str | None) -> float:
        """Record a failure; returns how long to wait before answering it (seconds)."""
        key = host or "?"
        before = len(self._recent(key))
        self._failures.setdefault(key, deque()).append(self.clock())
        if len(self._failures) > 10_000:           # bounded: forget the address seen longest ago
            del self._failures[next(iter(self._failures))]
        return min(self.maximum, self.step * before)


class LogBudget:
    """At most ``burst`` lines per ``interval`` seconds; ``take()`` says whether this one may go, and
    how many were left out since the last one that went."""

    def __init__(self, burst: int = 20, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._used = 0
        self.suppressed = 0

    def take(self) -> tuple[bool, int]:
        now = self.clock()
        if now - self._start >= self.interval:
            self._start, self._used = now, 0
        if self._used >= self.burst:
            self.suppressed += 1
            return False, 0
        self._used += 1
        left_out, self.suppressed = self.suppressed, 0
        return True, left_out


class RateLimitFilter(logging.Filter):
    """A :class:`LogBudget` as a logging filter (for aiosmtpd's ``mail.log`` and asyncio's accept errors)."""

    def __init__(self, burst: int = 20, interval: float = 10.0) -> None:
        super().__init__()
        self.budget = LogBudget(burst, interval)

    def filter(self, record: logging.LogRecord) -> bool:
        ok, left_out = self.budget.take()
        if ok and left_out:
            record.msg = f"{record.msg} ({left_out} similar lines left out)"
        return ok


def limit_logger(name: str) -> None:
    """Put one :class:`RateLimitFilter` on the logger ``name`` (once, however often it is called)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter())
