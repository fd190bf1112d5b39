"""Phaxio POST /faxes refusals: each with its exact status and message, and nothing accepted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from faxbridge.simulator import Simulator, credentials
from faxbridge.simulator import phaxio_submit as ps
from tests.simulator.conftest import make_pdf
from tests.simulator.phaxio_helpers import AUTH, send

PDF = ("doc.pdf", make_pdf(1), "application/pdf")

CASES: list[tuple[str, dict[str, Any], Any, str]] = [
    ("no-recipient", {"to": ""}, None, ps.MSG_NO_RECIPIENT),
    ("national-number", {"to": "5555551212"}, None, ps.MSG_BAD_NUMBER),
    ("letters", {"to": "+1555CALLNOW"}, None, ps.MSG_BAD_NUMBER),
    ("too-short", {"to": "+12345"}, None, ps.MSG_BAD_NUMBER),
    ("one-bad-of-two", {"to": ["+15555550100", "nope"]}, None, ps.MSG_BAD_NUMBER),
    ("premium", {"to": "+19005550100"}, None, ps.MSG_RESTRICTED),
    ("content-url", {"content_url": "https://example.com/a.pdf"}, None, ps.MSG_CONTENT_URL),
    ("content-url-list", {"content_url[]": "https://example.com/a.pdf"}, [("file", PDF)], ps.MSG_CONTENT_URL),
    ("file-without-filename", {"file": "%PDF-1.4 inline"}, [], ps.MSG_NO_FILENAME),
    ("no-file", {}, [], ps.MSG_NO_FILE),
    ("eleven-files", {}, [("file[]", PDF)] * 11, ps.MSG_TOO_MANY_FILES),
    ("header-51", {"header_text": "x" * 51}, None, ps.MSG_HEADER),
    ("batch-delay-high", {"batch_delay": "3601"}, None, ps.MSG_BATCH),
    ("batch-delay-text", {"batch_delay": "soon"}, None, ps.MSG_BATCH),
    ("cancel-timeout-low", {"cancel_timeout": "2"}, None, ps.MSG_CANCEL_TIMEOUT),
    ("cancel-timeout-high", {"cancel_timeout": "61"}, None, ps.MSG_CANCEL_TIMEOUT),
    ("eleven-tags", {f"tag[t{i}]": str(i) for i in range(11)}, None, ps.MSG_TAGS),
    ("test-fail-unknown", {"test_fail": "busyError"}, None, ps.MSG_TEST_FAIL),
    ("caller-id", {"caller_id": "12"}, None, ps.MSG_CALLER_ID),
    ("callback-url", {"callback_url": "not a url"}, None, ps.MSG_CALLBACK),
    ("201-pages", {}, [("file", ("big.pdf", make_pdf(201), "application/pdf"))], ps.MSG_TOO_MANY_PAGES),
]


@pytest.mark.parametrize(("fields", "files", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_refused_with_422(sim: Simulator, base: str, client: httpx.AsyncClient,
                                fields: dict[str, Any], files: Any, message: str) -> None:
    fields = dict(fields)
    to = fields.pop("to", "+15555550100")
    response = await send(client, base, to, files=files, **fields)
    assert response.status_code == 422, response.text
    assert response.json() == {"success": False, "message": message}
    assert sim.sends == []


async def test_whole_request_over_20mb(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    big = ("big.pdf", b"%PDF-1.4\n" + b"0" * 20_000_001, "application/pdf")
    response = await send(client, base, files=[("file", big)])
    assert response.status_code == 422
    assert response.json() == {"success": False, "message": ps.MSG_TOO_LARGE}
    assert sim.sends == []


async def test_limits_at_the_edge_are_accepted(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fields = {"header_text": "x" * 50, "cancel_timeout": "60", "batch_delay": "3600",
              **{f"tag[t{i}]": str(i) for i in range(10)}}
    response = await send(client, base, files=[("file[]", PDF)] * 10, **fields)
    assert response.status_code == 200, response.text
    (sent,) = sim.sends
    assert sent.header == "x" * 50 and len(sent.tags) == 10 and sent.pages == 10


@pytest.mark.parametrize("version", ["v2", "v2.1"])
async def test_auth_failures(sim: Simulator, base: str, client: httpx.AsyncClient, version: str) -> None:
    for auth in (None, (credentials.PHAXIO_API_KEY, "wrong"), ("nobody", credentials.PHAXIO_API_SECRET)):
        response = await send(client, base, version=version, auth=auth)
        assert response.status_code == 401
        assert response.json() == {"success": False, "message": "The API credentials you provided are invalid."}
    response = await client.get(f"{base}/{version}/account/status")
    assert response.status_code == 401
    assert sim.sends == []


async def test_credentials_as_fields_and_query(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    key, secret = AUTH
    response = await send(client, base, auth=None, api_key=key, api_secret=secret)
    assert response.status_code == 200
    fax_id = response.json()["data"]["id"]
    response = await client.get(f"{base}/v2/faxes/{fax_id}", params={"api_key": key, "api_secret": secret})
    assert response.status_code == 200 and response.json()["data"]["id"] == fax_id


async def test_inactive_account_has_no_funds(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    inactive = (credentials.PHAXIO_INACTIVE_KEY, credentials.PHAXIO_INACTIVE_SECRET)
    response = await send(client, base, auth=inactive)
    assert response.status_code == 402
    assert response.json() == {"success": False,
                               "message": "Insufficient funds: add funds to your account to send faxes."}
    status = await client.get(f"{base}/v2.1/account/status", auth=inactive)
    assert status.status_code == 200 and status.json()["data"]["balance"] == 0
    assert sim.sends == []
