"""Who may use the console, and the checks on every request. Pure of HTTP except the cookie names.

- With ``console.users_file`` (the ``user:bcrypt-or-argon2-hash`` lines of ``smtp.users_file``), a
  login is needed: a session is a random token (``secrets.token_urlsafe``) kept in memory, in a
  cookie that is ``HttpOnly``, ``SameSite=Strict`` and, behind TLS, ``Secure``; it ends after
  ``SESSION_S`` or at logout (a restart logs everyone out). Failed logins are counted per client
  address: after ``MAX_FAILURES`` within ``FAILURE_WINDOW_S`` that address is refused for the
  rest of the window (and each failure is logged with the address, never the password).
- Without a users file only loopback clients are served; everyone else gets 403.
- Behind a reverse proxy on this machine (TLS, say) the address that counts (for "loopback only",
  the login throttle and the logs) is the browser's, not the proxy's: uvicorn, which serves the
  console, takes it from ``X-Forwarded-For`` (and the scheme from ``X-Forwarded-Proto``) when the
  peer is ``127.0.0.1`` or ``::1`` (``FORWARDED_ALLOW_IPS`` in the environment widens that), and
  believes those headers from no one else. So without a users file a proxied request from
  elsewhere is refused like a direct one, and one address's failed logins lock out no other.
- Every POST carries a CSRF token, compared in constant time: the session's own, or (without
  logins) a random per-browser token in a ``SameSite=Strict`` cookie that the form must repeat.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "faxbridge_session"
CSRF_COOKIE = "faxbridge_csrf"
SESSION_S = 8 * 3600.0
MAX_FAILURES = 5
FAILURE_WINDOW_S = 900.0


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    clock: Callable[[], float] = time.monotonic
    _by_token: dict[str, Session] = field(default_factory=dict)

    def new(self, user: str) -> tuple[str, Session]:
        self._expire()
        token = secrets.token_urlsafe(32)
        session = self._by_token[token] = Session(user, secrets.token_urlsafe(24), self.clock() + SESSION_S)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None or session.expires <= self.clock():
            self._by_token.pop(token, None)
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._by_token.items() if s.expires <= now]:
            del self._by_token[token]


@dataclass
class LoginThrottle:
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= self.clock() - FAILURE_WINDOW_S:
            times.popleft()
        return times

    def refused(self, client: str) -> bool:
        return len(self._recent(client)) >= MAX_FAILURES

    def failed(self, client: str) -> int:
        times = self._recent(client)
        times.append(self.clock())
        return len(times)

    def passed(self, client: str) -> None:
        self._failures.pop(client, None)
