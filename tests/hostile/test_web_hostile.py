"""Contract section 9, the web server: bodies capped while they stream, forms parsed off the event
loop, partial requests dropped, malformed webhooks answered 4xx (never 500), and the simulator's
callback token a secret of its own. Real HTTP over raw sockets against the real daemon."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge import logs
from faxbridge.simulator import Simulator, credentials, phaxio_signature
from faxbridge.simulator.records import Notification
from faxbridge.simulator.webhooks import encode_multipart
from tests.conftest import free_port, wait_until
from tests.simulator import conftest as simkit
from tests.simulator.conftest import Receiver
from tests.support import DaemonProcess, base_settings, secret, write_config
from tests.tracking import conftest as tracking
from tests.tracking.conftest import Start, openfax_at, settings
from tests.tracking.helpers import (
    callback_fields,
    callback_token,
    fax_now,
    parts,
    post_callback,
    queue,
    wait_job,
    web_url,
)

start = tracking.start          # the in-process daemon and simulator fixtures of the tracking tests
simulator = tracking.simulator
receiver = simkit.receiver      # the simulator tests' webhook endpoint

CHUNK = 64 * 1024
TOKEN = secret("hostile-postback-token-0123456789")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def web_daemon(tmp: Path, **webhook: Any) -> Iterator[tuple[DaemonProcess, str]]:
    """``faxbridge run`` (simulator provider, SMTP off) with its web server on a free port."""
    port = free_port()
    s = base_settings(tmp)
    s["webhook"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
                    **webhook}
    proc = DaemonProcess(write_config(tmp / "faxbridge.toml", s), tmp / "daemon.log").start()
    try:
        proc.wait_ready()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    """The default body cap (1 MB), short header and read timeouts."""
    with web_daemon(tmp_path_factory.mktemp("web"), header_timeout="2s", read_timeout="2s") as running:
        yield running


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and whatever came (up to the close or a 60 s silence)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), data


def healthy(base: str) -> None:
    response = httpx.get(base + "/healthz", timeout=60)
    assert response.status_code == 200, response.text


def closed_without_answer(sock: socket.socket) -> bool:
    """True once the server has closed the connection without sending anything."""
    readable, _, _ = select.select([sock], [], [], 0.2)
    if not readable:
        return False
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    assert data == b"", data[:200]
    return True


# ---- finding 9: the body is capped while it streams ------------------------------------------------


def test_chunked_body_claiming_1gb_gets_413_while_streaming(daemon: tuple[DaemonProcess, str]) -> None:
    proc, base = daemon
    assert proc.proc is not None
    healthy(base)
    before = rss_kib(proc.proc.pid)
    sock = connect(base)
    sent = 0
    status = None
    try:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
        while sent < 256 * 1024 * 1024 and status is None:     # never the terminating 0-chunk
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                status, data = read_response(sock)
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
        if status is None:
            status, data = read_response(sock)
    finally:
        sock.close()
    assert status == 413, data[:300]
    assert b'{"result":"too large"}' in data
    assert 1_000_000 < sent < 64 * 1024 * 1024         # past the cap, and answered long before the end
    grown = (rss_kib(proc.proc.pid) - before) * 1024
    assert grown < 16 * 1024 * 1024, (grown, sent)     # not the body: at most the 1 MB cap and buffers
    healthy(base)


def test_declared_length_over_the_cap_is_refused_before_the_body(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as sock:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nfax=")
        status, data = read_response(sock)
    assert status == 413 and b"connection: close" in data.lower()
    healthy(base)


# ---- finding 9: forms are parsed off the event loop -----------------------------------------------


def test_healthz_answers_while_a_big_form_is_parsed(tmp_path: Path) -> None:
    """A 9 MB urlencoded field of %-escapes takes seconds to parse: /healthz is answered meanwhile,
    before the big post's own answer (on the event loop it would wait behind the parse)."""
    with web_daemon(tmp_path, max_body="20MB") as (_, base):
        big_form_and_healthz(base)


def big_form_and_healthz(base: str) -> None:
    body = b"fax=" + b"%41" * 3_000_000
    result: dict[str, Any] = {}
    sent = threading.Event()

    def post() -> None:
        with connect(base) as sock:
            sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % len(body))
            sock.sendall(body)
            sent.set()
            result["status"], _ = read_response(sock)
            result["at"] = time.monotonic()

    thread = threading.Thread(target=post)
    thread.start()
    answered: list[float] = []
    try:
        assert sent.wait(60)
        while "at" not in result:
            healthy(base)
            answered.append(time.monotonic())
    finally:
        thread.join(60)
    assert result["status"] == 403                     # parsed: a fax field that names no job
    assert [t for t in answered if t < result["at"]], "no /healthz answer while the form was parsed"
    healthy(base)


# ---- finding 9: partial requests are dropped --------------------------------------------------------


def test_slow_loris_headers_are_dropped_after_the_header_timeout(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as idle, connect(base) as slow:
        slow.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\n")
        sent_bytes = 0

        def dropped() -> bool:
            nonlocal sent_bytes
            if closed_without_answer(slow):
                return True
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                slow.sendall(b"X-Slow-%d: y\r\n" % sent_bytes)   # one header line at a time, never the end
                sent_bytes += 1
            return False

        wait_until(dropped, timeout=60, what="the slow request dropped")
        wait_until(lambda: closed_without_answer(idle), timeout=60, what="the silent connection dropped")
    assert sent_bytes >= 1                               # it was still sending when it was dropped
    healthy(base)


def test_a_stalled_body_is_dropped_after_the_read_timeout(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    with connect(base) as sock:
        sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nfax=")
        wait_until(lambda: closed_without_answer(sock), timeout=60, what="the stalled body dropped")
    healthy(base)


# ---- finding 15: malformed webhooks get 4xx, never 500 ----------------------------------------------


def deep(n: int) -> str:
    return "[" * n + "]" * n


MALFORMED_CASES = [
    # (id, fields, content type override, expected status, expected result)
    ("deep-json-list", {"fax": "[" * 500_000, "event_type": "fax_completed"}, None, 400, "malformed"),
    ("deep-json-closed", {"fax": deep(200_000), "event_type": "fax_completed"}, None, 400, "malformed"),
    ("deep-json-object", {"fax": '{"id":' * 100_000, "event_type": "fax_completed"}, None, 400, "malformed"),
    ("invalid-json", {"fax": "{not json", "event_type": "fax_completed"}, None, 400, "malformed"),
    ("missing-fax", {"event_type": "fax_completed", "success": "true"}, None, 400, "malformed"),
    ("id-not-a-number", {"fax": '{"id": "abc", "status": "success"}'}, None, 400, "malformed"),
    ("id-infinite", {"fax": '{"id": 1e999, "status": "success"}'}, None, 400, "malformed"),
    ("id-huge-string", {"fax": '{"id": "' + "9" * 5000 + '", "status": "success"}'}, None, 400, "malformed"),
    ("fax-a-list", {"fax": "[1, 2, 3]", "event_type": "fax_completed"}, None, 400, "malformed"),
    ("no-boundary", {"fax": "{}"}, "multipart/form-data", 400, "malformed"),
    ("too-many-fields", {f"f{i}": "x" for i in range(300)}, "application/x-www-form-urlencoded", 400, "malformed"),
]


def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if '"level": "error"' in line or '"level": "critical"' in line
            or "Traceback" in line or '"exception"' in line]


@pytest.fixture
def tap() -> Iterator[list[str]]:
    lines: list[str] = []
    remove = logs.add_tap(lines.append)
    yield lines
    remove()


async def test_malformed_phaxio_webhooks_get_4xx_and_a_good_one_still_applies(
        tmp_path: Path, start: Start, tap: list[str]) -> None:
    daemon = await start(settings(tmp_path, poll_interval="1h", simulator={"speed": 1.0}))
    store, _ = parts(daemon)
    token = callback_token(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.callback_url and job.provider_id
    events = len(await store.events(job.id))
    got = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for case_id, fields, ctype, _, _ in MALFORMED_CASES:
            signature = phaxio_signature(token, job.callback_url, fields.items())
            if ctype is None:
                body, ctype = encode_multipart(fields.items())
            elif ctype.startswith("multipart"):
                body, _ = encode_multipart(fields.items())
            else:
                body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
            response = await client.post(job.callback_url, content=body,
                                         headers={"Content-Type": ctype, "X-Phaxio-Signature": signature})
            got[case_id] = (response.status_code, response.json()["result"])
        # the same deep field to the bare URL (no job named): still 400, before any lookup
        body, ctype = encode_multipart([("fax", "[" * 500_000)])
        response = await client.post(web_url(daemon) + "/webhooks/phaxio", content=body,
                                     headers={"Content-Type": ctype})
        got["deep-json-unsigned"] = (response.status_code, response.json()["result"])
        # a signature header that is not ASCII: forbidden, not a TypeError in compare_digest
        done = callback_fields(fax_now(daemon, job.provider_id, status="success", num_pages=1,
                                       recipient={"status": "success"}))
        body, ctype = encode_multipart(done.items())
        for case_id, value in (("signature-latin1", "é".encode("latin-1") * 40),
                               ("signature-utf8", "签名".encode() * 10)):
            response = await client.post(job.callback_url, content=body,
                                         headers={"Content-Type": ctype, "X-Phaxio-Signature": value})
            got[case_id] = (response.status_code, response.json()["result"])
    assert got == {**{c[0]: (c[3], c[4]) for c in MALFORMED_CASES},
                   "deep-json-unsigned": (400, "malformed"),
                   "signature-latin1": (403, "forbidden"), "signature-utf8": (403, "forbidden")}
    assert (await store.get(job.id)).state.value == "submitted" and len(await store.events(job.id)) == events
    assert error_lines(tap) == []
    # a genuine callback afterwards still applies
    response = await post_callback(job.callback_url, done, token=token)
    assert (response.status_code, response.json()) == (200, {"result": "applied", "state": "delivered"})
    assert (await store.get(job.id)).state.value == "delivered"
    assert error_lines(tap) == []


async def test_the_built_in_simulator_signs_with_a_token_of_its_own(
        tmp_path: Path, start: Start) -> None:
    """Two daemons, two simulators, two tokens: a callback signed with one is forged for the other,
    and no public constant opens either."""
    first = await start(settings(tmp_path / "a", poll_interval="1h", simulator={"speed": 1.0}), name="a.toml")
    second = await start(settings(tmp_path / "b", poll_interval="1h", simulator={"speed": 1.0}), name="b.toml")
    assert callback_token(first) != callback_token(second) and len(callback_token(first)) >= 32
    assert not hasattr(credentials, "PHAXIO_CALLBACK_TOKEN")
    job = await wait_job(first, await queue(first, tmp_path, "+15555551212"), "submitted")
    assert job.callback_url and job.provider_id
    done = callback_fields(fax_now(first, job.provider_id, status="success", num_pages=1,
                                   recipient={"status": "success"}))
    forged = await post_callback(job.callback_url, done, token=callback_token(second))
    assert (forged.status_code, forged.json()) == (403, {"result": "forbidden"})
    assert (await parts(first)[0].get(job.id)).state.value == "submitted"
    genuine = await post_callback(job.callback_url, done, token=callback_token(first))
    assert (genuine.status_code, genuine.json()) == (200, {"result": "applied", "state": "delivered"})


async def test_malformed_openfax_postbacks_get_4xx_and_a_good_one_still_applies(
        tmp_path: Path, start: Start, simulator: tuple[Simulator, str], tap: list[str]) -> None:
    sim, base = simulator
    sim.speed = 1.0           # the fax stays in flight while we post
    values = settings(tmp_path, poll_interval="1h", **openfax_at(base, confirm_postbacks=False))
    values["webhook"]["token"] = TOKEN
    daemon = await start(values)
    store, _ = parts(daemon)
    job = await wait_job(daemon, await queue(daemon, tmp_path, "+15555551212"), "submitted")
    assert job.provider_id
    url = f"{web_url(daemon)}/webhooks/openfax/{TOKEN}"
    good = {"OutTransID": job.provider_id, "AccountID": credentials.OPENFAX_ACCOUNT_ID,
            "PagesSent": "1", "CallDuration": "40", "LastStatus": "0", "RealCost": "0.07"}
    events = len(await store.events(job.id))
    async with httpx.AsyncClient(timeout=60) as client:
        got = {
            "last-status-infinite": await client.get(url, params={**good, "LastStatus": "1e999"}),
            "pages-infinite": await client.post(url, data={**good, "PagesSent": "inf"}),
            "no-out-trans-id": await client.post(url, data={"LastStatus": "0"}),
            "too-many-fields": await client.post(url, content="&".join(f"f{i}=x" for i in range(300)),
                                                 headers={"Content-Type": "application/x-www-form-urlencoded"}),
            "no-boundary": await client.post(url, content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}),
            "non-ascii-token": await client.get(f"{web_url(daemon)}/webhooks/openfax/%C3%A9%FF", params=good),
        }
        statuses = {k: (r.status_code, r.json()["result"]) for k, r in got.items()}
        assert statuses == {"last-status-infinite": (400, "malformed"), "pages-infinite": (400, "malformed"),
                            "no-out-trans-id": (400, "malformed"), "too-many-fields": (400, "malformed"),
                            "no-boundary": (400, "malformed"), "non-ascii-token": (403, "forbidden")}
        assert (await store.get(job.id)).state.value == "submitted" and len(await store.events(job.id)) == events
        response = await client.post(url, data=good)
    assert (response.status_code, response.json()) == (200, {"result": "applied", "state": "delivered"})
    assert error_lines(tap) == []


def test_connections_over_the_cap_get_503_and_the_server_recovers(tmp_path: Path) -> None:
    with web_daemon(tmp_path, max_connections=4, header_timeout="60s") as (_, base):
        held = [connect(base) for _ in range(3)]     # with the next one: 4 open, the cap (its own included)
        try:
            for sock in held:                       # each begins a request and never ends it
                sock.sendall(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n")
            assert not any(closed_without_answer(sock) for sock in held)   # served, not refused

            def refused() -> bool:
                return httpx.get(base + "/healthz", timeout=60).status_code == 503
            wait_until(refused, timeout=60, what="a request over the cap answered 503")
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: httpx.get(base + "/healthz", timeout=60).status_code == 200, timeout=60,
                   what="/healthz again once the held connections are gone")


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",
                 id="header-of-2mb"),
    pytest.param(b"GET /h\xff\xfe HTTP/1.1\r\nHost: test\r\n\r\n", id="non-ascii-target"),
    pytest.param(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n", id="bad-length"),
    pytest.param(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
                 id="length-of-5000-digits"),
    pytest.param(b"POST /webhooks/phaxio HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 id="bad-chunk-size"),
])
def test_broken_http_gets_4xx_and_the_server_goes_on(daemon: tuple[DaemonProcess, str],
                                                      request_bytes: bytes) -> None:
    _, base = daemon
    with connect(base) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):   # refused before the end
            sock.sendall(request_bytes)
        status, data = read_response(sock)
    assert status == 400 and b"Invalid HTTP request received." in data, data[:300]
    healthy(base)


async def test_an_owed_callback_is_signed_by_the_simulator_that_delivers_it(receiver: Receiver) -> None:
    """After a restart the simulator is a new instance with a new token: a callback the old one
    still owed (restored from its state) must be signed with the new token, which the daemon checks."""
    url = receiver.url + "/webhooks/phaxio?job=J1"
    fields = [("fax", '{"id": 1, "status": "success"}'), ("event_type", "fax_completed")]
    owed = Notification(("phaxio", "1"), url, "POST", fields, True, phaxio_signature("old-token", url, fields))
    new = Simulator(speed=100.0, callback_token=secret("new-token-0123456789"))
    new._outbox.append(owed)                 # what restoring the old instance's state does
    try:
        new.runtime()
        await new.idle(30)
    finally:
        await new.aclose()
    (hook,) = receiver.requests
    assert hook.headers["x-phaxio-signature"] == phaxio_signature(new.callback_token, url, fields)
    assert hook.headers["x-phaxio-signature"] != phaxio_signature("old-token", url, fields)
