"""A Phaxio that costs (almost) nothing: the provider for the throughput benchmark.

The built-in simulator is a faithful fax network (it renders and counts pages, keeps timelines,
persists its state); under load it spends about 50 ms of CPU per fax, more than faxbridge itself,
on the same cores. This server speaks just enough of the Phaxio v2.1 API for the daemon's Phaxio
adapter, in one asyncio process with no framework:

- ``POST /v2.1/faxes``: the body is read (Content-Length; the daemon never sends chunked) but not
  parsed beyond the ``to``, ``callback_url`` and ``tag[faxbridge_job]`` fields, which come before
  the file; answered at once ``{"success": true, "data": {"id": N}}``;
- then, when the fax had a ``callback_url``, a signed ``fax_completed`` callback (status success,
  1 page; X-Phaxio-Signature with the token given) is posted to it 20 ms later, urlencoded, on a
  connection of its own; a 503 (the daemon has not committed the submit yet) is retried every 50 ms;
- ``GET /v2.1/faxes/{id}``: that fax, delivered; ``GET /v2.1/faxes``: an empty list;
  ``GET /v2.1/account/status``: a large balance.

Run by cpu_per_message.py (``--provider null``); alone:

    python bench/null_provider.py --port 8099 --token SECRET
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import stop

JOB_TAG = "faxbridge_job"      # the tag the daemon's Phaxio adapter puts its job id in


def signature(token: str, url: str, fields: dict[str, str]) -> str:
    """X-Phaxio-Signature as Phaxio makes it: HMAC-SHA1 over the URL and the sorted name+value fields
    (no file parts here). Written out on this side, as the simulator does, so the bench does not
    depend on where the daemon keeps its own check."""
    text = url + "".join(k + v for k, v in sorted(fields.items()))
    return hmac.new(token.encode(), text.encode(), hashlib.sha1).hexdigest()


FIELD = re.compile(rb'name="([^"]+)"\r\n\r\n([^\r]*)\r\n')


class NullPhaxio:
    def __init__(self, token: str) -> None:
        self.token = token
        self.faxes: dict[int, dict[str, object]] = {}
        self.callbacks: set[asyncio.Task[None]] = set()
        self.posted = 0

    def fax(self, fax_id: int, to: str, job: str | None) -> dict[str, object]:
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {"id": fax_id, "direction": "sent", "num_pages": 1, "status": "success", "is_test": True,
                "created_at": now, "completed_at": now, "cost": 7, "tags": {JOB_TAG: job} if job else {},
                "recipients": [{"phone_number": to, "status": "success", "retry_count": 0, "completed_at": now,
                                "bitrate": 14400, "resolution": 7700, "error_type": None, "error_id": None,
                                "error_message": None}],
                "error_id": None, "error_type": None, "error_message": None, "barcodes": []}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                status, answer = self.route(method, urlsplit(target).path, body)
                data = json.dumps(answer).encode()
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                             "\r\n".encode() + data)
                await writer.drain()
        finally:
            writer.close()

    def route(self, method: str, path: str, body: bytes) -> tuple[str, object]:
        if method == "POST" and path.endswith("/faxes"):
            fields = {k.decode(): v.decode() for k, v in FIELD.findall(body[:8192])}
            fax_id = len(self.faxes) + 1
            fax = self.fax(fax_id, fields.get("to", ""), fields.get(f"tag[{JOB_TAG}]"))
            self.faxes[fax_id] = fax
            if fields.get("callback_url"):
                task = asyncio.create_task(self.callback(fields["callback_url"], fax))
                self.callbacks.add(task)
                task.add_done_callback(self.callbacks.discard)
            return "200 OK", {"success": True, "message": "Fax queued for sending", "data": {"id": fax_id}}
        if method == "GET" and path.endswith("/account/status"):
            return "200 OK", {"success": True, "data": {"balance": 10_000_000, "faxes_today": 0, "faxes_this_month": 0}}
        if method == "GET" and path.endswith("/faxes"):
            return "200 OK", {"success": True, "data": [], "paging": {"total": 0, "per_page": 1000, "page": 1}}
        m = re.search(r"/faxes/(\d+)$", path)
        if method == "GET" and m and int(m.group(1)) in self.faxes:
            return "200 OK", {"success": True, "data": self.faxes[int(m.group(1))]}
        return "404 Not Found", {"success": False, "message": "not found"}

    async def callback(self, url: str, fax: dict[str, object]) -> None:
        fields = {"fax": json.dumps(fax, separators=(",", ":")), "success": "true", "is_test": "true",
                  "direction": "sent", "event_type": "fax_completed"}
        body = urlencode(fields).encode()
        parts = urlsplit(url)
        request = (f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
                   f"X-Phaxio-Signature: {signature(self.token, url, fields)}\r\n\r\n").encode() + body
        await asyncio.sleep(0.02)
        for _ in range(600):
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.write(request)
                status = await reader.readline()
                writer.close()
                if status.split()[1:2] != [b"503"]:
                    self.posted += 1
                    return
            await asyncio.sleep(0.05)


class NullProcess:
    """This server in a subprocess of its own (``with NullProcess(port) as null: null.settings()``)."""

    def __init__(self, port: int) -> None:
        import secrets

        self.port = port
        self.token = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> NullProcess:
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(self.port), "--token", self.token],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError("the null provider did not start")
        return self

    def settings(self) -> dict[str, object]:
        """The daemon's [provider] table for it: Phaxio, with made-up keys and this callback token."""
        return {"kind": "phaxio", "phaxio": {"base_url": f"http://127.0.0.1:{self.port}/v2.1", "api_key": "null-key",
                                             "api_secret": "null-secret", "callback_token": self.token}}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.tail = stop(self.proc)


async def main(port: int, token: str) -> None:
    provider = NullPhaxio(token)
    server = await asyncio.start_server(provider.serve, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    print(f"faxes {len(provider.faxes)}, callbacks delivered {provider.posted}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    asyncio.run(main(a.port, a.token))
