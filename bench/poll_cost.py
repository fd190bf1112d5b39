"""What one status poll cycle costs with 1,000 and 10,000 faxes in flight, for each provider.

The simulator runs in a child process (its CPU is not ours), holding the faxes, accepted over
the last few minutes in real time (speed 1): some are final, most are still being sent. The
jobs are written straight into a fresh store. Each row polls the real simulator over HTTP:

- cold: the first cycle of a freshly started daemon (Openfax: no report cursor yet);
- steady: the mean of the next cycles (Openfax: only the report rows added since);
- baseline (measured in the same run): the naive way, one ``GET /faxes/{id}`` per fax for
  Phaxio (at 1,000); for Openfax, which has no per-fax call, the whole report read every cycle
  (at 1,000 and 10,000).

Cold CPU includes committing the state changes of the faxes found final (one transaction each).

Prints requests and CPU seconds (this process) per cycle and the ratios; asserts nothing.
Target: <= 10 requests per cycle with 10,000 in flight.

    python bench/poll_cost.py [--cycles 3] [--spread 240]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbridge import logs
from faxbridge.clock import SystemClock
from faxbridge.providers.base import Provider
from faxbridge.simulator import Simulator, SimulatorServer
from faxbridge.states import Policy
from faxbridge.store import JobStore, open_store
from faxbridge.tracker import Tracker
from tests.support import sim_provider
from tests.tracking.bulk import fill_sim, fill_store


def serve(kind: str, count: int, spread: float, conn: Connection) -> None:
    """Child process: a simulator holding ``count`` faxes; sends (base URL, rows); serves until told."""
    logs.setup(level="warning")

    async def main() -> None:
        sim = Simulator(speed=1.0)
        server = SimulatorServer(sim, host="127.0.0.1", port=0)
        base = await server.start()
        rows = fill_sim(sim, kind, count, now=sim.clock.now(), spread_s=spread)
        conn.send((base, rows))
        await asyncio.to_thread(conn.recv)
        await server.stop()

    asyncio.run(main())


class Figures:
    def __init__(self) -> None:
        self.cold: tuple[float, float] = (0, 0)
        self.steady: tuple[float, float] = (0, 0)
        self.baseline: tuple[float, float] | None = None


async def measure(kind: str, count: int, cycles: int, spread: float, baseline: bool) -> Figures:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=serve, args=(kind, count, spread, there), daemon=True)
    child.start()
    base, rows = await asyncio.to_thread(here.recv)
    out = Figures()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = await open_store(Path(tmp), kind)
            fill_store(store, rows)
            async with httpx.AsyncClient(timeout=120) as client:
                provider = sim_provider(kind, client, base)
                if baseline:
                    out.baseline = await naive(kind, provider, store)
                tracker = Tracker(store, provider, SystemClock(), Policy(), interval=30)
                await tracker.poll_once()
                out.cold = (tracker.last_requests, tracker.last_cpu_s)
                reqs, cpu = 0.0, 0.0
                for _ in range(cycles):
                    await tracker.poll_once()
                    reqs += tracker.last_requests
                    cpu += tracker.last_cpu_s
                out.steady = (reqs / cycles, cpu / cycles)
            await store.close()
    finally:
        here.send("stop")
        child.join(30)
    return out


async def naive(kind: str, provider: Provider, store: JobStore) -> tuple[float, float]:
    """One cycle the naive way; (requests, CPU seconds)."""
    jobs = await store.submitted()
    t0 = time.process_time()
    if kind == "phaxio":
        sem = asyncio.Semaphore(20)

        async def one(provider_id: str) -> None:
            async with sem:
                await provider.status(provider_id)

        await asyncio.gather(*(one(j.provider_id or "") for j in jobs))
        return float(len(jobs)), time.process_time() - t0
    from faxbridge.models import PendingFax

    pending = [PendingFax(j.id, j.provider_id or "", j.to, j.pages, j.submitted_at or j.created_at) for j in jobs]
    result = await provider.poll(pending, None)        # no cursor: the whole report, every cycle
    return float(result.requests), time.process_time() - t0


async def main(cycles: int, spread: float) -> None:
    logs.setup(level="warning")
    print(f"poll cost per cycle; faxes accepted over the last {spread:g} s at real-time speed; "
          f"steady = mean of {cycles} cycles")
    print(f"{'provider':<9} {'in flight':>9} {'cold req':>9} {'cold cpu s':>10} {'steady req':>10} "
          f"{'steady cpu s':>12}")
    results: dict[tuple[str, int], Figures] = {}
    for kind in ("phaxio", "openfax"):
        for count in (1_000, 10_000):
            naive_too = count == 1_000 or kind == "openfax"
            f = results[(kind, count)] = await measure(kind, count, cycles, spread, baseline=naive_too)
            print(f"{kind:<9} {count:>9} {f.cold[0]:>9.0f} {f.cold[1]:>10.3f} {f.steady[0]:>10.1f} "
                  f"{f.steady[1]:>12.3f}")
    print()
    for kind in ("phaxio", "openfax"):
        f = results[(kind, 1_000)]
        assert f.baseline is not None
        what = "one GET /faxes/{id} per fax" if kind == "phaxio" else "the whole report, no cursor"
        req_ratio = f.baseline[0] / max(f.steady[0], 1e-9)
        cpu_ratio = f.baseline[1] / max(f.steady[1], 1e-9)
        print(f"{kind} baseline at 1,000 ({what}): {f.baseline[0]:.0f} requests, {f.baseline[1]:.3f} CPU s; "
              f"faxbridge steady: {f.steady[0]:.1f} requests, {f.steady[1]:.3f} CPU s; "
              f"ratio {req_ratio:.0f}x fewer requests, {cpu_ratio:.1f}x less CPU")
        big = results[(kind, 10_000)]
        if big.baseline is not None:
            print(f"{kind} baseline at 10,000 ({what}): {big.baseline[0]:.0f} requests, {big.baseline[1]:.3f} CPU s; "
                  f"faxbridge steady: {big.steady[0]:.1f} requests, {big.steady[1]:.3f} CPU s")
        verdict = "meets" if max(big.steady[0], big.cold[0] if kind == "phaxio" else 0) <= 10 else "MISSES"
        print(f"{kind} at 10,000: steady {big.steady[0]:.1f} requests/cycle ({verdict} the <= 10 target); "
              f"cold {big.cold[0]:.0f}")
        naive = big.baseline[0] if big.baseline is not None else f.baseline[0] * 10  # one GET per fax
        worst = max(big.steady[0], big.cold[0] if kind == "phaxio" else 0)
        print(json.dumps({"figure": f"poll requests per cycle, {kind}, 10,000 in flight", "target": "<= 10",
                          "measured": round(worst, 1), "baseline": round(naive, 1),
                          "ratio": round(worst / max(naive, 1e-9), 4)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--spread", type=float, default=240.0)
    args = ap.parse_args()
    asyncio.run(main(args.cycles, args.spread))
