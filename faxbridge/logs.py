"""structlog set-up: JSON lines on stderr (a console renderer on a terminal).

Secrets never reach a log line: values of keys that name a secret are masked, and
registered secret strings are replaced wherever they appear (URLs, paths, messages).
Phone numbers are shown as their last 4 digits unless ``show_numbers``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import orjson
import structlog

SECRET_KEYS = re.compile(r"(api_?key|secret|password|passwd|token|signature|authorization|credential)",
                         re.IGNORECASE)
NUMBER_KEYS = frozenset({"to", "number", "to_number", "fax_number", "recipient"})
MASK = "***"


_PLAIN, _SECRET, _NUMBER = 0, 1, 2


def _key_kind(key: str) -> int:
    if key != "event" and SECRET_KEYS.search(key):
        return _SECRET
    return _NUMBER if key in NUMBER_KEYS else _PLAIN


class _Masker:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.show_numbers = False
        self._kinds: dict[str, int] = {}     # a key's kind, worked out once (the keys are the code's)

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        kinds, secrets = self._kinds, self.secrets
        for key, value in list(event.items()):
            kind = kinds.get(key)
            if kind is None:
                kind = _key_kind(key)
                if len(kinds) < 4096:
                    kinds[key] = kind
            if kind == _SECRET and value not in (None, "", False):
                event[key] = MASK
            elif kind == _NUMBER and isinstance(value, str) and not self.show_numbers:
                event[key] = mask_number(value)
            elif secrets and isinstance(value, str):
                event[key] = self.scrub(value)
        return event

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


_masker = _Masker()


def mask_number(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return "…" + digits[-4:] if len(digits) > 4 else number


def register_secrets(values: Iterable[str]) -> None:
    """Strings (API keys, passwords, tokens) that must never appear in a log line."""
    _masker.secrets.update(v for v in values if v and len(v) >= 4)


def registered_secrets() -> list[str]:
    """The strings registered so far (handed to worker processes, which mask them too)."""
    return sorted(_masker.secrets)


def scrub(text: str) -> str:
    return _masker.scrub(text)


_taps: list[Callable[[str], None]] = []


def add_tap(tap: Callable[[str], None]) -> Callable[[], None]:
    """Also hand every rendered line to ``tap`` (tests check each line); returns the remover."""
    _taps.append(tap)
    return lambda: _taps.remove(tap)


def _write(line: str) -> None:
    """Write one line to whatever ``sys.stderr`` is at that moment (it may be replaced after setup)."""
    for tap in list(_taps):
        tap(line)
    stream = sys.stderr
    try:
        stream.write(line + "\n")
        stream.flush()
    except (ValueError, OSError):
        pass  # stderr closed or gone: a log line must never break the work


class _StderrLogger:
    def msg(self, message: str) -> None:
        _write(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*args: Any) -> _StderrLogger:
    return _StderrLogger()


class _StderrHandler(logging.Handler):
    """stdlib logging (uvicorn, aiosmtpd, asyncio) rendered by structlog, written like our own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _write(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _dumps(event: Any, **kw: Any) -> str:
    """A log line's JSON by orjson (about 4x json's speed); what orjson leaves to ``default`` (dates,
    dataclasses, objects) is rendered as the stdlib renderer renders it. Anything orjson refuses (an
    int past 64 bits) falls back to :func:`json.dumps`: a log line is never lost to its encoder."""
    try:
        return orjson.dumps(event, default=kw.get("default"), option=_ORJSON).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(event, **kw)


def setup(level: str = "info", fmt: str = "auto", show_numbers: bool = False) -> None:
    _masker.show_numbers = show_numbers
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(serializer=_dumps)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _masker,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries that log through stdlib logging (uvicorn, aiosmtpd) go through structlog too.
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True), _masker],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
