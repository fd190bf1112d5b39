"""The provider clients' HTTP/1.1 connections, on asyncio itself, with llhttp (httptools) reading
the answers: the httpx transport every provider client is built on (:func:`transport`).

Why not httpx's own transport: it runs httpcore over anyio, and httpcore reads answers with h11
(pure Python) through several layers of streams, locks and events per request. On a 200 KB upload
and its answer that was about a sixth of the daemon's CPU per fax (bench/PROFILE.md). The
requests faxbridge sends are simple: HTTP/1.1 to one or two hosts, a body of known length (or
chunked), an answer read whole. So the connection is an :class:`asyncio.Protocol` of our own:
the request is handed to the transport in one or a few writes (waiting only when the transport
asks us to pause), and each arriving block of the answer is fed to httptools' C parser (the one
uvicorn uses for our webhook listener), whose callbacks collect the status, headers and body.

What the adapters see is unchanged: the same ``httpx.AsyncClient``, requests, responses and the
httpx errors ``providers.base.send`` tells apart:

- ``ConnectError`` / ``ConnectTimeout``: the request never left (refused, no route, TLS refused
  or not trusted, the handshake too slow);
- ``PoolTimeout``: every connection busy for the pool timeout;
- ``WriteTimeout`` / ``ReadTimeout``: no progress for that long while sending or waiting;
- ``WriteError`` / ``ReadError`` / ``RemoteProtocolError``: the connection broke, or the answer
  was cut short or is not HTTP; the request may have reached the provider.

Connections are kept alive (at most ``max_keepalive_connections`` idle, each for
``keepalive_expiry`` seconds) unless the answer says otherwise. An idle connection the server
closed, or that received bytes nobody asked for, is never used again.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

_Key = tuple[bytes, bytes, int]            # scheme, host, port


class _Waiter:
    """One task at a time waiting for something the protocol tells (bytes came, the buffer drained)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float | None) -> bool:
        """Whether it was woken within ``timeout`` seconds (None: no limit). One timer, no task."""
        future = self._future = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, future)
        try:
            await future
        except TimeoutError:
            return False
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()
        return True


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Answer:
    """httptools' callbacks for one answer: status line, headers, body as it comes. An interim
    answer (1xx: 100 Continue, 103 Early Hints) is read past: only the final one is kept."""

    def __init__(self, head_only: bool) -> None:
        self.parser: Any = httptools.HttpResponseParser(self)
        self.head_only = head_only          # the answer to HEAD: no body follows its headers
        self.reason = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.done = False
        self.interim = False
        self.sized = False                  # Content-Length or chunked: the end is in the message
        self.extra = False                  # more came after its end: the connection is not used again
        self.keep_alive = False             # HTTP/1.1 without "Connection: close"
        self.body: collections.deque[bytes] = collections.deque()

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True
            return
        self.reason.clear()
        self.headers.clear()
        self.sized = False

    def on_status(self, status: bytes) -> None:
        if not self.done:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done:
            return
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self.sized = True

    def on_headers_complete(self) -> None:
        if self.done:
            return
        self.interim = 100 <= self.parser.get_status_code() < 200
        if not self.interim:
            self.keep_alive = self.parser.should_keep_alive()   # (llhttp forgets it at the message's end)
            self.head_done = True
            self.done = self.head_only

    def on_body(self, body: bytes) -> None:
        if not self.head_only and not self.done:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.done:
            return
        if self.interim:
            self.interim = False
        else:
            self.done = True


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request and its answer at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: _Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False                 # the other side ended it, or it broke
        self.error: Exception | None = None
        self.stray = False                  # bytes came while no answer was awaited
        self.paused = False
        self.idle_since = 0.0
        self.readable = _Waiter(loop)
        self.drained = _Waiter(loop)
        self.answer: _Answer | None = None  # the answer awaited (None while idle)

    # -- asyncio's side ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None or answer.done:
            self.stray = True
            return
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = httpx.RemoteProtocolError(f"the answer is not HTTP/1.1: {exc}")
        except httptools.HttpParserUpgrade:
            self.error = httpx.RemoteProtocolError("the server switched protocols")
        self.readable.wake()

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None                         # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self.paused = False
        self.drained.wake()

    def _ended(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is not None and answer.head_done and not answer.sized and not answer.done:
            answer.done = True              # a body read until the server closes (no length given)
        elif exc is not None and self.error is None:
            self.error = exc
        self.readable.wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.drained.wake()

    # -- the transport's side ----------------------------------------------------------------------
    def usable(self) -> bool:
        return not self.closed and not self.stray and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def write(self, timeout: float | None, *data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.closed:
            raise httpx.WriteError(f"the connection is closed{_why(self.error)}")
        transport.writelines(data)
        if self.paused:                     # the kernel's buffer is full: wait until it drains
            if not await self.drained.wait(timeout):
                raise httpx.WriteTimeout("timed out sending the request")
            if self.closed or transport.is_closing():
                raise httpx.WriteError(f"the connection closed while sending{_why(self.error)}")

    async def wait_for(self, ready: Any, timeout: float | None) -> None:
        """Until ``ready()`` (something of the answer arrived), or the error that ends the wait."""
        while not ready():
            if self.error is not None:
                raise self.error if isinstance(self.error, httpx.HTTPError) else httpx.ReadError(
                    f"{type(self.error).__name__}: {self.error}")
            if self.closed:
                raise httpx.RemoteProtocolError("the server closed the connection before its answer was complete")
            if not await self.readable.wait(timeout):
                raise httpx.ReadTimeout("timed out waiting for the answer")


def _why(error: Exception | None) -> str:
    return f" ({type(error).__name__}: {error})" if error is not None else ""


def _head(request: httpx.Request) -> bytes:
    url = request.url
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), url.raw_path)]
    lines += [b"%s: %s" % pair for pair in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Body(httpx.AsyncByteStream):
    """The answer's body as it arrives; the connection goes back to the pool once it is read whole."""

    def __init__(self, pool: PoolTransport, conn: _Connection, timeout: float | None) -> None:
        self._pool, self._conn, self._timeout = pool, conn, timeout
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        answer = conn.answer
        assert answer is not None
        try:
            while True:
                while answer.body:
                    yield answer.body.popleft()
                if answer.done:
                    break
                await conn.wait_for(lambda: bool(answer.body) or answer.done, self._timeout)
        except BaseException:
            self._finish(reuse=False)
            raise
        self._finish(reuse=True)

    def _finish(self, *, reuse: bool) -> None:
        if not self._finished:
            self._finished = True
            self._pool.release(self._conn, reuse=reuse)

    async def aclose(self) -> None:
        self._finish(reuse=False)           # not read to its end (or already released: nothing)


class PoolTransport(httpx.AsyncBaseTransport):
    """httpx's transport over our own HTTP/1.1 connections (see the module docstring)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._max = limits.max_connections or 1 << 30
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else 1 << 30
        self._expiry = limits.keepalive_expiry
        self._idle: collections.deque[_Connection] = collections.deque()     # the most recently used last
        self._open = 0                                                        # connections in use or idle
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"{scheme.decode(errors='replace')!r} is not HTTP")
        key = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        conn = await self._connection(key, timeouts)
        answer = conn.answer = _Answer(head_only=request.method == "HEAD")
        try:
            try:
                await self._send(conn, request, timeouts.get("write"))
            except httpx.WriteError:
                # The server may have answered and closed before it read everything (413, 401):
                # its answer is the one to give; without one, the write error stands.
                if not answer.head_done:
                    raise
            await conn.wait_for(lambda: answer.head_done, timeouts.get("read"))
        except BaseException:
            self.release(conn, reuse=False)
            raise
        status = answer.parser.get_status_code()
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": bytes(answer.reason)}
        return httpx.Response(status_code=status, headers=answer.headers, extensions=extensions,
                              stream=_Body(self, conn, timeouts.get("read")))

    async def _send(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        head = _head(request)
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        async for part in request.stream:       # type: ignore[union-attr]
            if not part:
                continue
            if chunked:
                part = b"%x\r\n%s\r\n" % (len(part), part)
            if head:
                await conn.write(timeout, head, part)
                head = b""
            else:
                await conn.write(timeout, part)
        if chunked:
            head += b"0\r\n\r\n"
        if head:
            await conn.write(timeout, head)

    # -- the pool ----------------------------------------------------------------------------------
    async def _connection(self, key: _Key, timeouts: dict[str, float | None]) -> _Connection:
        now = time.monotonic()
        while (conn := next((c for c in reversed(self._idle) if c.key == key), None)) is not None:
            self._idle.remove(conn)
            if conn.usable() and (self._expiry is None or now - conn.idle_since < self._expiry):
                return conn
            self._drop(conn)
        self._expire(now)
        while self._open >= self._max:
            if self._idle:                      # an idle connection to another host makes room
                self._drop(self._idle.popleft())
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeouts.get("pool"))
            except TimeoutError:
                raise httpx.PoolTimeout("every connection stayed busy") from None
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            return await self._connection(key, timeouts)
        self._open += 1
        try:
            return await self._connect(key, timeouts.get("connect"))
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, key: _Key, timeout: float | None) -> _Connection:
        scheme, raw_host, port = key
        host = raw_host.decode("ascii")
        loop = asyncio.get_running_loop()
        tls = self._ssl if scheme == b"https" else None
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop, key), host, port, ssl=tls,
                                       server_hostname=host if tls is not None else None),
                timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        """A request is over: its connection kept for the next one, or closed."""
        answer = conn.answer
        keep = (reuse and answer is not None and answer.done and not answer.head_only and answer.sized
                and not answer.extra and answer.keep_alive and conn.usable())
        if answer is not None:
            answer.parser = None            # (the parser refers back to the answer: no cycle left)
        conn.answer = None
        if keep and len(self._idle) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._wake()
        else:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1
        self._wake()

    def _expire(self, now: float) -> None:
        while self._idle and self._expiry is not None and now - self._idle[0].idle_since >= self._expiry:
            self._drop(self._idle.popleft())

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        while self._idle:
            self._drop(self._idle.popleft())


def transport() -> httpx.AsyncBaseTransport:
    """The transport each provider client is built on."""
    return PoolTransport()
