"""Access to the console over its real listener (uvicorn on a free port, as the daemon serves it;
CONTRACT §13): behind a reverse proxy on this machine the browser's address is what counts, so
"loopback only" does not open the console to whoever reaches the proxy, failed logins are throttled
and logged per browser and not per proxy, and the cookies are ``Secure`` once the proxy says TLS.
(uvicorn believes those headers only from a loopback peer: a direct client cannot name another
address.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import structlog

from faxbridge.console.access import MAX_FAILURES
from faxbridge.console.server import ConsoleServer
from tests.console.test_console_http import Console, csrf_of, make_console


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Console, str]]:
    console = await make_console(tmp_path)
    server = ConsoleServer(console.ctx, "127.0.0.1", 0)
    await server.start()
    try:
        yield console, server.local_url
    finally:
        await server.stop()
        await console.store.close()


async def test_without_users_a_browser_behind_a_local_proxy_is_refused(served: tuple[Console, str]) -> None:
    _, url = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/")).status_code == 200                       # this machine
        proxied = await client.get("/", headers={"x-forwarded-for": "203.0.113.9"})
        assert proxied.status_code == 403 and "serves only this machine" in proxied.text
        local = await client.get("/", headers={"x-forwarded-for": "127.0.0.1"})
        assert local.status_code == 200                                         # a browser on this machine


async def test_behind_tls_both_cookies_are_secure(served: tuple[Console, str]) -> None:
    _, url = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        plain = await client.get("/")
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"x-forwarded-proto": "https"}) as client:
        tls = await client.get("/")
    assert "Secure" not in plain.headers["set-cookie"]
    cookie = tls.headers["set-cookie"]
    assert "faxbridge_csrf=" in cookie and "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


async def test_logins_through_a_local_proxy_are_throttled_per_browser(tmp_path: Path) -> None:
    users = {"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))}
    console = await make_console(tmp_path, users)
    server = ConsoleServer(console.ctx, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.local_url, timeout=30,
                                     headers={"x-forwarded-for": "203.0.113.9"}) as attacker, \
                httpx.AsyncClient(base_url=server.local_url, timeout=30,
                                  headers={"x-forwarded-for": "198.51.100.4"}) as alice:
            token = csrf_of((await attacker.get("/login")).text)
            with structlog.testing.capture_logs() as logs:
                for _ in range(MAX_FAILURES):
                    r = await attacker.post("/login", data={"csrf": token, "user": "alice", "password": "guess"})
                    assert r.status_code == 401
                r = await attacker.post("/login", data={"csrf": token, "user": "alice", "password": "s3cret"})
                assert r.status_code == 429
            failed = [e for e in logs if e["event"] == "console.login_failed"]
            assert {e["client"] for e in failed} == {"203.0.113.9"}                 # the browser, not the proxy
            assert [e["client"] for e in logs if e["event"] == "console.login_throttled"] == ["203.0.113.9"]
            mine = csrf_of((await alice.get("/login")).text)
            r = await alice.post("/login", data={"csrf": mine, "user": "alice", "password": "s3cret"})
            assert r.status_code == 303                                          # another browser gets in
    finally:
        await server.stop()
        await console.store.close()
