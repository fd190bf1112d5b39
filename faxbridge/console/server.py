"""The console as a daemon part: its app on a :class:`~faxbridge.webserver.WebServer` of its own on
``console.listen`` (never the webhook listener, which faces the providers). Its ``changes`` is the
store observer behind ``/events`` (:mod:`faxbridge.console.live`); app.py subscribes it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.console.app import ConsoleContext, PageRender, build_app
from faxbridge.ingress.smtp.auth import check_password, read_users
from faxbridge.states import Policy
from faxbridge.store import JobStore
from faxbridge.webserver import WebServer


class ConsoleServer(WebServer):
    name = "console"

    def __init__(self, ctx: ConsoleContext, host: str, port: int) -> None:
        super().__init__(build_app(ctx), host, port)
        self.changes = ctx.changes      # the store observer that feeds /events (app.py subscribes it)

    async def stop(self) -> None:
        """End the open ``/events`` streams first, so closing the listener waits on no open page."""
        self.changes.close()
        await super().stop()


def make_console(cfg: Config, store: JobStore, clock: Clock, policy: Policy, *, render: PageRender,
                 health: Callable[[], Mapping[str, bool]], balance: Callable[[], float | None]) -> ConsoleServer | None:
    """The console's listener, or None with ``console.enabled = false``. A users file that cannot be
    read stops the start with a ConfigError naming ``console.users_file``."""
    c = cfg.console
    if not c.enabled:
        return None
    users = read_users(Path(c.users_file), "console.users_file").hashes if c.users_file else None
    ctx = ConsoleContext(cfg, store, clock, policy, render=render, health=health, balance=balance, users=users,
                         check_password=check_password)
    return ConsoleServer(ctx, c.listen.host, c.listen.port)
