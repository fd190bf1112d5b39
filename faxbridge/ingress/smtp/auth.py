"""SMTP AUTH: the ``users_file`` and its password hashes, and the PLAIN and LOGIN exchanges.

``users_file`` holds ``user:hash`` lines (``#`` comments and blank lines are ignored); a hash is
bcrypt (``$2a$``, ``$2b$``, ``$2y$``) or argon2 (``$argon2id$``, ``$argon2i$``, ``$argon2d$``).

A line may add a third field, the envelope senders that login may use (contract section 9, issue
11 finding 12): ``scanner:HASH:scanner@office.example,*@branch.example`` (addresses or wildcards as
in ``allowed_senders``). Without it, a login that is an address (``alice@example.com:HASH``) may
send only as itself, and any other login as any sender ``allowed_senders`` allows. After AUTH,
MAIL with another sender is refused 550 5.7.1 (:data:`LOGIN_SENDER_DENIED`).
Hashes are checked in a worker thread (bcrypt and argon2 take tens of milliseconds on purpose), so
the event loop keeps serving other sessions. An unknown user is checked against a dummy hash, so
the answer takes as long as for a known user. Passwords are never logged, nor are the AUTH lines
(aiosmtpd logs client lines at INFO on the ``mail.log`` logger; the listener keeps it at WARNING).

Throttling (contract section 9, ``limits.AuthThrottle``): every ``smtp.auth`` line names the
client address (``peer``); a failure is answered later the more failures its address had lately;
the ``smtp.auth_max_failures``-th failure on a connection is answered 421 4.7.0 and the connection
closed; an address with ``smtp.auth_lockout_failures`` failures within ``smtp.auth_lockout`` is
answered 454 4.7.0 to AUTH (``FaxHandler.handle_AUTH``) without any password being checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from faxbridge.config_parse import Invalid, sender
from faxbridge.errors import ConfigError
from faxbridge.ingress.smtp.limits import AuthThrottle
from faxbridge.ingress.smtp.policy import sender_allowed
from faxbridge.ingress.smtp.protocol import FaxSMTP, peer_host
from faxbridge.ingress.smtp.replies import AUTH_TOO_MANY, CANT_DECODE_BASE64, CANT_SPLIT_AUTH

log = structlog.get_logger("faxbridge.smtp")

_DUMMY = bcrypt.hashpw(b"faxbridge-dummy-password", bcrypt.gensalt(rounds=10))



@dataclass(frozen=True)
class Users:
    hashes: dict[str, bytes] = field(default_factory=dict)
    senders: dict[str, tuple[str, ...]] = field(default_factory=dict)   # only users with a third field


def read_users(path: Path, key: str = "smtp.users_file") -> Users:
    """The users file (``key``: the setting that names it, for the errors); a ConfigError naming
    the key and line when it is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{key}: {path}: cannot be read ({exc})"]) from exc
    users = Users()
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, rest = line.partition(":")
        hashed, _, senders = rest.partition(":")
        if not sep or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$", "$argon2")):
            problems.append(f"{key}: {path} line {number}: expected user:bcrypt-or-argon2-hash")
            continue
        users.hashes[user] = hashed.encode("ascii", "replace")
        if senders.strip():
            try:
                users.senders[user] = tuple(sender(s.strip()) for s in senders.split(","))
            except Invalid as exc:
                problems.append(f"{key}: {path} line {number}: the senders of {user}: {exc}")
    if problems:
        raise ConfigError(problems)
    return users


def load_users(path: Path) -> dict[str, bytes]:
    """``user → hash`` from the users file (see :func:`read_users`)."""
    return read_users(path).hashes


def check_password(hashed: bytes, password: bytes) -> bool:
    if hashed.startswith(b"$argon2"):
        try:
            return bool(PasswordHasher().verify(hashed.decode("ascii"), password))
        except (Argon2Error, InvalidHashError, ValueError):
            return False
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


class Authenticator:
    """The handler's ``auth_PLAIN`` and ``auth_LOGIN`` (aiosmtpd calls them as handler methods)."""

    def __init__(self, users: dict[str, bytes], throttle: AuthThrottle, max_failures: int,
                 senders: dict[str, tuple[str, ...]] | None = None) -> None:
        self.users = users
        self.throttle = throttle
        self.max_failures = max_failures
        self.senders = senders or {}

    def may_send_as(self, login: str, address: str, allowed_senders: Sequence[str]) -> bool:
        """Whether ``login`` may use the envelope sender ``address`` (see the module docstring)."""
        patterns = self.senders.get(login)
        if patterns is None and "@" in login:
            patterns = (login,)
        if patterns is None:
            return sender_allowed(address, allowed_senders)
        return sender_allowed(address, patterns)

    async def verify(self, login: bytes, password: bytes) -> bool:
        hashed = self.users.get(login.decode("utf-8", "replace"))
        ok = await asyncio.to_thread(check_password, hashed or _DUMMY, password)
        return ok and hashed is not None

    async def _result(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        session = server.session
        peer = peer_host(session.peer if session is not None else None)
        working = server.working() if isinstance(server, FaxSMTP) else contextlib.nullcontext()
        with working:                   # the client waits for our answer: not idle
            user = login.decode("utf-8", "replace")
            if await self.verify(login, password):
                log.info("smtp.auth", user=user, ok=True, peer=peer)
                return AuthResult(success=True, auth_data=LoginPassword(login, b""))
            delay = self.throttle.failed(peer)
            log.info("smtp.auth", user=user, ok=False, peer=peer, answer_in_s=delay)
            failures = 1
            if isinstance(server, FaxSMTP):
                server.auth_failures += 1
                failures = server.auth_failures
            if failures >= self.max_failures:
                log.warning("smtp.auth_closed", peer=peer, failures=failures)
                await server.push(AUTH_TOO_MANY)
                if server.transport is not None:
                    server.transport.close()
                return AuthResult(success=False, handled=True)
            if delay:
                await asyncio.sleep(delay)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob: Any
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await server.push(CANT_DECODE_BASE64)
                return AuthResult(success=False, handled=True)
        try:
            _, login, password = blob.split(b"\x00")
        except ValueError:
            await server.push(CANT_SPLIT_AUTH)
            return AuthResult(success=False, handled=True)
        return await self._result(server, login, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        login: Any
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await server.push(CANT_DECODE_BASE64)
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._result(server, login, password)
