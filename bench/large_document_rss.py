"""Peak memory while faxing one 40 MB PDF through SMTP and through a watched folder.

The real daemon (`faxbridge run`) and the simulator (`faxbridge simulate`, spoken to as Openfax,
whose 50 MB limit admits the file) run in their own processes. For each path: the daemon's
resident memory, with its worker processes (SMTP intake, the folder's converters) summed in and
sampled every 10 ms, when idle after a small fax went the same way (the baseline, measured in the
same run), its peak while the fax goes through intake, submission (base64 for Openfax) and
tracking to its final state, and the peak's growth over the baseline as a multiple of the file
size. Target: growth <= 2.5 x the file size. Also the daemon process alone (its VmHWM). Prints
figures; asserts nothing.

    python bench/large_document_rss.py [--mb 40]
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import wait_final

from faxbridge.simulator import credentials
from tests.conftest import free_port
from tests.support import DaemonProcess, SimProcess, base_settings, big_pdf, process_tree, write_config


def rss(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass                    # the process has just left
    return 0.0


class TreeSampler:
    """The resident memory of the daemon and its descendants together, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def total(self) -> float:
        return sum(rss(p, "VmRSS") for p in process_tree(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.total())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(path_kind: str, root: Path, pdf: Path, sim: SimProcess) -> dict[str, Any]:
    smtp_port = free_port()
    s = base_settings(root)
    s["provider"].update({"kind": "openfax", "request_timeout": "120s",
                          "openfax": {"base_url": sim.base, "account_id": credentials.OPENFAX_ACCOUNT_ID,
                                      "api_key": credentials.OPENFAX_API_KEY}})
    s["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}", "max_message_size": "100MB"}
    s["watch"] = [{"path": str(root / "outbox"), "results": str(root / "results"), "done": str(root / "done"),
                   "failed": str(root / "failed"), "settle": "500ms", "max_size": "100MB"}]
    config = write_config(root / "faxbridge.toml", s)
    daemon = DaemonProcess(config, root / "daemon.log").start()
    try:
        daemon.wait_ready()
        assert daemon.proc is not None
        warm_up(path_kind, root, smtp_port, config)   # a small fax first: every worker process is there
        time.sleep(1.0)  # let start-up allocations settle before reading the idle baseline
        sampler = TreeSampler(daemon.proc.pid)
        idle = rss(daemon.proc.pid, "VmRSS")
        idle_tree = sampler.total()
        sampler.__enter__()
        start = time.perf_counter()
        hand_over(path_kind, root, smtp_port, pdf)
        state = wait_final(config, jobs=2)
        seconds = time.perf_counter() - start
        sampler.__exit__()
        peak = rss(daemon.proc.pid, "VmHWM")
    finally:
        daemon.stop()
    size_mb = pdf.stat().st_size / 1024 / 1024
    return {"path": path_kind, "state": state, "seconds": round(seconds, 1), "idle_mb": round(idle, 1),
            "peak_mb": round(peak, 1), "growth_x_file": round((peak - idle) / size_mb, 2),
            "tree_idle_mb": round(idle_tree, 1), "tree_peak_mb": round(sampler.peak, 1),
            "tree_growth_x_file": round((sampler.peak - idle_tree) / size_mb, 2)}


def warm_up(path_kind: str, root: Path, smtp_port: int, config: Path) -> None:
    hand_over(path_kind, root, smtp_port, big_pdf(root / "small.pdf", 0))
    wait_final(config, jobs=1)


def hand_over(path_kind: str, root: Path, smtp_port: int, pdf: Path) -> None:
    """The PDF to the daemon: by mail, or written into the watched folder (under a hidden name, renamed)."""
    if path_kind == "smtp":
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "15555551212@fax.local", pdf.stem
        msg.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename=pdf.name)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=300) as client:
            client.send_message(msg)
        del msg
    else:
        (root / "outbox").mkdir(exist_ok=True)
        tmp = root / "outbox" / ".15555551212.pdf.part"
        tmp.write_bytes(pdf.read_bytes())
        tmp.rename(root / "outbox" / "15555551212.pdf")


def main(megabytes: int) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        pdf = big_pdf(root / "large.pdf", megabytes)
        size_mb = pdf.stat().st_size / 1024 / 1024
        print(f"file: {size_mb:.1f} MiB one-page PDF")
        sim = SimProcess(free_port(), root / "sim.log", speed=5000.0).start()
        try:
            results = []
            for kind in ("smtp", "folder"):
                sub = root / kind
                sub.mkdir()
                results.append(run(kind, sub, pdf, sim))
        finally:
            sim.stop()
    for r in results:
        verdict = "met" if r["tree_growth_x_file"] <= 2.5 else "MISSED"
        print(f"{r['path']:>6}: final {r['state']} in {r['seconds']}s; daemon and its worker processes together: "
              f"idle {r['tree_idle_mb']} MB, peak {r['tree_peak_mb']} MB, growth {r['tree_growth_x_file']} x the file "
              f"(target <= 2.5: {verdict}); the daemon process alone: idle {r['idle_mb']} MB, peak (VmHWM) "
              f"{r['peak_mb']} MB, growth {r['growth_x_file']} x")
        print(json.dumps({"figure": f"peak RSS growth, {megabytes} MB PDF via {r['path']}", "target": "<= 2.5 x file",
                          "measured_x": r["tree_growth_x_file"], "baseline_mb": r["tree_idle_mb"],
                          "peak_mb": r["tree_peak_mb"]}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=40)
    main(ap.parse_args().mb)
