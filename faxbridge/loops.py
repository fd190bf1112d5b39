"""Small helpers for the daemon's background loops."""

from __future__ import annotations

import asyncio


async def nap(timeout: float, *events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set or ``timeout`` seconds pass, whichever comes first."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
