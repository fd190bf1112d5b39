"""The configuration: one TOML file (contract section 2) → frozen dataclasses. Every error names its key.

``load(path, environ)`` reads the file, overlays the environment, checks everything and raises one
:class:`~faxbridge.errors.ConfigError` listing *all* problems, one ``"full.key: what"`` line each
(``smtp.listn: unknown key``, ``provider.openfax.api_key: missing``). A TOML syntax error or a file
that cannot be read is a single line naming the file (tomllib's message carries line and column).

Rules beyond the contract's table, decided here:

- Relative paths (and ``*_file`` paths, also from the environment) are taken against the config
  file's folder, or ``base_dir`` (default: the working folder) when there is no file; ``~`` expands.
- Secrets (``account_id``, ``api_key``, ``api_secret``, ``callback_token``, ``username``,
  ``password``, ``token``) may come from ``KEY_file = "/path"`` (the file's text, trailing newlines
  stripped) or from the environment. Precedence: env ``FAXBRIDGE_X`` / ``FAXBRIDGE_X_FILE`` beats
  ``$CREDENTIALS_DIRECTORY/<full key>`` (systemd ``LoadCredential=``) beats ``KEY_file`` beats ``KEY``.
  Giving both ``KEY`` and ``KEY_file`` (or both env forms) is an error.
  Secret values never appear in messages, ``repr()`` or :func:`summary`.
- Every other scalar or list key may be overridden by ``FAXBRIDGE_<KEY>`` with dots as underscores,
  upper-cased (``FAXBRIDGE_SMTP_LISTEN``, ``FAXBRIDGE_PROVIDER_POLL_INTERVAL``). The string is read as
  the key's type: booleans ``true/false/1/0/yes/no/on/off``, numbers, durations and sizes as in the
  file, lists comma-separated (empty: an empty list). ``[[watch]]`` entries cannot be set this way.
- ``FAXBRIDGE_CONFIG`` names the file (the CLI's business) and ``FAXBRIDGE_CRASHPOINT`` is a test hook
  (:mod:`faxbridge.crashpoints`); both are ignored here. Any other
  ``FAXBRIDGE_*`` variable that matches no key is a problem (``env FAXBRIDGE_SMTP_LISTN: unknown
  setting``): a misspelt override must not be silently dropped.
- A ``[[watch]]`` entry takes the contract's default for each key it leaves out; two entries may not
  share a ``path``, and ``results``/``done``/``failed`` may not be the watched folder itself.
- ``provider.kind = "openfax"`` needs ``account_id`` and ``api_key``; ``"phaxio"`` needs ``api_key``
  and ``api_secret``, and ``callback_token`` while ``webhook.enabled`` (else no callback could be
  verified; with webhooks off, polling alone finishes jobs and the token may be empty).
- ``smtp.tls_cert``/``tls_key`` (both or neither), and ``users_file`` (required by ``require_auth``)
  must exist when SMTP is enabled, so ``check-config`` catches a wrong path before the daemon starts.
- ``numbers.blocked_prefixes`` are digits; a leading ``+`` is dropped. Country codes are upper-cased.
- ``provider.kind = "sinch"`` needs ``project_id``, ``key_id`` and ``key_secret``, and
  ``callback_token`` while ``webhook.enabled`` (Sinch signs nothing: the token is the secret path
  part of ``{public_url}/webhooks/sinch/{token}``).
- ``[[route]]`` tables (section 14) each need ``prefixes`` (starts of E.164 numbers; a missing ``+``
  is added) and ``provider``; like ``[[watch]]`` they cannot be set from the environment. Every
  provider a route or ``provider.fallback`` names must be configured as ``provider.kind`` would
  need it: ``route[0].provider: sinch is not configured (provider.sinch.key_id, ...: missing)``.
  The built-in simulator is started only for ``provider.kind = "simulator"``, so it may not be a
  route's or a fallback's provider.
- ``provider.reconcile_grace`` left empty (the default) means each provider's own: 60 s for Phaxio
  and the simulator, 10 minutes plus 1 minute a page for Openfax (its report may list a fax only
  once its first call attempt is over); a value set decides for every provider.
- ``provider.phaxio.caller_id``, ``cancel_timeout`` (whole minutes are sent) and ``test_fail`` (test
  keys only) are Phaxio's own send parameters, sent only when set.
- Extension keys: ``provider.circuit_failures``, ``provider.circuit_open``, ``provider.reconcile_grace``,
  ``provider.low_balance``, ``provider.openfax.confirm_postbacks``,
  ``[log]``, and the bounds in ``[limits]`` (``max_parts``, ``max_nesting``, ``max_headers``,
  ``max_parameters``, ``max_decompressed``, ``max_cover_pages``, ``job_cpu``, ``job_memory``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from faxbridge.config_parse import (
    Collected,
    HostPort,
    Invalid,
    Schema,
    apply_credentials,
    apply_env,
    blocked_prefix,
    boolean,
    check_url,
    convert_all,
    country,
    domain,
    duration,
    e164_number,
    fax_header,
    flat_specs,
    hostport,
    integer,
    mail_address,
    network,
    number,
    office_setting,
    path,
    regex,
    region,
    route_prefix,
    sender,
    size,
    store_url,
    string,
    strings,
    time_zone,
    url_path,
    url_token,
    walk,
)
from faxbridge.errors import ConfigError
from faxbridge.routing import Route, used

__all__ = [
    "Config", "ConfigError", "HostPort", "LimitsConfig", "LogConfig", "NotifyConfig", "NumbersConfig",
    "OpenfaxConfig", "PhaxioConfig", "ProviderConfig", "SimulatorConfig", "SinchConfig", "SmtpConfig", "StoreConfig",
    "WatchConfig",
    "WebhookConfig", "defaults", "load", "summary",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    enabled: bool
    listen: HostPort
    domains: tuple[str, ...]
    allowed_senders: tuple[str, ...]
    allowed_clients: tuple[Network, ...]
    max_message_size: int
    require_auth: bool
    users_file: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    cover_page: str
    max_sessions: int = 100             # section 9: SMTP sessions at once; more: 421 4.7.0 at connect
    max_sessions_per_client: int = 10   # section 9: sessions at once from one client address
    timeout: float = 300.0              # section 9: per read; a client silent this long: 421 4.4.2
    auth_max_failures: int = 3          # failed AUTH on one connection: the last is answered 421 4.7.0, closed
    auth_lockout_failures: int = 10     # failed AUTH from one address within auth_lockout: 454 4.7.0 until then
    auth_lockout: float = 900.0


@dataclass(frozen=True, slots=True)
class WatchConfig:
    path: Path
    results: Path
    done: Path
    failed: Path
    pattern: re.Pattern[str]
    settle: float
    poll: bool
    recursive: bool
    max_size: int = 50_000_000      # extension key: a larger file is rejected
    max_depth: int = 8              # extension key: with recursive, subfolder levels looked at


@dataclass(frozen=True, slots=True)
class NumbersConfig:
    default_country: str
    strict: bool
    allowed_countries: tuple[str, ...]
    blocked_prefixes: tuple[str, ...]
    max_pages: int
    allow_shared_cost: bool = False    # true: shared-cost numbers (UK 084x, DE 0180...) may be faxed


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    per_sender_per_hour: int
    max_in_flight: int
    per_client_per_hour: int = 60       # section 9: jobs per hour from one client address (0: no limit)
    per_destination: int = 1            # section 11: jobs to one number at the provider at once (0: no limit)
    # Bounds before work (contract section 9; extension keys): see ingress/mime_bounds, documents.
    max_parts: int = 100
    max_nesting: int = 20
    max_headers: int = 500
    max_parameters: int = 100
    max_decompressed: int = 200_000_000
    max_cover_pages: int = 20
    job_cpu: float = 120.0
    job_memory: int = 2_000_000_000
    worker_idle: float = 5.0            # seconds a worker process waits for work before it leaves


@dataclass(frozen=True, slots=True)
class DocumentsConfig:
    office: str = "auto"             # section 11: "auto" (soffice on PATH), "off", or the path of soffice
    convert_timeout: float = 60.0    # ... one conversion's limit

    def soffice(self) -> str | None:
        """The converter ``office`` names: "auto" looks on PATH; None: Office documents are refused."""
        if self.office == "off":
            return None
        if self.office == "auto":
            return shutil.which("soffice") or shutil.which("libreoffice")
        return self.office if Path(self.office).is_file() else None


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    enabled: bool = True                               # section 13: the web console
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 8026))   # not the webhook listener
    users_file: Path | None = None                     # "user:hash" lines; None: loopback clients only


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    smarthost: HostPort | None
    starttls: bool
    username: str
    password: str = field(repr=False)
    from_address: str
    # section 12: what replies carry, and copies for an administrator
    attach: str = "none"                    # "none", "preview" (the first page as a PNG) or "document" (the PDF)
    copy_to: tuple[str, ...] = ()           # addresses that get a copy of every final result ...
    copy_on: str = "failed"                 # ... of failed, rejected and canceled jobs, or "final": all
    copy_attach: str = "none"               # what copies carry, as attach
    receipt: bool = False                   # a mail "accepted" to the sender right after the 250


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    enabled: bool
    listen: HostPort
    public_url: str
    token: str = field(repr=False)
    max_body: int = 1_000_000          # a webhook body larger than this gets 413 while it streams
    header_timeout: float = 10.0       # a request whose headers are not all in by then is dropped
    read_timeout: float = 30.0         # a request body that stalls this long between reads is dropped
    max_connections: int = 100         # a request while this many connections are open (its own too): 503


@dataclass(frozen=True, slots=True)
class OpenfaxConfig:
    base_url: str
    send_path: str
    balance_path: str
    report_path: str
    account_id: str
    api_key: str = field(repr=False)
    to_header: str
    from_header: str
    priority: str
    confirm_postbacks: bool = True


@dataclass(frozen=True, slots=True)
class PhaxioConfig:
    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    callback_token: str = field(repr=False)
    header_text: str
    caller_id: str = ""                 # extension: a Phaxio number of the account shown as the caller
    cancel_timeout: float | None = None  # extension: seconds (3 to 60 minutes) before Phaxio gives up
    test_fail: str = ""                 # extension, test keys only: the error type Phaxio simulates


@dataclass(frozen=True, slots=True)
class SinchConfig:
    base_url: str
    project_id: str
    key_id: str = field(repr=False)
    key_secret: str = field(repr=False)
    callback_token: str = field(repr=False)
    header_text: str = ""


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    speed: float


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    kind: str
    poll_interval: float
    submit_retries: int
    retry_initial: float
    retry_max: float
    request_timeout: float
    reconcile_grace: float | None   # None: each provider's own default (see the module docstring)
    low_balance: float              # extension key: warn (log + metric) below this balance; 0: never
    openfax: OpenfaxConfig
    phaxio: PhaxioConfig
    simulator: SimulatorConfig
    sinch: SinchConfig
    unknown_grace: float = 3600.0   # extension: a fax the provider has no record of ends its job after this
    fallback: tuple[str, ...] = ()  # section 14: tried in order while the chosen provider's circuit is open
    circuit_failures: int = 3       # extension: transient failures in a row that open a provider's circuit
    circuit_open: float = 30.0      # extension: the first wait before a probe (doubling, up to retry_max)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"
    show_numbers: bool = False


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Contract section 10: where jobs live. ``url`` empty: SQLite in ``state_dir`` (one daemon)."""

    url: str = field(default="", repr=False)   # may hold the password: never shown (summary strips it)
    lease: float = 30.0                        # a dead daemon's claims are taken over after this
    node: str = ""                             # this daemon's name; empty: the host name

    def node_name(self) -> str:
        """``node``, or the host name when it is empty."""
        return self.node or os.uname().nodename


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    shutdown_grace: float
    smtp: SmtpConfig
    watch: tuple[WatchConfig, ...]
    numbers: NumbersConfig
    limits: LimitsConfig
    notify: NotifyConfig
    webhook: WebhookConfig
    provider: ProviderConfig
    log: LogConfig
    source: Path | None
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    routes: tuple[Route, ...] = ()   # section 14: [[route]] tables, first match wins
    time_zone: str = ""      # section 11: how "YYYY-MM-DD HH:MM" send times are read (IANA; empty: the host's)

    def providers(self) -> tuple[str, ...]:
        """Every provider this configuration may send to, each once, ``provider.kind`` first
        (then the routes' and the fallbacks', section 14)."""
        return used(self.provider.kind, self.routes, self.provider.fallback)

    def zone(self) -> tzinfo:
        """``time_zone`` as a tzinfo: the named zone, or the host's local zone."""
        if self.time_zone:
            return ZoneInfo(self.time_zone)
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC


# --- the schema (contract section 2) ---------------------------------------------------------------------

DEFAULT_PATTERN = r"^(?P<number>\+?[0-9(][0-9().\- ]{6,}[0-9])(?:[_ ].*)?\.(?i:pdf|tiff?|png|jpe?g|txt)$"
# The contract's default (section 2). Office documents (section 11) get their number from a control
# file, a subfolder, or a pattern that names their extensions too (the example file shows one).

ATTACH = ("none", "preview", "document")   # notify.attach, notify.copy_attach
KINDS = ("simulator", "openfax", "phaxio", "sinch")   # provider.kind, provider.fallback, route.provider


def provider_kind(value: str) -> str:
    """A provider's name (``route.provider`` may be left empty: then it is named as missing)."""
    if value and value not in KINDS:
        raise Invalid(f"expected one of {', '.join(KINDS)}; got {value!r}")
    return value


ROUTE_SCHEMA: Schema = {
    "prefixes": strings([], item=route_prefix),
    "provider": string("", check=provider_kind),
}

WATCH_SCHEMA: Schema = {
    "path": path("var/outbox"),
    "results": path("var/results"),
    "done": path("var/done"),
    "failed": path("var/failed"),
    "pattern": regex(DEFAULT_PATTERN, group="number"),
    "settle": duration("2s"),
    "poll": boolean(False),
    "recursive": boolean(False),
    "max_size": size("50MB"),
    "max_depth": integer(8),
}

SCHEMA: Schema = {
    "state_dir": path("var"),
    "shutdown_grace": duration("30s"),
    "time_zone": string("", check=time_zone),
    "smtp": {
        "enabled": boolean(True),
        "listen": hostport("127.0.0.1:2525"),
        "domains": strings(["fax.local"], item=domain),
        "allowed_senders": strings([], item=sender),
        "allowed_clients": strings(["127.0.0.0/8", "::1/128"], item=network),
        "max_message_size": size("25MB"),
        "require_auth": boolean(False),
        "users_file": path("", optional=True),
        "tls_cert": path("", optional=True),
        "tls_key": path("", optional=True),
        "cover_page": string("if-body", choices=("never", "if-body", "always")),
        "max_sessions": integer(100, minimum=1),
        "max_sessions_per_client": integer(10, minimum=1),
        "timeout": duration("300s", positive=True),
        "auth_max_failures": integer(3, minimum=1),
        "auth_lockout_failures": integer(10, minimum=1),
        "auth_lockout": duration("15m", positive=True),
    },
    "numbers": {
        "default_country": string("US", check=region),
        "strict": boolean(False),
        "allowed_countries": strings(["US", "CA"], item=country),
        "blocked_prefixes": strings(["1900", "1976"], item=blocked_prefix),
        "max_pages": integer(200, minimum=1),
        "allow_shared_cost": boolean(False),
    },
    "limits": {
        "per_sender_per_hour": integer(60),
        "max_in_flight": integer(50, minimum=1),
        "per_client_per_hour": integer(60),
        "per_destination": integer(1),
        "max_parts": integer(100, minimum=1),
        "max_nesting": integer(20, minimum=2),
        "max_headers": integer(500, minimum=50),
        "max_parameters": integer(100, minimum=10),
        "max_decompressed": size("200MB"),
        "max_cover_pages": integer(20, minimum=1),
        "job_cpu": duration("120s"),
        "job_memory": size("2GB"),
        "worker_idle": duration("5s"),
    },
    "store": {
        "url": string("", secret=True, check=store_url),
        "lease": duration("30s", positive=True),
        "node": string(""),
    },
    "console": {
        "enabled": boolean(True),
        "listen": hostport("127.0.0.1:8026"),
        "users_file": path("", optional=True),
    },
    "documents": {
        "office": string("auto", check=office_setting),
        "convert_timeout": duration("60s", positive=True),
    },
    "notify": {
        "smarthost": hostport("", optional=True),
        "starttls": boolean(False),
        "username": string("", secret=True),
        "password": string("", secret=True),
        "from_address": string("faxbridge@fax.local", check=mail_address),
        "attach": string("none", choices=ATTACH),
        "copy_to": strings([], item=mail_address),
        "copy_on": string("failed", choices=("failed", "final")),
        "copy_attach": string("none", choices=ATTACH),
        "receipt": boolean(False),
    },
    "webhook": {
        "enabled": boolean(True),
        "listen": hostport("127.0.0.1:8025"),
        "public_url": string("http://127.0.0.1:8025", check=check_url),
        "token": string("", secret=True, check=url_token),
        "max_body": size("1MB"),
        "header_timeout": duration("10s", positive=True),
        "read_timeout": duration("30s", positive=True),
        "max_connections": integer(100, minimum=1),
    },
    "provider": {
        "kind": string("simulator", choices=KINDS),
        "fallback": strings([], item=provider_kind),
        "circuit_failures": integer(3, minimum=1),
        "circuit_open": duration("30s", positive=True),
        "poll_interval": duration("30s", positive=True),
        "submit_retries": integer(5),
        "retry_initial": duration("2s", positive=True),
        "retry_max": duration("5m", positive=True),
        "request_timeout": duration("60s", positive=True),
        "reconcile_grace": duration("", optional=True),
        "low_balance": number(5.0),
        "unknown_grace": duration("1h", positive=True),
        "openfax": {
            "base_url": string("https://api.openfax.com", check=check_url),
            "send_path": string("/faxSendSubmit.php", check=url_path),
            "balance_path": string("/getAvailableCredit.php", check=url_path),
            "report_path": string("/outboundDetailsbyDate.php", check=url_path),
            "account_id": string("", secret=True),
            "api_key": string("", secret=True),
            "to_header": string("", check=fax_header),
            "from_header": string("", check=fax_header),
            "priority": string("Normal", choices=("Normal", "Low")),
            "confirm_postbacks": boolean(True),
        },
        "phaxio": {
            "base_url": string("https://api.phaxio.com/v2", check=check_url),
            "api_key": string("", secret=True),
            "api_secret": string("", secret=True),
            "callback_token": string("", secret=True),
            "header_text": string(""),
            "caller_id": string("", check=e164_number),
            "cancel_timeout": duration("", optional=True),
            "test_fail": string("", choices=("", "documentConversionError", "lineError", "faxError",
                                             "fatalError", "generalError")),
        },
        "sinch": {
            "base_url": string("https://fax.api.sinch.com/v3", check=check_url),
            "project_id": string("", check=url_token),
            "key_id": string("", secret=True),
            "key_secret": string("", secret=True),
            "callback_token": string("", secret=True, check=url_token),
            "header_text": string(""),
        },
        "simulator": {
            "speed": number(10.0, positive=True),
        },
    },
    "log": {
        "level": string("info", choices=("debug", "info", "warning", "error", "critical")),
        "format": string("auto", choices=("auto", "json", "console")),
        "show_numbers": boolean(False),
    },
}

SPECS = flat_specs(SCHEMA)
WATCH_SPECS = flat_specs(WATCH_SCHEMA)
ROUTE_SPECS = flat_specs(ROUTE_SCHEMA)
SECRET_KEYS = tuple(key for key, spec in SPECS.items() if spec.secret)
_REQUIRED = {
    "openfax": ("provider.openfax.account_id", "provider.openfax.api_key"),
    "phaxio": ("provider.phaxio.api_key", "provider.phaxio.api_secret"),
    "sinch": ("provider.sinch.project_id", "provider.sinch.key_id", "provider.sinch.key_secret"),
}


# --- loading -------------------------------------------------------------------------------------------


def load(path: Path | None, environ: Mapping[str, str], *, base_dir: Path | None = None) -> Config:
    """Read ``path`` (None: the built-in defaults, relative to ``base_dir`` or the working folder)."""
    if path is None:
        base, data, source = (base_dir or Path.cwd()).absolute(), {}, None
    else:
        source = path.absolute()
        base = source.parent
        try:
            with source.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    out = Collected(problems=[], raw={}, origin={})
    walk({k: v for k, v in data.items() if k not in ("watch", "route")}, SCHEMA, "", base, out)
    apply_credentials(environ, SPECS, out)
    apply_env(environ, SPECS, base, out, ignore=frozenset({"FAXBRIDGE_CONFIG", "FAXBRIDGE_CRASHPOINT"}),
              file_only={"FAXBRIDGE_WATCH_": "unknown setting ([[watch]] folders are set in the file only)"})
    values = convert_all(SPECS, base, out)
    watches = _watches(data.get("watch") if path is not None else [{}], base, out.problems)
    routes = _routes(data.get("route"), base, out.problems)
    _cross_check(values, out.problems)
    _check_providers(values, routes, out.problems)
    if out.problems:
        raise ConfigError(out.problems)
    return replace(_build(values, tuple(watches), source), routes=tuple(routes))


def defaults(base_dir: Path) -> Config:
    """The built-in configuration (no file, no environment), with relative paths under ``base_dir``."""
    return load(None, {}, base_dir=base_dir)


def _tables(entries: Any, name: str, problems: list[str]) -> list[dict[str, Any]]:
    """``[[name]]``: the array of tables, or none (and the problem said) when it is something else."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(f"{name}: expected [[{name}]] tables (an array of tables)")
        return []
    return entries


def _watches(entries: Any, base: Path, problems: list[str]) -> list[WatchConfig]:
    entries = _tables(entries, "watch", problems)
    watches: list[WatchConfig] = []
    seen: dict[Path, str] = {}
    for i, entry in enumerate(entries):
        prefix = f"watch[{i}]"
        out = Collected(problems=problems, raw={}, origin={})
        walk(entry, WATCH_SCHEMA, prefix, base, out)
        values = convert_all({f"{prefix}.{k}": s for k, s in WATCH_SPECS.items()}, base, out)
        if len(values) < len(WATCH_SPECS):
            continue                    # a key failed; already reported
        watch = WatchConfig(**{k.removeprefix(prefix + "."): v for k, v in values.items()})
        for name in ("results", "done", "failed"):
            if getattr(watch, name) == watch.path:
                problems.append(f"{prefix}.{name}: must not be the watched folder itself ({watch.path})")
        if watch.path in seen:
            problems.append(f"{prefix}.path: the same folder as {seen[watch.path]}.path ({watch.path})")
        seen.setdefault(watch.path, prefix)
        watches.append(watch)
    return watches


def _routes(entries: Any, base: Path, problems: list[str]) -> list[Route]:
    """``[[route]]`` tables (section 14), in file order; each needs ``prefixes`` and ``provider``."""
    entries = _tables(entries, "route", problems)
    routes: list[Route] = []
    for i, entry in enumerate(entries):
        prefix = f"route[{i}]"
        out = Collected(problems=problems, raw={}, origin={})
        walk(entry, ROUTE_SCHEMA, prefix, base, out)
        values = convert_all({f"{prefix}.{k}": s for k, s in ROUTE_SPECS.items()}, base, out)
        if len(values) < len(ROUTE_SPECS):
            continue                    # a key failed; already reported
        prefixes, provider = values[f"{prefix}.prefixes"], values[f"{prefix}.provider"]
        if not prefixes:
            problems.append(f"{prefix}.prefixes: missing (e.g. prefixes = [\"+44\", \"+49\"])")
        if not provider:
            problems.append(f"{prefix}.provider: missing (one of {', '.join(KINDS)})")
        if prefixes and provider:
            routes.append(Route(prefixes, provider))
    return routes


def _missing(v: Mapping[str, Any], kind: str) -> list[str]:
    """The keys provider ``kind`` needs that are empty (a key that failed on its own is not named)."""
    required = list(_REQUIRED.get(kind, ()))
    if kind in ("phaxio", "sinch") and v.get("webhook.enabled"):
        required.append(f"provider.{kind}.callback_token")
    return [name for name in required if v.get(name, "x") == ""]


def _check_providers(v: Mapping[str, Any], routes: list[Route], problems: list[str]) -> None:
    """Every provider a route or ``provider.fallback`` names must be configured (section 14); the
    missing keys of ``provider.kind`` itself are named by :func:`_cross_check`."""
    kind = v.get("provider.kind")
    if kind is None:
        return
    named = [(f"route[{i}].provider", r.provider) for i, r in enumerate(routes)]
    named += [("provider.fallback", name) for name in v.get("provider.fallback", ())]
    for key, name in named:
        if name == kind:
            continue
        missing = _missing(v, name)
        if missing:
            problems.append(f"{key}: {name} is not configured ({', '.join(missing)}: missing)")
    if "simulator" in used(kind, routes, v.get("provider.fallback", ())) and kind != "simulator":
        problems.append("provider.kind: the built-in simulator runs only with provider.kind = \"simulator\"; "
                        "route to a provider section instead (e.g. [provider.phaxio] at `faxbridge simulate`)")


def _cross_check(v: Mapping[str, Any], problems: list[str]) -> None:
    """Checks between keys. A key that failed on its own is absent from ``v`` and skipped here."""
    cert, key = v.get("smtp.tls_cert"), v.get("smtp.tls_key")
    if cert is not None and key is None and "smtp.tls_key" in v:
        problems.append("smtp.tls_key: required when smtp.tls_cert is set")
    if key is not None and cert is None and "smtp.tls_cert" in v:
        problems.append("smtp.tls_cert: required when smtp.tls_key is set")
    if v.get("smtp.require_auth") and "smtp.users_file" in v and v["smtp.users_file"] is None:
        problems.append("smtp.users_file: required when smtp.require_auth is true")
    if v.get("smtp.enabled"):
        for name in ("users_file", "tls_cert", "tls_key"):
            file = v.get(f"smtp.{name}")
            if file is not None and not file.is_file():
                problems.append(f"smtp.{name}: {file}: no such file")
    console_users = v.get("console.users_file")
    if v.get("console.enabled") and console_users is not None and not console_users.is_file():
        problems.append(f"console.users_file: {console_users}: no such file")
    cancel = v.get("provider.phaxio.cancel_timeout")
    if cancel is not None and not 180 <= cancel <= 3600:
        problems.append("provider.phaxio.cancel_timeout: must be between 3m and 60m (Phaxio's range)")
    initial, most = v.get("provider.retry_initial"), v.get("provider.retry_max")
    if initial is not None and most is not None and most < initial:
        problems.append("provider.retry_max: must not be shorter than provider.retry_initial")
    kind = v.get("provider.kind")
    for name in _missing(v, kind or ""):
        why = ""
        if "callback" in name:
            why = (" (needed to verify callbacks while webhook.enabled is true)" if "phaxio" in name else
                   " (the secret path part of the callback URL while webhook.enabled is true)")
        problems.append(f"{name}: missing{why}")


_T = TypeVar("_T")


def _section(cls: type[_T], v: Mapping[str, Any], prefix: str, **given: Any) -> _T:
    kwargs = {f.name: v[f"{prefix}.{f.name}"] for f in fields(cls) if f.name not in given}  # type: ignore[arg-type]
    return cls(**kwargs, **given)


def _build(v: Mapping[str, Any], watches: tuple[WatchConfig, ...], source: Path | None) -> Config:
    provider = _section(
        ProviderConfig, v, "provider",
        openfax=_section(OpenfaxConfig, v, "provider.openfax"),
        phaxio=_section(PhaxioConfig, v, "provider.phaxio"),
        simulator=_section(SimulatorConfig, v, "provider.simulator"),
        sinch=_section(SinchConfig, v, "provider.sinch"),
    )
    return Config(
        state_dir=v["state_dir"], shutdown_grace=v["shutdown_grace"],
        smtp=_section(SmtpConfig, v, "smtp"), watch=watches,
        numbers=_section(NumbersConfig, v, "numbers"), limits=_section(LimitsConfig, v, "limits"),
        notify=_section(NotifyConfig, v, "notify"), webhook=_section(WebhookConfig, v, "webhook"),
        provider=provider, log=_section(LogConfig, v, "log"), source=source,
        documents=_section(DocumentsConfig, v, "documents"), time_zone=v["time_zone"],
        store=_section(StoreConfig, v, "store"),
        console=_section(ConsoleConfig, v, "console"),
    )


# --- summary -------------------------------------------------------------------------------------------


def _no_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _secret_state(cfg: Config, key: str) -> str:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    if key == "webhook.token" and not obj:
        return f"{key} generated at the first start and kept in the state folder"
    return f"{key} {'set' if obj else 'not set'}"


def _store_lines(s: StoreConfig) -> list[str]:
    """The shared store, when there is one (SQLite in the state dir, the default, says nothing)."""
    if not s.url:
        return []
    shown = urlsplit(_no_userinfo(s.url))._replace(query="", fragment="").geturl()   # no password, ever
    return [f"job store: PostgreSQL at {shown}, node {s.node_name()}, leases of {s.lease:g}s (store.lease)"]


def _office_line(d: DocumentsConfig) -> str:
    found = d.soffice()
    if d.office == "off":
        return "office documents: refused (documents.office = off)"
    if found is None and d.office == "auto":
        return "office documents: refused, no LibreOffice (soffice) on PATH (documents.office = auto)"
    if found is None:
        return f"office documents: refused, {d.office} does not exist (documents.office)"
    return f"office documents: converted by {found}, {d.convert_timeout:g}s each (documents.convert_timeout)"


def summary(cfg: Config) -> list[str]:
    """Lines for ``faxbridge check-config``: what the daemon would do. No secret values, ever."""
    p = cfg.provider
    urls = {"openfax": p.openfax.base_url, "phaxio": p.phaxio.base_url,
            "sinch": f"{p.sinch.base_url.rstrip('/')}/projects/{p.sinch.project_id}"}
    url = urls.get(p.kind)
    providers = used(p.kind, cfg.routes, p.fallback)
    lines = [
        f"config file: {cfg.source if cfg.source else 'none (built-in defaults)'}",
        f"state dir: {cfg.state_dir}",
        *_store_lines(cfg.store),
        f"provider: {p.kind}" + (f" at {_no_userinfo(url)}" if url else f" (speed {p.simulator.speed:g})"),
        *[f"provider {name}: at {_no_userinfo(urls[name])}" for name in providers[1:] if name in urls],
        *[f"route {i + 1}: {', '.join(r.prefixes)} to {r.provider}" for i, r in enumerate(cfg.routes)],
    ]
    if p.fallback:
        lines.append(f"failover: to {', '.join(p.fallback)} while a provider fails ({p.circuit_failures} "
                     f"failures in a row open its circuit; a probe after {p.circuit_open:g}s)")
    if cfg.smtp.enabled:
        auth = ", AUTH required" if cfg.smtp.require_auth else ""
        tls = ", STARTTLS" if cfg.smtp.tls_cert else ""
        lines.append(f"smtp: {cfg.smtp.listen} for {', '.join(cfg.smtp.domains) or 'no domain'}{tls}{auth}")
        m = cfg.smtp
        lines.append(f"smtp limits: {m.max_sessions} sessions ({m.max_sessions_per_client} per client), "
                     f"{m.timeout:g}s without a byte drops one, AUTH closed after {m.auth_max_failures} failures")
    else:
        lines.append("smtp: disabled")
    if p.reconcile_grace is not None:
        lines.append(f"reconcile grace: {p.reconcile_grace:g} s (provider.reconcile_grace)")
    elif p.kind == "openfax":
        lines.append("reconcile grace: 10 min + 1 min a page (Openfax's default; provider.reconcile_grace)")
    lim = cfg.limits
    lines.append(f"work bounds: {lim.max_parts} parts, nesting {lim.max_nesting}, {lim.max_decompressed / 1e6:g}MB "
                 f"unpacked, {lim.max_cover_pages} cover pages, {lim.job_cpu:g}s CPU and "
                 f"{lim.job_memory / 1e9:g}GB a mail; {lim.per_sender_per_hour} faxes/hour a sender, "
                 f"{lim.per_client_per_hour} a client address; worker processes leave after "
                 f"{lim.worker_idle:g}s idle")
    per = lim.per_destination
    lines.append(f"sending: {per if per else 'any number of'} fax{'es' if per != 1 else ''} at a time to one number "
                 f"(limits.per_destination), {lim.max_in_flight} at the provider in all; send times read in "
                 f"{cfg.time_zone or 'this host' + chr(39) + 's time zone'} (time_zone)")
    lines.append(_office_line(cfg.documents))
    c = cfg.console
    if c.enabled:
        who = f"logins from {c.users_file}" if c.users_file else "this machine only (no console.users_file)"
        lines.append(f"console: http://{c.listen}/ for {who}")
    else:
        lines.append("console: disabled")
    lines += [f"watch: {w.path} (results in {w.results})" for w in cfg.watch] or ["watch: no folder"]
    if cfg.webhook.enabled:
        w = cfg.webhook
        lines.append(f"webhook: {w.listen}, reached at {_no_userinfo(w.public_url)}")
        lines.append(f"webhook limits: bodies up to {w.max_body / 1e6:g}MB, headers within {w.header_timeout:g}s, "
                     f"{w.max_connections} connections")
    else:
        lines.append("webhook: disabled (polling alone finishes jobs)")
    smarthost = cfg.notify.smarthost
    lines.append(f"reply mail: through {smarthost}" if smarthost else "reply mail: off (no notify.smarthost)")
    n = cfg.notify
    if smarthost and n.receipt:
        lines.append("receipts: a mail \"accepted\" to the sender right after the 250 (notify.receipt)")
    if smarthost and n.attach != "none":
        lines.append(f"replies carry: {'the first page as a PNG' if n.attach == 'preview' else 'the PDF sent'}")
    if n.copy_to:
        carry = {"none": "", "preview": ", with the first page", "document": ", with the PDF sent"}[n.copy_attach]
        which = "every final job" if n.copy_on == "final" else "failed, rejected and canceled jobs"
        lines.append(f"copies: of {which} to {', '.join(n.copy_to)}{carry}"
                     + ("" if smarthost else " (not sent: no notify.smarthost)"))
    shown = [k for name in providers for k in SECRET_KEYS if k.startswith(f"provider.{name}.")]
    shown += ["webhook.token"] if cfg.webhook.enabled else []
    shown += ["notify.username", "notify.password"] if smarthost else []
    if shown:
        lines.append("secrets: " + ", ".join(_secret_state(cfg, key) for key in shown))
    return lines
