"""Webhook bodies, read and parsed without letting one request hurt the others (contract section 9).

- :func:`read_capped` reads the body as it streams and stops at ``limit`` bytes: a declared
  ``Content-Length`` over the limit is refused before a byte is read, and a chunked body (which
  declares nothing) is refused as soon as it passes the limit. The rest is never read: the
  caller answers 413 with ``Connection: close``.
- :func:`parse_form` turns the capped body into plain fields and file parts. It is pure CPU work
  (a 1 MB field takes a while in pure Python), so :func:`read_form` runs a body over
  :data:`INLINE_MAX` on a small pool of its own, never on the event loop (SMTP sessions and
  ``/healthz`` share that loop) and never on the loop's default executor (the SMTP spool writes
  use that one). A provider's status report is a few hundred bytes: parsed at once on the loop,
  where it takes less time than the hand-off to a thread would.
- ``multipart/form-data`` and ``application/x-www-form-urlencoded`` are read; any other
  content type has no fields. Text is UTF-8 with undecodable bytes replaced, so a field is
  always a ``str`` without surrogates.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from faxbridge.errors import FaxbridgeError

MAX_FIELDS = 200
MAX_FILES = 20
MAX_PART_HEADERS = 16

INLINE_MAX = 16 << 10      # a body up to this size is parsed on the loop (tens of microseconds)
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="faxbridge-webform")


class BadRequest(FaxbridgeError):
    """The body cannot be read as a form (400)."""


class TooLarge(FaxbridgeError):
    """The body is larger than the configured ``webhook.max_body`` (413)."""


Form = tuple[dict[str, str], list[tuple[str, bytes]]]


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes; :class:`TooLarge` as soon as it is known to be longer."""
    declared = (request.headers.get("content-length") or "").strip()
    if declared:
        if not declared.isdigit():
            raise BadRequest("the Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:
            raise TooLarge()
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise TooLarge()
    except ClientDisconnect as exc:      # gone (or dropped by the read timeout) before the end
        raise BadRequest("the connection closed before the body ended") from exc
    return bytes(body)


async def read_form(request: Request, limit: int) -> Form:
    """The body's plain fields and file parts (query parameters are not part of it)."""
    body = await read_capped(request, limit)
    ctype = request.headers.get("content-type") or ""
    if not body:
        return {}, []
    if len(body) <= INLINE_MAX:
        return parse_form(ctype, body)
    return await asyncio.get_running_loop().run_in_executor(_POOL, parse_form, ctype, body)


def parse_form(content_type: str, body: bytes) -> Form:
    """Pure: the fields and files of ``body`` sent as ``content_type``; :class:`BadRequest`."""
    kind, options = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FIELDS,
                              encoding="utf-8", errors="replace")
        except ValueError as exc:
            raise BadRequest(f"cannot read the form: {exc}") from exc
        return dict(pairs), []
    if kind == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadRequest("cannot read the form: the multipart body has no boundary")
        return _multipart(boundary, body)
    return {}, []


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


@dataclass
class _Collector:
    parts: list[_Part] = field(default_factory=list)
    name: bytearray = field(default_factory=bytearray)
    value: bytearray = field(default_factory=bytearray)

    def begin(self) -> None:
        if len(self.parts) >= MAX_FIELDS + MAX_FILES:
            raise BadRequest("cannot read the form: too many parts")
        self.parts.append(_Part())

    def data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        headers = self.parts[-1].headers
        if len(headers) >= MAX_PART_HEADERS:
            raise BadRequest("cannot read the form: a part has too many headers")
        headers[bytes(self.name).lower()] = bytes(self.value)
        self.name.clear()
        self.value.clear()


def _multipart(boundary: bytes, body: bytes) -> Form:
    got = _Collector()
    parser = MultipartParser(boundary, {
        "on_part_begin": got.begin, "on_part_data": got.data, "on_header_field": got.header_field,
        "on_header_value": got.header_value, "on_header_end": got.header_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"cannot read the form: {exc}") from exc
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in got.parts:
        disposition, params = parse_options_header(part.headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in params:
            raise BadRequest("cannot read the form: a part has no form-data name")
        name = params[b"name"].decode("utf-8", "replace")
        if b"filename" in params:
            files.append((name, bytes(part.data)))
        else:
            fields[name] = part.data.decode("utf-8", "replace")
    if len(fields) > MAX_FIELDS or len(files) > MAX_FILES:
        raise BadRequest("cannot read the form: too many fields or files")
    return fields, files
