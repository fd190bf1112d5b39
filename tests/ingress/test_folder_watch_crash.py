"""Exactly once across SIGKILL: the real daemon in a subprocess, killed while it is claiming files,
restarted; the simulator in another process counts what it was sent."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.ingress.folder_kit import sha
from tests.support import DaemonProcess, SimProcess, base_settings, make_pdf, write_config

FILES = 300


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path / "sim.log").start()
    yield s
    s.stop()


def taken(daemon: DaemonProcess) -> int:
    return sum(1 for e in daemon.events() if e.get("event") in ("folder.taken", "folder.rejected"))


def test_sigkill_mid_claim_each_file_faxed_exactly_once(tmp_path: Path, sim: SimProcess) -> None:
    settings = base_settings(tmp_path, **sim.phaxio_settings())
    outbox, results = tmp_path / "outbox", tmp_path / "results"
    settings["watch"] = [{"path": str(outbox), "results": str(results), "done": str(tmp_path / "done"),
                          "failed": str(tmp_path / "failed"), "settle": "200ms"}]
    config = write_config(tmp_path / "faxbridge.toml", settings)
    outbox.mkdir()
    made = [make_pdf(tmp_path / "made" / f"1555555{n:04d}.pdf", text=f"file {n}") for n in range(FILES)]
    digests = Counter(sha(f) for f in made)
    assert len(digests) == FILES

    first = DaemonProcess(config, tmp_path / "daemon1.log").start()
    first.wait_ready()
    for f in made:
        f.rename(outbox / f.name)
    wait_until(lambda: taken(first) >= 20, timeout=60, interval=0.01, what="claims under way")
    first.kill()
    at_kill = taken(first)
    assert at_kill < FILES, "killed too late to test a kill mid-claim"

    second = DaemonProcess(config, tmp_path / "daemon2.log").start()
    second.wait_ready()
    wait_until(lambda: taken(second) >= 20, timeout=60, interval=0.01, what="more claims")
    second.kill()

    third = DaemonProcess(config, tmp_path / "daemon3.log").start()
    try:
        third.wait_ready()
        wait_until(lambda: len(list(results.glob("*.result.json"))) == FILES, timeout=120, interval=0.2,
                   what="every result")
    finally:
        assert third.stop() == 0
    sent = Counter(s["pdf_sha256"] for s in sim.sends())
    assert sent == digests, "each file faxed exactly once"
    states = Counter(json.loads(p.read_text())["state"] for p in results.glob("*.result.json"))
    assert states == Counter({"delivered": FILES * 7 // 10, "failed": FILES * 3 // 10}), states  # digits 7-9 fail
    assert os.listdir(outbox / ".faxbridge" / "processing") == []
    assert sorted(os.listdir(outbox)) == [".faxbridge"]
    assert len(os.listdir(tmp_path / "done")) + len(os.listdir(tmp_path / "failed")) == FILES
