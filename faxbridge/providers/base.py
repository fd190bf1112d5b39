"""What every provider adapter offers, and the one place httpx failures become our errors.

An adapter knows only HTTP and its own wire format. It never touches the store; it
takes values (``SubmitRequest``, ``PendingFax``) and returns values (``SubmitReceipt``,
``StatusUpdate``), or raises the typed errors of :mod:`faxbridge.errors`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from typing import Protocol

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
        # 502/503/504 come from a gateway that did not pass the request on; a 500 may have
        # been raised after the provider stored the fax, so it must be reconciled.
        raise TransientProviderError(
            f"{provider} is unavailable (HTTP {status})",
            provider=provider,
            code=str(status),
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            maybe_sent=status == 500,
        )
