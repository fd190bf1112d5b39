"""Submit throughput: the dispatcher (store + state machine + adapter) against bare adapter calls.

Both talk to the same in-process simulator over real loopback HTTP, so the ratio is the cost
faxbridge adds per fax (durable claim, two committed transitions, events) on top of the
provider call itself. Prints figures; asserts nothing.

    python bench/dispatch_throughput.py [--jobs 500] [--provider phaxio|openfax]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbridge import logs
from faxbridge.clock import SystemClock
from faxbridge.dispatcher import Dispatcher
from faxbridge.intake import accept
from faxbridge.models import InputFile, NewJob, Paper, Source, SubmitRequest
from faxbridge.simulator import Simulator, SimulatorServer
from faxbridge.states import Policy
from faxbridge.store import open_store
from tests.support import make_pdf, sim_provider


async def main(jobs: int, kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pdf = make_pdf(root / "one.pdf")
        sim = Simulator(speed=10_000.0)
        server = SimulatorServer(sim, host="127.0.0.1", port=0)
        base = await server.start()
        async with httpx.AsyncClient(timeout=30) as client:
            provider = sim_provider(kind, client, base)
            # baseline: the same number of submissions straight through the adapter, 50 at a time
            sem = asyncio.Semaphore(50)

            async def one(n: int) -> None:
                async with sem:
                    await provider.submit(SubmitRequest(job_id=f"base{n}", to="+15555551212", pdf=pdf,
                                                        filename="one.pdf", pages=1, paper=Paper.LETTER))

            t0 = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(jobs)))
            baseline = time.perf_counter() - t0

            store = await open_store(root / "var", kind)
            t0 = time.perf_counter()
            for _ in range(jobs):
                await accept(store, SystemClock(), NewJob(source=Source.CLI, to="+15555551212", document="one.pdf"),
                             [InputFile("one.pdf", pdf)], max_pages=200)
            enqueue = time.perf_counter() - t0
            d = Dispatcher(store, provider, SystemClock(), Policy(), max_in_flight=50, owner="bench")
            t0 = time.perf_counter()
            # max_in_flight counts submitted-but-not-final faxes; with no tracker running they stay
            # submitted, so lift the cap to measure the submit path alone
            d.max_in_flight = jobs + 1
            await d.run_until_idle()
            dispatched = time.perf_counter() - t0
            counts = await store.counts()
            assert counts.get("submitted") == jobs, counts
            await store.close()
        await server.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"provider={kind} jobs={jobs}")
    print(f"{'figure':<38}{'measured':>12}")
    print(f"{'enqueue (CLI intake path), jobs/s':<38}{jobs / enqueue:>12.1f}")
    print(f"{'dispatch through store, jobs/s':<38}{jobs / dispatched:>12.1f}")
    print(f"{'baseline: bare adapter calls, jobs/s':<38}{jobs / baseline:>12.1f}")
    print(f"{'ratio dispatch / baseline time':<38}{dispatched / baseline:>12.2f}")
    print(f"{'peak RSS, MB':<38}{rss_mb:>12.1f}")
    print(json.dumps({"figure": f"submit throughput through the store, {kind}", "target": "(none)",
                      "measured": round(jobs / dispatched, 1), "baseline": round(jobs / baseline, 1),
                      "ratio": round(baseline / dispatched, 2)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--provider", choices=["phaxio", "openfax"], default="phaxio")
    args = ap.parse_args()
    logs.setup(level="warning")
    asyncio.run(main(args.jobs, args.provider))
