"""Phaxio callbacks: posted when final, multipart, signed (checked independently), retried."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from faxbridge.simulator import Fault, Simulator, phaxio_signature
from tests.simulator.conftest import Receiver
from tests.simulator.phaxio_helpers import created_id, get, send


def independent_signature(token: str, url: str, fields: dict[str, str],
                          files: list[tuple[str, bytes]]) -> str:
    """providers.md 1.8, written again here: URL + sorted name+value + sorted name+sha1(file)."""
    signed = url
    for name in sorted(fields):
        signed += name + fields[name]
    for name, data in sorted(files, key=lambda f: f[0]):
        signed += name + hashlib.sha1(data).hexdigest()
    return hmac.new(token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).hexdigest()


VECTORS = [
    ("test-webhook-token", "example.com", {"test": "true"}, [],
     "64a735ef0c47a0ae671e381c046648f0966deb29"),
    ("test-webhook-token", "example.com", {"test": "true"}, [("file", b""), ("file", b"")],
     "1d2426c242a8c5de7eb1d9b662b7fda1d0b6edab"),
    ("1234567890", "example.com", {"test": "true"}, [],
     "15adeecb7eca79676ece07ee4bc1bbba2c69eddd"),
]


@pytest.mark.parametrize(("token", "url", "fields", "files", "expected"), VECTORS,
                         ids=["ruby-master", "ruby-two-files", "v1-era"])
def test_signature_vectors(token: str, url: str, fields: dict[str, str],
                           files: list[tuple[str, bytes]], expected: str) -> None:
    assert independent_signature(token, url, fields, files) == expected
    assert phaxio_signature(token, url, list(fields.items()), files) == expected


@pytest.mark.parametrize(("version", "digit", "success"),
                         [("v2", "0", "true"), ("v2.1", "6", "true"), ("v2.1", "9", "false")])
async def test_callback_is_signed_multipart(
    sim: Simulator, base: str, client: httpx.AsyncClient, receiver: Receiver,
    version: str, digit: str, success: str,
) -> None:
    callback = f"{receiver.url}/webhooks/phaxio?job=01J&x=a%20b"
    fax_id = await created_id(await send(client, base, "+1555555010" + digit, version=version,
                                         callback_url=callback))
    await sim.idle(30)
    (hook,) = receiver.requests
    assert hook.method == "POST" and hook.headers["content-type"].startswith("multipart/form-data")
    fields = dict(hook.fields)
    expected_names = {"fax", "success", "is_test", "direction"} | ({"event_type"} if version == "v2.1" else set())
    assert set(fields) == expected_names
    assert (fields["success"], fields["is_test"], fields["direction"]) == (success, "false", "sent")
    if version == "v2.1":
        assert fields["event_type"] == "fax_completed"
    fax = json.loads(fields["fax"])
    assert fax["id"] == fax_id and fax["status"] == ("success" if success == "true" else "failure")
    assert fax == await get(client, base, fax_id, version)
    signature = independent_signature(sim.callback_token, callback, fields, [])
    assert hook.headers["x-phaxio-signature"] == signature
    assert sim.webhook_log == [(callback, 200)]


async def test_no_callback_url_no_webhook(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    await created_id(await send(client, base))
    await sim.idle(30)
    assert sim.webhook_log == []


async def test_failed_callback_is_retried(
    sim: Simulator, base: str, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.statuses = [500, 404]
    callback = f"{receiver.url}/hook"
    await created_id(await send(client, base, callback_url=callback))
    await sim.idle(30)
    assert [status for _, status in sim.webhook_log] == [500, 404, 200]
    first, _, last = receiver.requests
    assert first.fields == last.fields
    assert first.headers["x-phaxio-signature"] == last.headers["x-phaxio-signature"]


async def test_unreachable_callback_gives_up(sim: Simulator, base: str, client: httpx.AsyncClient,
                                            receiver: Receiver) -> None:
    receiver.statuses = [503] * 10
    await created_id(await send(client, base, callback_url=f"{receiver.url}/down"))
    await sim.idle(30)
    assert [status for _, status in sim.webhook_log] == [503] * 5


async def test_webhook_faults_drop_duplicate_and_delay(
    sim: Simulator, base: str, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """For the torture suite: a webhook lost, one sent twice, one overtaken by a later one."""
    sim.inject(Fault(kind="webhook_drop"))
    await created_id(await send(client, base, "+15555550100", callback_url=f"{receiver.url}/a"))
    await sim.idle(30)
    assert receiver.requests == [] and sim.webhook_log == [(f"{receiver.url}/a", None)]

    sim.inject(Fault(kind="webhook_dup"))
    await created_id(await send(client, base, "+15555550101", callback_url=f"{receiver.url}/b"))
    await sim.idle(30)
    assert [r.path for r in receiver.requests] == ["/b", "/b"]
    assert receiver.requests[0].fields == receiver.requests[1].fields

    sim.inject(Fault(kind="webhook_delay", seconds=1.0))
    slow = await created_id(await send(client, base, "+15555550102", callback_url=f"{receiver.url}/slow"))
    fast = await created_id(await send(client, base, "+15555550103", callback_url=f"{receiver.url}/fast"))
    await sim.idle(30)
    assert [r.path for r in receiver.requests[2:]] == ["/fast", "/slow"]
    assert [json.loads(dict(r.fields)["fax"])["id"] for r in receiver.requests[2:]] == [fast, slow]
