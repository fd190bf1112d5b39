"""Per-fax options (CONTRACT §11), read from any channel into one :class:`Asked`. Pure.

The same options come by mail header, address flag, control file key and ``faxbridge send`` option;
each channel names them its own way (:data:`MAIL`, :data:`CONTROL`, :data:`CLI`), and every refusal
names the header, flag or key as the sender wrote it and the values it takes:

    X-Fax-Resolution: expected fine or standard, got 'ultra'

- resolution: ``fine`` | ``standard``; paper: ``letter`` | ``legal`` | ``a4``; cover (mail only):
  ``never`` | ``if-body`` | ``always``; priority: ``Normal`` | ``Low`` (any case).
- header text: printable, at most the provider's header limit (Openfax 15, Phaxio 50).
- send later: RFC 3339 (``2026-12-03T09:00:00+01:00``) or ``YYYY-MM-DD HH:MM`` in ``time_zone``;
  a time in the past sends at once (None); more than :data:`MAX_AHEAD` ahead is refused.
- Address flags: ``NUMBER+FLAG@DOMAIN``, several allowed (``+fine+a4``), each one of
  :data:`FLAGS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from typing import Any

from faxbridge.errors import InputError
from faxbridge.models import FaxOptions, Paper, Resolution

MAX_AHEAD = timedelta(days=30)
COVERS = ("never", "if-body", "always")
PRIORITIES = ("Normal", "Low")


class OptionError(InputError):
    """An option with a value it cannot take; the message names the header, flag or key."""


@dataclass(frozen=True)
class Asked:
    """What one mail, file or command asked for; None: not asked (the configuration decides)."""

    resolution: Resolution | None = None
    paper: Paper | None = None
    header: str | None = None
    cover: str | None = None
    priority: str | None = None
    send_at: datetime | None = None

    def options(self, base: FaxOptions | None = None) -> FaxOptions:
        """``base`` (default: no options) with what was asked for laid over it."""
        changes: dict[str, Any] = {k: v for k, v in (
            ("resolution", self.resolution), ("paper", self.paper), ("header", self.header),
            ("priority", self.priority), ("send_at", self.send_at)) if v is not None}
        return replace(base or FaxOptions(), **changes)


@dataclass(frozen=True)
class Names:
    """How one channel names each option (for the words of a refusal)."""

    resolution: str
    paper: str
    header: str
    cover: str
    priority: str
    send_at: str
    fields: Mapping[str, str] = field(default_factory=dict)   # the channel's key -> our field


MAIL = Names("X-Fax-Resolution", "X-Fax-Paper", "X-Fax-Header", "X-Fax-Cover", "X-Fax-Priority", "X-Fax-Send-At",
             {"x-fax-resolution": "resolution", "x-fax-paper": "paper", "x-fax-header": "header",
              "x-fax-cover": "cover", "x-fax-priority": "priority", "x-fax-send-at": "send_at"})
CONTROL = Names("resolution", "paper", "header", "cover", "priority", "send_at",
                {"resolution": "resolution", "paper": "paper", "header": "header", "priority": "priority",
                 "send_at": "send_at"})
CLI = Names("--fine", "--paper", "--header", "--cover", "--low", "--at")

FLAGS: Mapping[str, tuple[str, str]] = {
    "fine": ("resolution", "fine"), "standard": ("resolution", "standard"),
    "letter": ("paper", "letter"), "legal": ("paper", "legal"), "a4": ("paper", "a4"),
    "cover": ("cover", "always"), "nocover": ("cover", "never"), "low": ("priority", "Low"),
}


def _one_of(name: str, value: str, choices: Sequence[str]) -> str:
    for choice in choices:
        if value.strip().lower() == choice.lower():
            return choice
    allowed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    raise OptionError(f"{name}: expected {allowed}, got {value.strip()!r}")


def header_text(name: str, value: str, limit: int | None) -> str:
    text = " ".join(value.split())
    if any(not ch.isprintable() for ch in text):
        raise OptionError(f"{name}: may hold printable characters only")
    if limit is not None and len(text) > limit:
        raise OptionError(f"{name}: at most {limit} characters for this fax provider, got {len(text)}")
    return text


_LOCAL = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})")


def send_at(name: str, value: str, *, zone: tzinfo, now: datetime) -> datetime | None:
    """The time a fax is to go (UTC), None for "now" (a time in the past); refused past MAX_AHEAD."""
    text = value.strip()
    when: datetime | None = None
    local = _LOCAL.fullmatch(text)
    try:
        if local is not None:
            year, month, day, hour, minute = map(int, local.groups())
            when = datetime(year, month, day, hour, minute, tzinfo=zone)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})", text):
            when = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None:
        raise OptionError(f"{name}: expected a time such as 2026-12-03T09:00:00+01:00 (RFC 3339) or "
                          f"2026-12-03 09:00 (in the server's time zone), got {text!r}")
    if when <= now:
        return None
    if when - now > MAX_AHEAD:
        raise OptionError(f"{name}: at most {MAX_AHEAD.days} days ahead, got {text!r}")
    return when.astimezone(now.tzinfo)


def read(values: Mapping[str, str], names: Names, *, zone: tzinfo, now: datetime,
         header_limit: int | None, flags: Sequence[str] = ()) -> Asked:
    """The options in ``values`` (our field names as keys: "resolution", "paper", ...), then the
    address ``flags`` (a flag and a header asking different things: the header wins)."""
    asked: dict[str, Any] = {}
    for flag in flags:
        key = flag.strip().lower()
        if key not in FLAGS:
            raise OptionError(f"+{flag}: not a fax option; the address flags are "
                              + ", ".join(f"+{f}" for f in FLAGS))
        what, value = FLAGS[key]
        asked[what] = value
    for what, value in values.items():
        asked[what] = value
    out: dict[str, Any] = {}
    if "resolution" in asked:
        out["resolution"] = Resolution(_one_of(names.resolution, asked["resolution"], ("fine", "standard")))
    if "paper" in asked:
        out["paper"] = Paper(_one_of(names.paper, asked["paper"], ("letter", "legal", "a4")))
    if "header" in asked:
        out["header"] = header_text(names.header, asked["header"], header_limit)
    if "cover" in asked:
        out["cover"] = _one_of(names.cover, asked["cover"], COVERS)
    if "priority" in asked:
        out["priority"] = _one_of(names.priority, asked["priority"], PRIORITIES)
    if "send_at" in asked:
        out["send_at"] = send_at(names.send_at, asked["send_at"], zone=zone, now=now)
    return Asked(**out)


def from_headers(headers: Mapping[str, str], *, zone: tzinfo, now: datetime, header_limit: int | None,
                 flags: Sequence[str] = ()) -> Asked:
    """A mail's ``X-Fax-*`` headers (any case) and its recipient's address flags."""
    values = {MAIL.fields[name.lower()]: value for name, value in headers.items() if name.lower() in MAIL.fields}
    return read(values, MAIL, zone=zone, now=now, header_limit=header_limit, flags=flags)


def split_flags(local_part: str) -> tuple[str, list[str]]:
    """``15555551212+fine+a4`` -> (``15555551212``, ["fine", "a4"]); a leading ``+`` is the number's."""
    lead = "+" if local_part.startswith("+") else ""
    number, *flags = local_part[len(lead):].split("+")
    return lead + number, [f for f in flags if f]
