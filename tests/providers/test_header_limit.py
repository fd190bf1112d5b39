"""Each provider the daemon builds tells its own header limit (what intake cuts a Subject to)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from faxbridge.app import build_provider
from faxbridge.config import defaults
from faxbridge.providers import openfax, phaxio, sinch


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        yield c


@pytest.mark.parametrize(("kind", "limit"), [
    ("openfax", openfax.HEADER_MAX),
    ("phaxio", phaxio.HEADER_MAX),
    ("simulator", phaxio.HEADER_MAX),     # the built-in simulator is reached through the Phaxio adapter
    ("sinch", sinch.HEADER_MAX),
])
async def test_the_built_provider_tells_its_header_limit(client: httpx.AsyncClient, tmp_path: Path,
                                                         kind: str, limit: int) -> None:
    cfg = defaults(tmp_path)
    cfg = replace(cfg, provider=replace(cfg.provider, kind=kind))
    provider = build_provider(cfg, client, "http://127.0.0.1:9")
    assert provider.header_limit == limit
    assert (openfax.HEADER_MAX, phaxio.HEADER_MAX, sinch.HEADER_MAX) == (15, 50, 50)   # documented maxima
