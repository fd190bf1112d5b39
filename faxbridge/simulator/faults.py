"""Scripted faults: a queue of misbehaviours consumed in order by the requests they match.

============== ===================================================================
kind           what the matching request gets
============== ===================================================================
status         that HTTP status with the protocol's error body (+ Retry-After)
hang           a wait of ``seconds``, then normal handling if the client is still
               there; if it gave up (timed out) meanwhile, nothing is done at all
accept_then_   normal handling (a fax is accepted and counted), then a wait of
hang           ``seconds`` before the answer: the ambiguous case
accept_then_   normal handling, then HTTP 500 instead of the real answer
500
accept_then_   normal handling, then HTTP ``status`` (e.g. a gateway's 502 or 504 after
status         it forwarded the request) instead of the real answer
webhook_drop   (webhooks, not requests) the next webhook is never sent
webhook_dup    the next webhook is sent twice
webhook_delay  the next webhook waits ``seconds`` (real time) first, so later ones overtake it
============== ===================================================================

``path`` is a substring of the request path (None: any provider path); ``method``
(an addition to the brief) restricts to one HTTP method. Control requests (``/_sim``) are
never faulted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

REQUEST_KINDS = ("status", "hang", "accept_then_hang", "accept_then_500", "accept_then_status")
WEBHOOK_KINDS = ("webhook_drop", "webhook_dup", "webhook_delay")
KINDS = REQUEST_KINDS + WEBHOOK_KINDS


@dataclass
class Fault:
    kind: str
    count: int = 1
    path: str | None = None
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    method: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.count < 1:
            raise ValueError("fault count must be at least 1")
        if not 100 <= self.status <= 599:
            raise ValueError("fault status must be an HTTP status code")
        if self.seconds < 0:
            raise ValueError("fault seconds must not be negative")

    def matches(self, request: Request) -> bool:
        if self.kind in WEBHOOK_KINDS:
            return False
        if self.path is not None and self.path not in request.url.path:
            return False
        return self.method is None or self.method.upper() == request.method

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        known = {"kind", "count", "path", "status", "retry_after", "seconds", "method"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if not isinstance(data.get("kind"), str):
            raise ValueError("fault kind is required")
        retry_after = data.get("retry_after")
        return cls(
            kind=data["kind"],
            count=int(data.get("count", 1)),
            path=data.get("path"),
            status=int(data.get("status", 503)),
            retry_after=None if retry_after is None else float(retry_after),
            seconds=float(data.get("seconds", 0.0)),
            method=data.get("method"),
        )


Handler = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[int], Response]


class FaultQueue:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        return list(self._faults)

    def take(self, request: Request) -> Fault | None:
        """The first fault matching the request, with one use consumed."""
        for fault in self._faults:
            if fault.matches(request):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def take_webhook(self) -> Fault | None:
        """The first webhook fault, with one use consumed (``path`` is matched against the URL by the caller)."""
        for fault in self._faults:
            if fault.kind in WEBHOOK_KINDS:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def run(self, request: Request, handler: Handler, error: ErrorBody) -> Response:
        """Handle a provider request, misbehaving if a fault says so."""
        fault = self.take(request)
        if fault is None:
            return await handler(request)
        await request.body()   # read it all first: the client is never cut off mid-upload
        if fault.kind == "status":
            response = error(fault.status)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = _seconds(fault.retry_after)
            return response
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            if await request.is_disconnected():
                # the client gave up waiting: the request is dropped unprocessed
                return error(504)
            return await handler(request)
        response = await handler(request)
        if fault.kind == "accept_then_hang":
            await asyncio.sleep(fault.seconds)
            return response
        return error(fault.status if fault.kind == "accept_then_status" else 500)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
