"""10,000 faxes in flight: what one poll cycle costs, counted in requests to the real simulator
over HTTP (the jobs are written straight into the store and the faxes into the simulator: see
:mod:`tests.tracking.bulk`). Target: at most 10 requests a cycle.

The faxes progress at one nominal second per second, but on a clock (the simulator's and the
adapter's) that stands still while the cycles run: what is counted is requests, and on a busy
machine a real-time report would grow between a cycle and the check of its cost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from faxbridge.clock import FakeClock, SystemClock
from faxbridge.providers.openfax import Cursor
from faxbridge.simulator import Simulator
from faxbridge.states import Policy
from faxbridge.store import open_store
from faxbridge.tracker import Tracker
from tests.support import served_simulator, sim_provider
from tests.tracking.bulk import fill

IN_FLIGHT = 10_000


@pytest.fixture
async def real_time_sim() -> AsyncIterator[tuple[Simulator, str]]:
    """A real-speed simulator whose clock (``sim.clock``, also handed to the adapters) stands still."""
    async with served_simulator(speed=1.0, clock=FakeClock(datetime.now(UTC))) as served:
        yield served


@pytest.mark.timeout(240)    # 10,000 jobs; the first cycle records a few thousand state changes, each fsynced
@pytest.mark.parametrize("kind", ["phaxio", "openfax"])
async def test_ten_thousand_in_flight_cost_at_most_ten_requests_a_cycle(
        tmp_path: Path, real_time_sim: tuple[Simulator, str], kind: str) -> None:
    sim, base = real_time_sim
    store = await open_store(tmp_path / "var", kind)
    try:
        # accepted over the last 4 minutes: some have finished, most are still going
        fill(sim, store, kind, IN_FLIGHT, now=sim.clock.now(), spread_s=240)
        async with httpx.AsyncClient(timeout=60) as client:
            provider = sim_provider(kind, client, base, clock=sim.clock)
            tracker = Tracker(store, provider, SystemClock(), Policy(), interval=30)
            first_changed = await tracker.poll_once()
            first = tracker.last_requests
            assert tracker.last_pending == IN_FLIGHT
            assert first_changed > 0                                  # the ones already final were found
            still = await store.in_flight()
            assert 0 < still < IN_FLIGHT
            await tracker.poll_once()
            second = tracker.last_requests
        if kind == "phaxio":
            # the list endpoint, 1,000 a page: all 10,000 were created within the list window
            assert first == second == 10
        else:
            # the first cycle of a fresh daemon reads the report's rows so far; the next ones from
            # the oldest pending fax's current row on (a row may change in place): here, where
            # every fax was sent within 4 minutes, nearly as many (still at most 10)
            rows = len(sim.history())
            assert first == rows // 1000 + 1
            assert 1 <= second <= 10
            assert Cursor.load(await store.kv_get(tracker.cursor_key)).high is not None
        assert first <= 10 and second <= 10
    finally:
        await store.close()


async def test_a_postbacks_cycle_on_a_daemon_not_polling_leaves_the_cursor(
        tmp_path: Path, real_time_sim: tuple[Simulator, str]) -> None:
    """Several daemons on one store: a cycle run to confirm a postback (``refresh``) on a daemon that
    is not the lead poller applies what it reads but leaves the shared cursor to the poller."""
    sim, base = real_time_sim
    store = await open_store(tmp_path / "var", "openfax")
    try:
        fill(sim, store, "openfax", 200, now=sim.clock.now(), spread_s=240)
        leads: list[str] = []

        async def not_leading(role: str) -> bool:
            leads.append(role)
            return False

        store.lead = not_leading  # type: ignore[method-assign]   # another daemon holds "poller"
        async with httpx.AsyncClient(timeout=60) as client:
            tracker = Tracker(store, sim_provider("openfax", client, base, clock=sim.clock), SystemClock(), Policy(),
                              interval=30)
            before = await store.in_flight()
            await tracker.refresh()
            assert await store.in_flight() < before                 # what it read was applied
            assert leads == ["poller"] and await store.kv_get(tracker.cursor_key) is None
            await tracker.poll_once()                               # the poller's own cycle moves it
            assert await store.kv_get(tracker.cursor_key) is not None
    finally:
        await store.close()


async def test_phaxio_asks_for_the_overdue_few_alone(tmp_path: Path,
                                                      real_time_sim: tuple[Simulator, str]) -> None:
    sim, base = real_time_sim
    store = await open_store(tmp_path / "var", "phaxio")
    try:
        now = sim.clock.now()
        fill(sim, store, "phaxio", 300, now=now, spread_s=60)
        # two faxes from two hours ago (outside the list window): asked for one by one
        old = fill(sim, store, "phaxio", 2, now=now - timedelta(hours=2), spread_s=10)
        async with httpx.AsyncClient(timeout=60) as client:
            provider = sim_provider("phaxio", client, base, clock=sim.clock)
            tracker = Tracker(store, provider, SystemClock(), Policy(), interval=30)
            await tracker.poll_once()
            assert tracker.last_requests == 1 + 2             # one list page + two GETs
            assert {(await store.get(i)).state.value for i in old} == {"delivered"}
            await tracker.poll_once()
            assert tracker.last_requests == 1                 # the old ones are final now
    finally:
        await store.close()
