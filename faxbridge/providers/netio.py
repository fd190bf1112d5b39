"""The provider clients' sockets on asyncio itself: httpcore's connection pool with a network backend
of our own instead of its anyio one.

httpx's default transport runs httpcore over anyio: every read and write opens an anyio cancel scope
(``fail_after``) and goes through anyio's socket stream, which on a 200 KB upload and its answer was
about a tenth of the daemon's CPU per fax (bench/PROFILE.md). httpcore lets a pool be given any
``AsyncNetworkBackend`` (its public interface); :class:`AsyncioBackend` is one on an asyncio
:class:`asyncio.Protocol`: received bytes are kept in a buffer, a read waits on one future with
one timer for its timeout, a write hands the bytes to the transport and waits only when the
transport asks us to pause (flow control).

:func:`transport` is the httpx transport over such a pool: what ``httpx.AsyncHTTPTransport()`` does
(HTTP/1.1, the same default limits and TLS context, httpcore's errors as httpx's), through public
API only. The adapters see no difference: the same ``httpx.AsyncClient``, requests, responses and
exceptions (``ConnectError``, ``ReadTimeout``... that ``providers.base.send`` turns into "maybe
sent" or not).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

# httpcore's names for a stream's details, and asyncio's for the same
_EXTRA = {"client_addr": "sockname", "server_addr": "peername", "ssl_object": "ssl_object", "socket": "socket"}

# httpcore's errors as httpx's, most specific first (what httpx's own transport does).
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _as_httpx(exc: Exception) -> Exception:
    for ours, theirs in _ERRORS:
        if isinstance(exc, ours):
            mapped = theirs(str(exc))
            mapped.__cause__ = exc
            return mapped
    return exc


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


class _Wire(asyncio.Protocol):
    """One connection's bytes: what arrived, whether it ended, and the one reader or writer waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self.paused = False
        self.readable = _Waiter(loop)
        self.drained = _Waiter(loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.readable.wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.readable.wake()
        return None            # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.readable.wake()
        self.paused = False
        self.drained.wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.drained.wake()


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, wire: _Wire) -> None:
        self._wire = wire

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wire = self._wire
        if not wire.buffer and not wire.eof and not await wire.readable.wait(timeout):
            raise httpcore.ReadTimeout("timed out reading the answer")
        if wire.buffer:
            data = bytes(wire.buffer[:max_bytes])
            del wire.buffer[:max_bytes]
            return data
        if wire.error is not None:
            raise httpcore.ReadError(f"{type(wire.error).__name__}: {wire.error}")
        return b""                 # the other side closed

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        wire = self._wire
        if not buffer:
            return
        transport = wire.transport
        if transport is None or transport.is_closing() or wire.error is not None:
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        if wire.paused:                      # the kernel's buffer is full: wait until it drains
            if not await wire.drained.wait(timeout):
                raise httpcore.WriteTimeout("timed out sending the request")
            if wire.error is not None or (wire.transport is not None and wire.transport.is_closing()):
                raise httpcore.WriteError("the connection closed while sending")

    async def aclose(self) -> None:
        if self._wire.transport is not None:
            self._wire.transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        wire = self._wire
        assert wire.transport is not None
        try:
            tls = await asyncio.wait_for(
                asyncio.get_running_loop().start_tls(wire.transport, wire, ssl_context,
                                                     server_hostname=server_hostname),
                timeout)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(f"TLS: {type(exc).__name__}: {exc}") from exc
        if tls is None:
            raise httpcore.ConnectError("TLS: the connection closed in the handshake")
        wire.transport = tls
        return self

    def get_extra_info(self, info: str) -> Any:
        wire = self._wire
        if info == "is_readable":            # an idle pooled connection the server closed, or that has
            return wire.eof or bool(wire.buffer)   # bytes nobody asked for, is not used again
        key = _EXTRA.get(info)
        return wire.transport.get_extra_info(key) if key and wire.transport is not None else None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await self._connect(loop.create_connection(lambda: _Wire(loop), host, port, local_addr=local),
                                   timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        return await self._connect(loop.create_unix_connection(lambda: _Wire(loop), path), timeout, socket_options)

    @staticmethod
    async def _connect(connecting: Any, timeout: float | None,
                       socket_options: Iterable[httpcore.SOCKET_OPTION] | None) -> AsyncioStream:
        try:
            transport, wire = await asyncio.wait_for(connecting, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("timed out connecting") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(wire)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            raise _as_httpx(exc) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class PoolTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an httpcore pool on :class:`AsyncioBackend` (see the module docstring)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            answer = await self._pool.handle_async_request(core)
        except Exception as exc:
            raise _as_httpx(exc) from exc
        return httpx.Response(status_code=answer.status, headers=answer.headers, stream=_Body(answer.stream),
                              extensions=answer.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


def transport() -> httpx.AsyncBaseTransport:
    """The transport each provider client is built on."""
    return PoolTransport()
