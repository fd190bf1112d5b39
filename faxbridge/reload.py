"""SIGHUP: which configuration changes apply live, and which wait for a restart. Pure.

Live: who may send (``smtp.allowed_senders``, ``smtp.allowed_clients``), the number policy
(``[numbers]``), the limits (``[limits]``) and the log level. Everything else (listen
addresses, folders, provider, credentials, TLS) needs a restart: the daemon logs each such
key as not reloaded and keeps running on its old value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from faxbridge.config import Config, HostPort

LIVE_SMTP = ("allowed_senders", "allowed_clients")


@dataclass(frozen=True)
class ReloadPlan:
    config: Config                 # the configuration to run on from now
    applied: list[str]             # keys whose new values apply now
    not_applied: list[str]         # keys that changed but need a restart


def _changed(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two config values."""
    if is_dataclass(old) and is_dataclass(new) and not isinstance(old, type | HostPort):
        out: list[str] = []
        for f in fields(old):
            key = f"{prefix}.{f.name}" if prefix else f.name
            out += _changed(getattr(old, f.name), getattr(new, f.name), key)
        return out
    if isinstance(old, tuple) and isinstance(new, tuple) and old and is_dataclass(old[0]):
        if len(old) != len(new):
            return [prefix]
        return [k for i, (a, b) in enumerate(zip(old, new, strict=True)) for k in _changed(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [prefix]


def plan(old: Config, new: Config) -> ReloadPlan:
    changed = [k for k in _changed(old, new, "") if k != "source"]
    live_smtp = {f"smtp.{name}" for name in LIVE_SMTP}

    def live(key: str) -> bool:
        return key in live_smtp or key.startswith(("numbers.", "limits.")) or key == "log.level"

    applied = [k for k in changed if live(k)]
    config = replace(
        old,
        smtp=replace(old.smtp, **{name: getattr(new.smtp, name) for name in LIVE_SMTP}),
        numbers=new.numbers,
        limits=new.limits,
        log=replace(old.log, level=new.log.level),
    )
    return ReloadPlan(config=config, applied=applied, not_applied=[k for k in changed if not live(k)])
