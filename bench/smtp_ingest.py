"""SMTP ingest: messages per second the listener accepts durably, against a bare aiosmtpd handler.

Each server runs alone in a child process (so the client does not share its interpreter); the
client here keeps 4 connections busy for ``--seconds`` each, sending MAIL, RCPT, DATA with the same
message (a 200 KB PDF attachment, as a scanner sends it; its Message-ID, Subject and file name made
unique each time, so nothing is a duplicate and no header is seen twice) and counting the 250 replies. Servers:

- ``faxbridge``: the real listener (``ingress.smtp``) on a real store: every 250 means the PDF and
  the job are fsynced and committed;
- ``bare``: aiosmtpd's own ``SMTP`` protocol with a handler that only counts (nothing parsed,
  nothing stored): the ceiling aiosmtpd itself gives.

Prints both rates and their ratio (target >= 1.0); asserts nothing.

    python bench/smtp_ingest.py [--seconds 10] [--connections 4] [--size-kb 200] [--cover] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


# --- the servers (run in a child process) ------------------------------------------------------------------


class Counting:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


async def serve(kind: str, port: int, state: Path, cover: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: asyncio.Server | None = None
    closer = None
    if kind == "bare":
        from aiosmtpd.smtp import SMTP

        handler = Counting()
        server = await loop.create_server(lambda: SMTP(handler, hostname="bench", loop=loop), "127.0.0.1", port)
    else:
        from faxbridge import logs
        from faxbridge.clock import SystemClock
        from faxbridge.config import load
        from faxbridge.ingress.smtp.listener import make_listener
        from faxbridge.notify.mail import notices_of
        from faxbridge.providers.limits import header_limit
        from faxbridge.store import Store, open_store
        from faxbridge.workers import Engine
        from tests.support import write_config

        logs.setup(level="warning")
        settings = {"state_dir": str(state), "smtp": {"listen": f"127.0.0.1:{port}",
                                                    "cover_page": "if-body" if cover else "never"},
                    "limits": {"per_sender_per_hour": 0, "per_client_per_hour": 0}, "webhook": {"enabled": False},
                    "log": {"level": "warning"}}
        cfg = load(write_config(state.parent / "bench.toml", settings), {})
        store = Store(cfg.state_dir, "simulator")
        daemon_store = await open_store(cfg.state_dir, "simulator", notices=notices_of(cfg))   # as the daemon's
        engine = Engine(cfg)
        listener = make_listener(cfg, daemon_store, SystemClock(), engine, header_limit=header_limit)
        await listener.start()

        async def closer_fn() -> None:
            await listener.stop()
            await listener.close(5)
            await engine.close()
            await daemon_store.close()
            jobs = store.counts()
            store.close()
            print(f"jobs in store: {jobs}", flush=True)

        closer = closer_fn
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)   # the parent says when to stop
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    if server is not None:
        server.close()
    if closer is not None:
        await closer()
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)    # intake worker processes, once they have left
    print(f"server CPU {usage.ru_utime + usage.ru_stime:.1f} s (user {usage.ru_utime:.1f}, "
          f"sys {usage.ru_stime:.1f}); its worker processes {workers.ru_utime + workers.ru_stime:.1f} s",
          flush=True)


# --- the client ---------------------------------------------------------------------------------------------


def scan_pdf(size_kb: int) -> bytes:
    """A one-page PDF of about ``size_kb`` KB: one page of random grey pixels, as a scanner makes it."""
    from fpdf import FPDF
    from PIL import Image

    side = int((size_kb * 1000) ** 0.5)
    image = Image.frombytes("L", (side, side), os.urandom(side * side))
    png = io.BytesIO()
    image.save(png, format="PNG")
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.image(png, x=36, y=36, w=540)
    return bytes(pdf.output())


def make_message(size_kb: int, body: bool) -> bytes:
    """The scanner's mail carrying ``scan_pdf(size_kb)``; ``{mid}`` in it is to be made unique per send."""
    data = scan_pdf(size_kb)
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    text = "Please fax the attached scan.\r\n" if body else ""
    return (
        "From: scanner@office.example\r\nTo: 15555551212@fax.local\r\nSubject: Scan {mid}\r\n"
        "Message-ID: <{mid}@bench>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        '--b\r\nContent-Type: application/pdf; name="scan-{mid}.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
        'Content-Disposition: attachment; filename="scan-{mid}.pdf"\r\n\r\n'
        f"{encoded}\r\n--b--\r\n"
    ).encode()


async def reply(reader: asyncio.StreamReader) -> str:
    while True:
        line = (await reader.readline()).decode()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != "-":
            return line


async def client(port: int, template: bytes, seconds: float, index: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO bench\r\n")
    await reply(reader)
    accepted = n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        message = template.replace(b"{mid}", f"{index}-{n}-{time.time_ns()}".encode())
        writer.write(b"MAIL FROM:<scanner@office.example>\r\nRCPT TO:<15555551212@fax.local>\r\nDATA\r\n")
        for _ in range(3):
            await reply(reader)
        writer.write(message + b".\r\n")
        answer = await reply(reader)
        if answer.startswith("250"):
            accepted += 1
        else:
            print("refused:", answer.strip(), file=sys.stderr)
            break
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return accepted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(kind: str, template: bytes, seconds: float, connections: int, cover: bool) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(port), "--state", str(Path(tmp) / "var")]
            + (["--cover"] if cover else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"

        async def all_clients() -> tuple[int, float]:
            start = time.monotonic()
            counts = await asyncio.gather(*(client(port, template, seconds, i) for i in range(connections)))
            return sum(counts), time.monotonic() - start

        before = resource.getrusage(resource.RUSAGE_SELF)
        accepted, elapsed = asyncio.run(all_clients())
        after = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        child.stdin.write("stop\n")
        child.stdin.flush()
        tail = child.stdout.read()
        child.wait(30)
        rate = accepted / elapsed
        print(f"{kind:>9}: {accepted} messages in {elapsed:.1f} s = {rate:.1f} msg/s; client CPU {client_cpu:.1f} s; "
              f"{'; '.join(tail.split(chr(10)))}")
        return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size-kb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="bare, faxbridge, bare, faxbridge, ...")
    parser.add_argument("--cover", action="store_true", help="mail with body text: a cover page per fax")
    parser.add_argument("--serve", choices=["bare", "faxbridge"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--state", type=Path)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.state, args.cover))
        return
    template = make_message(args.size_kb, args.cover)
    print(f"message: {len(template) / 1000:.0f} KB on the wire ({args.size_kb} KB PDF), "
          f"{args.connections} connections, {args.seconds:.0f} s each, cover page: {args.cover}")
    ratios, rates = [], []
    for _ in range(args.rounds):     # alternated, so a change in the machine's load hits both alike
        bare = run("bare", template, args.seconds, args.connections, args.cover)
        ours = run("faxbridge", template, args.seconds, args.connections, args.cover)
        ratios.append(ours / bare)
        rates.append((ours, bare))
        print(f"ratio faxbridge / bare aiosmtpd: {ours / bare:.2f} (target >= 1.0)")
    if len(ratios) > 1:
        print(f"median ratio over {len(ratios)} rounds: {statistics.median(ratios):.2f} (target >= 1.0)")
    ours, bare = rates[ratios.index(statistics.median_low(ratios))]
    print(json.dumps({"figure": f"SMTP intake, {args.size_kb} KB PDF, {args.connections} connections",
                      "target": "ratio >= 1.0", "measured_msg/s": round(ours, 1), "baseline_msg/s": round(bare, 1),
                      "ratio": round(ours / bare, 2)}))


if __name__ == "__main__":
    main()
