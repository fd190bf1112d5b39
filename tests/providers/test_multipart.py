"""The streamed multipart body: the bytes it yields are the whole body, as long as it says, whatever
the file's size (read at once, or a chunk at a time on a thread) and encoding."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from faxbridge.providers import base
from faxbridge.providers.base import FilePart, MultipartBody

SIZES = [0, 10, base._INLINE, base._INLINE + 1, 2 * base._CHUNK + 5]


async def _body(body: MultipartBody) -> tuple[bytes, int]:
    pieces = [piece async for piece in body]
    return b"".join(pieces), len(pieces)


@pytest.mark.parametrize("encoded", [False, True], ids=["raw", "base64"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
async def test_the_body_is_every_part_in_order(tmp_path: Path, size: int, encoded: bool) -> None:
    data = os.urandom(size)
    path = tmp_path / "fax.pdf"
    path.write_bytes(data)
    body = MultipartBody([("to", "+15555551212"), ("header", "ACME")],
                         [FilePart("file", path, filename="fax.pdf", content_type="application/pdf", base64=encoded)])
    got, pieces = await _body(body)
    b = body.boundary
    expected = (f'--{b}\r\nContent-Disposition: form-data; name="to"\r\n\r\n+15555551212\r\n'
                f'--{b}\r\nContent-Disposition: form-data; name="header"\r\n\r\nACME\r\n'
                f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="fax.pdf"\r\n'
                f'Content-Type: application/pdf\r\n\r\n').encode()
    expected += (base64.b64encode(data) if encoded else data) + f"\r\n--{b}--\r\n".encode()
    assert got == expected
    assert len(body) == len(expected)
    assert pieces == (1 if size <= base._CHUNK else -(-size // base._CHUNK))   # small pieces joined


async def test_a_file_that_shrank_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fax.pdf"
    path.write_bytes(b"x" * 100)
    body = MultipartBody([], [FilePart("file", path)])
    path.write_bytes(b"x" * 10)
    with pytest.raises(OSError, match="shrank"):
        await _body(body)
