"""The simulated fax network: accepted faxes, their lazily computed progress, and webhooks.

State is computed from the clock whenever someone looks (``GET /faxes/{id}``, a report):
each fax's calls were planned when it was accepted (:mod:`.timing`), so nothing ticks.
One asyncio task, the scheduler, wakes when the next fax becomes final, to queue its
webhook; each webhook is delivered (with retries) by a task of its own. Both live in the
event loop that first uses the simulator (a request, ``idle``) and end with ``aclose``.
With a fake clock, call ``kick()`` after moving it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
from starlette.applications import Starlette

from faxbridge.clock import Clock, SystemClock
from faxbridge.simulator import credentials, persist
from faxbridge.simulator.faults import Fault, FaultQueue
from faxbridge.simulator.openfax_model import (
    FIRST_HISTORY_ID,
    HistoryRow,
    current_row,
    materialize,
    postback_fields,
)
from faxbridge.simulator.phaxio_model import callback_fields
from faxbridge.simulator.records import Notification, PostbackTarget, SimFax, SimSend
from faxbridge.simulator.sinch_routes import callback as sinch_callback
from faxbridge.simulator.webhooks import RETRY_DELAYS_S, TIMEOUT_S, phaxio_signature, post_once

FIRST_IDS = {"phaxio": 323034811, "openfax": 779029, "sinch": 1}
log = structlog.get_logger("faxbridge.simulator")


@dataclass
class _Runtime:
    """What lives in one event loop."""

    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    scheduler: asyncio.Task[None] | None = None
    deliveries: dict[int, asyncio.Task[None]] = field(default_factory=dict)


OPENFAX_ROWS = ("snapshot", "in_place")


class Simulator:
    def __init__(self, speed: float = 10.0, *, clock: Clock | None = None, openfax_rows: str = "snapshot",
                 state_file: Path | None = None, read_only: bool = False,
                 callback_token: str | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if openfax_rows not in OPENFAX_ROWS:
            raise ValueError(f"openfax_rows must be one of {', '.join(OPENFAX_ROWS)}")
        self.openfax_rows = openfax_rows
        self.openfax_laststatus = True      # False: report rows without LastStatus (the doc does not promise it)
        self.speed = float(speed)
        # Phaxio callbacks are signed with it: a secret of this simulator (credentials.callback_token).
        self.callback_token = credentials.callback_token(callback_token)
        self.clock: Clock = clock or SystemClock()
        self.faults = FaultQueue()
        self.openfax_postback: PostbackTarget | None = None
        self.webhook_log: list[tuple[str, int | None]] = []
        self._sends: list[SimSend] = []
        self._faxes: dict[tuple[str, str], SimFax] = {}
        self._next_id = dict(FIRST_IDS)
        self._history: list[HistoryRow] = []
        self._row_ids: dict[str, int] = {}      # "in_place": each Openfax fax's one row id
        self._outbox: list[Notification] = []
        self._rt: _Runtime | None = None
        self.state_file = state_file
        self.read_only = read_only         # restored from state_file, never written back (the CLI's look)
        if state_file is not None:
            self._restore(state_file)
        from faxbridge.simulator.app import build_app

        self.app: Starlette = build_app(self)

    # ---- what tests read and script ------------------------------------------------------

    @property
    def sends(self) -> list[SimSend]:
        return list(self._sends)

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    # ---- records --------------------------------------------------------------------------

    def new_id(self, provider: str) -> str:
        value = self._next_id.setdefault(provider, FIRST_IDS[provider])
        self._next_id[provider] = value + 1
        if provider == "sinch":
            # Sinch's ids are strings (ULID-like); fixed width, so they sort as they were made
            return f"01SIMFAX{value:018d}"
        return str(value)

    def add(self, fax: SimFax) -> None:
        self._faxes[(fax.provider, fax.id)] = fax
        self._sends.append(fax.send)
        self.save()          # before the send is answered: an accepted fax survives a restart
        self.kick()

    # ---- memory across restarts (persist) ------------------------------------------------

    def _restore(self, path: Path) -> None:
        state = persist.load(path, set_aside=not self.read_only)
        if state is None:
            return
        for fax in state.faxes:
            self._faxes[(fax.provider, fax.id)] = fax
            self._sends.append(fax.send)
        self._next_id.update({k: max(v, self._next_id.get(k, v)) for k, v in state.next_id.items()})
        self._history, self._row_ids, self._outbox = state.history, state.row_ids, state.outbox
        for note in self._outbox:
            note.attempts = 0        # a fresh round of tries for what was owed at the stop
        log.info("simulator.restored", faxes=len(state.faxes), owed_webhooks=len(self._outbox))

    def save(self) -> None:
        """Write the simulator's records to ``state_file`` (when it has one)."""
        if self.state_file is None or self.read_only:
            return
        persist.save(self.state_file, persist.SimState(
            faxes=list(self._faxes.values()), next_id=dict(self._next_id), history=list(self._history),
            row_ids=dict(self._row_ids), outbox=list(self._outbox)))

    def get(self, provider: str, fax_id: str) -> SimFax | None:
        return self._faxes.get((provider, fax_id))

    def faxes(self, provider: str | None = None) -> list[SimFax]:
        return [f for f in self._faxes.values() if provider is None or f.provider == provider]

    def history(self) -> list[HistoryRow]:
        """Every Openfax call-history row up to now (in "in_place" mode: each fax's row as it stands)."""
        if self.openfax_rows == "in_place":
            now = self.clock.now()
            rows = []
            for fax in sorted(self.faxes("openfax"), key=lambda f: (f.accepted_at, int(f.id))):
                row_id = self._row_ids.setdefault(fax.id, FIRST_HISTORY_ID + len(self._row_ids))
                rows.append(current_row(fax, row_id, now))
            return sorted(rows, key=lambda r: r.history_id)
        next_id = self._history[-1].history_id + 1 if self._history else FIRST_HISTORY_ID
        self._history.extend(materialize(self.faxes("openfax"), self.clock.now(), next_id))
        return list(self._history)

    def forget(self, provider: str, fax_id: str) -> None:
        """Lose a fax, as a provider may (tests): it is no longer listed or found (404)."""
        self._faxes.pop((provider, fax_id), None)
        self.save()
        self.kick()

    def cancel(self, fax: SimFax, reason: str) -> None:
        fax.canceled_at = fax.elapsed(self.clock.now())
        fax.cancel_reason = reason
        self.save()
        self.kick()

    def spent_cents(self, provider: str, account: str) -> int:
        now = self.clock.now()
        total = 0
        for fax in self.faxes(provider):
            if fax.account == account:
                total += sum(7 * a.pages_sent for r in fax.recipients for a in fax.snapshot(r, now).done)
        return total

    # ---- time and webhooks ----------------------------------------------------------------

    def runtime(self) -> _Runtime:
        """The per-loop machinery, started in the running loop on first use."""
        loop = asyncio.get_running_loop()
        if self._rt is None or self._rt.loop is not loop:
            self._rt = _Runtime(loop)
            self._rt.scheduler = loop.create_task(self._schedule(self._rt), name="faxbridge-sim-scheduler")
        return self._rt

    def kick(self) -> None:
        """Look again now (after a new fax, a cancel, or a fake clock moved)."""
        with contextlib.suppress(RuntimeError):
            self.runtime().wake.set()

    def _changed(self, rt: _Runtime) -> None:
        rt.changed.set()
        rt.changed = asyncio.Event()

    def _idle_now(self) -> bool:
        return all(f.finalized for f in self._faxes.values()) and not self._outbox

    async def idle(self, timeout: float = 60.0) -> None:
        """Wait until every fax is final and every webhook delivered (or given up)."""
        rt = self.runtime()
        rt.wake.set()
        async with asyncio.timeout(timeout):
            while not self._idle_now():
                await rt.changed.wait()

    async def _schedule(self, rt: _Runtime) -> None:
        for note in self._outbox:   # owed from an earlier loop or before aclose
            self._start_delivery(rt, note)
        while True:
            rt.wake.clear()
            now = self.clock.now()
            self.history()
            waits = []
            ended = False
            for fax in self._faxes.values():
                if fax.finalized:
                    continue
                if fax.is_final(now):
                    fax.finalized = ended = True
                    owed = self._notification(fax)
                    if owed is not None:
                        self._outbox.append(owed)
                        self._start_delivery(rt, owed)
                else:
                    waits.append((fax.final_real() - now).total_seconds())
            if ended:
                self.save()
            self._changed(rt)
            timeout = max(0.0, min(waits)) if waits else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await rt.wake.wait()

    def _notification(self, fax: SimFax) -> Notification | None:
        key = (fax.provider, fax.id)
        if fax.provider == "phaxio":
            if not fax.callback_url:
                return None
            fields = callback_fields(fax)
            signature = phaxio_signature(self.callback_token, fax.callback_url, fields)
            return Notification(key, fax.callback_url, "POST", fields, True, signature)
        if fax.provider == "sinch":
            if not fax.callback_url:
                return None
            fields, body = sinch_callback(fax)
            return Notification(key, fax.callback_url, "POST", fields, True, json_body=body)
        target = self.openfax_postback
        if target is None:
            return None
        method = "GET" if target.method.upper() == "GET" else "POST"
        return Notification(key, target.url, method, postback_fields(fax), False)

    def _start_delivery(self, rt: _Runtime, note: Notification) -> None:
        if id(note) not in rt.deliveries:
            task = rt.loop.create_task(self._deliver(rt, note), name="faxbridge-sim-webhook")
            rt.deliveries[id(note)] = task

    async def _deliver(self, rt: _Runtime, note: Notification) -> None:
        if note.signature is not None:
            # signed by whoever delivers it: a callback owed by an earlier instance (restored after
            # a restart) carries this simulator's token, the one its daemon now checks
            note.signature = phaxio_signature(self.callback_token, note.url, note.fields)
        fault = self.faults.take_webhook()
        if fault is not None:
            log.info("simulator.webhook_fault", kind=fault.kind, fax=note.key[1])
            if fault.kind == "webhook_drop":
                self.webhook_log.append((note.url, None))
                self._outbox.remove(note)
                rt.deliveries.pop(id(note), None)
                self._changed(rt)
                return
            if fault.kind == "webhook_delay":
                await asyncio.sleep(fault.seconds)
            if fault.kind == "webhook_dup":
                async with httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False) as client:
                    with contextlib.suppress(Exception):
                        self.webhook_log.append((note.url, await post_once(client, note)))
        async with httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False) as client:
            while True:
                note.attempts += 1
                try:
                    status = await post_once(client, note)
                except Exception:   # a bug or a URL httpx refuses: a failed try, never a lost loop
                    log.exception("simulator.webhook_error", url=note.url)
                    status = None
                self.webhook_log.append((note.url, status))
                if status is not None and 200 <= status < 300:
                    break
                if note.attempts > len(RETRY_DELAYS_S):
                    break
                self._changed(rt)
                await asyncio.sleep(RETRY_DELAYS_S[note.attempts - 1] / self.speed)
        self._outbox.remove(note)
        rt.deliveries.pop(id(note), None)
        self.save()
        self._changed(rt)

    async def aclose(self) -> None:
        """Stop the scheduler and deliveries of this loop; owed webhooks stay owed."""
        rt, self._rt = self._rt, None
        if rt is None:
            return
        tasks = [t for t in (rt.scheduler, *rt.deliveries.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if rt.loop is asyncio.get_running_loop():
            await asyncio.gather(*tasks, return_exceptions=True)
