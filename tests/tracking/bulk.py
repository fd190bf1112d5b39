"""Many faxes in flight at once, built directly (the bench and the poll-cost test share it).

Going through ``POST /faxes`` 10,000 times would measure the submit path, not polling, and
take minutes; so the faxes are put straight into the simulator's records and the jobs straight
into the store's table (state ``submitted``, as the dispatcher leaves them). Polling then
talks to the simulator over real HTTP as always.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta

from faxbridge.simulator import Simulator, credentials
from faxbridge.simulator.phaxio_submit import CreateRequest, Document, build_fax
from faxbridge.simulator.records import SimFax, SimRecipient, SimSend
from faxbridge.simulator.timing import plan
from faxbridge.store import JobStore, new_job_id, ts

SHA = hashlib.sha256(b"bulk").hexdigest()


def number(i: int) -> str:
    """Mostly delivered, some busy-then-delivered, some failing (contract section 6 digits)."""
    return f"+1555555{i % 10000:04d}"


def _phaxio_fax(sim: Simulator, job_id: str, to: str, at: datetime) -> SimFax:
    req = CreateRequest(numbers=[to], document=Document(SHA, 1000, 1, None, ("bulk.pdf",)),
                        tags={"faxbridge_job": job_id})
    return build_fax(req, sim.new_id("phaxio"), credentials.PHAXIO_API_KEY, "v2.1", at, sim.speed)


def _openfax_fax(sim: Simulator, to: str, at: datetime) -> SimFax:
    fax_id = sim.new_id("openfax")
    send = SimSend(provider="openfax", id=fax_id, to=to, pdf_sha256=SHA, pdf_size=1000, pages=1, tags={},
                   job_tag=None, header="", resolution="standard", paper="letter", accepted_at=at,
                   to_header="", priority="Normal", recipients=(to,))
    return SimFax(provider="openfax", id=fax_id, account=credentials.OPENFAX_ACCOUNT_ID, accepted_at=at,
                  speed=sim.speed, recipients=[SimRecipient(to, plan(to, 1))], send=send, pages=1)


Row = tuple[str, str, str, str]
"""One fax in flight: (job id, provider id, number, accepted at as ISO text)."""


def fill_sim(sim: Simulator, kind: str, count: int, *, now: datetime, spread_s: float) -> list[Row]:
    """``count`` faxes the simulator accepted over the last ``spread_s`` seconds."""
    out = []
    for i in range(count):
        job_id = new_job_id()
        at = now - timedelta(seconds=spread_s * (count - i) / count)
        to = number(i)
        fax = _phaxio_fax(sim, job_id, to, at) if kind == "phaxio" else _openfax_fax(sim, to, at)
        sim.add(fax)
        out.append((job_id, fax.id, to, at.isoformat()))
    return out


def fill_store(store: JobStore, rows: list[Row]) -> list[str]:
    """Their jobs, in state ``submitted`` under ``store.provider``. Returns the job ids."""
    values = []
    for job_id, fax_id, to, at in rows:
        stamp = ts(datetime.fromisoformat(at))
        values.append((job_id, "cli", to, "submitted", 1, "letter", store.provider, fax_id, "bulk.pdf",
                       json.dumps({}), json.dumps({}), stamp, stamp, SHA, stamp, stamp))
    db = sqlite3.connect(store.state_dir / "faxbridge.db")  # type: ignore[attr-defined]
    try:
        with db:
            db.executemany(
                """INSERT INTO jobs (id, source, to_number, state, pages, paper, provider, provider_id, document,
                   options, meta, created_at, updated_at, doc_sha256, submit_started_at, submitted_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", values)
    finally:
        db.close()
    return [r[0] for r in rows]


def fill(sim: Simulator, store: JobStore, kind: str, count: int, *, now: datetime, spread_s: float) -> list[str]:
    """``count`` faxes in the simulator and their jobs in the store, all in flight.

    ``kind`` is the provider protocol ("phaxio" | "openfax"). Returns the job ids.
    """
    return fill_store(store, fill_sim(sim, kind, count, now=now, spread_s=spread_s))
