"""The CLI against a shared PostgreSQL store (contract section 10): two machines' configs (their own
state_dir, one store.url); what one sends the other lists, and acts on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faxbridge.cli import main
from tests.support import base_settings, make_pdf, write_config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def machine(tmp_path: Path, name: str, url: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    settings: dict[str, Any] = {**base_settings(folder), "store": {"url": url, "node": name}}
    return write_config(folder / "faxbridge.toml", settings)


def test_what_one_machine_sends_another_lists_and_cancels(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          pg_url: str) -> None:
    a, b = machine(tmp_path, "a", pg_url), machine(tmp_path, "b", pg_url)
    code, out, err = run(capsys, "send", "-c", str(a), "--to", "+15555551212", str(make_pdf(tmp_path / "x.pdf")))
    assert code == 0, err
    assert "no daemon serves" not in err          # the daemons of a shared store run elsewhere
    job_id = out.strip()
    code, out, err = run(capsys, "jobs", "-c", str(b), "--json")
    assert code == 0, err
    assert [(j["id"], j["state"]) for j in map(json.loads, out.splitlines())] == [(job_id, "queued")]
    code, out, err = run(capsys, "cancel", "-c", str(b), job_id)
    assert code == 0, err
    code, out, err = run(capsys, "job", "-c", str(a), job_id, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["state"] == "canceled" and shown["events"][0]["event"] == "job.queued"
    assert not (tmp_path / "b" / "var" / "faxbridge.db").exists()     # no SQLite store made on the side


def test_check_config_names_the_shared_store_without_its_password(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    config = machine(tmp_path, "a", "postgresql://fax:s3cret-pw@db.example:5433/faxes?sslmode=require")
    code, out, err = run(capsys, "check-config", "-c", str(config))
    assert code == 0, err
    assert "job store: PostgreSQL at postgresql://db.example:5433/faxes, node a" in out
    assert "s3cret-pw" not in out + err
