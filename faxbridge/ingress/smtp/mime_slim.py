"""Large base64 bodies cut out of a raw message before the stdlib parser sees it. Pure.

The stdlib ``email`` parser reads a message line by line in Python; for a mail with a 200 KB PDF that
is some 3,600 lines of base64 it only carries along, and most of the time spent accepting the mail.
:func:`slim` finds each part whose headers say ``Content-Transfer-Encoding: base64`` and whose body is
large and nothing but base64, decodes that body at C speed (``pybase64``'s SIMD decoder for the
ordinary case, ``binascii`` for anything else), and leaves the part in the
message with an empty body and a marker header naming its decoded bytes in the returned stash. The
marker carries a random token, so a sender cannot point one part at another's bytes.

Anything unusual (bare LF line endings, a body with other characters, bad padding, a header block it
cannot delimit) is left in place for the stdlib parser: the result is the same, only slower.

A big message may come as a read-only ``mmap`` of its spool file instead of ``bytes``: then a large
body is decoded a block at a time and each block's pages are given back as soon as it is decoded
(``MADV_DONTNEED``), so the message and its decoded attachment are never in memory together.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import mmap
import re
import secrets

import pybase64

STASH_HEADER = "X-Faxbridge-Stash"
MIN_SIZE = 16 * 1024

_CTE_BASE64 = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*base64[ \t]*\r?$")
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n"


Raw = bytes | mmap.mmap
BLOCK = 1 << 20


def slim(raw: Raw) -> tuple[bytes, dict[str, bytes]]:
    if b"\r\n" not in raw[:4096]:
        return bytes(raw), {}
    view = memoryview(raw)
    token = secrets.token_hex(8)
    stash: dict[str, bytes] = {}
    out: list[bytes] = []
    done = 0                      # raw[:done] is already in out
    search = 0
    while (blank := raw.find(b"\r\n\r\n", search)) != -1:
        search = blank + 4
        start = raw.rfind(b"\r\n--", done, blank)
        start = 0 if start == -1 and done == 0 else start + 2 if start != -1 else -1
        if start < 0:
            continue
        head = raw[start:blank]
        if b"\r\n\r\n" in head or not _CTE_BASE64.search(head):
            continue
        end = _next_dash_line(raw, search)
        if end == -1:
            end = len(raw)
        body = view[search:end]            # a view: a 50 MB body is not copied to be checked
        if len(body) < MIN_SIZE or not _only_base64(raw, body, search):
            continue
        try:
            decoded = _decode(raw, body, search)
        except binascii.Error:
            continue
        key = f"{token}-{len(stash)}"
        stash[key] = decoded
        out += [raw[done:blank], f"\r\n{STASH_HEADER}: {key}".encode(), b"\r\n\r\n"]
        done = search = end
    if not stash:
        return bytes(raw), {}
    out.append(raw[done:])
    return b"".join(out), stash


def _next_dash_line(raw: Raw, start: int) -> int:
    """``raw.find(b"\r\n--", start)``, by ``memchr`` for the dash: the 4-byte needle's search stops at
    every line end of a base64 body (150 us for a 200 KB attachment), which holds no dash at all."""
    at = raw.find(b"-", start + 2)
    while at != -1:
        if raw[at - 2:at + 2] == b"\r\n--":
            return at - 2
        at = raw.find(b"-", at + 1)
    return -1


def _only_base64(raw: Raw, body: memoryview, offset: int) -> bool:
    """Nothing but base64 characters and line ends (checked a block at a time: bounded memory)."""
    for start in range(0, len(body), BLOCK):
        if bytes(body[start:start + BLOCK]).translate(None, _BASE64_CHARS):
            return False
        _release(raw, offset + start, BLOCK)
    return True


def digest(raw: Raw) -> str:
    """The sha256 of the whole message, read a block at a time (pages given back as it goes)."""
    h = hashlib.sha256()
    with memoryview(raw) as view:
        for start in range(0, len(view), BLOCK):
            h.update(view[start:start + BLOCK])
            _release(raw, start, BLOCK)
    return h.hexdigest()


def _decode(raw: Raw, body: memoryview, offset: int) -> bytes:
    """``binascii.a2b_base64(body)``, a block at a time for a big body (same result, same errors).

    Blocks are cut at a multiple of 4 base64 characters, so each decodes as it would in the whole.
    ``a2b_base64`` stops at the first padded quad: from a block holding a "=", the rest is decoded in
    one call, as the whole would be. ``offset``: where ``body`` starts in ``raw``.
    """
    if len(body) <= BLOCK:
        return _fast(body) or binascii.a2b_base64(body)
    out = io.BytesIO()
    carry = b""
    for start in range(0, len(body), BLOCK):
        chars = carry + bytes(body[start:start + BLOCK]).translate(None, b"\r\n")
        if b"=" in chars:
            out.write(binascii.a2b_base64(chars + bytes(body[start + BLOCK:])))
            carry = b""
            break
        cut = len(chars) - len(chars) % 4
        out.write(pybase64.b64decode(chars[:cut], validate=True))   # only alphabet characters here
        carry = chars[cut:]
        _release(raw, offset + start, BLOCK)
    if carry:
        out.write(binascii.a2b_base64(carry))    # an incomplete last quad: the error the whole would give
    return out.getvalue()


def _fast(body: memoryview) -> bytes | None:
    """The body decoded by ``pybase64`` (SIMD: about 8x faster than ``binascii`` on a 270 KB attachment),
    only where both decoders must give the same bytes: no ``=`` but the last quad's padding. A body
    that is not a whole number of quads is refused by pybase64 as by binascii (its error is then
    binascii's, below; counting the characters first cost more than the decoding). Otherwise, or
    on any error, None: the caller decodes with ``binascii``, whose result and error are the
    reference."""
    chunk = bytes(body)
    if (first := chunk.find(b"=")) != -1 and chunk[first:].translate(None, b"\r\n") not in (b"=", b"=="):
        return None
    try:
        return pybase64.b64decode(chunk)
    except ValueError:               # binascii.Error is a ValueError
        return None


def _release(raw: Raw, start: int, length: int) -> None:
    """Give back the pages of ``raw[start:start + length]`` when ``raw`` maps a file (re-read if needed)."""
    if isinstance(raw, mmap.mmap):
        first = start - start % mmap.PAGESIZE
        raw.madvise(mmap.MADV_DONTNEED, first, min(start + length, len(raw)) - first)
