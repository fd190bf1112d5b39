"""The command line: exit codes, one-line errors, and each command against a real store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faxbridge.cli import main
from faxbridge.store import Store
from tests.support import base_settings, cli, make_pdf, write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def send(capsys: pytest.CaptureFixture[str], config: Path, to: str, *files: Path) -> str:
    code, out, err = run(capsys, "send", "-c", str(config), "--to", to, *map(str, files))
    assert code == 0, err
    return out.strip()


def job(capsys: pytest.CaptureFixture[str], config: Path, job_id: str) -> dict[str, Any]:
    code, out, err = run(capsys, "job", "-c", str(config), job_id, "--json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "check-config", "send", "jobs", "job", "cancel", "retry", "balance", "simulate"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["send", "--to", "15555551212"], ["jobs", "--state", "lost"]],
                         ids=["no-command", "unknown-command", "send-without-files", "bad-state"])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err


def test_check_config_ok_prints_a_summary(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "check-config", "-c", str(config))
    assert code == 0
    assert "configuration OK" in out and "simulator" in out


def test_check_config_names_each_bad_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('shutdown_grace = "soon"\n[provider]\nkind = "openfax"\n[smtp]\nlisn = "x"\n')
    code, out, err = run(capsys, "check-config", "-c", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert any(line.startswith("provider.openfax.api_key: missing") for line in lines), lines
    assert any(line.startswith("shutdown_grace:") for line in lines)
    assert any(line.startswith("smtp.lisn:") for line in lines)
    assert "Traceback" not in err and out == ""


def test_faxbridge_config_names_the_file(capsys: pytest.CaptureFixture[str], config: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXBRIDGE_CONFIG", str(config))
    code, out, _ = run(capsys, "check-config")
    assert code == 0 and str(config) in out


def test_send_prints_the_job_id_and_queues_it(capsys: pytest.CaptureFixture[str], config: Path,
                                              tmp_path: Path) -> None:
    doc = make_pdf(tmp_path / "letter.pdf", pages=3, size="legal")
    note = tmp_path / "note.txt"
    note.write_text("Please call back.\n")
    job_id = send(capsys, config, "555-555-1212", doc, note)
    data = job(capsys, config, job_id)
    assert data["state"] == "queued" and data["to"] == "+15555551212" and data["source"] == "cli"
    assert data["node"] is None                     # one daemon on SQLite: no node to name
    assert data["pages"] == 4 and data["document"] == "letter.pdf, note.txt"
    assert [e["event"] for e in data["events"]] == ["job.queued"]
    code, out, _ = run(capsys, "jobs", "-c", str(config), "--json")
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [job_id]


def test_send_fine_and_header(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    job_id = send(capsys, config, "+15555551212", make_pdf(tmp_path / "a.pdf"))
    fine = send(capsys, config, "+15555551212", "--fine", "--header", "ACME billing",  # type: ignore[arg-type]
                make_pdf(tmp_path / "b.pdf"))
    assert job(capsys, config, job_id)["resolution"] == "standard"
    data = job(capsys, config, fine)
    assert data["resolution"] == "fine" and data["header"] == "ACME billing"


@pytest.mark.parametrize(("to", "words"), [
    ("12", "this is not a usable fax number: it is too short"),
    ("+442079460958", "calls to GB are not allowed (numbers.allowed_countries: US, CA)"),
    ("+19005551212", "numbers starting 1900 are blocked (numbers.blocked_prefixes)"),
], ids=["unreadable", "country-not-allowed", "blocked-prefix"])
def test_send_refuses_numbers_with_the_reason(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path,
                                              to: str, words: str) -> None:
    code, out, err = run(capsys, "send", "-c", str(config), "--to", to, str(make_pdf(tmp_path / "a.pdf")))
    assert code == 2 and out == ""
    assert err == f"faxbridge: error: {words}\n"
    assert _job_count(config) == 0


def test_send_refuses_bad_documents_and_leaves_nothing(capsys: pytest.CaptureFixture[str], config: Path,
                                                      tmp_path: Path) -> None:
    truncated = tmp_path / "cut.pdf"
    truncated.write_bytes(make_pdf(tmp_path / "whole.pdf", pages=3).read_bytes()[:-400])
    docx = tmp_path / "memo.pdf"
    docx.write_bytes(b"PK\x03\x04" + b"\0" * 200)
    for bad, word in ((truncated, "cut.pdf"), (docx, "memo.pdf"), (tmp_path / "missing.pdf", "no such file")):
        code, out, err = run(capsys, "send", "-c", str(config), "--to", "15555551212", str(bad))
        assert code == 2 and out == "", err
        assert word in err and "Traceback" not in err
    assert _job_count(config) == 0
    spool = tmp_path / "var" / "spool"
    assert [p.name for p in spool.iterdir()] == [".staging"]
    assert list((spool / ".staging").iterdir()) == []


def _job_count(config: Path) -> int:
    store = Store(config.parent / "var", "simulator")
    try:
        return len(store.jobs())
    finally:
        store.close()


def test_cancel_and_retry(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    job_id = send(capsys, config, "15555551212", make_pdf(tmp_path / "a.pdf"))
    code, out, _ = run(capsys, "cancel", "-c", str(config), job_id)
    assert code == 0 and "canceled" in out
    data = job(capsys, config, job_id)
    assert data["state"] == "canceled" and data["final"] and "faxbridge cancel" in data["reason"]
    code, _, err = run(capsys, "cancel", "-c", str(config), job_id)
    assert code == 1 and "already canceled" in err
    code, out, _ = run(capsys, "retry", "-c", str(config), job_id)
    assert code == 0 and "queued again" in out
    assert job(capsys, config, job_id)["state"] == "queued"
    code, _, err = run(capsys, "retry", "-c", str(config), job_id)
    assert code == 1 and "only failed or canceled" in err


def test_unknown_job_is_a_runtime_error(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    send(capsys, config, "15555551212", make_pdf(tmp_path / "a.pdf"))
    code, _, err = run(capsys, "job", "-c", str(config), "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert code == 1 and err.strip() == "faxbridge: error: no job with id 01ZZZZZZZZZZZZZZZZZZZZZZZZ"


def test_balance_against_the_built_in_simulator(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run(capsys, "balance", "-c", str(config))
    assert code == 0, err
    assert out.strip() == "balance: 100.00"


def test_job_text_shows_the_history(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    job_id = send(capsys, config, "15555551212", make_pdf(tmp_path / "a.pdf"))
    code, out, _ = run(capsys, "job", "-c", str(config), job_id[:12])
    assert code == 0
    assert f"job {job_id}" in out and "history:" in out and "job.queued" in out


def test_real_process_exit_codes(tmp_path: Path) -> None:
    """The installed entry point, as a shell sees it."""
    r = cli("check-config", "-c", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "nope.toml" in r.stderr and "Traceback" not in r.stderr
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("faxbridge ")


def test_run_reports_errors_as_json_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[provider]\nkind = "openfax"\n')
    r = cli("run", "-c", str(bad))
    assert r.returncode == 2
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert lines and all(x["event"] == "daemon.failed" for x in lines)
    assert any(x["error"].startswith("provider.openfax.api_key: missing") for x in lines)


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    from tests.support import DaemonProcess

    config = write_config(tmp_path / "faxbridge.toml", base_settings(tmp_path))
    first = DaemonProcess(config, tmp_path / "first.log").start()
    try:
        first.wait_ready()
        r = cli("run", "-c", str(config))
        assert r.returncode == 1
        lines = [json.loads(x) for x in r.stderr.splitlines()]         # every line JSON
        [line] = [x for x in lines if x["event"] == "daemon.failed"]
        assert "another faxbridge daemon is running" in line["error"]
    finally:
        assert first.stop() == 0


def test_a_folder_no_daemon_has_used_is_named_not_made(capsys: pytest.CaptureFixture[str], config: Path,
                                                          tmp_path: Path) -> None:
    state = tmp_path / "var"
    code, out, err = run(capsys, "jobs", "-c", str(config))
    assert code == 0 and out.splitlines()[0].startswith("ID")
    assert err.strip() == (f"faxbridge: note: no job store in {state}: no daemon has run with this configuration "
                           "here (check -c / $FAXBRIDGE_CONFIG, or the folder you run this from)")
    for command in ("job", "cancel", "retry"):
        code, _, err = run(capsys, command, "-c", str(config), "01JABCDEF")
        assert code == 1 and err.startswith(f"faxbridge: error: no job store in {state}:"), command
    assert not state.exists()                               # looking (or acting on nothing) made nothing


def test_send_says_when_no_daemon_serves_the_folder(capsys: pytest.CaptureFixture[str], config: Path,
                                                      tmp_path: Path) -> None:
    code, out, err = run(capsys, "send", "-c", str(config), "--to", "15555551212", str(make_pdf(tmp_path / "a.pdf")))
    assert code == 0 and len(out.strip()) == 26             # the job id alone on stdout
    assert err.strip() == (f"faxbridge: note: no daemon serves {tmp_path / 'var'} now; the fax is sent once "
                           "`faxbridge run` is started with this configuration")


def test_an_ambiguous_id_prefix_says_so(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    doc = make_pdf(tmp_path / "a.pdf")
    first, second = send(capsys, config, "15555551212", doc), send(capsys, config, "15555551212", doc)
    common = next(i for i in range(26) if first[i] != second[i])
    assert common >= 4                                      # ULIDs made moments apart share their time part
    prefix = first[:common]
    code, _, err = run(capsys, "job", "-c", str(config), prefix)
    assert code == 1
    assert err.strip() == f"faxbridge: error: {prefix} is ambiguous: 2 jobs start with it; give more of the id"


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_jobs_limit_is_checked(capsys: pytest.CaptureFixture[str], config: Path, value: str) -> None:
    code, _, err = run(capsys, "jobs", "-c", str(config), "--limit", value)
    assert code == 2
    assert f"expected a whole number of at least 1, got {value!r}" in err


def test_jobs_into_a_closed_pipe_ends_quietly(config: Path, tmp_path: Path) -> None:
    """`faxbridge jobs | head -1`: the reader leaves early; no "Broken pipe" traceback, exit 0."""
    from faxbridge.clock import SystemClock
    from faxbridge.intake import accept
    from faxbridge.models import InputFile, NewJob, Source
    from faxbridge.store import open_store

    async def fill() -> None:
        store = await open_store(tmp_path / "var", "simulator")
        try:
            doc = make_pdf(tmp_path / "a.pdf")
            for _ in range(1000):                             # more than a pipe holds (64 KiB)
                await accept(store, SystemClock(), NewJob(source=Source.CLI, to="+15555551212", document="a.pdf"),
                             [InputFile("a.pdf", doc)], max_pages=10)
        finally:
            await store.close()

    asyncio.run(fill())
    shell = f"{sys.executable} -m faxbridge jobs -c {config} | head -1; exit ${{PIPESTATUS[0]}}"
    r = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.startswith("ID") and len(r.stdout.splitlines()) == 1
    assert r.returncode == 0 and "Traceback" not in r.stderr and "Broken pipe" not in r.stderr, r.stderr
