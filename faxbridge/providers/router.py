"""The configured providers as one object: which adapter a new fax goes to, and each one's circuit.

app.py builds one :class:`ProviderSet` from the configuration and hands it to the dispatcher (which
asks :meth:`ProviderSet.choose` for each new submission and reports how the call went) and, one
adapter each, to the trackers, the balance watches and the web server. The decisions are pure and
live elsewhere: the route and the chain in :mod:`faxbridge.routing`, each circuit's state machine
in :mod:`faxbridge.circuit`; this object only holds them together with the adapters and a clock.

- :meth:`choose` walks the destination's chain (its route's provider, then ``provider.fallback``)
  and takes the first provider whose circuit lets a new submission through. When none does, the
  routed provider takes it anyway: the job's own back-off (``provider.retry_*``) paces it, as with
  a single provider, and a job is never kept from every provider by the circuits alone.
- A submission whose outcome is unknown is never moved: the dispatcher reconciles it with the
  provider named on the job (:meth:`get`), which was recorded before the call.
- The verdicts: :meth:`succeeded` (the provider answered: it took the fax, refused it, or named
  an account problem), :meth:`failed` (a transient failure before it took the fax: connect error,
  timeout, 5xx, 429), :meth:`released` (our own error: no verdict on the provider).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from faxbridge.circuit import Circuit, CircuitState
from faxbridge.errors import PermanentProviderError
from faxbridge.providers.base import Provider
from faxbridge.routing import Route, chain, routed

log = structlog.get_logger("faxbridge.providers")


@dataclass(frozen=True)
class Choice:
    """The provider a submission goes to, and whether it is a half-open circuit's probe."""

    provider: Provider
    routed: str                # the provider the destination's route named
    probe: bool = False

    @property
    def failover(self) -> bool:
        return self.provider.name != self.routed


class ProviderSet:
    def __init__(self, providers: Mapping[str, Provider], *, default: str, routes: Sequence[Route] = (),
                 fallback: Sequence[str] = (), monotonic: Callable[[], float],
                 circuit_failures: int = 3, circuit_open: float = 30.0, circuit_open_max: float = 600.0) -> None:
        if default not in providers:
            raise ValueError(f"no adapter for provider.kind {default!r}")
        self.providers = dict(providers)
        self.default = default
        self.routes = tuple(routes)
        self.fallback = tuple(name for name in fallback if name in self.providers)
        self.monotonic = monotonic
        self.circuits = {name: Circuit(circuit_failures, circuit_open, max(circuit_open, circuit_open_max))
                         for name in self.providers}

    @classmethod
    def single(cls, provider: Provider, monotonic: Callable[[], float]) -> ProviderSet:
        """One provider, no routes, no fallback (its circuit is shown, it never moves a fax)."""
        return cls({provider.name: provider}, default=provider.name, monotonic=monotonic)

    @property
    def primary(self) -> Provider:
        """The ``provider.kind`` adapter."""
        return self.providers[self.default]

    def get(self, name: str) -> Provider:
        """The adapter that jobs name ``name``; a job of a provider no longer configured cannot be
        reconciled or cancelled (a permanent error, so it is said, not retried at once)."""
        try:
            return self.providers[name]
        except KeyError:
            raise PermanentProviderError(f"provider {name!r} is not configured any more", provider=name,
                                         code="not_configured") from None

    def choose(self, to: str) -> Choice:
        """The provider a new submission to ``to`` goes to now (see the module docstring)."""
        first = routed(to, self.routes, self.default)
        if first not in self.providers:         # a route to a provider not built (config checks this)
            first = self.default
        now = self.monotonic()
        names = chain(first, self.fallback)
        name = next((n for n in names if self.circuits[n].available(now)), first)
        probe = self.circuits[name].begin(now)
        return Choice(self.providers[name], first, probe)

    def succeeded(self, name: str) -> None:
        circuit = self.circuits.get(name)
        if circuit is None:
            return
        was = circuit.state(self.monotonic())
        circuit.succeeded(self.monotonic())
        if was is not CircuitState.CLOSED:
            log.info("provider.circuit_closed", provider=name, was=was.value)

    def failed(self, name: str) -> None:
        circuit = self.circuits.get(name)
        if circuit is None:
            return
        now = self.monotonic()
        was = circuit.state(now)
        circuit.failed(now)
        if circuit.state(now) is CircuitState.OPEN and was is not CircuitState.OPEN:
            others = [n for n in self.fallback if n != name]
            log.warning("provider.circuit_open", provider=name, failures=circuit.failures,
                        probe_in_s=round(circuit.reopen_at - now, 3), fallback=others)

    def released(self, name: str) -> None:
        circuit = self.circuits.get(name)
        if circuit is not None:
            circuit.release()

    def states(self) -> dict[str, str]:
        """Each provider's circuit now: ``closed``, ``open`` or ``half-open``."""
        now = self.monotonic()
        return {name: c.state(now).value for name, c in self.circuits.items()}
