"""Which provider a fax goes to: ``[[route]]`` tables, then ``provider.kind``; then the fallbacks.

Pure (contract section 14): values in, values out; the circuits that say which of the chain is
usable right now live in :mod:`faxbridge.circuit`, and the object that holds the adapters and the
circuits together in :mod:`faxbridge.providers.router`.

- A route matches a destination (E.164, ``+`` and digits) when the number starts with one of its
  ``prefixes`` (``"+44"``); the first route that matches wins, in the order of the file; no match:
  ``provider.kind``.
- The *chain* of a destination is its routed provider followed by ``provider.fallback`` in order,
  each provider once (the routed one is not tried twice when it is also a fallback).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[route]]`` table: numbers starting with any of ``prefixes`` go to ``provider``."""

    prefixes: tuple[str, ...]
    provider: str

    def matches(self, to: str) -> bool:
        return any(to.startswith(prefix) for prefix in self.prefixes)


def routed(to: str, routes: Sequence[Route], default: str) -> str:
    """The provider of the first route matching ``to``; ``default`` (``provider.kind``) when none does."""
    for route in routes:
        if route.matches(to):
            return route.provider
    return default


def chain(first: str, fallback: Iterable[str]) -> tuple[str, ...]:
    """``first``, then the fallbacks in order, each provider once."""
    out = [first]
    for name in fallback:
        if name not in out:
            out.append(name)
    return tuple(out)


def used(default: str, routes: Sequence[Route], fallback: Iterable[str]) -> tuple[str, ...]:
    """Every provider the configuration may send to, each once: ``provider.kind`` first, then the
    routes' providers in file order, then the fallbacks."""
    return chain(default, [*(r.provider for r in routes), *fallback])
