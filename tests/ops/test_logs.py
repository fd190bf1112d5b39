"""Log lines: JSON with stable fields, secrets masked by key and by value, numbers shortened,
a readable console form only on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from faxbridge import logs


@pytest.fixture
def captured() -> Iterator[list[str]]:
    got: list[str] = []
    logs.setup(level="info", fmt="json")
    remove = logs.add_tap(got.append)
    yield got
    remove()
    logs.setup(level="warning")


def parsed(got: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in got]


def test_secrets_are_masked_by_key_and_by_value(captured: list[str]) -> None:
    logs.register_secrets(["s3cr3t-value-42", "", "abc"])  # empty and too-short values are ignored
    log = structlog.get_logger("test")
    log.info("provider.request", api_key="k-123", password="pw", authorization="Basic xyz",
             signature="deadbeef", url="https://x/webhooks/openfax/s3cr3t-value-42", note="abc is fine")
    [line] = parsed(captured)
    assert line["api_key"] == line["password"] == line["authorization"] == line["signature"] == "***"
    assert line["url"] == "https://x/webhooks/openfax/***"
    assert line["note"] == "abc is fine"
    assert {"event", "level", "timestamp"} <= line.keys()


def test_masking_holds_for_every_line_not_only_the_first(captured: list[str]) -> None:
    """The masker works out each key's kind once: the second line with the same keys (and a key
    first seen empty) is masked like the first; a key named like a secret only when non-empty."""
    logs.register_secrets(["s3cr3t-value-43"])
    log = structlog.get_logger("test")
    for value in ("", "one-token", "two-token"):
        log.info("test.repeat", token=value, to="+15555551212", note="url/s3cr3t-value-43")
    empty, first, second = parsed(captured)
    assert empty["token"] == "" and first["token"] == second["token"] == "***"
    assert empty["to"] == first["to"] == second["to"] == "…1212"
    assert empty["note"] == first["note"] == second["note"] == "url/***"


def test_numbers_show_their_last_four_digits_unless_asked(captured: list[str]) -> None:
    log = structlog.get_logger("test")
    log.info("test.numbers", to="+15555551212", number="555-555-1234")
    logs.setup(level="info", fmt="json", show_numbers=True)
    log.info("test.numbers", to="+15555551212")
    logs.setup(level="info", fmt="json")
    first, second = parsed(captured)
    assert first["to"] == "…1212" and first["number"] == "…1234"
    assert second["to"] == "+15555551212"


def test_stdlib_records_are_json_too(captured: list[str]) -> None:
    import logging

    logging.getLogger("uvicorn.error").warning("from a library: %s", "x")
    [line] = parsed(captured)
    assert line["event"] == "from a library: x" and line["level"] == "warning"


def test_console_form_only_on_a_terminal() -> None:
    code = ("import structlog; from faxbridge import logs; logs.setup(fmt='auto'); "
            "structlog.get_logger().info('daemon.ready', pid=1)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(piped.stderr)["event"] == "daemon.ready"
    leader, follower = os.openpty()  # stderr a terminal: the readable form
    try:
        subprocess.run([sys.executable, "-c", code], stderr=follower, env=env, timeout=60, check=True)
        text = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "daemon.ready" in text and not text.lstrip().startswith("{")
