"""CPU per accepted message and throughput, faxbridge against a bare aiosmtpd handler, in the same run.

Servers, each in processes of its own, one after the other (bare, faxbridge, bare again; the two bare
runs pooled, so a load that changes during the run weighs on both sides alike):

- ``bare``: aiosmtpd's ``SMTP`` with a handler that only counts (``_kit.BareSmtp``): the least CPU
  a Python server that receives the mail at all must spend;
- ``faxbridge``: the real daemon (``python -m faxbridge run -c CONFIG``) with its SMTP listener,
  webhook listener and the defaults otherwise (sender and client hourly limits and per_destination off: one client sends
  it all), submitting to a provider that answers at once. ``--provider``:

  - ``null`` (the default): ``null_provider.py``, a bare asyncio server speaking enough Phaxio v2.1
    for the adapter: each submit answered at once, a signed ``fax_completed`` callback posted to
    the daemon's webhook 20 ms later. It costs a few ms of CPU per fax, so the provider hardly
    competes for the cores: this is "the provider call costs nothing" (the daemon's side of the
    call, the upload and the callback, is still counted);
  - ``external``: the simulator in a process of its own (``faxbridge simulate --speed 10000``, as
    Phaxio, callbacks to the webhook): a faithful provider, but one that spends about 50 ms of CPU
    per fax on the same cores (the BEFORE figures of 07:12-07:21 were made with it);
  - ``builtin``: the daemon's own built-in simulator (``provider.simulator.speed = 10000``), whose
    CPU is then counted in the daemon's tree.

  The provider's CPU is never counted in faxbridge's; it is printed apart.

The client (this process, asyncio, never counted) keeps ``--connections`` connections busy sending
MAIL, RCPT, DATA with the 282 KB scanner mail carrying a 200 KB PDF (smtp_ingest.make_message; its
Message-ID, Subject and file name unique each time). Phases, per server:

1. warm-up: each connection sends ``--warmup`` messages; faxbridge's are then waited for until every
   job is final (read-only look at its SQLite database), so start-up and the first worker and
   connection set-up are out of the count;
2. t0: CPU of the server's process tree read; ``--seconds`` of sending (each connection finishes the
   message it is in); t1: CPU read again;
3. faxbridge only: wait until every job accepted in the window is final (submitted, and its
   callback received); t2: CPU read again.

CPU of a tree (``_kit.tree_cpu``): utime + stime + cutime + cstime from /proc/PID/stat summed over
the daemon and all its live descendants; a child that exited and was reaped has moved its total into
its parent's cutime/cstime, so exited children are counted once and live ones once.

Figures: CPU per message = tree CPU from t0 to t2 (t1 for bare) / messages accepted (250) in the
window: intake, submission and tracking of each message, all of it; target bare/faxbridge >= 1.0,
stretch >= 2. Throughput = messages accepted in the window / (t2 - t0) for faxbridge (a backlog of
submissions left at t1 is not free: it is in the time), / (t1 - t0) for bare; target
faxbridge/bare >= 1.0. The intake rate alone (/ (t1 - t0)) is printed beside it. Then the
throughput pair again with the other core kept busy by ``python3 -c 'while 1: pass'`` (started
before and killed by pid after the pair). The machine's load average is printed before and after.
Asserts nothing.

    python bench/cpu_per_message.py [--seconds 20] [--connections 4] [--warmup 5] [--provider null|external|builtin]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import BareSmtp, cpu_hog, loadavg, open_jobs, tree_cpu, wait_drained
from null_provider import NullProcess
from smtp_ingest import make_message, reply

from tests.conftest import free_port
from tests.support import DaemonProcess, SimProcess, write_config

SPEED = 10_000.0
PROVIDERS = {"null": "null_provider.py (Phaxio protocol, answers at once, signed callbacks)",
             "external": f"faxbridge simulate --speed {SPEED:g} (Phaxio protocol)",
             "builtin": f"the daemon's built-in simulator at speed {SPEED:g}"}


@dataclass
class Shared:
    go: asyncio.Event
    warmed: int = 0
    accepted: int = 0
    stop: bool = False


@dataclass(frozen=True)
class Result:
    kind: str
    messages: int
    window_s: float          # t1 - t0
    total_s: float           # t2 - t0 (= window for bare)
    cpu_window_s: float
    cpu_total_s: float
    client_cpu_s: float
    processes: int
    backlog: int             # jobs still open at t1

    @property
    def ms_per_message(self) -> float:
        return 1000 * self.cpu_total_s / self.messages

    @property
    def rate(self) -> float:
        return self.messages / self.total_s

    @property
    def intake_rate(self) -> float:
        return self.messages / self.window_s


async def send_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes) -> bool:
    writer.write(b"MAIL FROM:<scanner@office.example>\r\nRCPT TO:<15555551212@fax.local>\r\nDATA\r\n")
    for _ in range(3):
        await reply(reader)
    writer.write(message + b".\r\n")
    answer = await reply(reader)
    if not answer.startswith("250"):
        print("refused:", answer.strip(), file=sys.stderr)
    return answer.startswith("250")


async def session(port: int, template: bytes, index: int, warmup: int, shared: Shared) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO bench\r\n")
    await reply(reader)
    n = 0

    def message() -> bytes:
        nonlocal n
        n += 1
        return template.replace(b"{mid}", f"{index}-{n}-{time.time_ns()}".encode())

    for _ in range(warmup):
        if not await send_one(reader, writer, message()):
            raise SystemExit("a warm-up message was refused")
    shared.warmed += 1
    await shared.go.wait()
    while not shared.stop:
        if not await send_one(reader, writer, message()):
            break
        shared.accepted += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def drive(kind: str, pid: int, port: int, template: bytes, seconds: float, connections: int, warmup: int,
                state_dir: Path | None) -> Result:
    """One server's run (see the module docstring); ``state_dir`` (faxbridge's): wait for its jobs."""
    config = state_dir.parent / "faxbridge.toml" if state_dir is not None else None
    shared = Shared(asyncio.Event())
    tasks = [asyncio.create_task(session(port, template, i, warmup, shared)) for i in range(connections)]
    while shared.warmed < connections:
        await asyncio.sleep(0.02)
        for t in tasks:
            if t.done():
                t.result()            # a session that failed in its warm-up: its error, now
    if state_dir is not None and not await asyncio.to_thread(wait_drained, state_dir, connections * warmup, 600,
                                                                   0.1, config):
        raise SystemExit("the warm-up jobs were not final in time")
    cpu0, _ = tree_cpu(pid)
    client0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    shared.go.set()
    await asyncio.sleep(seconds)
    shared.stop = True
    await asyncio.gather(*tasks)
    t1 = time.monotonic()
    cpu1, processes = tree_cpu(pid)
    client1 = resource.getrusage(resource.RUSAGE_SELF)
    t2, cpu2, backlog = t1, cpu1, 0
    if state_dir is not None:
        with contextlib.suppress(sqlite3.Error):
            backlog = open_jobs(state_dir)[1]
        if not await asyncio.to_thread(wait_drained, state_dir, connections * warmup + shared.accepted, 600, 0.05,
                                       config):
            raise SystemExit("the jobs of the window were not final in time")
        t2 = time.monotonic()
        cpu2, processes = tree_cpu(pid)
    client = client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime
    return Result(kind, shared.accepted, t1 - t0, t2 - t0, cpu1 - cpu0, cpu2 - cpu0, client, processes, backlog)


def run_bare(template: bytes, seconds: float, connections: int, warmup: int) -> Result:
    with BareSmtp(free_port()) as bare:
        return asyncio.run(drive("bare", bare.pid, bare.port, template, seconds, connections, warmup, None))


class Provider:
    """The provider the daemon submits to: ``null`` (null_provider.py), ``external`` (``faxbridge simulate``)
    or ``builtin`` (the daemon's own simulator); ``pid`` None when it is inside the daemon."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        self._stack = contextlib.ExitStack()
        self.pid: int | None = None
        self.settings: dict[str, object] = {"simulator": {"speed": SPEED}}

    def __enter__(self) -> Provider:
        if self.kind == "external":
            sim = SimProcess(free_port(), self.root / "sim.log", speed=SPEED).start()
            self._stack.callback(sim.stop)
            self.settings, self.pid = sim.phaxio_settings(), sim.proc.pid if sim.proc else None
        elif self.kind == "null":
            null = self._stack.enter_context(NullProcess(free_port()))
            self.settings, self.pid = null.settings(), null.proc.pid if null.proc else None
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def cpu(self) -> float:
        return tree_cpu(self.pid)[0] if self.pid is not None else 0.0


def daemon_config(root: Path, smtp_port: int, provider: dict[str, object]) -> Path:
    """The daemon's config: SMTP and webhook on free loopback ports, the hourly limits off, ``provider``."""
    web_port = free_port()
    return write_config(root / "faxbridge.toml", {
        "state_dir": str(root / "var"),
        "smtp": {"enabled": True, "listen": f"127.0.0.1:{smtp_port}"},
        "limits": {"per_sender_per_hour": 0, "per_client_per_hour": 0, "per_destination": 0},
        "webhook": {"listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}"},
        "provider": provider,
    })


def run_faxbridge(template: bytes, seconds: float, connections: int, warmup: int, provider: Provider) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        daemon = DaemonProcess(daemon_config(root, port, provider.settings), root / "daemon.log").start()
        try:
            daemon.wait_ready(60)
            assert daemon.proc is not None
            return asyncio.run(drive("faxbridge", daemon.proc.pid, port, template, seconds, connections, warmup,
                                     root / "var"))
        finally:
            daemon.stop()
            events = Counter(str(e.get("event")) for e in daemon.events())
            print("  daemon log events: " + ", ".join(f"{name} {n}" for name, n in events.most_common(12)))


def pooled(a: Result, b: Result) -> Result:
    """The bare handler's two runs (before and after faxbridge's) as one: a load that drifts during the
    run weighs on both sides alike."""
    return Result(a.kind, a.messages + b.messages, a.window_s + b.window_s, a.total_s + b.total_s,
                  a.cpu_window_s + b.cpu_window_s, a.cpu_total_s + b.cpu_total_s, a.client_cpu_s + b.client_cpu_s,
                  a.processes, 0)


def show(r: Result) -> None:
    extra = ""
    if r.kind == "faxbridge":
        extra = (f"; {r.backlog} jobs still open at the window's end, all final {r.total_s - r.window_s:.1f} s later; "
                 f"CPU within the window alone {1000 * r.cpu_window_s / r.messages:.1f} ms/message")
    print(f"  {r.kind:>9}: {r.messages} messages in {r.window_s:.1f} s, intake {r.intake_rate:.1f} msg/s, "
          f"throughput {r.rate:.1f} msg/s; tree CPU {r.cpu_total_s:.1f} s = {r.ms_per_message:.1f} ms/message "
          f"({r.processes} processes){extra}; client CPU {r.client_cpu_s:.1f} s (not counted)")


def main(seconds: float, connections: int, warmup: int, provider: str) -> None:
    template = make_message(200, body=False)
    print(f"message: {len(template) / 1000:.0f} KB on the wire (200 KB PDF), {connections} connections, "
          f"{seconds:g} s window after {warmup} warm-up messages a connection; provider: {PROVIDERS[provider]}; "
          f"load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp, Provider(provider, Path(tmp)) as prov:
        pairs: dict[str, tuple[Result, Result]] = {}
        for load in ("quiet", "other core busy"):
            with cpu_hog() if load != "quiet" else contextlib.nullcontext(0) as hog:
                print(f"{load}" + (f" (hog pid {hog})" if hog else "") + f": load average {loadavg()}")
                first = run_bare(template, seconds, connections, warmup)
                show(first)
                before = prov.cpu()
                ours = run_faxbridge(template, seconds, connections, warmup, prov)
                show(ours)
                if prov.pid is not None:
                    print(f"  the provider used {prov.cpu() - before:.1f} s of CPU meanwhile (not counted)")
                second = run_bare(template, seconds, connections, warmup)
                show(second)
                bare = pooled(first, second)
                pairs[load] = (bare, ours)
    print(f"load average at the end {loadavg()}")
    bare, ours = pairs["quiet"]
    cpu_ratio = bare.ms_per_message / ours.ms_per_message
    print(f"CPU per message: faxbridge {ours.ms_per_message:.1f} ms, bare {bare.ms_per_message:.1f} ms, "
          f"bare/faxbridge {cpu_ratio:.2f} (target >= 1.0, stretch >= 2)")
    print(json.dumps({"figure": f"CPU per accepted message, 282 KB mail, {connections} conns",
                      "target": "ratio >= 1 (2)", "measured_ms": round(ours.ms_per_message, 1),
                      "baseline_ms": round(bare.ms_per_message, 1), "ratio": round(cpu_ratio, 2),
                      "provider": provider}))
    for load, (bare, ours) in pairs.items():
        ratio = ours.rate / bare.rate
        print(f"throughput, {load}: faxbridge {ours.rate:.1f} msg/s (intake alone {ours.intake_rate:.1f}), bare "
              f"{bare.rate:.1f} msg/s, faxbridge/bare {ratio:.2f} (target >= 1.0)")
        print(json.dumps({"figure": "throughput with submissions" + (", other core busy" if load != "quiet" else ""),
                          "target": "ratio >= 1.0", "measured_msg/s": round(ours.rate, 1),
                          "baseline_msg/s": round(bare.rate, 1), "ratio": round(ratio, 2),
                          "provider": provider}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5, help="messages a connection before the count starts")
    ap.add_argument("--provider", choices=list(PROVIDERS), default="null")
    a = ap.parse_args()
    main(a.seconds, a.connections, a.warmup, a.provider)
