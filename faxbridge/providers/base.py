"""What every provider adapter offers, and the one place httpx failures become our errors.

An adapter knows only HTTP and its own wire format. It never touches the store; it
takes values (``SubmitRequest``, ``PendingFax``) and returns values (``SubmitReceipt``,
``StatusUpdate``), or raises the typed errors of :mod:`faxbridge.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from faxbridge.errors import TransientProviderError
from faxbridge.models import (
    Balance,
    PendingFax,
    PollResult,
    StatusUpdate,
    SubmissionLookup,
    SubmitReceipt,
    SubmitRequest,
)


class Provider(Protocol):
    name: str  # "openfax" | "phaxio"
    header_limit: int | None
    """The longest fax header text the provider takes (longer is cut to it); None: no limit. Intake
    cuts a mail's Subject to it, so it needs the number, not the provider's module."""

    async def submit(self, req: SubmitRequest) -> SubmitReceipt:
        """Send one fax. Raises TransientProviderError / RefusedError / AccountError."""
        ...

    async def poll(self, pending: Sequence[PendingFax], cursor: str | None) -> PollResult:
        """Status of the faxes we wait on. Only updates that say something are returned."""
        ...

    async def status(self, provider_id: str) -> StatusUpdate:
        """Status of one fax."""
        ...

    async def find_submission(self, lookup: SubmissionLookup) -> str | None:
        """The provider id of a submission whose outcome we lost, or None if it has no record."""
        ...

    async def cancel(self, provider_id: str) -> None:
        """Cancel where the provider can; raises PermanentProviderError where it cannot."""
        ...

    async def balance(self) -> Balance:
        ...

    async def aclose(self) -> None:
        ...


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def send(client: httpx.AsyncClient, provider: str, request: httpx.Request) -> httpx.Response:
    """Send one request; translate transport failures into TransientProviderError.

    ``maybe_sent`` is True when the request may have reached the provider (a read timeout, a
    connection dropped after the request was written): such a submission must be
    reconciled before it is sent again. Connect failures never reached it.
    HTTP status handling (429, 5xx) is left to :func:`raise_for_transient_status`.
    """
    try:
        return await client.send(request)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise TransientProviderError(
            f"cannot connect to {provider}: {type(exc).__name__}", provider=provider, code="connect"
        ) from exc
    except httpx.PoolTimeout as exc:
        raise TransientProviderError(
            f"{provider}: no free connection", provider=provider, code="pool"
        ) from exc
    except httpx.TimeoutException as exc:
        raise TransientProviderError(
            f"{provider} did not answer in time", provider=provider, code="timeout", maybe_sent=True
        ) from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(
            f"{provider}: connection failed ({type(exc).__name__})",
            provider=provider,
            code="transport",
            maybe_sent=True,
        ) from exc


def raise_for_transient_status(provider: str, response: httpx.Response) -> None:
    """429 and 5xx become TransientProviderError (Retry-After honoured)."""
    status = response.status_code
    if status == 429:
        raise TransientProviderError(
            f"{provider} is rate limiting requests (HTTP 429)",
            provider=provider,
            code="429",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status >= 500:
        # Any 5xx came after the whole request was sent. No provider document promises that a
        # 502/503/504 means "not passed on" (a gateway in front of Phaxio answers 504 after
        # forwarding, and Phaxio has no idempotency key), so a send is reconciled before it is
        # sent again. 429 is the provider's own "not now": nothing was taken.
        raise TransientProviderError(
            f"{provider} is unavailable (HTTP {status})",
            provider=provider,
            code=str(status),
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            maybe_sent=True,
        )


# --- shared helpers for the adapters ------------------------------------------------------------

_CHUNK = 3 * 256 * 1024  # a multiple of 3, so each chunk base64-encodes on its own without padding
_INLINE = 256 * 1024     # a file up to this size is read on the event loop, in one read


@dataclass(frozen=True)
class FilePart:
    """A multipart part whose body is read from a file while the request is sent.

    ``filename=None`` makes a plain form field (PHP puts it in ``$_POST``, not ``$_FILES``);
    ``base64=True`` sends the file base64-encoded (Openfax ``PDF_encode``), encoded chunk by
    chunk so a 40 MB PDF is never held in memory, let alone twice.
    """

    name: str
    path: Path
    filename: str | None = None
    content_type: str | None = None
    base64: bool = False


def _quote(value: str) -> str:
    # Content-Disposition parameters: keep them on one line and inside their quotes.
    return "".join("_" if ch in '"\\\r\n' else ch for ch in value)


class MultipartBody:
    """A ``multipart/form-data`` body with a known length, streamed from disk.

    Plain fields come first, in order, then the file parts. httpx sends it with an explicit
    Content-Length (no chunked transfer encoding, which old PHP front ends dislike).
    """

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[FilePart] = ()) -> None:
        self.boundary = secrets.token_hex(16)
        self._fields = list(fields)
        self._files = list(files)
        self._sizes = [part.path.stat().st_size for part in self._files]

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _field_head(self, name: str) -> bytes:
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
        ).encode()

    def _file_head(self, part: FilePart) -> bytes:
        disposition = f'form-data; name="{_quote(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quote(part.filename)}"'
        head = f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type:
            head += f"Content-Type: {part.content_type}\r\n"
        return (head + "\r\n").encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        total = len(self._tail())
        for name, value in self._fields:
            total += len(self._field_head(name)) + len(value.encode()) + 2
        for part, size in zip(self._files, self._sizes, strict=True):
            body = 4 * ((size + 2) // 3) if part.base64 else size
            total += len(self._file_head(part)) + body + 2
        return total

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(len(self))}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body in few pieces: the small ones (field heads and values, a part's head, the
        closing boundary) are joined to the bytes next to them, since every piece handed to httpx
        costs a write to the connection (providers.netio). A file up to ``_INLINE`` is read at once on
        the loop (it was just written: the page cache has it); a bigger one a chunk at a time on a
        thread, so the loop never waits on the disk for long."""
        pending: list[bytes] = [self._field_head(name) + value.encode() + b"\r\n" for name, value in self._fields]
        for part, size in zip(self._files, self._sizes, strict=True):
            pending.append(self._file_head(part))
            with part.path.open("rb") as fh:
                left = size
                while left > 0:
                    want = min(_CHUNK, left)
                    chunk = fh.read(want) if size <= _INLINE else await asyncio.to_thread(fh.read, want)
                    if not chunk:
                        raise OSError(f"{part.path.name} shrank while it was being sent")
                    left -= len(chunk)
                    pending.append(base64.b64encode(chunk) if part.base64 else chunk)
                    if left > 0:              # more to read: what we have goes out meanwhile
                        yield b"".join(pending)
                        pending = []
            pending.append(b"\r\n")
        pending.append(self._tail())
        yield b"".join(pending)


def json_or_none(response: httpx.Response) -> Any:
    """The reply's JSON, or None when it is not JSON (an HTML error page, an empty body)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def as_int(value: object) -> int | None:
    """An int from a JSON number or a numeric string ("3", "3.0"); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            return int(float(value.strip()))
        except ValueError:
            return None
    return None


def as_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def redact(text: str, secrets_: Sequence[str]) -> str:
    """Remove any secret that a provider echoed back from text we put in an error or a log."""
    for secret in secrets_:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def words(text: object, limit: int = 200) -> str:
    """A provider's message, made safe to show: one line, printable, bounded."""
    s = " ".join(str(text).split())
    s = "".join(ch for ch in s if ch.isprintable())
    return s if len(s) <= limit else s[: limit - 1] + "…"
