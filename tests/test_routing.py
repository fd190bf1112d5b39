"""Routing and failover, the pure parts: the route and chain (faxbridge.routing), the circuit's
state machine (faxbridge.circuit, a clock handed in), and the ProviderSet that holds them with the
adapters; plus the [[route]] / provider.fallback configuration and what check-config says of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faxbridge.circuit import Circuit, CircuitState
from faxbridge.config import ConfigError, load, summary
from faxbridge.errors import PermanentProviderError
from faxbridge.providers.router import ProviderSet
from faxbridge.routing import Route, chain, routed, used
from tests.support import cli

ROUTES = (Route(("+44", "+49"), "phaxio"), Route(("+4930",), "sinch"), Route(("+1212",), "openfax"))


@pytest.mark.parametrize(("to", "expected"), [
    ("+442079460958", "phaxio"),
    ("+493012345678", "phaxio"),        # the first match wins, not the longest
    ("+12125551234", "openfax"),
    ("+15555551212", "simulator"),      # no route: provider.kind
    ("+33123456789", "simulator"),
], ids=["uk", "berlin-first-match", "nyc", "us-default", "fr-default"])
def test_the_first_matching_route_wins_else_the_kind(to: str, expected: str) -> None:
    assert routed(to, ROUTES, "simulator") == expected


def test_the_chain_is_the_route_then_the_fallbacks_each_once() -> None:
    assert chain("phaxio", ["openfax", "phaxio", "sinch", "openfax"]) == ("phaxio", "openfax", "sinch")
    assert chain("openfax", []) == ("openfax",)
    assert used("phaxio", ROUTES, ["openfax"]) == ("phaxio", "sinch", "openfax")


# --- the circuit ------------------------------------------------------------------------------------------

def test_a_circuit_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() -> None:
    c = Circuit(failures_to_open=3, open_s=10.0, open_max_s=60.0)
    c.failed(0.0)
    c.failed(1.0)
    c.succeeded(2.0)                    # not in a row: the count starts again
    c.failed(3.0)
    c.failed(4.0)
    assert c.state(4.0) is CircuitState.CLOSED and c.available(4.0)
    c.failed(5.0)
    assert c.state(5.0) is CircuitState.OPEN and not c.available(5.0)
    assert c.state(14.9) is CircuitState.OPEN and c.opened_count == 1


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    c = Circuit(failures_to_open=1, open_s=10.0, open_max_s=60.0)
    c.failed(0.0)
    assert c.state(10.0) is CircuitState.HALF_OPEN and c.available(10.0)
    assert c.begin(10.0) is True                    # the probe
    assert not c.available(10.5)                    # one at a time
    assert c.begin(10.5) is False
    c.succeeded(11.0)
    assert c.state(11.0) is CircuitState.CLOSED and c.available(11.0) and c.failures == 0


def test_a_failed_probe_reopens_with_a_doubled_backoff_up_to_the_cap() -> None:
    c = Circuit(failures_to_open=1, open_s=10.0, open_max_s=25.0)
    c.failed(0.0)
    waits = []
    now = 0.0
    for _ in range(4):
        now = c.reopen_at
        assert c.begin(now)
        c.failed(now)
        assert c.state(now) is CircuitState.OPEN
        waits.append(c.reopen_at - now)
    assert waits == [20.0, 25.0, 25.0, 25.0]
    c.succeeded(c.reopen_at)
    c.failed(100.0)
    assert c.reopen_at == 110.0                     # closing reset the backoff


def test_a_probe_with_no_verdict_frees_the_slot() -> None:
    c = Circuit(failures_to_open=1, open_s=5.0)
    c.failed(0.0)
    assert c.begin(5.0) and not c.available(5.0)
    c.release()
    assert c.available(5.0) and c.state(5.0) is CircuitState.HALF_OPEN


def test_a_late_failure_while_open_does_not_extend_the_wait() -> None:
    c = Circuit(failures_to_open=1, open_s=10.0)
    c.failed(0.0)
    c.failed(3.0)                                   # a call that started before it opened
    assert c.reopen_at == 10.0


# --- the provider set -------------------------------------------------------------------------------------

class Named:
    def __init__(self, name: str) -> None:
        self.name = name


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def provider_set(mono: Mono, **kw: Any) -> ProviderSet:
    providers: Any = {n: Named(n) for n in ("phaxio", "openfax", "sinch")}
    return ProviderSet(providers, default="phaxio", monotonic=mono, circuit_failures=2, circuit_open=30.0, **kw)


def test_new_faxes_go_to_the_fallback_while_the_routed_circuit_is_open_and_back_after_the_probe() -> None:
    mono = Mono()
    ps = provider_set(mono, routes=[Route(("+44",), "sinch")], fallback=["openfax"])
    first = ps.choose("+15555551212")
    assert (first.provider.name, first.failover, first.probe) == ("phaxio", False, False)
    assert ps.choose("+442079460958").provider.name == "sinch"
    ps.failed("phaxio")
    ps.failed("phaxio")
    assert ps.states() == {"phaxio": "open", "openfax": "closed", "sinch": "closed"}
    moved = ps.choose("+15555551212")
    assert (moved.provider.name, moved.routed, moved.failover) == ("openfax", "phaxio", True)
    assert ps.choose("+442079460958").provider.name == "sinch"      # other routes are untouched
    mono.t += 30.0
    probe = ps.choose("+15555551212")
    assert (probe.provider.name, probe.probe) == ("phaxio", True)
    assert ps.choose("+15555551212").provider.name == "openfax"     # while the probe is out
    ps.succeeded("phaxio")
    assert ps.states()["phaxio"] == "closed"
    assert ps.choose("+15555551212").provider.name == "phaxio"


def test_with_every_circuit_open_the_routed_provider_takes_it() -> None:
    mono = Mono()
    ps = provider_set(mono, fallback=["openfax"])
    for name in ("phaxio", "openfax"):
        ps.failed(name)
        ps.failed(name)
    choice = ps.choose("+15555551212")
    assert (choice.provider.name, choice.failover, choice.probe) == ("phaxio", False, False)


def test_a_provider_not_configured_any_more_is_a_permanent_error() -> None:
    ps = provider_set(Mono())
    assert ps.get("sinch").name == "sinch"
    with pytest.raises(PermanentProviderError, match="not configured"):
        ps.get("gone")


# --- configuration ----------------------------------------------------------------------------------------

PHAXIO = '[provider.phaxio]\napi_key = "k"\napi_secret = "s"\ncallback_token = "t"\n'
OPENFAX = '[provider.openfax]\naccount_id = "a"\napi_key = "k"\n'


def problems(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "faxbridge.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(file, {})
    return caught.value.problems


def test_routes_and_fallback_load_in_order(tmp_path: Path) -> None:
    file = tmp_path / "faxbridge.toml"
    file.write_text('[provider]\nkind = "phaxio"\nfallback = ["openfax"]\ncircuit_failures = 4\n'
                    'circuit_open = "1m"\n' + PHAXIO + OPENFAX
                    + '[[route]]\nprefixes = ["44", "+49"]\nprovider = "openfax"\n'
                    + '[[route]]\nprefixes = ["+1212"]\nprovider = "phaxio"\n')
    cfg = load(file, {})
    assert cfg.routes == (Route(("+44", "+49"), "openfax"), Route(("+1212",), "phaxio"))
    assert (cfg.provider.fallback, cfg.provider.circuit_failures, cfg.provider.circuit_open) == (("openfax",), 4, 60.0)
    assert cfg.providers() == ("phaxio", "openfax")
    lines = summary(cfg)
    assert "route 1: +44, +49 to openfax" in lines and "route 2: +1212 to phaxio" in lines
    assert any(line.startswith("failover: to openfax") for line in lines)
    assert "provider openfax: at https://api.openfax.com" in lines
    assert any("provider.openfax.api_key set" in line for line in lines)


@pytest.mark.parametrize(("text", "expected"), [
    ('[[route]]\nprefixes = ["+44"]\nprovider = "openfax"\n',
     "route[0].provider: openfax is not configured (provider.openfax.account_id, provider.openfax.api_key: missing)"),
    ('[provider]\nkind = "phaxio"\nfallback = ["sinch"]\n' + PHAXIO,
     "provider.fallback: sinch is not configured (provider.sinch.project_id, provider.sinch.key_id, "
     "provider.sinch.key_secret, provider.sinch.callback_token: missing)"),
    ('[[route]]\nprefixes = ["+44"]\nprovider = "fax4all"\n',
     "route[0].provider: expected one of simulator, openfax, phaxio, sinch; got 'fax4all'"),
    ('[[route]]\nprefixes = ["+4a"]\nprovider = "simulator"\n',
     "route[0].prefixes: item 0: expected the start of a number in E.164 form such as +44, got '+4a'"),
    ('[[route]]\nprovider = "simulator"\n', 'route[0].prefixes: missing (e.g. prefixes = ["+44", "+49"])'),
    ('[[route]]\nprefixes = ["+44"]\n', "route[0].provider: missing (one of simulator, openfax, phaxio, sinch)"),
    ('[[route]]\nprefixes = ["+44"]\nprovider = "simulator"\nweight = 3\n', "route[0].weight: unknown key"),
    ('[provider]\nfallback = ["nobody"]\n',
     "provider.fallback: item 0: expected one of simulator, openfax, phaxio, sinch; got 'nobody'"),
], ids=["route-unconfigured", "fallback-unconfigured", "unknown-provider", "bad-prefix", "no-prefixes",
        "no-provider", "unknown-key", "bad-fallback"])
def test_check_names_each_routing_problem(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert expected in found, found


def test_the_built_in_simulator_is_routed_to_only_as_the_kind(tmp_path: Path) -> None:
    found = problems(tmp_path, '[provider]\nkind = "phaxio"\nfallback = ["simulator"]\n' + PHAXIO)
    assert any(p.startswith("provider.kind: the built-in simulator runs only with") for p in found), found


def test_check_config_names_a_route_to_an_unconfigured_provider(tmp_path: Path) -> None:
    file = tmp_path / "faxbridge.toml"
    file.write_text('[provider]\nkind = "phaxio"\n' + PHAXIO + '[[route]]\nprefixes = ["+44"]\nprovider = "openfax"\n')
    r = cli("check-config", config=file)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "route[0].provider: openfax is not configured (provider.openfax.account_id, provider.openfax.api_key: missing)"]
