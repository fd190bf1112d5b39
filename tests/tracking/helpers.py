"""Small helpers the tracking tests share: queue a job in a running daemon, wait for states,
build and post signed Phaxio callbacks exactly as Phaxio (and the simulator) would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from faxbridge.app import Daemon
from faxbridge.clock import SystemClock
from faxbridge.component import Component
from faxbridge.dispatcher import Dispatcher
from faxbridge.intake import accept
from faxbridge.models import InputFile, Job, NewJob, Source
from faxbridge.simulator import phaxio_signature
from faxbridge.simulator.phaxio_model import fax_json
from faxbridge.simulator.webhooks import encode_multipart
from faxbridge.store import JobStore
from faxbridge.tracker import Tracker
from tests.conftest import async_wait_until
from tests.support import make_pdf


@dataclass
class Parts:
    """A running daemon's parts a test looks at (``components``: the daemon's own list)."""

    dispatcher: Dispatcher
    tracker: Tracker
    simulator: Any                       # the built-in simulator (None with another provider)
    components: list[Component]


def parts(daemon: Daemon) -> tuple[JobStore, Parts]:
    assert daemon.store is not None and daemon.dispatcher is not None and daemon.tracker is not None
    assert daemon.handle is not None
    return daemon.store, Parts(daemon.dispatcher, daemon.tracker, daemon.handle.simulator, daemon.components)


def web_url(daemon: Daemon) -> str:
    _, rt = parts(daemon)
    (web,) = [c for c in rt.components if c.name == "web"]
    return str(web.local_url)


async def queue(daemon: Daemon, tmp: Path, to: str, pages: int = 1) -> str:
    store, rt = parts(daemon)
    pdf = tmp / f"doc{pages}.pdf"
    if not pdf.exists():
        make_pdf(pdf, pages=pages)
    job = await accept(store, SystemClock(), NewJob(source=Source.CLI, to=to, document=pdf.name),
                       [InputFile(pdf.name, pdf)], max_pages=200)
    rt.dispatcher.wake()
    return job.id


async def wait_job(daemon: Daemon, job_id: str, *states: str, timeout: float = 30.0) -> Job:
    store, _ = parts(daemon)
    async def there() -> Job | None:
        job = await store.get(job_id)
        return job if job.state.value in states else None

    return await async_wait_until(there, timeout=timeout, what=f"job {job_id} in {states}")  # type: ignore[no-any-return]


def callback_fields(fax: dict[str, Any], *, version: str = "v2.1", event: str | None = "fax_completed",
                    **extra: str) -> dict[str, str]:
    fields = {"fax": json.dumps(fax, separators=(",", ":")),
              "success": "true" if fax.get("status") == "success" else "false",
              "is_test": "true", "direction": "sent"}
    if version == "v2.1" and event:
        fields["event_type"] = event
    fields.update(extra)
    return fields


def fax_now(daemon: Daemon, provider_id: str, **changes: Any) -> dict[str, Any]:
    """The fax as the built-in simulator would report it now, with ``changes`` applied."""
    _, rt = parts(daemon)
    sim = rt.simulator
    fax = sim.get("phaxio", provider_id)
    obj: dict[str, Any] = fax_json(fax, sim.clock.now(), "v2.1")
    recipient = changes.pop("recipient", None)
    obj.update(changes)
    if recipient:
        obj["recipients"][0].update(recipient)
    return obj


def callback_token(daemon: Daemon) -> str:
    """The token the daemon's built-in simulator signs its callbacks with (its own secret)."""
    _, rt = parts(daemon)
    return str(rt.simulator.callback_token)


async def post_callback(url: str, fields: dict[str, str], *, token: str, sign_url: str | None = None,
                        signature: str | None = None, sign: bool = True, multipart: bool = True) -> httpx.Response:
    """POST a Phaxio callback to ``url``, signed with ``token`` over ``sign_url`` (default: ``url``)."""
    headers = {}
    if sign:
        headers["X-Phaxio-Signature"] = signature or phaxio_signature(token, sign_url or url, fields.items())
    async with httpx.AsyncClient(timeout=30) as client:
        if multipart:
            body, ctype = encode_multipart(fields.items())
            headers["Content-Type"] = ctype
            return await client.post(url, content=body, headers=headers)
        return await client.post(url, data=fields, headers=headers)
