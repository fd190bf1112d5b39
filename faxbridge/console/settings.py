"""The effective configuration as the console's overview shows it: every key of the schema
(:data:`faxbridge.config.SPECS`, and each ``[[watch]]`` entry's), with the value the daemon runs
with, defaults and environment overrides included. Secrets (the schema's ``secret`` keys) are never
shown: only whether they are set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from faxbridge.config import SECRET_KEYS, SPECS, WATCH_SPECS, Config

HIDDEN = "(set, not shown)"
UNSET = "(not set)"


def _value(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _shown(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, re.Pattern):
        value = value.pattern
    if isinstance(value, tuple | list | frozenset):
        value = [str(v) if isinstance(v, Path) else v for v in value]
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def effective(cfg: Config) -> list[tuple[str, str]]:
    """``(key, value as shown)`` for every setting, in the schema's order; secrets masked."""
    rows: list[tuple[str, str]] = []
    for key in SPECS:
        value = _value(cfg, key)
        if key in SECRET_KEYS:
            rows.append((key, HIDDEN if value else UNSET))
        else:
            rows.append((key, _shown(value)))
    for n, watch in enumerate(cfg.watch):
        rows += [(f"watch[{n}].{key}", _shown(_value(watch, key))) for key in WATCH_SPECS]
    return rows
