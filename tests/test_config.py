"""faxbridge.config: defaults, value forms, every kind of error, secrets, env overrides, paths."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from faxbridge import config
from faxbridge.config import Config, ConfigError, HostPort, defaults, load, summary

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "faxbridge.example.toml"

def write(folder: Path, text: str, name: str = "faxbridge.toml") -> Path:
    file = folder / name
    file.write_text(text, encoding="utf-8")
    return file


def problems_of(folder: Path, text: str, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(folder, text), env or {})
    assert caught.value.problems, "a ConfigError must carry at least one problem"
    return caught.value.problems


def attr(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


# --- defaults ---------------------------------------------------------------------------------------

CONTRACT_DEFAULTS: list[tuple[str, Any]] = [
    ("state_dir", Path("var")),
    ("shutdown_grace", 30.0),
    ("smtp.enabled", True),
    ("smtp.listen", HostPort("127.0.0.1", 2525)),
    ("smtp.domains", ("fax.local",)),
    ("smtp.allowed_senders", ()),
    ("smtp.allowed_clients", (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))),
    ("smtp.max_message_size", 25_000_000),
    ("smtp.require_auth", False),
    ("smtp.users_file", None),
    ("smtp.tls_cert", None),
    ("smtp.tls_key", None),
    ("smtp.cover_page", "if-body"),
    ("smtp.max_sessions", 100),
    ("smtp.max_sessions_per_client", 10),
    ("smtp.timeout", 300.0),
    ("smtp.auth_max_failures", 3),
    ("smtp.auth_lockout_failures", 10),
    ("smtp.auth_lockout", 900.0),
    ("watch.0.path", Path("var/outbox")),
    ("watch.0.results", Path("var/results")),
    ("watch.0.done", Path("var/done")),
    ("watch.0.failed", Path("var/failed")),
    ("watch.0.pattern", re.compile(config.DEFAULT_PATTERN)),
    ("watch.0.settle", 2.0),
    ("watch.0.poll", False),
    ("watch.0.recursive", False),
    ("numbers.default_country", "US"),
    ("numbers.strict", False),
    ("numbers.allowed_countries", ("US", "CA")),
    ("numbers.blocked_prefixes", ("1900", "1976")),
    ("numbers.max_pages", 200),
    ("limits.per_sender_per_hour", 60),
    ("limits.per_client_per_hour", 60),
    ("limits.max_in_flight", 50),
    ("notify.smarthost", None),
    ("notify.starttls", False),
    ("notify.username", ""),
    ("notify.password", ""),
    ("notify.from_address", "faxbridge@fax.local"),
    ("webhook.enabled", True),
    ("webhook.listen", HostPort("127.0.0.1", 8025)),
    ("webhook.public_url", "http://127.0.0.1:8025"),
    ("webhook.token", ""),
    ("provider.kind", "simulator"),
    ("provider.poll_interval", 30.0),
    ("provider.submit_retries", 5),
    ("provider.retry_initial", 2.0),
    ("provider.retry_max", 300.0),
    ("provider.request_timeout", 60.0),
    ("provider.reconcile_grace", None),
    ("provider.low_balance", 5.0),
    ("provider.openfax.base_url", "https://api.openfax.com"),
    ("provider.openfax.send_path", "/faxSendSubmit.php"),
    ("provider.openfax.balance_path", "/getAvailableCredit.php"),
    ("provider.openfax.report_path", "/outboundDetailsbyDate.php"),
    ("provider.openfax.account_id", ""),
    ("provider.openfax.api_key", ""),
    ("provider.openfax.to_header", ""),
    ("provider.openfax.from_header", ""),
    ("provider.openfax.priority", "Normal"),
    ("provider.openfax.confirm_postbacks", True),
    ("provider.phaxio.base_url", "https://api.phaxio.com/v2"),
    ("provider.phaxio.api_key", ""),
    ("provider.phaxio.api_secret", ""),
    ("provider.phaxio.callback_token", ""),
    ("provider.phaxio.header_text", ""),
    ("provider.sinch.base_url", "https://fax.api.sinch.com/v3"),
    ("provider.sinch.project_id", ""),
    ("provider.sinch.key_id", ""),
    ("provider.sinch.key_secret", ""),
    ("provider.sinch.callback_token", ""),
    ("provider.sinch.header_text", ""),
    ("provider.simulator.speed", 10.0),
    ("log.level", "info"),
    ("log.format", "auto"),
    ("log.show_numbers", False),
    ("store.url", ""),
    ("store.lease", 30.0),
    ("store.node", ""),
    ("source", None),
]


@pytest.mark.parametrize(("key", "expected"), CONTRACT_DEFAULTS, ids=[k for k, _ in CONTRACT_DEFAULTS])
def test_defaults_are_the_contracts(tmp_path: Path, key: str, expected: Any) -> None:
    value = attr(defaults(tmp_path), key)
    if isinstance(expected, Path):
        expected = tmp_path / expected
    assert value == expected


def test_contract_default_pattern_is_the_contracts() -> None:
    contract = r"^(?P<number>\+?[0-9(][0-9().\- ]{6,}[0-9])(?:[_ ].*)?\.(?i:pdf|tiff?|png|jpe?g|txt)$"
    assert contract == config.DEFAULT_PATTERN
    match = re.compile(contract).match("+1 (555) 555-1212_invoice.PDF")
    assert match is not None and match["number"] == "+1 (555) 555-1212"


def test_no_file_uses_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load(None, {})
    assert cfg == defaults(tmp_path)
    assert cfg.state_dir == tmp_path / "var"
    assert len(cfg.watch) == 1


def test_empty_file_watches_nothing_and_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""), {})
    assert cfg.watch == ()
    assert cfg.source == tmp_path / "faxbridge.toml"
    assert dataclasses.replace(cfg, watch=defaults(tmp_path).watch, source=None) == defaults(tmp_path)


def test_example_file_is_the_defaults(tmp_path: Path) -> None:
    cfg = load(EXAMPLE, {})
    assert cfg.source == EXAMPLE
    assert dataclasses.replace(cfg, source=None) == defaults(EXAMPLE.parent)


def test_example_file_names_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = [k.rpartition(".")[2] for k in config.SPECS] + list(config.WATCH_SPECS)
    missing = [k for k in keys if not re.search(rf"^{k} = ", text, re.MULTILINE)]
    assert missing == []


def test_a_watch_entry_takes_defaults_for_omitted_keys(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[[watch]]\npath = "in"\n[[watch]]\npath = "/abs/in2"\nrecursive = true\n'),
               {})
    assert [w.path for w in cfg.watch] == [tmp_path / "in", Path("/abs/in2")]
    assert cfg.watch[0].results == tmp_path / "var/results"
    assert cfg.watch[1].recursive is True
    assert cfg.watch[0].pattern.pattern == config.DEFAULT_PATTERN


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = defaults(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.smtp.enabled = False  # type: ignore[misc]


# --- value forms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("500ms", 0.5, id="ms"),
        pytest.param("1.5s", 1.5, id="fraction-s"),
        pytest.param("30s", 30.0, id="s"),
        pytest.param("5m", 300.0, id="m"),
        pytest.param("2h", 7200.0, id="h"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param(" 10 s ", 10.0, id="spaces"),
        pytest.param(".5s", 0.5, id="leading-dot"),
    ],
)
def test_durations(tmp_path: Path, text: str, seconds: float) -> None:
    assert load(write(tmp_path, f'shutdown_grace = "{text}"'), {}).shutdown_grace == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("toml_value", "got"),
    [
        pytest.param("30", "got 30", id="bare-integer"),
        pytest.param("1.5", "got 1.5", id="bare-float"),
        pytest.param('"30"', "got '30'", id="string-without-unit"),
        pytest.param('"5 minutes"', "got '5 minutes'", id="word-unit"),
        pytest.param('"1d"', "got '1d'", id="days"),
        pytest.param('"-1s"', "got '-1s'", id="negative"),
        pytest.param("true", "got True", id="boolean"),
        pytest.param("[1]", "got an array", id="array"),
    ],
)
def test_bad_durations_name_key_and_form(tmp_path: Path, toml_value: str, got: str) -> None:
    [problem] = problems_of(tmp_path, f"shutdown_grace = {toml_value}")
    assert problem.startswith("shutdown_grace: expected a duration")
    assert '"30s"' in problem and "ms, s, m or h" in problem
    assert problem.endswith(got)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        pytest.param("25MB", 25_000_000, id="MB"),
        pytest.param("25MiB", 25 * 1024 * 1024, id="MiB"),
        pytest.param("10KB", 10_000, id="KB"),
        pytest.param("10KiB", 10_240, id="KiB"),
        pytest.param("1GB", 1_000_000_000, id="GB"),
        pytest.param("1GiB", 1024**3, id="GiB"),
        pytest.param("512B", 512, id="bytes"),
        pytest.param("1.5MB", 1_500_000, id="fraction"),
        pytest.param("25mb", 25_000_000, id="lower-case"),
        pytest.param("25 MB", 25_000_000, id="space"),
    ],
)
def test_sizes(tmp_path: Path, text: str, size: int) -> None:
    assert load(write(tmp_path, f'[smtp]\nmax_message_size = "{text}"'), {}).smtp.max_message_size == size


@pytest.mark.parametrize(
    "toml_value",
    [
        pytest.param("25000000", id="bare-integer"),
        pytest.param('"25"', id="no-unit"),
        pytest.param('"25TB"', id="unknown-unit"),
        pytest.param('"MB"', id="no-number"),
        pytest.param('"0MB"', id="zero"),
    ],
)
def test_bad_sizes(tmp_path: Path, toml_value: str) -> None:
    [problem] = problems_of(tmp_path, f"[smtp]\nmax_message_size = {toml_value}")
    assert problem.startswith("smtp.max_message_size: ")
    assert '"25MB"' in problem or "more than 0" in problem


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        pytest.param("127.0.0.1:25", "127.0.0.1", 25, "127.0.0.1:25", id="ipv4"),
        pytest.param("[::1]:25", "::1", 25, "[::1]:25", id="ipv6"),
        pytest.param("mail.example.com:587", "mail.example.com", 587, "mail.example.com:587", id="name"),
        pytest.param("0.0.0.0:0", "0.0.0.0", 0, "0.0.0.0:0", id="port-0"),
        pytest.param("localhost:65535", "localhost", 65535, "localhost:65535", id="port-max"),
    ],
)
def test_host_port(tmp_path: Path, text: str, host: str, port: int, shown: str) -> None:
    listen = load(write(tmp_path, f'[smtp]\nlisten = "{text}"'), {}).smtp.listen
    assert listen == HostPort(host, port)
    assert str(listen) == shown


def test_float_key_takes_an_integer(tmp_path: Path) -> None:
    speed = load(write(tmp_path, "[provider.simulator]\nspeed = 50"), {}).provider.simulator.speed
    assert speed == 50.0 and isinstance(speed, float)


def test_values_are_normalised(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[smtp]\ndomains = ["Fax.Example.COM"]\n[numbers]\ndefault_country = "gb"\n'
                               'allowed_countries = ["gb", "*"]\nblocked_prefixes = ["+1900"]\n'
                               '[webhook]\npublic_url = "https://fax.example.com/"\n'), {})
    assert cfg.smtp.domains == ("fax.example.com",)
    assert cfg.numbers.default_country == "GB"
    assert cfg.numbers.allowed_countries == ("GB", "*")
    assert cfg.numbers.blocked_prefixes == ("1900",)
    assert cfg.webhook.public_url == "https://fax.example.com"


# --- errors -----------------------------------------------------------------------------------------

ERRORS = [
    ("unknown-top-key", "stat_dir = 'x'", "stat_dir: unknown key (did you mean state_dir?)"),
    ("unknown-smtp-key", "[smtp]\nlistn = 'x'", "smtp.listn: unknown key (did you mean listen?)"),
    ("unknown-section", "[smtpd]\nx = 1", "smtpd: unknown key"),
    ("unknown-nested-key", "[provider.openfax]\nkey = 'x'", "provider.openfax.key: unknown key"),
    ("unknown-watch-key", "[[watch]]\npathh = 'x'", "watch[0].pathh: unknown key (did you mean path?)"),
    ("unknown-second-watch-key", "[[watch]]\n[[watch]]\npath = 'b'\nfoo = 1", "watch[1].foo: unknown key"),
    ("section-not-table", "smtp = 5", "smtp: expected a table ([smtp]), got an integer"),
    ("watch-as-table", "[watch]\npath = 'x'", "watch: expected [[watch]] tables (an array of tables)"),
    ("bool-wrong-type", "[smtp]\nenabled = 'yes'", "smtp.enabled: expected true or false, got a string"),
    ("int-wrong-type", "[numbers]\nmax_pages = '200'",
     "numbers.max_pages: expected an integer, got a string"),
    ("int-bool", "[numbers]\nmax_pages = true", "numbers.max_pages: expected an integer, got a boolean"),
    ("int-float", "[numbers]\nmax_pages = 2.5", "numbers.max_pages: expected an integer, got a float"),
    ("float-wrong-type", "[provider.simulator]\nspeed = 'fast'",
     "provider.simulator.speed: expected a number, got a string"),
    ("float-zero", "[provider.simulator]\nspeed = 0", "provider.simulator.speed: must be more than 0, got 0"),
    ("str-wrong-type", "[notify]\nfrom_address = 5",
     "notify.from_address: expected a string, got an integer"),
    ("path-wrong-type", "state_dir = false", "state_dir: expected a path string, got a boolean"),
    ("path-empty", "state_dir = ''", "state_dir: must not be empty"),
    ("list-wrong-type", "[smtp]\ndomains = 'fax.local'",
     "smtp.domains: expected an array of strings, got a string"),
    ("list-item-type", "[smtp]\ndomains = ['a', 1]",
     "smtp.domains: item 1: expected a string, got an integer"),
    ("domain-with-at", "[smtp]\ndomains = ['a@b']", "smtp.domains: item 0: expected a domain name"),
    ("sender-no-at", "[smtp]\nallowed_senders = ['alice']",
     "smtp.allowed_senders: item 0: expected an address"),
    ("bad-network", "[smtp]\nallowed_clients = ['10.0.0.0/33']",
     "smtp.allowed_clients: item 0: not a network"),
    ("host-bits", "[smtp]\nallowed_clients = ['10.0.0.1/8']", "smtp.allowed_clients: item 0: not a network"),
    ("hostport-no-port", "[smtp]\nlisten = 'localhost'", 'smtp.listen: expected "host:port"'),
    ("hostport-bad-port", "[smtp]\nlisten = 'localhost:smtp'", 'smtp.listen: expected "host:port"'),
    ("hostport-port-range", "[smtp]\nlisten = 'localhost:65536'", "smtp.listen: port 65536 is out of range"),
    ("hostport-no-host", "[smtp]\nlisten = ':25'", 'smtp.listen: expected "host:port"'),
    ("hostport-bare-v6", "[smtp]\nlisten = '::1:25'", "smtp.listen: write an IPv6 address in brackets"),
    ("hostport-bracket-v4", "[smtp]\nlisten = '[1.2.3.4]:25'", "smtp.listen: brackets are only for IPv6"),
    ("smarthost-bad", "[notify]\nsmarthost = 'mail'", 'notify.smarthost: expected "host:port"'),
    ("bad-choice", "[smtp]\ncover_page = 'sometimes'",
     "smtp.cover_page: expected one of never, if-body, always; got 'sometimes'"),
    ("bad-kind", "[provider]\nkind = 'twilio'", "provider.kind: expected one of simulator, openfax, phaxio"),
    ("bad-priority", "[provider.openfax]\npriority = 'High'", "provider.openfax.priority: expected one of"),
    ("bad-log-format", "[log]\nformat = 'xml'", "log.format: expected one of auto, json, console"),
    ("bad-regex", "[[watch]]\npattern = '(x'", "watch[0].pattern: not a valid regular expression"),
    ("regex-no-group", "[[watch]]\npattern = '^(?P<num>.*)$'",
     "watch[0].pattern: must have a named group (?P<number>...)"),
    ("unknown-country", "[numbers]\ndefault_country = 'XX'",
     "numbers.default_country: unknown country code 'XX'"),
    ("unknown-allowed-country", "[numbers]\nallowed_countries = ['US', 'USA']",
     "numbers.allowed_countries: item 1: unknown country code 'USA'"),
    ("prefix-not-digits", "[numbers]\nblocked_prefixes = ['1-900']",
     "numbers.blocked_prefixes: item 0: expected digits"),
    ("max-pages-zero", "[numbers]\nmax_pages = 0", "numbers.max_pages: must be at least 1, got 0"),
    ("limit-negative", "[limits]\nper_sender_per_hour = -1",
     "limits.per_sender_per_hour: must be at least 0"),
    ("in-flight-zero", "[limits]\nmax_in_flight = 0", "limits.max_in_flight: must be at least 1, got 0"),
    ("poll-zero", "[provider]\npoll_interval = '0s'", "provider.poll_interval: must be longer than 0"),
    ("retry-max-short", "[provider]\nretry_initial = '10s'\nretry_max = '5s'",
     "provider.retry_max: must not be shorter than provider.retry_initial"),
    ("bad-url", "[webhook]\npublic_url = 'fax.example.com'",
     "webhook.public_url: expected an http:// or https://"),
    ("bad-openfax-url", "[provider.openfax]\nbase_url = 'ftp://x'",
     "provider.openfax.base_url: expected an http"),
    ("bad-send-path", "[provider.openfax]\nsend_path = 'send.php'",
     "provider.openfax.send_path: expected a path"),
    ("header-too-long", "[provider.openfax]\nto_header = '1234567890123456'",
     "provider.openfax.to_header: at most 15 characters, got 16"),
    ("bad-from-address", "[notify]\nfrom_address = 'faxbridge'",
     "notify.from_address: expected a mail address"),
    ("bad-token", "[webhook]\ntoken = 'a/b'", "webhook.token: may hold only letters, digits"),
    ("tls-cert-alone", "[smtp]\ntls_cert = '/etc/hosts'", "smtp.tls_key: required when smtp.tls_cert is set"),
    ("tls-key-alone", "[smtp]\ntls_key = '/etc/hosts'", "smtp.tls_cert: required when smtp.tls_key is set"),
    ("auth-without-users", "[smtp]\nrequire_auth = true", "smtp.users_file: required when smtp.require_auth"),
    ("users-file-missing", "[smtp]\nusers_file = 'users.txt'", "smtp.users_file: "),
    ("openfax-no-account", "[provider]\nkind = 'openfax'\n[provider.openfax]\napi_key = 'k'",
     "provider.openfax.account_id: missing"),
    ("openfax-no-key", "[provider]\nkind = 'openfax'\n[provider.openfax]\naccount_id = 'a'",
     "provider.openfax.api_key: missing"),
    ("phaxio-no-secret",
     "[provider]\nkind = 'phaxio'\n[provider.phaxio]\napi_key = 'k'\ncallback_token = 't'",
     "provider.phaxio.api_secret: missing"),
    ("phaxio-no-callback-token",
     "[provider]\nkind = 'phaxio'\n[provider.phaxio]\napi_key = 'k'\napi_secret = 's'",
     "provider.phaxio.callback_token: missing (needed to verify callbacks while webhook.enabled is true)"),
    ("sinch-no-project",
     "[provider]\nkind = 'sinch'\n[provider.sinch]\nkey_id = 'k'\nkey_secret = 's'\ncallback_token = 't'",
     "provider.sinch.project_id: missing"),
    ("sinch-no-secret",
     "[provider]\nkind = 'sinch'\n[provider.sinch]\nproject_id = 'p'\nkey_id = 'k'\ncallback_token = 't'",
     "provider.sinch.key_secret: missing"),
    ("sinch-no-callback-token",
     "[provider]\nkind = 'sinch'\n[provider.sinch]\nproject_id = 'p'\nkey_id = 'k'\nkey_secret = 's'",
     "provider.sinch.callback_token: missing (the secret path part of the callback URL"),
    ("sinch-bad-callback-token",
     "[provider]\nkind = 'sinch'\n[provider.sinch]\nproject_id = 'p'\nkey_id = 'k'\nkey_secret = 's'\n"
     "callback_token = 'a/b'",
     "provider.sinch.callback_token: may hold only letters, digits"),
    ("key-and-key-file", "[webhook]\ntoken = 'a'\ntoken_file = 'b'",
     "webhook.token_file: give either token or"),
    ("file-for-non-secret", "[webhook]\nlisten_file = 'x'", "webhook.listen_file: unknown key"),
    ("secret-file-missing", "[notify]\npassword_file = 'nope.txt'", "notify.password_file: cannot read "),
    ("secret-file-empty-path", "[notify]\npassword_file = ''", "notify.password_file: must not be empty"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in ERRORS])
def test_each_error_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_phaxio_without_webhooks_needs_no_callback_token(tmp_path: Path) -> None:
    text = "[provider]\nkind = 'phaxio'\n[provider.phaxio]\napi_key = 'k'\napi_secret = 's'\n"
    text += "[webhook]\nenabled = false\n"
    cfg = load(write(tmp_path, text), {})
    assert cfg.provider.phaxio.callback_token == "" and not cfg.webhook.enabled


def test_sinch_settings_summary_and_secrets_from_the_environment(tmp_path: Path) -> None:
    text = ("[provider]\nkind = 'sinch'\n[provider.sinch]\nproject_id = 'proj-1'\nkey_id = 'k'\n"
            "base_url = 'https://eu1.fax.api.sinch.com/v3/'\n[webhook]\nenabled = false\n")
    cfg = load(write(tmp_path, text), {"FAXBRIDGE_PROVIDER_SINCH_KEY_SECRET": "from-env-secret"})
    assert (cfg.provider.kind, cfg.provider.sinch.key_secret, cfg.provider.sinch.callback_token) == (
        "sinch", "from-env-secret", "")
    lines = summary(cfg)
    assert "provider: sinch at https://eu1.fax.api.sinch.com/v3/projects/proj-1" in lines
    assert ("secrets: provider.sinch.key_id set, provider.sinch.key_secret set, "
            "provider.sinch.callback_token not set") in lines
    assert not any("from-env-secret" in line for line in lines)


def test_smtp_files_are_not_checked_when_smtp_is_off(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[smtp]\nenabled = false\ntls_cert = 'c.pem'\ntls_key = 'k.pem'"), {})
    assert cfg.smtp.tls_cert == tmp_path / "c.pem"


def test_all_problems_are_collected(tmp_path: Path) -> None:
    text = (
        "shutdown_grace = 30\n[smtp]\nlistn = 'x'\ncover_page = 'no'\n[[watch]]\npattern = 'x'\n"
        "[provider]\nkind = 'openfax'\n"
    )
    problems = problems_of(tmp_path, text, {"FAXBRIDGE_NOPE": "1"})
    keys = [p.split(":")[0] for p in problems]
    assert sorted(keys) == sorted([
        "shutdown_grace", "smtp.listn", "smtp.cover_page", "watch[0].pattern",
        "provider.openfax.account_id", "provider.openfax.api_key", "env FAXBRIDGE_NOPE",
    ])
    assert str(ConfigError(problems)) == "; ".join(problems)


def test_watch_folder_clashes(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[[watch]]\npath = 'a'\ndone = 'a'\n[[watch]]\npath = 'a'\n")
    assert problems == [
        f"watch[0].done: must not be the watched folder itself ({tmp_path / 'a'})",
        f"watch[1].path: the same folder as watch[0].path ({tmp_path / 'a'})",
    ]


def test_toml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[smtp]\nenabled = \n")
    assert len(problems) == 1
    assert "faxbridge.toml" in problems[0] and "line 2" in problems[0] and "column" in problems[0]


def test_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.toml", {})
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"]


# --- secrets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "files", "env", "expected"),
    [
        pytest.param("api_key = 'v'", {}, {}, "v", id="value"),
        pytest.param("api_key_file = 'k.txt'", {"k.txt": "from-file\n"}, {}, "from-file", id="file-relative"),
        pytest.param("api_key_file = 'k.txt'", {"k.txt": "crlf\r\n"}, {}, "crlf", id="file-crlf"),
        pytest.param("api_key_file = 'k.txt'", {"k.txt": "a b \n\n"}, {}, "a b ",
                     id="only-newlines-stripped"),
        pytest.param("api_key_file = 'k.txt'", {"k.txt": "file"},
                     {"FAXBRIDGE_PROVIDER_OPENFAX_API_KEY": "env"},
                     "env", id="env-beats-file"),
        pytest.param("api_key = 'v'", {}, {"FAXBRIDGE_PROVIDER_OPENFAX_API_KEY": "env"}, "env",
                     id="env-beats-value"),
        pytest.param("api_key = 'v'", {"e.txt": "env-file\n"},
                     {"FAXBRIDGE_PROVIDER_OPENFAX_API_KEY_FILE": "e.txt"},
                     "env-file", id="env-file-beats-value"),
        pytest.param("api_key_file = 'nope'", {}, {"FAXBRIDGE_PROVIDER_OPENFAX_API_KEY": "env"}, None,
                     id="env-does-not-hide-broken-file"),
    ],
)
def test_secret_sources(tmp_path: Path, text: str, files: dict[str, str], env: dict[str, str],
                        expected: str | None) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8", newline="")
    file = write(tmp_path, f"[provider]\nkind = 'openfax'\n[provider.openfax]\naccount_id = 'a'\n{text}\n")
    if expected is None:
        with pytest.raises(ConfigError) as caught:
            load(file, env)
        assert caught.value.problems == [f"provider.openfax.api_key_file: cannot read {tmp_path / 'nope'}: "
                                         "No such file or directory"]
        return
    assert load(file, env).provider.openfax.api_key == expected


@pytest.mark.parametrize(
    ("key", "env_name"),
    [
        pytest.param("provider.openfax.account_id", "FAXBRIDGE_PROVIDER_OPENFAX_ACCOUNT_ID",
                     id="openfax-account"),
        pytest.param("provider.openfax.api_key", "FAXBRIDGE_PROVIDER_OPENFAX_API_KEY", id="openfax-key"),
        pytest.param("provider.phaxio.api_key", "FAXBRIDGE_PROVIDER_PHAXIO_API_KEY", id="phaxio-key"),
        pytest.param("provider.phaxio.api_secret", "FAXBRIDGE_PROVIDER_PHAXIO_API_SECRET",
                     id="phaxio-secret"),
        pytest.param("provider.phaxio.callback_token", "FAXBRIDGE_PROVIDER_PHAXIO_CALLBACK_TOKEN",
                     id="phaxio-cb"),
        pytest.param("notify.username", "FAXBRIDGE_NOTIFY_USERNAME", id="notify-user"),
        pytest.param("notify.password", "FAXBRIDGE_NOTIFY_PASSWORD", id="notify-password"),
        pytest.param("webhook.token", "FAXBRIDGE_WEBHOOK_TOKEN", id="webhook-token"),
    ],
)
def test_every_secret_from_env_and_file(tmp_path: Path, key: str, env_name: str) -> None:
    assert attr(load(None, {env_name: "s3cr3t-env"}, base_dir=tmp_path), key) == "s3cr3t-env"
    (tmp_path / "secret").write_text("s3cr3t-file\n", encoding="utf-8")
    section, _, name = key.rpartition(".")
    cfg = load(write(tmp_path, f"[{section}]\n{name}_file = 'secret'\n"), {})
    assert attr(cfg, key) == "s3cr3t-file"


def test_both_env_forms_is_an_error(tmp_path: Path) -> None:
    env = {"FAXBRIDGE_WEBHOOK_TOKEN": "a", "FAXBRIDGE_WEBHOOK_TOKEN_FILE": "b"}
    problems = problems_of(tmp_path, "", env)
    assert problems == ["env FAXBRIDGE_WEBHOOK_TOKEN_FILE: give either FAXBRIDGE_WEBHOOK_TOKEN or "
                        "FAXBRIDGE_WEBHOOK_TOKEN_FILE, not both"]


def test_secrets_never_show(tmp_path: Path) -> None:
    secrets = {
        "FAXBRIDGE_PROVIDER_OPENFAX_API_KEY": "SECRET-of-key",
        "FAXBRIDGE_PROVIDER_OPENFAX_ACCOUNT_ID": "SECRET-of-account",
        "FAXBRIDGE_PROVIDER_PHAXIO_API_KEY": "SECRET-px-key",
        "FAXBRIDGE_PROVIDER_PHAXIO_API_SECRET": "SECRET-px-secret",
        "FAXBRIDGE_PROVIDER_PHAXIO_CALLBACK_TOKEN": "SECRET-px-cb",
        "FAXBRIDGE_NOTIFY_USERNAME": "SECRET-user",
        "FAXBRIDGE_NOTIFY_PASSWORD": "SECRET-pass",
        "FAXBRIDGE_WEBHOOK_TOKEN": "SECRET-token",
        "FAXBRIDGE_PROVIDER_KIND": "openfax",
        "FAXBRIDGE_NOTIFY_SMARTHOST": "mail:25",
    }
    cfg = load(None, secrets, base_dir=tmp_path)
    text = "\n".join(summary(cfg))
    assert "SECRET" not in text
    assert "provider.openfax.api_key set" in text and "notify.password set" in text
    shown = repr(cfg)
    assert "SECRET-user" in shown, "username is not hidden from repr (only true secrets are)"
    for value in ("SECRET-of-key", "SECRET-px-key", "SECRET-px-secret", "SECRET-px-cb", "SECRET-pass",
                  "SECRET-token"):
        assert value not in shown


def test_bad_secret_value_message_does_not_repeat_it(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "", {"FAXBRIDGE_WEBHOOK_TOKEN": "s3cr3t/with/slash"})
    assert problem.startswith("webhook.token (from env FAXBRIDGE_WEBHOOK_TOKEN): may hold only")
    assert "s3cr3t" not in problem
    [problem] = problems_of(tmp_path, "[provider.phaxio]\napi_secret = 12345678")
    assert problem == "provider.phaxio.api_secret: expected a string, got an integer"


# --- environment overrides --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        pytest.param("FAXBRIDGE_SMTP_ENABLED", "false", "smtp.enabled", False, id="bool-false"),
        pytest.param("FAXBRIDGE_SMTP_ENABLED", "0", "smtp.enabled", False, id="bool-0"),
        pytest.param("FAXBRIDGE_SMTP_REQUIRE_AUTH", "no", "smtp.require_auth", False, id="bool-no"),
        pytest.param("FAXBRIDGE_NOTIFY_STARTTLS", "Yes", "notify.starttls", True, id="bool-yes"),
        pytest.param("FAXBRIDGE_LOG_SHOW_NUMBERS", "1", "log.show_numbers", True, id="bool-1"),
        pytest.param("FAXBRIDGE_NUMBERS_MAX_PAGES", "10", "numbers.max_pages", 10, id="int"),
        pytest.param("FAXBRIDGE_PROVIDER_SIMULATOR_SPEED", "50", "provider.simulator.speed", 50.0,
                     id="float"),
        pytest.param("FAXBRIDGE_PROVIDER_POLL_INTERVAL", "500ms", "provider.poll_interval", 0.5,
                     id="duration"),
        pytest.param("FAXBRIDGE_SHUTDOWN_GRACE", "2m", "shutdown_grace", 120.0, id="top-level-duration"),
        pytest.param("FAXBRIDGE_SMTP_MAX_MESSAGE_SIZE", "1MiB", "smtp.max_message_size", 1 << 20, id="size"),
        pytest.param("FAXBRIDGE_SMTP_DOMAINS", "A.example, b.example", "smtp.domains", ("a.example",
                     "b.example"),
                     id="list"),
        pytest.param("FAXBRIDGE_SMTP_ALLOWED_SENDERS", "", "smtp.allowed_senders", (), id="empty-list"),
        pytest.param("FAXBRIDGE_NUMBERS_ALLOWED_COUNTRIES", "*", "numbers.allowed_countries", ("*",),
                     id="list-star"),
        pytest.param("FAXBRIDGE_SMTP_LISTEN", "[::]:25", "smtp.listen", HostPort("::", 25), id="hostport"),
        pytest.param("FAXBRIDGE_NOTIFY_SMARTHOST", "mail.example:25", "notify.smarthost",
                     HostPort("mail.example", 25), id="smarthost"),
        pytest.param("FAXBRIDGE_PROVIDER_KIND", "phaxio", "provider.kind", "phaxio", id="string"),
        pytest.param("FAXBRIDGE_STATE_DIR", "state", "state_dir", Path("state"), id="relative-path"),
        pytest.param("FAXBRIDGE_STATE_DIR", "/var/lib/fax", "state_dir", Path("/var/lib/fax"),
                     id="absolute-path"),
        pytest.param("FAXBRIDGE_CONFIG", "/elsewhere.toml", "source", None, id="config-var-ignored"),
        pytest.param("OTHER_SMTP_ENABLED", "false", "smtp.enabled", True, id="foreign-var-ignored"),
    ],
)
def test_env_overrides(tmp_path: Path, name: str, value: str, key: str, expected: Any) -> None:
    env = {name: value}
    if key == "provider.kind":
        env.update(FAXBRIDGE_PROVIDER_PHAXIO_API_KEY="k", FAXBRIDGE_PROVIDER_PHAXIO_API_SECRET="s",
                   FAXBRIDGE_WEBHOOK_ENABLED="false")
    got = attr(load(None, env, base_dir=tmp_path), key)
    assert got == (tmp_path / expected if isinstance(expected, Path) else expected)


def test_env_beats_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "[smtp]\nlisten = '127.0.0.1:1'\n")
    cfg = load(file, {"FAXBRIDGE_SMTP_LISTEN": "127.0.0.1:2"})
    assert cfg.smtp.listen.port == 2


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        pytest.param("FAXBRIDGE_SMTP_ENABLED", "maybe",
                     "smtp.enabled (from env FAXBRIDGE_SMTP_ENABLED): expected true or false", id="bad-bool"),
        pytest.param("FAXBRIDGE_NUMBERS_MAX_PAGES", "ten",
                     "numbers.max_pages (from env FAXBRIDGE_NUMBERS_MAX_PAGES): expected a number",
                                         id="bad-int"),
        pytest.param("FAXBRIDGE_LIMITS_MAX_IN_FLIGHT", "0",
                     "limits.max_in_flight (from env FAXBRIDGE_LIMITS_MAX_IN_FLIGHT): must be at least 1",
                     id="int-range"),
        pytest.param("FAXBRIDGE_PROVIDER_POLL_INTERVAL", "30",
                     "provider.poll_interval (from env FAXBRIDGE_PROVIDER_POLL_INTERVAL): expected a",
                     id="bare-duration"),
        pytest.param("FAXBRIDGE_SMTP_LISTN", "x", "env FAXBRIDGE_SMTP_LISTN: unknown setting", id="unknown"),
        pytest.param("FAXBRIDGE_WATCH_PATH", "x", "env FAXBRIDGE_WATCH_PATH: unknown setting ([[watch]]",
                     id="watch-not-from-env"),
        pytest.param("FAXBRIDGE_SMTP_LISTEN_FILE", "x", "env FAXBRIDGE_SMTP_LISTEN_FILE: unknown setting",
                     id="file-form-only-for-secrets"),
        pytest.param("FAXBRIDGE_NOTIFY_PASSWORD_FILE", "nope",
                     "env FAXBRIDGE_NOTIFY_PASSWORD_FILE: cannot read", id="unreadable-env-file"),
    ],
)
def test_env_errors(tmp_path: Path, name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {name: value}, base_dir=tmp_path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(expected)


# --- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        pytest.param("state_dir = 'state'", "state_dir", "{dir}/state", id="relative"),
        pytest.param("state_dir = '../state'", "state_dir", "{dir}/../state", id="parent"),
        pytest.param("state_dir = '/srv/fax'", "state_dir", "/srv/fax", id="absolute"),
        pytest.param("state_dir = '~/fax'", "state_dir", "{home}/fax", id="home"),
        pytest.param("[[watch]]\npath = 'in'\nresults = 'out/r'", "watch.0.results", "{dir}/out/r",
                     id="watch"),
        pytest.param("[smtp]\nenabled = false\nusers_file = 'users'", "smtp.users_file", "{dir}/users",
                     id="users-file"),
    ],
)
def test_relative_paths_are_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key: str, expected: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "etc"
    folder.mkdir()
    cfg = load(write(folder, text), {})
    assert attr(cfg, key) == Path(expected.format(dir=folder, home=tmp_path / "home"))


def test_existing_smtp_files_are_accepted(tmp_path: Path) -> None:
    for name in ("users", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    cfg = load(write(tmp_path, "[smtp]\nrequire_auth = true\nusers_file = 'users'\n"
                               "tls_cert = 'cert.pem'\ntls_key = 'key.pem'\n"), {})
    assert (cfg.smtp.users_file, cfg.smtp.tls_cert, cfg.smtp.tls_key) == (
        tmp_path / "users", tmp_path / "cert.pem", tmp_path / "key.pem")


def test_relative_path_from_the_cli_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "state_dir = 's'")
    cfg = load(Path("faxbridge.toml"), {})
    assert cfg.source == tmp_path / "faxbridge.toml"
    assert cfg.state_dir == tmp_path / "s"


# --- summary ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line"), [
    ("[provider]\nreconcile_grace = '5s'\n", "reconcile grace: 5 s (provider.reconcile_grace)"),
    ("[provider]\nkind = 'openfax'\n[provider.openfax]\naccount_id = 'a'\napi_key = 'k'\n",
     "reconcile grace: 10 min + 1 min a page (Openfax's default; provider.reconcile_grace)"),
], ids=["set", "openfax-default"])
def test_summary_names_the_reconcile_grace(tmp_path: Path, text: str, line: str) -> None:
    assert line in summary(load(write(tmp_path, text), {}))


def test_summary_of_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    lines = summary(defaults(tmp_path))
    assert lines == [
        "config file: none (built-in defaults)",
        f"state dir: {tmp_path / 'var'}",
        "provider: simulator (speed 10)",
        "smtp: 127.0.0.1:2525 for fax.local",
        "smtp limits: 100 sessions (10 per client), 300s without a byte drops one, AUTH closed after 3 failures",
        "work bounds: 100 parts, nesting 20, 200MB unpacked, 20 cover pages, 120s CPU and 2GB a mail; "
        "60 faxes/hour a sender, 60 a client address; worker processes leave after 5s idle",
        "sending: 1 fax at a time to one number (limits.per_destination), 50 at the provider in all; send times "
        "read in this host's time zone (time_zone)",
        "office documents: refused, no LibreOffice (soffice) on PATH (documents.office = auto)",
        "console: http://127.0.0.1:8026/ for this machine only (no console.users_file)",
        f"watch: {tmp_path / 'var/outbox'} (results in {tmp_path / 'var/results'})",
        "webhook: 127.0.0.1:8025, reached at http://127.0.0.1:8025",
        "webhook limits: bodies up to 1MB, headers within 10s, 100 connections",
        "reply mail: off (no notify.smarthost)",
        "secrets: webhook.token generated at the first start and kept in the state folder",
    ]


def test_summary_says_how_office_documents_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    soffice = tools / "soffice"
    soffice.write_text("#!/bin/sh\nexit 0\n")
    soffice.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))

    def office_line(text: str) -> str:
        return next(line for line in summary(load(write(tmp_path, text), {})) if line.startswith("office"))

    assert office_line("") == f"office documents: converted by {soffice}, 60s each (documents.convert_timeout)"
    assert office_line("[documents]\noffice = 'off'\n") == "office documents: refused (documents.office = off)"
    assert office_line(f"[documents]\noffice = '{tmp_path}/none'\nconvert_timeout = '5s'\n") == (
        f"office documents: refused, {tmp_path}/none does not exist (documents.office)")
    assert office_line(f"[documents]\noffice = '{soffice}'\nconvert_timeout = '5s'\n") == (
        f"office documents: converted by {soffice}, 5s each (documents.convert_timeout)")


def test_a_bad_office_setting_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[documents]\noffice = 'soffice'\nconvert_timeout = '0s'\n"), {})
    text = str(caught.value)
    assert "documents.office" in text and 'expected "auto", "off" or the absolute path of soffice' in text
    assert "documents.convert_timeout" in text


def test_summary_of_a_file(tmp_path: Path) -> None:
    text = (
        "[provider]\nkind = 'openfax'\n[provider.openfax]\naccount_id = 'a'\napi_key = 'k'\n"
        "base_url = 'https://user:pw@api.example.com/p'\n"
        "[smtp]\nenabled = false\n[webhook]\nenabled = false\n"
    )
    cfg: Config = load(write(tmp_path, text), {})
    lines = summary(cfg)
    assert lines[0] == f"config file: {tmp_path / 'faxbridge.toml'}"
    assert "provider: openfax at https://api.example.com/p" in lines
    assert "smtp: disabled" in lines and "watch: no folder" in lines
    assert "webhook: disabled (polling alone finishes jobs)" in lines
    assert lines[-1] == "secrets: provider.openfax.account_id set, provider.openfax.api_key set"
    assert all("pw" not in line for line in lines)


def test_systemd_credentials_directory_supplies_secrets(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "provider.phaxio.api_key").write_text("key-from-credential\n")
    (creds / "provider.phaxio.api_secret").write_text("secret-from-credential\n")
    (creds / "notify.from_address").write_text("not a secret: ignored\n")
    file = tmp_path / "f.toml"
    file.write_text('[provider]\nkind = "phaxio"\n[provider.phaxio]\napi_key = "in-file"\n[webhook]\nenabled = false\n')
    cfg = load(file, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.provider.phaxio.api_key == "key-from-credential"
    assert cfg.provider.phaxio.api_secret == "secret-from-credential"
    assert cfg.notify.from_address == "faxbridge@fax.local"
    env = {"CREDENTIALS_DIRECTORY": str(creds), "FAXBRIDGE_PROVIDER_PHAXIO_API_KEY": "from-env"}
    assert load(file, env).provider.phaxio.api_key == "from-env"


def test_low_balance_threshold(tmp_path: Path) -> None:
    file = tmp_path / "f.toml"
    file.write_text("[provider]\nlow_balance = 12\n")
    assert load(file, {}).provider.low_balance == 12.0
    assert load(file, {"FAXBRIDGE_PROVIDER_LOW_BALANCE": "0"}).provider.low_balance == 0.0
    file.write_text("[provider]\nlow_balance = -1\n")
    with pytest.raises(ConfigError) as caught:
        load(file, {})
    assert caught.value.problems == ["provider.low_balance: must be at least 0, got -1"]
    file.write_text('[provider]\nlow_balance = "lots"\n')
    with pytest.raises(ConfigError) as caught:
        load(file, {})
    assert caught.value.problems == ["provider.low_balance: expected a number, got a string"]


@pytest.mark.parametrize(("text", "problem"), [
    ("caller_id = '5555550100'", "provider.phaxio.caller_id: expected a number in E.164 form"),
    ("cancel_timeout = '2m'", "provider.phaxio.cancel_timeout: must be between 3m and 60m"),
    ("test_fail = 'busy'", "provider.phaxio.test_fail: expected one of"),
], ids=["caller-id", "cancel-timeout", "test-fail"])
def test_phaxio_send_parameters_are_checked(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, f"[provider.phaxio]\n{text}\n"), {})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_summary_says_what_replies_carry_and_who_gets_copies(tmp_path: Path) -> None:
    text = ("[notify]\nsmarthost = 'mail.example.com:25'\nattach = 'preview'\n"
            "copy_to = ['admin@example.com']\ncopy_attach = 'document'\n")
    lines = summary(load(write(tmp_path, text), {}))
    assert "replies carry: the first page as a PNG" in lines
    assert "copies: of failed, rejected and canceled jobs to admin@example.com, with the PDF sent" in lines
    lines = summary(load(write(tmp_path, "[notify]\ncopy_to = ['a@example.com']\ncopy_on = 'final'\n"), {}))
    assert "copies: of every final job to a@example.com (not sent: no notify.smarthost)" in lines
    assert not any(line.startswith("replies carry") for line in lines)


def test_store_keys_of_section_10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(write(tmp_path, "[store]\nurl = 'postgresql://fax@db:5432/faxes'\nlease = '1m'\nnode = 'left'\n"), {})
    assert (cfg.store.url, cfg.store.lease, cfg.store.node_name()) == ("postgresql://fax@db:5432/faxes", 60.0, "left")
    assert defaults(tmp_path).store.node_name() == os.uname().nodename          # empty: the host name
    secret = tmp_path / "store-url"
    secret.write_text("postgresql://fax:pw@db/faxes\n")
    from_file = load(write(tmp_path, f"[store]\nurl_file = '{secret}'\n"), {})
    assert from_file.store.url == "postgresql://fax:pw@db/faxes" and "pw" not in repr(from_file.store)
    from_env = load(write(tmp_path, ""), {"FAXBRIDGE_STORE_URL": "postgres://fax@db/faxes"})
    assert from_env.store.url == "postgres://fax@db/faxes"


def test_a_store_url_that_is_not_postgresql_is_refused_without_repeating_it(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[store]\nurl = 'mysql://fax:hunter2@db/faxes'\nlease = '0s'\n")
    assert any(p.startswith("store.url: expected empty (SQLite in state_dir) or a postgresql://") for p in problems)
    assert any(p.startswith("store.lease:") for p in problems)
    assert not any("hunter2" in p for p in problems)


def test_summary_names_the_sending_limits_the_time_zone_and_receipts(tmp_path: Path) -> None:
    text = ("time_zone = 'Europe/Berlin'\n[limits]\nper_destination = 0\n"
            "[notify]\nsmarthost = 'mail.example.com:25'\nreceipt = true\n")
    lines = summary(load(write(tmp_path, text), {}))
    assert ("sending: any number of faxes at a time to one number (limits.per_destination), 50 at the provider in "
            "all; send times read in Europe/Berlin (time_zone)") in lines
    assert 'receipts: a mail "accepted" to the sender right after the 250 (notify.receipt)' in lines
