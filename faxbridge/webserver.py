"""Serving :mod:`faxbridge.web` with uvicorn inside the daemon's own event loop.

Not a thread, not a second process: uvicorn's ``Server.serve`` runs as a task of the running
loop, on a socket bound before :meth:`WebServer.start` returns (so the port is known and held),
with uvicorn's signal capture switched off, since the daemon owns SIGINT/SIGTERM (the same
pattern as :mod:`faxbridge.simulator.server`). Webhook handlers therefore await the store and
the tracker directly, with no locks between threads.

Partial requests cannot hold the listener (contract section 9): the request line and headers must
be complete within ``webhook.header_timeout`` (16 KiB at most), a body must not stall longer than
``webhook.read_timeout`` between reads (:class:`_Guarded`, on uvicorn's httptools protocol; uvicorn
itself only times idle keep-alive connections), and a request that arrives while ``webhook.max_connections`` connections
are open (its own included) is answered 503 by uvicorn's ``limit_concurrency``.

:func:`build_webserver` is what app.py calls: at start the server resolves the Openfax postback
token (``webhook.token``, else one generated once and kept in the store's kv, never logged) and
builds the ASGI app. The Phaxio callbacks (Phaxio's, and the built-in simulator's, signed with its
own callback token) come to ``/webhooks/phaxio?job=ID``: :func:`phaxio_callback` makes that URL
from the server's bound address, and app.py hands the same function to the dispatcher, which
sends it with each fax when :func:`phaxio_token` says callbacks can be checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from faxbridge.component import Component
from faxbridge.config import Config
from faxbridge.errors import FaxbridgeError
from faxbridge.logs import register_secrets
from faxbridge.metrics import Metrics
from faxbridge.models import Job
from faxbridge.simulator.server import bind
from faxbridge.store import JobStore
from faxbridge.tracker import Tracker
from faxbridge.web import WebContext, build_app

log = structlog.get_logger("faxbridge.web")

KV_TOKEN = "webhook_token"


MAX_HEADER_BYTES = 16 * 1024      # request line and headers together


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Guarded(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, in C) with the two clocks and the cap uvicorn lacks (its
    only timer is the idle keep-alive one, armed after a response): the request line and headers must
    be complete ``header_timeout`` seconds after the connection (or the request) began, however
    slowly they trickle in, and be at most :data:`MAX_HEADER_BYTES` (400 past it, as for any request
    that is not HTTP); a body must not stall longer than ``read_timeout`` between reads. A request
    that misses a clock is dropped (the connection closed, nothing answered)."""

    header_timeout = 10.0
    read_timeout = 30.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._clock: asyncio.TimerHandle | None = None
        self._clock_for: str | None = None
        self._phase = "head"           # head: reading a request's head; body: its body; app: answering
        self._head_bytes = 0
        self._start_clock("headers", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)            # the parser's callbacks below move the phase
        if self.transport.is_closing():
            return
        if self._phase == "head":
            self._head_bytes += len(data)      # what arrived while no head was complete
            if self._head_bytes > MAX_HEADER_BYTES:
                self._stop_clock()
                self.send_400_response("Invalid HTTP request received.")
        elif self._phase == "body":
            self._start_clock("body", self.read_timeout)   # per read: restarted by every chunk

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._head_bytes = "head", 0
        if self._clock_for != "headers":                   # one deadline for the whole head, not per read
            self._start_clock("headers", self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = "body"
        self._start_clock("body", self.read_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = "app"
        self._stop_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == "app":                           # the next request's head, from now
            self._phase, self._head_bytes = "head", 0
            self._start_clock("headers", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def _start_clock(self, what: str, seconds: float) -> None:
        self._stop_clock()
        self._clock_for = what
        self._clock = self.loop.call_later(seconds, self._expired, what)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
        self._clock = None
        self._clock_for = None

    def _expired(self, what: str) -> None:
        self._clock = None
        self._clock_for = None
        if not self.transport.is_closing():
            log.debug("web.request_timeout", waiting_for=what, client=self.client)
            self.transport.close()


class WebServer:
    """A :class:`faxbridge.component.Component`: the HTTP listener on ``webhook.listen``."""

    name = "web"

    def __init__(self, app: ASGIApp | None, host: str, port: int, *, header_timeout: float = 10.0,
                 read_timeout: float = 30.0, max_connections: int = 100) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.header_timeout = header_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.setup: Callable[[], Awaitable[None]] | None = None   # awaited at start (may set ``app``)

    @property
    def local_url(self) -> str:
        """How a process on this machine reaches the listener (wildcard addresses → loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.setup is not None:
            await self.setup()
        if self.app is None:
            raise FaxbridgeError("the web server has no application")
        try:
            sock = bind(self.host, self.port)
        except OSError as exc:
            raise FaxbridgeError(
                f"webhook.listen: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._sock = sock
        self.port = sock.getsockname()[1]
        protocol = type("Guarded", (_Guarded,), {"header_timeout": self.header_timeout,
                                                 "read_timeout": self.read_timeout})
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=2, timeout_keep_alive=5,
                                http=protocol,
                                limit_concurrency=self.max_connections)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="faxbridge-web")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise FaxbridgeError("the web server stopped while starting")
            await asyncio.sleep(0.005)
        log.info("web.listening", url=self.local_url,
                 routes=["/webhooks/phaxio", "/webhooks/openfax/<token>", "/webhooks/sinch/<token>", "/healthz",
                         "/metrics"])

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


async def webhook_token(cfg: Config, store: JobStore) -> str:
    """``webhook.token``, or the one generated at the first start and kept in the store."""
    token = cfg.webhook.token or await store.kv_get(KV_TOKEN)
    if not token:
        token = secrets.token_urlsafe(32)
        await store.kv_set(KV_TOKEN, token)
        log.info("webhook.token_generated", where="kept in the state folder's job store; set webhook.token to "
                 "choose one")
    register_secrets([token])
    return token


def phaxio_token(cfg: Config, simulator_token: str | None) -> str | None:
    """The token Phaxio callbacks are signed with: ``provider.phaxio.callback_token``, or, for the
    built-in simulator, its own (``simulator_token``, learnt in-process); None: no Phaxio route."""
    if simulator_token:
        register_secrets([simulator_token])
    if cfg.provider.kind == "simulator":
        return simulator_token or None
    return (cfg.provider.phaxio.callback_token or None) if "phaxio" in cfg.providers() else None


def phaxio_callback(cfg: Config, server: WebServer) -> Callable[[Job], str]:
    """The ``callback_url`` of a job's fax: ``/webhooks/phaxio?job=ID`` at ``webhook.public_url``,
    or, for the built-in simulator (it runs in this process), at the server's own bound address."""
    simulated = cfg.provider.kind == "simulator"
    public = cfg.webhook.public_url.rstrip("/")

    def callback_for(job: Job) -> str:
        base = server.local_url if simulated else public
        return f"{base}/webhooks/phaxio?job={job.id}"

    return callback_for


def sinch_token(cfg: Config) -> str | None:
    """``provider.sinch.callback_token`` when Sinch is one of the providers: the secret path part of
    its callback URL (Sinch signs nothing); None: no Sinch route."""
    return (cfg.provider.sinch.callback_token or None) if "sinch" in cfg.providers() else None


def sinch_callback(cfg: Config) -> Callable[[Job], str] | None:
    """The ``callbackUrl`` of a Sinch fax, ``{public_url}/webhooks/sinch/{token}`` (the same for
    every job: a callback names its fax, confirmed by ``GET /faxes/{id}``); None without a token."""
    token = sinch_token(cfg)
    if token is None:
        return None
    url = f"{cfg.webhook.public_url.rstrip('/')}/webhooks/sinch/{token}"
    return lambda job: url


def build_webserver(cfg: Config, store: JobStore, tracker: Tracker, metrics: Metrics, *,
                    phaxio_token: str | None, components: Sequence[Component],
                    ready: Callable[[], bool], trackers: Mapping[str, Tracker] | None = None,
                    circuits: Callable[[], Mapping[str, str]] | None = None) -> WebServer:
    """The web server on ``webhook.listen``: webhooks for the store and the trackers (``tracker``:
    ``provider.kind``'s; ``trackers``: one per configured provider, by name), ``/metrics`` from
    ``metrics``, ``/healthz`` asking ``ready`` and each of ``components`` (the daemon's started
    parts, a list it keeps filling) and showing ``circuits`` (each provider's circuit state)."""
    hook = cfg.webhook
    kind = cfg.provider.kind
    server = WebServer(None, hook.listen.host, hook.listen.port, header_timeout=hook.header_timeout,
                       read_timeout=hook.read_timeout, max_connections=hook.max_connections)
    callback_for = phaxio_callback(cfg, server)

    async def setup() -> None:
        token = await webhook_token(cfg, store)
        ctx = WebContext(
            store=store, tracker=tracker, metrics=metrics, provider=kind,
            openfax_token=token if "openfax" in cfg.providers() else None,
            openfax_account=cfg.provider.openfax.account_id or None,
            confirm_postbacks=cfg.provider.openfax.confirm_postbacks,
            phaxio_token=phaxio_token, callback_for=callback_for,
            components=components, ready=ready, state_dir=cfg.state_dir, max_body=hook.max_body,
            sinch_token=sinch_token(cfg), trackers=dict(trackers or {}), circuits=circuits,
        )
        server.app = build_app(ctx)

    server.setup = setup
    return server
