"""Helpers the tests share: documents made on the spot, config files, a daemon in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fpdf import FPDF

# Log files of the daemons and simulators the suite starts, and the secrets no log line may hold:
# conftest.every_log_line_is_checked reads them at the end of the session.
LOG_FILES: list[Path] = []
SECRETS: set[str] = set()


def secret(value: str) -> str:
    """Register a test secret: the suite fails if it ever appears in a log line."""
    SECRETS.add(value)
    return value


def _register_simulator_secrets() -> None:
    from faxbridge.simulator import credentials

    for value in (credentials.PHAXIO_API_KEY, credentials.PHAXIO_API_SECRET, credentials.OPENFAX_API_KEY,
                  credentials.SINCH_KEY_ID, credentials.SINCH_KEY_SECRET):
        secret(value)


_register_simulator_secrets()

SIZES = {"letter": (215.9, 279.4), "legal": (215.9, 355.6), "a4": (210.0, 297.0)}


def make_pdf(path: Path, pages: int = 1, size: str = "letter", text: str = "faxbridge test page") -> Path:
    doc = FPDF(unit="mm", format=SIZES[size])
    doc.set_font("helvetica", size=14)
    for n in range(pages):
        doc.add_page()
        doc.cell(text=f"{text} {n + 1}/{pages}")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.output(str(path))
    return path



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
    path.write_bytes(pdf_of(objects))
    return path


def pdf_of(objects: list[bytes]) -> bytes:
    """A PDF file of these objects (numbered from 1, the first the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """A TOML file from a nested dict; ``watch`` may be a list of tables."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, Mapping[str, Any]]] = []

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            if isinstance(value, Mapping):
                tables.append((f"{prefix}{key}", value))
            elif isinstance(value, list) and value and isinstance(value[0], Mapping):
                arrays.extend((f"{prefix}{key}", v) for v in value)

    scalars = {k: v for k, v in settings.items()
               if not isinstance(v, Mapping) and not (isinstance(v, list) and v and isinstance(v[0], Mapping))}
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    walk("", settings)
    i = 0
    while i < len(tables):
        name, table = tables[i]
        lines.append(f"\n[{name}]")
        for k, v in table.items():
            if not isinstance(v, Mapping):
                lines.append(f"{k} = {_toml_value(v)}")
        walk(name + ".", table)
        i += 1
    for name, table in arrays:
        lines.append(f"\n[[{name}]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def base_settings(tmp: Path, **provider: Any) -> dict[str, Any]:
    """A config for tests: everything on loopback, fast polling, no listeners we do not test."""
    return {
        "state_dir": str(tmp / "var"),
        "shutdown_grace": "10s",
        "smtp": {"enabled": False},
        "webhook": {"enabled": False},
        "console": {"enabled": False},
        "provider": {"kind": "simulator", "poll_interval": "100ms", "retry_initial": "100ms",
                     "retry_max": "1s", "request_timeout": "5s", "reconcile_grace": "1s",
                     "simulator": {"speed": 2000.0}, **provider},
    }


class DaemonProcess:
    """``faxbridge run`` in a subprocess, its stderr (JSON lines) collected in a file."""

    def __init__(self, config: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        LOG_FILES.append(self.log_path)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faxbridge", "run", "-c", str(self.config)],
            stdout=self._log, stderr=self._log, env=self.env,
        )
        return self

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<not json>", "line": line})
        return out

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("event") == "daemon.ready" for e in self.events()):
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout}s: {self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for its exit code. If it does not exit in time it is killed
        (and reaped) before the TimeoutExpired goes up: no process or file outlives the test."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except BaseException:
            _reap(self.proc)
            raise
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def cli(*args: str, config: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``faxbridge`` command in a subprocess."""
    argv = [sys.executable, "-m", "faxbridge", *args]
    if config is not None:
        argv[4:4] = ["-c", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child that is still running and wait for it (no zombie, no ResourceWarning later)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class SimProcess:
    """``faxbridge simulate`` in a subprocess; faults and sends through its /_sim control surface.

    ``start`` either returns a simulator that is ours and answering, or cleans up what it started
    before it raises; ``stop`` is safe to call twice. (A free port can be taken by another process
    between ``free_port()`` and the simulator's bind, most often on a busy machine; then the
    simulator exits at once and ``start`` tries again on a fresh port.)
    """

    def __init__(self, port: int, log_path: Path, speed: float = 2000.0) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.speed = speed
        self.callback_token = secret(secrets.token_urlsafe(16))   # $FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 60.0) -> SimProcess:
        LOG_FILES.append(self.log_path)
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            if attempt:
                self.port = _fresh_port()
                self.base = f"http://127.0.0.1:{self.port}"
            mark = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                if self._start_once(deadline):
                    return self
            except BaseException:
                self.stop()
                raise
            self.stop()                 # it exited: the port was taken meanwhile
            failed = self.log_path.read_bytes()[mark:]
            if b"Address already in use" not in failed:
                raise AssertionError(f"simulator exited: {failed.decode(errors='replace')[-2000:]}")
            with open(self.log_path, "r+b") as log:     # its one plain-text error line, handled here
                log.truncate(mark)
        raise AssertionError("simulator: three ports taken in a row")

    def _start_once(self, deadline: float) -> bool:
        """True once it answers; False when it exited first. Raises when it is still silent at the deadline."""
        import httpx

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faxbridge", "simulate", "--listen", f"127.0.0.1:{self.port}",
             "--speed", str(self.speed)],
            stdout=self._log, stderr=self._log,
            env={**os.environ, "FAXBRIDGE_SIMULATOR_CALLBACK_TOKEN": self.callback_token},
        )
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                httpx.get(self.base + "/_sim/state", timeout=1).raise_for_status()
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            return self.proc.poll() is None    # answering, and ours (not someone else's on that port)
        raise AssertionError(f"simulator did not start: {self.log_path.read_text()[-2000:]}")

    def sends(self) -> list[dict[str, Any]]:
        import httpx

        data: list[dict[str, Any]] = httpx.get(self.base + "/_sim/sends", timeout=5).json()
        return data

    def fault(self, **fault: Any) -> None:
        import httpx

        httpx.post(self.base + "/_sim/faults", json=fault, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        """The simulated outage ends: every pending fault is dropped."""
        import httpx

        httpx.delete(self.base + "/_sim/faults", timeout=5).raise_for_status()

    def openfax_settings(self) -> dict[str, Any]:
        from faxbridge.simulator import credentials

        return {"kind": "openfax", "openfax": {"base_url": self.base, "account_id": credentials.OPENFAX_ACCOUNT_ID,
                                               "api_key": credentials.OPENFAX_API_KEY}}

    def phaxio_settings(self) -> dict[str, Any]:
        from faxbridge.simulator import credentials

        return {"kind": "phaxio", "phaxio": {"base_url": self.base + "/v2.1",
                                             "api_key": credentials.PHAXIO_API_KEY,
                                             "api_secret": credentials.PHAXIO_API_SECRET,
                                             "callback_token": self.callback_token}}

    def sinch_settings(self, callback_token: str = "") -> dict[str, Any]:
        from faxbridge.simulator import credentials

        return {"kind": "sinch", "sinch": {"base_url": self.base + "/v3",
                                           "project_id": credentials.SINCH_PROJECT_ID,
                                           "key_id": credentials.SINCH_KEY_ID,
                                           "key_secret": credentials.SINCH_KEY_SECRET,
                                           "callback_token": callback_token}}

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(15)
        finally:
            if self.proc is not None:
                _reap(self.proc)
            if self._log is not None:
                self._log.close()


def _fresh_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_provider(kind: str, client: Any, base: str, **extra: Any) -> Any:
    """The real Phaxio or Openfax adapter pointed at a simulator served at ``base``, with its
    test accounts (``extra``: more adapter settings, e.g. ``clock`` or Openfax's ``lookup_grace_s``)."""
    from faxbridge.providers.openfax import OpenfaxProvider
    from faxbridge.providers.phaxio import PhaxioProvider
    from faxbridge.simulator import credentials

    if kind == "phaxio":
        return PhaxioProvider(client, base_url=base + "/v2.1", api_key=credentials.PHAXIO_API_KEY,
                              api_secret=credentials.PHAXIO_API_SECRET, **extra)
    return OpenfaxProvider(client, base_url=base, send_path="/faxSendSubmit.php",
                           balance_path="/getAvailableCredit.php", report_path="/outboundDetailsbyDate.php",
                           account_id=credentials.OPENFAX_ACCOUNT_ID, api_key=credentials.OPENFAX_API_KEY,
                           **extra)


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (the intake workers, the folder pool's processes)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextlib.asynccontextmanager
async def served_simulator(speed: float, clock: Any = None) -> AsyncIterator[tuple[Any, str]]:
    """A simulator of our own (both protocols) served on a free loopback port: (sim, base URL);
    with ``clock`` (e.g. a FakeClock), its faxes progress only when that clock moves."""
    from faxbridge.simulator import Simulator, SimulatorServer

    sim = Simulator(speed=speed, clock=clock)
    secret(sim.callback_token)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    try:
        yield sim, base
    finally:
        await server.stop()


class LoopTicks:
    """Counts turns of the running event loop (one every 10 ms while it is free), as proof that the
    loop was not blocked: ``async with LoopTicks() as loop: ...; assert loop.ticks > 0``."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
