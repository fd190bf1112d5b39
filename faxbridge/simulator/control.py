"""The control surface for tests that run the simulator in another process (``/_sim``).

``GET /_sim/sends``            every accepted fax (JSON list of SimSend)
``POST /_sim/faults``          add a Fault (JSON body); ``DELETE /_sim/faults`` clears them
``POST /_sim/openfax-postback`` ``{"url": ..., "method": "POST"|"GET"}`` (url null: none)
``GET /_sim/state``            faxes with their progress, webhook log, pending faults
``POST /_sim/idle?timeout=S``  waits like ``sim.idle``; 200, or 504 on timeout

Control requests are never faulted and need no credentials.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from faxbridge.simulator.faults import Fault
from faxbridge.simulator.records import PostbackTarget

if TYPE_CHECKING:
    from faxbridge.simulator.core import Simulator


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        return None


def routes(sim: Simulator) -> list[BaseRoute]:
    async def sends(request: Request) -> JSONResponse:
        return JSONResponse([s.to_json() for s in sim.sends])

    async def add_fault(request: Request) -> JSONResponse:
        body = await _json(request)
        try:
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            fault = Fault.from_json(body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        sim.inject(fault)
        return JSONResponse({"ok": True, "fault": fault.to_json()}, status_code=201)

    async def clear_faults(request: Request) -> JSONResponse:
        sim.faults.clear()
        return JSONResponse({"ok": True})

    async def postback(request: Request) -> JSONResponse:
        body = await _json(request)
        if not isinstance(body, dict) or not (body.get("url") is None or isinstance(body["url"], str)):
            return JSONResponse({"error": "expected {\"url\": ..., \"method\": ...}"}, status_code=400)
        method = str(body.get("method") or "POST").upper()
        if method not in ("POST", "GET"):
            return JSONResponse({"error": "method must be POST or GET"}, status_code=400)
        sim.openfax_postback = PostbackTarget(body["url"], method) if body.get("url") else None
        return JSONResponse({"ok": True})

    async def state(request: Request) -> JSONResponse:
        now = sim.clock.now()
        faxes = []
        for fax in sim.faxes():
            snaps = [fax.snapshot(r, now) for r in fax.recipients]
            faxes.append({
                "provider": fax.provider,
                "id": fax.id,
                "to": [r.number for r in fax.recipients],
                "phases": [s.phase.value for s in snaps],
                "attempts": [s.started for s in snaps],
                "final": fax.is_final(now),
                "accepted_at": fax.accepted_at.isoformat(),
                "final_at": fax.final_real().isoformat(),
            })
        target = sim.openfax_postback
        return JSONResponse({
            "speed": sim.speed,
            "faxes": faxes,
            "webhook_log": [list(entry) for entry in sim.webhook_log],
            "faults": [f.to_json() for f in sim.faults.pending],
            "openfax_postback": None if target is None else {"url": target.url, "method": target.method},
        })

    async def idle(request: Request) -> JSONResponse:
        try:
            timeout = float(request.query_params.get("timeout", "30"))
        except ValueError:
            return JSONResponse({"error": "timeout must be a number"}, status_code=400)
        try:
            await sim.idle(timeout)
        except TimeoutError:
            return JSONResponse({"idle": False}, status_code=504)
        return JSONResponse({"idle": True})

    return [
        Route("/sends", sends, methods=["GET"]),
        Route("/faults", add_fault, methods=["POST"]),
        Route("/faults", clear_faults, methods=["DELETE"]),
        Route("/openfax-postback", postback, methods=["POST"]),
        Route("/state", state, methods=["GET"]),
        Route("/idle", idle, methods=["POST"]),
    ]
