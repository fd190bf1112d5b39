"""Footprint at rest: PSS of the daemon and all its descendant processes, 10 s after a mail and a file.

The real daemon (``python -m faxbridge run -c CONFIG``) with the defaults except: the built-in
simulator as provider (the default kind), the SMTP listener on, one ``[[watch]]`` folder, and the
SMTP and webhook listeners on free loopback ports (the default 8025 may be taken on a shared
machine). One mail goes in by ``smtplib`` (the 282 KB scanner mail carrying a 200 KB PDF, as in
smtp_ingest.py) and the same PDF is dropped into the folder (written under a hidden name, then
renamed); once both jobs are final (``faxbridge jobs --json``), 10 s pass and then, for the daemon and
every descendant (walked through /proc/PID/task/*/children), PSS and RSS are read from
/proc/PID/smaps_rollup. PSS shares each shared page among the processes that map it, so the sum over
the tree is what the tree costs the machine; RSS counts shared pages once per process.

Baseline, measured in the same run at the same moment: a bare ``python -c`` process with asyncio and
aiosmtpd serving SMTP (a handler that only counts), idle after one mail of its own: the cost of an
interpreter that serves SMTP at all. Target: tree PSS <= 120 MiB. Prints the figures and the
per-process table; asserts nothing.

    python bench/footprint.py [--rest 10]
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import BareSmtp, Proc, loadavg, mib, tree_memory, wait_final
from smtp_ingest import make_message, scan_pdf

from tests.conftest import free_port
from tests.support import DaemonProcess, write_config

TARGET_MIB = 120


def settings(root: Path, smtp_port: int, web_port: int) -> dict[str, object]:
    return {
        "state_dir": str(root / "var"),
        "smtp": {"enabled": True, "listen": f"127.0.0.1:{smtp_port}"},
        "webhook": {"listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"},
        "watch": [{"path": str(root / "outbox"), "results": str(root / "results"), "done": str(root / "done"),
                   "failed": str(root / "failed")}],
    }


def send_mail(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.sendmail("scanner@office.example", ["15555551212@fax.local"],
                        message.replace(b"{mid}", f"footprint-{time.time_ns()}".encode()))


def table(procs: list[Proc]) -> None:
    for p in sorted(procs, key=lambda p: -p.pss_kib):
        print(f"    {p.pid:>7}  PSS {mib(p.pss_kib):>6} MiB  RSS {mib(p.rss_kib):>6} MiB  {p.name}")


def main(rest: float) -> None:
    message = make_message(200, body=False)
    pdf = scan_pdf(200)
    print(f"mail: {len(message) / 1000:.0f} KB on the wire; dropped file: {len(pdf) / 1000:.0f} KB PDF; "
          f"load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "outbox").mkdir()
        smtp_port = free_port()
        config = write_config(root / "faxbridge.toml", settings(root, smtp_port, free_port()))
        daemon = DaemonProcess(config, root / "daemon.log").start()
        try:
            daemon.wait_ready(60)
            assert daemon.proc is not None
            started = time.monotonic()
            send_mail(smtp_port, message)
            (root / "outbox" / ".15555551212.pdf.part").write_bytes(pdf)
            (root / "outbox" / ".15555551212.pdf.part").rename(root / "outbox" / "15555551212.pdf")
            state = wait_final(config, jobs=2, timeout=300)
            if state is None:
                raise SystemExit("the two jobs were not final after 300 s")
            print(f"both jobs final after {time.monotonic() - started:.1f} s (newest: {state}); resting {rest:g} s")
            with BareSmtp(free_port()) as bare:
                send_mail(bare.port, message)
                time.sleep(rest)          # the figure is defined as the footprint this long after the work
                ours = tree_memory(daemon.proc.pid)
                base = tree_memory(bare.pid)
        finally:
            daemon.stop()
    pss, rss = sum(p.pss_kib for p in ours), sum(p.rss_kib for p in ours)
    bare_pss = sum(p.pss_kib for p in base)
    verdict = "met" if mib(pss) <= TARGET_MIB else "MISSED"
    print(f"faxbridge: {len(ours)} processes, PSS {mib(pss)} MiB (target <= {TARGET_MIB}: {verdict}), "
          f"RSS {mib(rss)} MiB")
    table(ours)
    print(f"bare aiosmtpd (baseline): {len(base)} process, PSS {mib(bare_pss)} MiB, "
          f"RSS {mib(sum(p.rss_kib for p in base))} MiB")
    print(f"ratio faxbridge / bare: {pss / bare_pss:.1f}x; load average {loadavg()}")
    print(json.dumps({"figure": "footprint at rest, PSS of the process tree", "target": f"<= {TARGET_MIB} MiB",
                      "measured_MiB": mib(pss), "baseline_MiB": mib(bare_pss), "ratio": round(pss / bare_pss, 1),
                      "processes": len(ours), "rss_MiB": mib(rss)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rest", type=float, default=10.0, help="seconds between the jobs being final and the reading")
    main(ap.parse_args().rest)
