"""Time, injected: the real clock and a fake one for tests of pure code."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)
        self._mono += seconds


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, seconds precision: 2026-11-22T10:00:00Z."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(dt: datetime | None) -> str | None:
    """Sortable UTC text with microseconds, as the job store keeps times: 2026-11-22T10:00:00.000000Z
    (:func:`parse_iso` reads it back)."""
    if dt is None:
        return None
    utc = dt.astimezone(UTC)
    if utc.year < 1000:          # strftime does not pad such a year; isoformat would
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"    # the same text, a third faster


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def shown_time(at: datetime | None) -> str:
    """A time for a person: in this host's time zone, to the second, with the zone's name."""
    if at is None:
        return "-"
    local = at.astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or local.strftime('%z')}"
