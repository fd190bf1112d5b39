"""Per-fax options (CONTRACT §11): every value by every channel's name, every refusal naming the header,
flag or key and the values it takes; send times in RFC 3339 or local to ``time_zone``; and
``faxbridge send`` with its options against a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from faxbridge import options
from faxbridge.cli import main
from faxbridge.models import Paper, Resolution
from faxbridge.options import CLI, CONTROL, MAIL, Asked, OptionError
from tests.support import base_settings, make_pdf, write_config

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def read(values: dict[str, str], names: options.Names = CONTROL, **kw: Any) -> Asked:
    return options.read(values, names, zone=kw.pop("zone", BERLIN), now=NOW, header_limit=kw.pop("limit", 50), **kw)


def refusal(values: dict[str, str], names: options.Names = CONTROL, **kw: Any) -> str:
    with pytest.raises(OptionError) as caught:
        read(values, names, **kw)
    return str(caught.value)


def test_every_option_is_read() -> None:
    asked = read({"resolution": "Fine", "paper": "A4", "header": "  ACME   billing ", "priority": "low",
                  "send_at": "2026-12-03T09:00:00+01:00"})
    assert asked == Asked(resolution=Resolution.FINE, paper=Paper.A4, header="ACME billing", priority="Low",
                          send_at=datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    fax = asked.options()
    assert (fax.resolution, fax.paper, fax.header, fax.priority) == (Resolution.FINE, Paper.A4, "ACME billing", "Low")
    assert fax.send_at == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    assert read({}) == Asked() and read({}).options().resolution is Resolution.STANDARD


@pytest.mark.parametrize(("names", "key", "value", "words"), [
    (MAIL, "resolution", "ultra", "X-Fax-Resolution: expected fine or standard, got 'ultra'"),
    (CONTROL, "resolution", "ultra", "resolution: expected fine or standard, got 'ultra'"),
    (MAIL, "paper", "a3", "X-Fax-Paper: expected letter, legal or a4, got 'a3'"),
    (CLI, "paper", "tabloid", "--paper: expected letter, legal or a4, got 'tabloid'"),
    (MAIL, "cover", "sometimes", "X-Fax-Cover: expected never, if-body or always, got 'sometimes'"),
    (MAIL, "priority", "urgent", "X-Fax-Priority: expected Normal or Low, got 'urgent'"),
    (CONTROL, "priority", "high", "priority: expected Normal or Low, got 'high'"),
    (MAIL, "header", "x" * 51, "X-Fax-Header: at most 50 characters for this fax provider, got 51"),
    (CONTROL, "header", "bell\x07", "header: may hold printable characters only"),
    (MAIL, "send_at", "tomorrow", "X-Fax-Send-At: expected a time such as 2026-12-03T09:00:00+01:00 (RFC 3339) or "
                                  "2026-12-03 09:00 (in the server's time zone), got 'tomorrow'"),
    (CLI, "send_at", "2026-13-40 25:00", "--at: expected a time such as 2026-12-03T09:00:00+01:00 (RFC 3339) or "
                                         "2026-12-03 09:00 (in the server's time zone), got '2026-13-40 25:00'"),
    (CONTROL, "send_at", "2027-02-01 09:00", "send_at: at most 30 days ahead, got '2027-02-01 09:00'"),
])
def test_a_bad_value_is_refused_naming_what_and_the_values_it_takes(names: options.Names, key: str, value: str,
                                                                    words: str) -> None:
    assert refusal({key: value}, names) == words


def test_a_local_time_is_read_in_the_time_zone() -> None:
    assert read({"send_at": "2026-12-03 09:00"}).send_at == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)   # CET: +1
    assert read({"send_at": "2026-12-03 09:00"}, zone=ZoneInfo("America/New_York")).send_at == datetime(
        2026, 12, 3, 14, 0, tzinfo=UTC)
    assert read({"send_at": "2026-12-03T09:00:00Z"}).send_at == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_a_time_in_the_past_sends_at_once_and_30_days_is_the_limit() -> None:
    assert read({"send_at": "2026-12-01T09:00:00Z"}).send_at is None
    assert read({"send_at": (NOW + timedelta(days=30)).isoformat()}).send_at == NOW + timedelta(days=30)
    assert "at most 30 days ahead" in refusal({"send_at": (NOW + timedelta(days=30, seconds=1)).isoformat()})


def test_address_flags_and_mail_headers() -> None:
    assert options.split_flags("15555551212+fine+a4") == ("15555551212", ["fine", "a4"])
    assert options.split_flags("+15555551212+low") == ("+15555551212", ["low"])
    asked = options.from_headers({"x-fax-paper": "legal", "Subject": "hi"}, zone=BERLIN, now=NOW, header_limit=15,
                                 flags=["fine", "a4", "nocover", "low"])
    assert asked == Asked(resolution=Resolution.FINE, paper=Paper.LEGAL, cover="never", priority="Low")  # header wins
    with pytest.raises(OptionError) as caught:
        options.from_headers({}, zone=BERLIN, now=NOW, header_limit=15, flags=["urgent"])
    assert str(caught.value) == ("+urgent: not a fax option; the address flags are +fine, +standard, +letter, "
                                 "+legal, +a4, +cover, +nocover, +low")
    with pytest.raises(OptionError) as caught:
        options.from_headers({"X-FAX-HEADER": "a header far too long"}, zone=BERLIN, now=NOW, header_limit=15)
    assert str(caught.value) == "X-Fax-Header: at most 15 characters for this fax provider, got 21"


# --- faxbridge send -------------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "faxbridge.toml", {**base_settings(tmp_path), "time_zone": "Europe/Berlin"})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_send_takes_every_option_and_the_job_shows_them(capsys: pytest.CaptureFixture[str], config: Path,
                                                        tmp_path: Path) -> None:
    later = (datetime.now(BERLIN) + timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    text = tmp_path / "note.txt"
    text.write_text("Please call back.\n")
    code, out, err = run(capsys, "send", "-c", str(config), "--to", "+15555551212", "--fine", "--paper", "a4",
                         "--low", "--header", "ACME", "--at", later, str(text))
    assert code == 0, err
    assert err.startswith("faxbridge: note: the fax waits until ")
    code, out, _ = run(capsys, "job", "-c", str(config), out.strip(), "--json")
    data = json.loads(out)
    assert (data["resolution"], data["paper"], data["header"], data["state"]) == ("fine", "a4", "ACME", "queued")
    assert data["priority"] == "Low"
    expected = datetime.strptime(later, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).astimezone(UTC)
    assert data["send_at"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["waiting"].startswith("until ")
    assert data["next_attempt_at"] == data["send_at"]


@pytest.mark.parametrize(("argv", "words"), [
    (["--paper", "a3"], "--paper: expected letter, legal or a4, got 'a3'"),
    (["--at", "soon"], "--at: expected a time such as 2026-12-03T09:00:00+01:00 (RFC 3339) or 2026-12-03 09:00 "
                       "(in the server's time zone), got 'soon'"),
    (["--header", "x" * 60], "--header: at most 50 characters for this fax provider, got 60"),
])
def test_send_refuses_a_bad_option_naming_it(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path,
                                            argv: list[str], words: str) -> None:
    code, out, err = run(capsys, "send", "-c", str(config), "--to", "+15555551212", *argv,
                         str(make_pdf(tmp_path / "a.pdf")))
    assert (code, out, err) == (2, "", f"faxbridge: error: {words}\n")
    assert not (tmp_path / "var" / "faxbridge.db").exists() or run(
        capsys, "jobs", "-c", str(config), "--json")[1] == ""


def test_a_bad_time_zone_is_refused_naming_the_key(tmp_path: Path) -> None:
    from faxbridge.config import ConfigError, load

    path = write_config(tmp_path / "faxbridge.toml", {**base_settings(tmp_path), "time_zone": "Mars/Olympus"})
    with pytest.raises(ConfigError) as caught:
        load(path, {})
    assert "time_zone" in str(caught.value) and "expected an IANA time zone name" in str(caught.value)
