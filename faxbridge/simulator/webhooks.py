"""Posting webhooks: Phaxio callbacks (signed multipart), Sinch callbacks (multipart or JSON,
unsigned) and Openfax postbacks (form or GET).

A delivery fails on a transport error, a timeout or a non-2xx answer, and is retried after
the Phaxio schedule (5, 10, 20, 30 minutes), compressed by the simulator's speed, 5 tries
in all; then the simulator gives up (the daemon's poller must still finish the job).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

import httpx

from faxbridge.simulator.records import Notification

RETRY_DELAYS_S = (300.0, 600.0, 1200.0, 1800.0)   # nominal seconds before tries 2..5
TIMEOUT_S = 10.0


def phaxio_signature(
    token: str, url: str, fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, bytes]] = ()
) -> str:
    """X-Phaxio-Signature (providers.md 1.8): HMAC-SHA1 over URL + sorted name+value + files."""
    text = url + "".join(name + value for name, value in sorted(fields, key=lambda f: f[0]))
    text += "".join(
        name + hashlib.sha1(data).hexdigest() for name, data in sorted(files, key=lambda f: f[0])
    )
    return hmac.new(token.encode(), text.encode(), hashlib.sha1).hexdigest()


def encode_multipart(fields: Iterable[tuple[str, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body of plain fields; returns (body, content type)."""
    boundary = "----faxbridge-sim-" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode("utf-8") + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def post_once(client: httpx.AsyncClient, note: Notification) -> int | None:
    """One try. The HTTP status, or None when no answer came (refused, reset, timeout)."""
    headers = {"User-Agent": "faxbridge-simulator"}
    if note.signature is not None:
        headers["X-Phaxio-Signature"] = note.signature
    try:
        json_body = getattr(note, "json_body", None)      # absent in notes restored from before Sinch
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            response = await client.post(note.url, content=json_body.encode(), headers=headers)
        elif note.method == "GET":
            # keep the query the URL already has (a secret token, say) and add the fields
            query: list[tuple[str, str | int | float | bool | None]] = [
                *httpx.URL(note.url).params.multi_items(), *note.fields]
            url = httpx.URL(note.url).copy_with(query=str(httpx.QueryParams(query)).encode())
            response = await client.get(url, headers=headers)
        elif note.multipart:
            body, ctype = encode_multipart(note.fields)
            headers["Content-Type"] = ctype
            response = await client.post(note.url, content=body, headers=headers)
        else:
            response = await client.post(note.url, data=dict(note.fields), headers=headers)
    except httpx.HTTPError:
        return None
    return response.status_code
