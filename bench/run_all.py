"""Run every benchmark of the project and print one table: figure, target, measured, baseline, ratio.

Each bench script prints human-readable lines and, for each headline figure, one JSON line
{"figure", "target", "measured"..., "baseline"..., "ratio"}; this runner collects those lines.
A script that fails or times out is reported as such, never hidden.

    python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES: list[tuple[str, list[str], list[str]]] = [   # script, full args, quick args
    ("dispatch_throughput.py", ["--jobs", "500"], ["--jobs", "100"]),
    ("poll_cost.py", [], ["--cycles", "1"]),
    ("smtp_ingest.py", ["--rounds", "3"], []),
    ("folder_burst.py", [], ["--files", "500"]),
    ("large_document_rss.py", [], ["--mb", "10"]),
    ("restart_healthy.py", [], ["--jobs", "20000", "--runs", "1"]),
    ("footprint.py", [], []),
    ("cpu_per_message.py", ["--seconds", "20"], ["--seconds", "8"]),
    ("office_convert.py", [], ["--runs", "2"]),
    ("cluster.py", [], ["--jobs", "100", "--seconds", "4", "--daemons", "1,2"]),
]


def machine() -> str:
    """Cores, memory and system, for the report's first line."""
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores{memory}, {platform.machine()}, {platform.platform(terse=True)}"


def value(row: dict[str, object], prefix: str) -> str:
    for key, v in row.items():
        if key.startswith(prefix):
            return f"{v}{key[len(prefix):].replace('_', ' ')}" if key != prefix else str(v)
    return "-"


def main(quick: bool) -> int:
    print(f"faxbridge benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: {machine()}, "
          f"Python {platform.python_version()}, {'quick' if quick else 'full'} run")
    rows: list[dict[str, object]] = []
    failed = 0
    for script, full, short in BENCHES:
        start = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, str(HERE / script), *(short if quick else full)],
                               capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            rows.append({"figure": f"{script}: timed out", "target": "", "measured": "-"})
            failed += 1
            continue
        found = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{\"figure\"")]
        if r.returncode != 0 or not found:
            rows.append({"figure": f"{script}: FAILED (exit {r.returncode})", "target": "", "measured": "-"})
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            failed += 1
        rows += found
        print(f"  ran {script} in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    print(f"\n| {'figure':<52} | {'target':<14} | {'measured':<12} | {'baseline':<12} | {'ratio':<7} |")
    print(f"|{'-' * 54}|{'-' * 16}|{'-' * 14}|{'-' * 14}|{'-' * 9}|")
    for row in rows:
        print(f"| {row['figure']!s:<52} | {row.get('target', '')!s:<14} | {value(row, 'measured'):<12} | "
              f"{value(row, 'baseline'):<12} | {row.get('ratio', '-')!s:<7} |")
    return 1 if failed else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    sys.exit(main(ap.parse_args().quick))
