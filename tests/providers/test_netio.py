"""The provider clients' transport (providers/netio.py) against real sockets: plain HTTP and TLS,
kept-alive connections, a connection the server closed while idle, and each failure as the httpx
error ``providers.base.send`` tells apart (connect failed: never sent; timeouts and drops: maybe sent)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from faxbridge.errors import TransientProviderError
from faxbridge.providers import netio
from faxbridge.providers.base import send
from tests.conftest import free_port
from tests.ingress.test_smtp_auth import make_cert

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER = b'{"success": true, "data": {"id": 7}}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


def answer(body: bytes = ANSWER, *, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (extra, len(body), body))


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on loopback; yields its base URL and a list that counts its connections."""
    connections: list[int] = []

    async def each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(each, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", connections
    finally:
        server.close()


def client(timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=netio.PoolTransport(ssl_context=ssl_context), timeout=timeout)


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        body = await read_request(reader)
        writer.write(answer(b'{"got": %d}' % len(body)))
        await writer.drain()


async def test_requests_share_one_kept_alive_connection() -> None:
    async with serving(keep_answering) as (base, connections), client() as c:
        for size in (0, 10, 300_000):
            response = await c.post(base + "/faxes", content=b"x" * size)
            assert response.status_code == 200 and response.json() == {"got": size}
    assert len(connections) == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())          # no "Connection: close": the client keeps it for the next request
        await writer.drain()

    async with serving(once_then_close) as (base, connections), client() as c:
        assert (await c.get(base + "/a")).json() == {"success": True, "data": {"id": 7}}
        for _ in range(200):            # until the close has reached the client
            if len(connections) == 1:
                await asyncio.sleep(0.01)
        assert (await c.get(base + "/b")).status_code == 200
    assert len(connections) == 2


async def test_tls_with_the_servers_certificate_trusted(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with serving(keep_answering, tls=server_side) as (base, connections):
        async with client(ssl_context=trusted) as c:
            for _ in range(3):
                response = await c.post(base + "/faxes", content=b"%PDF-" + b"x" * 200_000)
                assert response.json() == {"got": 200_005}
        assert len(connections) == 1
        async with client(timeout=5) as untrusting:      # the system's roots do not know this certificate
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(base + "/")


async def test_nothing_listening_is_a_connect_error_never_sent() -> None:
    async with client(timeout=5) as c:
        request = c.build_request("POST", f"http://127.0.0.1:{free_port()}/faxes", content=b"x")
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", request)
    assert caught.value.code == "connect" and not caught.value.maybe_sent


async def test_no_answer_is_a_read_timeout_maybe_sent() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()              # holds the connection, never answers

    async with serving(silent) as (base, _), client(timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(base + "/faxes", content=b"x" * 1000)
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", c.build_request("POST", base + "/faxes", content=b"x"))
    assert caught.value.code == "timeout" and caught.value.maybe_sent


async def test_a_server_that_stops_reading_is_a_write_timeout() -> None:
    stop = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    async with serving(never_reads) as (base, _), client(timeout=0.5) as c:
        try:
            with pytest.raises(httpx.WriteTimeout):
                await c.post(base + "/faxes", content=b"x" * (64 << 20))   # past every socket buffer
        finally:
            stop.set()


async def test_an_answer_cut_short_is_a_protocol_error_maybe_sent() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        await writer.drain()

    async with serving(cut) as (base, _), client() as c:
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", c.build_request("POST", base + "/faxes", content=b"x"))
    assert caught.value.code == "transport" and caught.value.maybe_sent
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


def raw_server(reply: bytes, *, close: bool = False) -> Handler:
    """Answers each request with ``reply`` as it is (closing the connection after it with ``close``)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()
            if close:
                return
    return handler


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")
    async with serving(raw_server(chunked)) as (base, connections), client() as c:
        for _ in range(2):
            assert (await c.get(base + "/")).json() == {"a": 1}
    assert len(connections) == 1


async def test_an_answer_without_a_length_ends_with_the_connection_and_it_is_not_reused() -> None:
    async with serving(raw_server(b"HTTP/1.1 200 OK\r\n\r\n" + ANSWER, close=True)) as (base, connections), \
            client() as c:
        for _ in range(2):
            assert (await c.get(base + "/")).content == ANSWER
    assert len(connections) == 2


async def test_connection_close_and_http_1_0_answers_are_not_kept() -> None:
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
    for reply in (answer(close=True), http10):
        async with serving(raw_server(reply)) as (base, connections), client() as c:
            for _ in range(2):
                assert (await c.get(base + "/")).json()["success"] is True
        assert len(connections) == 2, reply


async def test_an_interim_answer_is_read_past() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer()
    async with serving(raw_server(reply)) as (base, connections), client() as c:
        for _ in range(2):
            response = await c.post(base + "/faxes", content=b"x")
            assert response.status_code == 200 and response.json()["data"] == {"id": 7}
            assert "link" not in response.headers and response.reason_phrase == "OK"
    assert len(connections) == 1


async def test_bytes_after_the_answer_mean_the_connection_is_not_used_again() -> None:
    async with serving(raw_server(answer() + b"HTTP/1.1 200 OK\r\n")) as (base, connections), client() as c:
        for _ in range(2):
            assert (await c.get(base + "/")).json()["success"] is True
    assert len(connections) == 2


async def test_an_answer_that_is_not_http_is_a_protocol_error_maybe_sent() -> None:
    async with serving(raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as (base, _), client() as c:
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", c.build_request("POST", base + "/faxes", content=b"x"))
    assert caught.value.maybe_sent and isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_an_early_answer_from_a_server_that_stops_reading_is_the_answer() -> None:
    async def refuses_big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        await writer.drain()
        writer.transport.abort()       # closed with most of the body unread (a reset, not a FIN)

    async with serving(refuses_big) as (base, _), client() as c:
        try:
            response = await c.post(base + "/faxes", content=b"x" * (64 << 20))
        except httpx.WriteError:       # the reset reached us before the answer did: also "maybe sent"
            return
        assert response.status_code == 413 and response.text == "no"


async def test_a_kept_connection_closed_as_the_request_goes_is_a_protocol_error_maybe_sent() -> None:
    served = asyncio.Event()

    async def answer_then_close_on_the_next(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()
        served.set()
        await reader.readuntil(b"\r\n\r\n")    # the next request's head arrives, then the server goes
        writer.transport.abort()

    async with serving(answer_then_close_on_the_next) as (base, connections), client() as c:
        assert (await c.get(base + "/")).status_code == 200
        await served.wait()
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", c.build_request("POST", base + "/faxes", content=b"x"))
    assert caught.value.code == "transport" and caught.value.maybe_sent
    assert len(connections) == 1


async def test_with_every_connection_busy_a_request_waits_then_is_a_pool_timeout() -> None:
    release, busy = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            busy.set()
            await release.wait()
            writer.write(answer())
            await writer.drain()

    one = netio.PoolTransport(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
    async with serving(slow) as (base, connections), \
            httpx.AsyncClient(transport=one, timeout=httpx.Timeout(10, pool=0.3)) as c:
        first = asyncio.create_task(c.get(base + "/first"))
        await busy.wait()                                         # the one connection is in use
        with pytest.raises(TransientProviderError) as caught:
            await send(c, "phaxio", c.build_request("GET", base + "/second"))
        assert caught.value.code == "pool" and not caught.value.maybe_sent
        second = asyncio.create_task(c.get(base + "/third"))    # waits for the first one's connection
        release.set()
        assert [(await t).status_code for t in (first, second)] == [200, 200]
    assert len(connections) == 1


async def test_a_head_request_ends_at_the_headers() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"     # the length a GET would have

    async def heads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            await writer.drain()

    async with serving(heads) as (base, _), client(timeout=5) as c:
        for _ in range(2):
            response = await c.head(base + "/")
            assert response.status_code == 200 and response.content == b""
            assert response.headers["content-length"] == "1000"
