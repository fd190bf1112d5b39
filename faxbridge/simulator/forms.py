"""Reading request bodies: size limits, multipart and urlencoded forms, query parameters."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request


class BodyTooLarge(Exception):
    pass


class BadForm(Exception):
    pass


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Form:
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def getall(self, *names: str) -> list[str]:
        return [value for key, value in self.fields if key in names]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge (after draining it, so the client reads our answer)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        async for _ in request.stream():
            pass
        raise BodyTooLarge()
    body = await request.body()
    if len(body) > limit:
        raise BodyTooLarge()
    return body


async def read_form(request: Request, limit: int) -> Form:
    """Fields and file parts of a multipart or urlencoded body, plus the query parameters.

    Query parameters come first, then body fields, in the order sent. A multipart part
    without a filename is a plain field (that is how Phaxio tells a file from a field).
    """
    form = Form(fields=list(request.query_params.multi_items()))
    if request.method in ("GET", "HEAD"):
        return form
    await read_body(request, limit)
    try:
        async with request.form(max_files=1000, max_fields=10_000, max_part_size=limit) as parsed:
            for name, value in parsed.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    form.files.append(FilePart(name, value.filename, value.content_type, data))
                else:
                    form.fields.append((name, value))
    except HTTPException as exc:
        raise BadForm(str(exc.detail)) from exc
    return form


def basic_auth(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
