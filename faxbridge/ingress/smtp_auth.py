"""SMTP AUTH: the ``users_file`` and its password hashes, and the PLAIN and LOGIN exchanges.

``users_file`` holds ``user:hash`` lines (``#`` comments and blank lines are ignored); a hash is
bcrypt (``$2a$``, ``$2b$``, ``$2y$``) or argon2 (``$argon2id$``, ``$argon2i$``, ``$argon2d$``).
Hashes are checked in a worker thread (bcrypt and argon2 take tens of milliseconds on purpose), so
the event loop keeps serving other sessions. An unknown user is checked against a dummy hash, so
the answer takes as long as for a known user. Passwords are never logged, nor are the AUTH lines
(aiosmtpd logs client lines at INFO on the ``mail.log`` logger; the listener keeps it at WARNING).
"""

from __future__ import annotations

import asyncio
from base64 import b64decode
from pathlib import Path
from typing import Any

import bcrypt
import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from faxbridge.errors import ConfigError

log = structlog.get_logger("faxbridge.smtp")

_DUMMY = bcrypt.hashpw(b"faxbridge-dummy-password", bcrypt.gensalt(rounds=10))


def load_users(path: Path) -> dict[str, bytes]:
    """``user → hash`` from the users file; a ConfigError naming the key and line when it is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"smtp.users_file: {path}: cannot be read ({exc})"]) from exc
    users: dict[str, bytes] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$", "$argon2")):
            problems.append(f"smtp.users_file: {path} line {number}: expected user:bcrypt-or-argon2-hash")
            continue
        users[user] = hashed.encode("ascii", "replace")
    if problems:
        raise ConfigError(problems)
    return users


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

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users

    async def verify(self, login: bytes, password: bytes) -> bool:
        user = login.decode("utf-8", "replace")
        hashed = self.users.get(user)
        ok = await asyncio.to_thread(check_password, hashed or _DUMMY, password)
        ok = ok and hashed is not None
        log.info("smtp.auth", user=user, ok=ok)
        return ok

    async def _result(self, login: bytes, password: bytes) -> AuthResult:
        if await self.verify(login, password):
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
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
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _, login, password = blob.split(b"\x00")
        except ValueError:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._result(login, password)

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
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._result(login, password)
