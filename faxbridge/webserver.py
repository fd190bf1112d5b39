"""Serving :mod:`faxbridge.web` with uvicorn inside the daemon's own event loop.

Not a thread, not a second process: uvicorn's ``Server.serve`` runs as a task of the running
loop, on a socket bound before :meth:`WebServer.start` returns (so the port is known and held),
with uvicorn's signal capture switched off, since the daemon owns SIGINT/SIGTERM (the same
pattern as :mod:`faxbridge.simulator.server`). Webhook handlers therefore call the store and
the tracker directly, with no locks between threads.

:func:`build_webserver` is the ``app.COMPONENTS`` builder: it resolves the Openfax postback
token (``webhook.token``, else one generated once and kept in the store's kv, never logged),
points the dispatcher's ``callback_url`` at ``/webhooks/phaxio?job=ID`` (for Phaxio and the
built-in simulator, which posts its Phaxio callbacks there, signed with its callback token),
and registers the core metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from starlette.types import ASGIApp

from faxbridge.config import Config
from faxbridge.config_parse import HostPort
from faxbridge.errors import FaxbridgeError
from faxbridge.logs import register_secrets
from faxbridge.models import Job
from faxbridge.runtime import Runtime
from faxbridge.simulator import credentials
from faxbridge.simulator.server import bind
from faxbridge.store import Store
from faxbridge.web import WebContext, build_app

log = structlog.get_logger("faxbridge.web")

KV_TOKEN = "webhook_token"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """A :class:`faxbridge.runtime.Component`: the HTTP listener on ``webhook.listen``."""

    name = "web"

    def __init__(self, app: ASGIApp | None, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def local_url(self) -> str:
        """How a process on this machine reaches the listener (wildcard addresses → loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.app is None:
            raise FaxbridgeError("the web server has no application")
        try:
            sock = bind(self.host, self.port)
        except OSError as exc:
            raise FaxbridgeError(
                f"webhook.listen: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=2, timeout_keep_alive=5)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="faxbridge-web")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise FaxbridgeError("the web server stopped while starting")
            await asyncio.sleep(0.005)
        log.info("web.listening", url=self.local_url,
                 routes=["/webhooks/phaxio", "/webhooks/openfax/<token>", "/healthz", "/metrics"])

    async def stop(self) -> None:
        """Close the listener; requests in progress get up to 2 s to finish."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.info("web.stopped")
        self._server = self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def close(self, timeout: float) -> None:
        await self.stop()

    def healthy(self) -> bool:
        server, task = self._server, self._task
        return bool(server is not None and task is not None and server.started and not task.done()
                    and not server.should_exit)


def webhook_token(cfg: Config, store: Store) -> str:
    """``webhook.token``, or the one generated at the first start and kept in the store."""
    token = cfg.webhook.token or store.kv_get(KV_TOKEN)
    if not token:
        token = secrets.token_urlsafe(32)
        store.kv_set(KV_TOKEN, token)
        log.info("webhook.token_generated", where="state_dir job store (kv webhook_token)")
    register_secrets([token])
    return token


def build_webserver(rt: Runtime) -> WebServer | None:
    cfg = rt.cfg
    if not cfg.webhook.enabled:
        return None
    listen: HostPort = cfg.webhook.listen
    kind = cfg.provider.kind
    server = WebServer(None, listen.host, listen.port)
    public = cfg.webhook.public_url.rstrip("/")

    def callback_for(job: Job) -> str:
        # The built-in simulator runs in this process and reaches us on the listener itself.
        base = server.local_url if kind == "simulator" else public
        return f"{base}/webhooks/phaxio?job={job.id}"

    phaxio_token = {"phaxio": cfg.provider.phaxio.callback_token,
                    "simulator": credentials.PHAXIO_CALLBACK_TOKEN}.get(kind)
    if phaxio_token:
        rt.dispatcher.callback_url = callback_for
    token = webhook_token(cfg, rt.store)
    ctx = WebContext(
        store=rt.store, tracker=rt.tracker, metrics=rt.metrics, provider=kind,
        openfax_token=token if kind == "openfax" else None,
        openfax_account=cfg.provider.openfax.account_id or None,
        confirm_postbacks=cfg.provider.openfax.confirm_postbacks,
        phaxio_token=phaxio_token or None, callback_for=callback_for,
        components=rt.components, ready=lambda: rt.ready,
    )
    server.app = build_app(ctx)
    return server
