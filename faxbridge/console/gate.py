"""The console's gate: every request, before any route, is told who it is (a session, or a loopback
client without logins) and its CSRF token, or is refused (see :mod:`faxbridge.console.access`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import structlog
from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from faxbridge.console.access import CSRF_COOKIE, SESSION_COOKIE, Sessions, is_loopback

log = structlog.get_logger("faxbridge.console")


class Gate:
    """ASGI middleware: ``request.state`` gets ``session``, ``csrf`` and ``new_csrf``; a stranger
    without logins gets 403, a request without a session (with logins) the login page or 401."""

    def __init__(self, app: Any, sessions: Sessions, users: Mapping[str, bytes] | None, env: Environment) -> None:
        self.app = app
        self.sessions = sessions
        self.users = users
        self.env = env

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        client = client_of(request)
        path = request.url.path
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE)) if self.users is not None else None
        scope.setdefault("state", {})
        request.state.session = session
        csrf = session.csrf if session is not None else request.cookies.get(CSRF_COOKIE, "")
        request.state.new_csrf = session is None and not csrf
        request.state.csrf = csrf or secrets.token_urlsafe(24)
        if self.users is None and not is_loopback(client):
            log.warning("console.refused", client=client, path=path, why="not a loopback client")
            response: Response = HTMLResponse(
                self.env.get_template("error.html").render(
                    message="This console serves only this machine (there is no console.users_file).",
                    user=None, csrf="", refresh_s=0), status_code=403)
            await response(scope, receive, send)
            return
        if self.users is not None and session is None and path not in ("/login",) \
                and not path.startswith("/static/"):
            if path.startswith("/fragments/") or path == "/events" or request.method != "GET":
                await Response("log in first", status_code=401, media_type="text/plain")(scope, receive, send)
            else:
                await RedirectResponse("/login", status_code=303)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def client_of(request: Request) -> str:
    """The browser's address (behind a local proxy, uvicorn has put the forwarded one here)."""
    return request.client.host if request.client else "unknown"


def behind_tls(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
