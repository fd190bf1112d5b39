"""An httpx transport that times every provider request (for the latency histogram)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


class TimedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; calls ``observe(result, seconds)`` per request, result "2xx".."5xx" or "error"."""

    def __init__(self, inner: httpx.AsyncBaseTransport, observe: Callable[[str, float], None]) -> None:
        self.inner = inner
        self.observe = observe

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except Exception:
            self.observe("error", time.perf_counter() - start)
            raise
        self.observe(f"{response.status_code // 100}xx", time.perf_counter() - start)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
