"""Peak memory while faxing one 40 MB PDF through SMTP and through a watched folder.

The real daemon (`faxbridge run`) and the simulator (`faxbridge simulate`, spoken to as Openfax,
whose 50 MB limit admits the file) run in their own processes. For each path: the daemon's
resident memory when idle (the baseline, measured in the same run), its peak (VmHWM) while the
fax goes through intake, submission (base64 for Openfax) and tracking to its final state, and
the peak's growth over the baseline as a multiple of the file size. Target: growth <= 2.5 x the
file size. Prints figures; asserts nothing.

    python bench/large_document_rss.py [--mb 40]
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbridge.simulator import credentials
from tests.conftest import free_port
from tests.support import DaemonProcess, SimProcess, base_settings, cli, write_config


def big_pdf(path: Path, megabytes: int) -> Path:
    """A valid one-page PDF of about ``megabytes`` MB: its content stream carries filler comments."""
    filler = (b"% " + b"x" * 77 + b"\n") * (megabytes * 1_000_000 // 80)
    stream = b"BT /F1 24 Tf 72 720 Td (faxbridge large document) Tj ET\n" + filler
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def rss(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
        time.sleep(1.0)  # let start-up allocations settle before reading the idle baseline
        idle = rss(daemon.proc.pid, "VmRSS")
        start = time.perf_counter()
        if path_kind == "smtp":
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "15555551212@fax.local", "large"
            msg.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename="large.pdf")
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=300) as client:
                client.send_message(msg)
            del msg
        else:
            (root / "outbox").mkdir(exist_ok=True)
            tmp = root / "outbox" / ".15555551212.pdf.part"
            tmp.write_bytes(pdf.read_bytes())
            tmp.rename(root / "outbox" / "15555551212.pdf")
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            out = cli("jobs", "--json", config=config).stdout.splitlines()
            if out and json.loads(out[0])["final"]:
                state = json.loads(out[0])["state"]
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        peak = rss(daemon.proc.pid, "VmHWM")
    finally:
        daemon.stop()
    size_mb = pdf.stat().st_size / 1024 / 1024
    return {"path": path_kind, "state": state, "seconds": round(seconds, 1), "idle_mb": round(idle, 1),
            "peak_mb": round(peak, 1), "growth_mb": round(peak - idle, 1),
            "growth_x_file": round((peak - idle) / size_mb, 2)}


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
        verdict = "met" if r["growth_x_file"] <= 2.5 else "MISSED"
        print(f"{r['path']:>6}: final {r['state']} in {r['seconds']}s; idle {r['idle_mb']} MB, peak {r['peak_mb']} MB, "
              f"growth {r['growth_mb']} MB = {r['growth_x_file']} x the file (target <= 2.5: {verdict})")
        print(json.dumps({"figure": f"peak RSS growth, {megabytes} MB PDF via {r['path']}", "target": "<= 2.5 x file",
                          "measured_x": r["growth_x_file"], "baseline_mb": r["idle_mb"], "peak_mb": r["peak_mb"]}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=40)
    main(ap.parse_args().mb)
