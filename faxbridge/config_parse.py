"""The machinery behind :mod:`faxbridge.config`: value parsers, key specs, the table walk and env overrides.

``faxbridge.config`` declares *what* the keys are (a nested schema of :class:`Spec`); this module knows
*how* a TOML value or an environment string becomes a typed value, and collects every problem as a
``"full.key: what is wrong"`` line instead of stopping at the first.

A message about a secret key never repeats the value (it may be half a password).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

ENV_PREFIX = "FAXBRIDGE_"


class Invalid(ValueError):
    """One value is wrong. The message says what, without the key: the caller adds it."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


Converter: TypeAlias = Callable[[Any, Path], Any]


@dataclass(frozen=True, slots=True)
class Spec:
    """One key: how its TOML value is converted, its default (in TOML form), how an env string reads."""

    convert: Converter
    default: Any
    from_env: Callable[[str], Any] = str
    secret: bool = False


Schema: TypeAlias = Mapping[str, "Spec | Schema"]

# --- plain values -----------------------------------------------------------------------------------

_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
    (list, "an array"), (dict, "a table"),
)


def type_name(value: object) -> str:
    for cls, name in _TOML_TYPES:
        if isinstance(value, cls):
            return name
    return "a date/time" if value is not None else "nothing"


def _expect(value: object, cls: type, what: str) -> None:
    if not isinstance(value, cls) or (cls is not bool and isinstance(value, bool)):
        raise Invalid(f"expected {what}, got {type_name(value)}")


_DURATION = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]+)")
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"1.5s"``, ``"30s"``, ``"5m"``, ``"2h"`` → seconds. A bare number is an error."""
    if isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        return float(m["n"]) * _SECONDS[m["unit"]]
    got = repr(value) if isinstance(value, str | int | float) else type_name(value)
    raise Invalid(f'expected a duration: a number and ms, s, m or h in a string, such as "30s"; got {got}')


def parse_size(value: object) -> int:
    """``"25MB"`` (powers of 1000), ``"25MiB"`` (powers of 1024), ``"KB"``, ``"GiB"``, ``"512B"`` → bytes."""
    if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        factor = _BYTES.get(m["unit"].lower())
        if factor is not None:
            return int(float(m["n"]) * factor)
    got = repr(value) if isinstance(value, str | int | float) else type_name(value)
    raise Invalid('expected a size: a number and B, KB, MB, GB, KiB, MiB or GiB in a string, '
                  f'such as "25MB"; got {got}')


def parse_hostport(value: str) -> HostPort:
    """``"host:port"`` or ``"[v6]:port"``; port 0..65535."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise Invalid(f"brackets are only for IPv6 addresses: {value!r}")
    elif ":" in host:
        raise Invalid(f'write an IPv6 address in brackets, as "[::1]:25": {value!r}')
    if not sep or not host or not port.isdigit():
        raise Invalid(f'expected "host:port" (IPv6: "[::1]:port"), got {value!r}')
    if int(port) > 65535:
        raise Invalid(f"port {port} is out of range 0..65535")
    return HostPort(host, int(port))


def check_url(value: str) -> str:
    """An http(s) URL with a host; returned without a trailing slash."""
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise Invalid(f"not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"expected an http:// or https:// URL with a host, got {value!r}")
    return value.rstrip("/")


# --- item checks for strings and string lists ---------------------------------------------------------


def domain(value: str) -> str:
    if not value or "@" in value or " " in value:
        raise Invalid(f"expected a domain name such as fax.example.com, got {value!r}")
    return value.lower()


def sender(value: str) -> str:
    if value.count("@") != 1 or value.endswith("@"):
        raise Invalid(f"expected an address or *@domain, got {value!r}")
    return value


def region(value: str) -> str:
    code = value.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(f"unknown country code {value!r} (ISO 3166 codes such as US, CA, GB)")
    return code


def country(value: str) -> str:
    return "*" if value == "*" else region(value)


def blocked_prefix(value: str) -> str:
    digits = value.removeprefix("+")
    if not digits.isdigit() or not digits.isascii():
        raise Invalid(f"expected digits such as 1900, got {value!r}")
    return digits


def route_prefix(value: str) -> str:
    """A ``[[route]]`` prefix: the start of an E.164 number (``+44``, ``+1212``); a missing ``+`` is added."""
    digits = value.removeprefix("+")
    if not re.fullmatch(r"[1-9][0-9]{0,14}", digits):
        raise Invalid(f"expected the start of a number in E.164 form such as +44, got {value!r}")
    return "+" + digits


def url_path(value: str) -> str:
    if not value.startswith("/"):
        raise Invalid(f"expected a path starting with /, got {value!r}")
    return value


def fax_header(value: str) -> str:
    if len(value) > 15:
        raise Invalid(f"at most 15 characters, got {len(value)}")
    return value


def e164_number(value: str) -> str:
    """A phone number in E.164 (``+`` and 8 to 15 digits), or empty."""
    if value and not re.fullmatch(r"\+[1-9][0-9]{7,14}", value):
        raise Invalid(f"expected a number in E.164 form such as +15555551212, got {value!r}")
    return value


def mail_address(value: str) -> str:
    if value.count("@") != 1 or value.startswith("@") or value.endswith("@"):
        raise Invalid(f"expected a mail address, got {value!r}")
    return value


def time_zone(value: str) -> str:
    """``time_zone``: an IANA name (``Europe/Berlin``), or empty for the host's."""
    if value:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(f"expected an IANA time zone name such as Europe/Berlin, got {value!r}") from None
    return value


def office_setting(value: str) -> str:
    """``documents.office``: "auto", "off" or the absolute path of LibreOffice's ``soffice``."""
    if value in ("auto", "off"):
        return value
    if not value.startswith("/"):
        raise Invalid(f'expected "auto", "off" or the absolute path of soffice, got {value!r}')
    return value


def store_url(value: str) -> str:
    """``store.url``: empty (SQLite in state_dir) or a ``postgresql://`` URL. A secret (it may hold the
    password): never quoted back."""
    if value and urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise Invalid("expected empty (SQLite in state_dir) or a postgresql://USER@HOST:PORT/DB URL")
    return value


def url_token(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
        raise Invalid("may hold only letters, digits and . _ ~ - (it is part of a URL path)")
    return value


# --- spec factories: each returns a Spec whose converter raises Invalid ------------------------------

Check: TypeAlias = Callable[[Any], Any]


def _with(check: Check | None, value: Any) -> Any:
    return check(value) if check is not None else value


def string(default: str = "", *, secret: bool = False, choices: tuple[str, ...] = (),
           check: Check | None = None) -> Spec:
    def convert(raw: Any, base: Path) -> str:
        _expect(raw, str, "a string")
        if choices and raw not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}; got {raw!r}")
        return str(_with(check, raw))
    return Spec(convert, default, secret=secret)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _env_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise Invalid(f"expected true or false (also 1/0, yes/no), got {text!r}")


def _env_number(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        try:
            return parse(text.strip())
        except ValueError:
            raise Invalid(f"expected a number, got {text!r}") from None
    return read


def _env_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def boolean(default: bool) -> Spec:
    def convert(raw: Any, base: Path) -> bool:
        _expect(raw, bool, "true or false")
        return bool(raw)
    return Spec(convert, default, from_env=_env_bool)


def integer(default: int, *, minimum: int = 0) -> Spec:
    def convert(raw: Any, base: Path) -> int:
        _expect(raw, int, "an integer")
        if raw < minimum:
            raise Invalid(f"must be at least {minimum}, got {raw}")
        return int(raw)
    return Spec(convert, default, from_env=_env_number(int))


def number(default: float, *, positive: bool = False) -> Spec:
    def convert(raw: Any, base: Path) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise Invalid(f"expected a number, got {type_name(raw)}")
        if raw < 0 or (positive and raw == 0):
            raise Invalid(f"must be {'more than' if positive else 'at least'} 0, got {raw}")
        return float(raw)
    return Spec(convert, default, from_env=_env_number(float))


def duration(default: str, *, positive: bool = False, optional: bool = False) -> Spec:
    """A duration; with ``optional``, ``""`` means "not set" (None: the caller's own default)."""
    def convert(raw: Any, base: Path) -> float | None:
        if optional and raw == "":
            return None
        seconds = parse_duration(raw)
        if positive and seconds <= 0:
            raise Invalid(f"must be longer than 0, got {raw!r}")
        return seconds
    return Spec(convert, default)


def size(default: str) -> Spec:
    def convert(raw: Any, base: Path) -> int:
        value = parse_size(raw)
        if value <= 0:
            raise Invalid(f"must be more than 0, got {raw!r}")
        return value
    return Spec(convert, default)


def resolve(raw: str, base: Path) -> Path:
    """A path from the config: ``~`` expanded, relative ones taken against ``base``."""
    return base / Path(raw).expanduser()


def path(default: str, *, optional: bool = False) -> Spec:
    def convert(raw: Any, base: Path) -> Path | None:
        _expect(raw, str, "a path string")
        if not raw:
            if optional:
                return None
            raise Invalid("must not be empty")
        return resolve(raw, base)
    return Spec(convert, default)


def hostport(default: str, *, optional: bool = False) -> Spec:
    def convert(raw: Any, base: Path) -> HostPort | None:
        _expect(raw, str, 'a "host:port" string')
        if optional and not raw.strip():
            return None
        return parse_hostport(raw)
    return Spec(convert, default)


def strings(default: list[str], *, item: Check | None = None) -> Spec:
    def convert(raw: Any, base: Path) -> tuple[Any, ...]:
        _expect(raw, list, "an array of strings")
        out = []
        for i, value in enumerate(raw):
            if not isinstance(value, str):
                raise Invalid(f"item {i}: expected a string, got {type_name(value)}")
            try:
                out.append(_with(item, value.strip()))
            except Invalid as exc:
                raise Invalid(f"item {i}: {exc}") from None
        return tuple(out)
    return Spec(convert, default, from_env=_env_list)


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise Invalid(f"not a network such as 10.0.0.0/8 or ::1/128: {exc}") from None


def regex(default: str, *, group: str) -> Spec:
    def convert(raw: Any, base: Path) -> re.Pattern[str]:
        _expect(raw, str, "a regular expression string")
        try:
            pattern = re.compile(raw)
        except re.error as exc:
            raise Invalid(f"not a valid regular expression: {exc}") from None
        if group not in pattern.groupindex:
            raise Invalid(f"must have a named group (?P<{group}>...)")
        return pattern
    return Spec(convert, default)


# --- walking the tables ------------------------------------------------------------------------------


@dataclass
class Collected:
    """Raw (TOML-form) values by full key, where each came from, and the problems found so far."""

    problems: list[str]
    raw: dict[str, Any]
    origin: dict[str, str]          # full key → "" (file or default), "from x_file" or "from env X"
    failed: set[str] = field(default_factory=set)   # keys whose *_file could not be read: no value


    def label(self, key: str) -> str:
        return f"{key} ({self.origin[key]})" if self.origin.get(key) else key


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _unknown(full: str, key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"{full}: unknown key" + (f" (did you mean {close[0]}?)" if close else "")


def read_secret_file(raw: Any, base: Path) -> str:
    _expect(raw, str, "a path string")
    if not raw:
        raise Invalid("must not be empty")
    file = resolve(raw, base)
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Invalid(f"cannot read {file}: {why}") from None


def walk(table: Mapping[str, Any], schema: Schema, prefix: str, base: Path, out: Collected) -> None:
    """Collect ``table`` into ``out.raw``: unknown keys, sub-tables, ``*_file`` secrets, then defaults."""
    for key, value in table.items():
        full = _join(prefix, key)
        spec = schema.get(key)
        if isinstance(spec, Spec):
            out.raw[full] = value
        elif spec is not None:
            if isinstance(value, dict):
                walk(value, spec, full, base, out)
            else:
                out.problems.append(f"{full}: expected a table ([{full}]), got {type_name(value)}")
        elif key.endswith("_file") and isinstance(secret := schema.get(key[:-5]), Spec) and secret.secret:
            if key[:-5] in table:
                out.problems.append(f"{full}: give either {key[:-5]} or {key}, not both")
                continue
            try:
                out.raw[full[:-5]] = read_secret_file(value, base)
                out.origin[full[:-5]] = f"from {full}"
            except Invalid as exc:
                out.problems.append(f"{full}: {exc}")
                out.failed.add(full[:-5])
        else:
            out.problems.append(_unknown(full, key, schema))
    for key, spec in schema.items():
        full = _join(prefix, key)
        if isinstance(spec, Spec):
            out.raw.setdefault(full, spec.default)
        elif key not in table:
            walk({}, spec, full, base, out)


def flat_specs(schema: Schema, prefix: str = "") -> dict[str, Spec]:
    specs: dict[str, Spec] = {}
    for key, spec in schema.items():
        if isinstance(spec, Spec):
            specs[_join(prefix, key)] = spec
        else:
            specs.update(flat_specs(spec, _join(prefix, key)))
    return specs


def apply_credentials(environ: Mapping[str, str], specs: Mapping[str, Spec], out: Collected) -> None:
    """systemd credentials: ``$CREDENTIALS_DIRECTORY/<full key>`` (e.g. ``provider.phaxio.api_secret``,
    loaded with ``LoadCredential=provider.phaxio.api_secret:/etc/...``) sets that secret. It beats the
    file's value and ``KEY_file``; the environment still beats it."""
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return
    for key, spec in specs.items():
        if not spec.secret:
            continue
        file = Path(folder) / key
        if not file.is_file():
            continue
        try:
            out.raw[key] = read_secret_file(str(file), Path(folder))
            out.origin[key] = f"from credential {key}"
            out.failed.discard(key)
        except Invalid as exc:
            out.problems.append(f"{key} (from credential): {exc}")
            out.failed.add(key)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "_")


def apply_env(environ: Mapping[str, str], specs: Mapping[str, Spec], base: Path, out: Collected,
              *, ignore: frozenset[str], file_only: Mapping[str, str]) -> None:
    """Overlay ``FAXBRIDGE_*`` variables: ``FAXBRIDGE_SECTION_KEY`` (and ``..._FILE`` for secrets).

    ``ignore`` names variables that are not settings (``FAXBRIDGE_CONFIG``); ``file_only`` maps a
    variable prefix to why it cannot be set from the environment. Any other unknown one is a problem.
    """
    by_name = {env_name(key): key for key in specs}
    files = {env_name(key) + "_FILE": key for key, spec in specs.items() if spec.secret}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ignore:
            continue
        text = environ[name]
        if (key := by_name.get(name)) is not None:
            try:
                out.raw[key] = specs[key].from_env(text)
                out.origin[key] = f"from env {name}"
                out.failed.discard(key)
            except Invalid as exc:
                out.problems.append(f"{key} (from env {name}): {exc}")
        elif (key := files.get(name)) is not None:
            if name[:-5] in environ:
                out.problems.append(f"env {name}: give either {name[:-5]} or {name}, not both")
                continue
            try:
                out.raw[key] = read_secret_file(text, base)
                out.origin[key] = f"from env {name}"
                out.failed.discard(key)
            except Invalid as exc:
                out.problems.append(f"env {name}: {exc}")
                out.failed.add(key)
        else:
            why = next((w for p, w in file_only.items() if name.startswith(p)), "unknown setting")
            out.problems.append(f"env {name}: {why}")


def convert_all(specs: Mapping[str, Spec], base: Path, out: Collected) -> dict[str, Any]:
    """Convert every collected raw value; a failing key is left out of the result and reported."""
    values: dict[str, Any] = {}
    for key, spec in specs.items():
        if key not in out.raw or key in out.failed:
            continue
        try:
            values[key] = spec.convert(out.raw[key], base)
        except Invalid as exc:
            out.problems.append(f"{out.label(key)}: {exc}")
    return values
