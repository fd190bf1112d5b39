"""Large base64 bodies cut out of a raw message before the stdlib parser sees it. Pure.

The stdlib ``email`` parser reads a message line by line in Python; for a mail with a 200 KB PDF that
is some 3,600 lines of base64 it only carries along, and most of the time spent accepting the mail.
:func:`slim` finds each part whose headers say ``Content-Transfer-Encoding: base64`` and whose body is
large and nothing but base64, decodes that body at C speed (``binascii``), and leaves the part in the
message with an empty body and a marker header naming its decoded bytes in the returned stash. The
marker carries a random token, so a sender cannot point one part at another's bytes.

Anything unusual (bare LF line endings, a body with other characters, bad padding, a header block it
cannot delimit) is left in place for the stdlib parser: the result is the same, only slower.
"""

from __future__ import annotations

import binascii
import re
import secrets

STASH_HEADER = "X-Faxbridge-Stash"
MIN_SIZE = 16 * 1024

_CTE_BASE64 = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*base64[ \t]*\r?$")
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n"


def slim(raw: bytes) -> tuple[bytes, dict[str, bytes]]:
    if b"\r\n" not in raw[:4096]:
        return raw, {}
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
        end = raw.find(b"\r\n--", search)
        if end == -1:
            end = len(raw)
        body = raw[search:end]
        if len(body) < MIN_SIZE or body.translate(None, _BASE64_CHARS):
            continue
        try:
            decoded = binascii.a2b_base64(body)
        except binascii.Error:
            continue
        key = f"{token}-{len(stash)}"
        stash[key] = decoded
        out += [raw[done:blank], f"\r\n{STASH_HEADER}: {key}".encode(), b"\r\n\r\n"]
        done = search = end
    if not stash:
        return raw, {}
    out.append(raw[done:])
    return b"".join(out), stash
