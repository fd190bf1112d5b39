"""Helpers shared by the Phaxio tests."""

from __future__ import annotations

from typing import Any

import httpx

from faxbridge.simulator import credentials
from tests.simulator.conftest import make_pdf

AUTH = (credentials.PHAXIO_API_KEY, credentials.PHAXIO_API_SECRET)


async def send(
    client: httpx.AsyncClient,
    base: str,
    to: str | list[str] = "+15555550100",
    *,
    version: str = "v2.1",
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    auth: tuple[str, str] | None = AUTH,
    **fields: Any,
) -> httpx.Response:
    data: dict[str, Any] = dict(fields)
    if isinstance(to, list):
        data["to[]"] = to
    elif to:
        data["to"] = to
    if files is None:
        files = [("file", ("doc.pdf", make_pdf(2), "application/pdf"))]
    return await client.post(f"{base}/{version}/faxes", data=data, files=files or None, auth=auth)


async def created_id(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["message"] == "Fax queued for sending"
    fax_id = body["data"]["id"]
    assert isinstance(fax_id, int)
    return fax_id


async def get(client: httpx.AsyncClient, base: str, fax_id: int, version: str = "v2.1") -> dict[str, Any]:
    response = await client.get(f"{base}/{version}/faxes/{fax_id}", auth=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["message"] == "Metadata for fax"
    data: dict[str, Any] = body["data"]
    return data
