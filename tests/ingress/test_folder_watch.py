"""The folder watcher inside the real daemon (in this process): real observers, real files, the built-in
simulator over real HTTP. inotify and the polling observer both."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from faxbridge.app import Daemon
from faxbridge.config import Config, load
from tests.conftest import async_wait_until
from tests.ingress.folder_kit import SAMPLES, sha
from tests.support import base_settings, make_pdf, write_config


def config(tmp: Path, **watch: Any) -> Config:
    settings = base_settings(tmp)
    settings["watch"] = [{"path": str(tmp / "outbox"), "results": str(tmp / "results"), "done": str(tmp / "done"),
                          "failed": str(tmp / "failed"), "settle": "200ms", **watch}]
    return load(write_config(tmp / "faxbridge.toml", settings), {})


@asynccontextmanager
async def daemon(cfg: Config) -> AsyncIterator[Daemon]:
    d = Daemon(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    ready = asyncio.ensure_future(d.ready.wait())
    await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert d.ready.is_set()
    try:
        yield d
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def sends(d: Daemon) -> list[Any]:
    assert d.handle is not None and d.handle.simulator is not None
    return list(d.handle.simulator.sends)


def results(cfg: Config) -> dict[str, dict[str, Any]]:
    folder = cfg.watch[0].results
    out = {}
    for p in folder.iterdir():
        if p.name.endswith(".result.json"):
            out[p.name] = json.loads(p.read_text())
    return out


def all_final(cfg: Config, n: int) -> bool:
    got = results(cfg)
    return len(got) >= n and all(r["final"] for r in got.values())


def drop(pdf: Path, folder: Path) -> Path:
    """Dropped at once: made elsewhere on the same filesystem, renamed in."""
    return pdf.rename(folder / pdf.name)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
async def test_files_are_faxed_byte_for_byte_and_results_written(tmp_path: Path, poll: bool) -> None:
    cfg = config(tmp_path, poll=poll)
    outbox = cfg.watch[0].path
    outbox.mkdir(parents=True)
    early = make_pdf(outbox / "15555551210_early.pdf", pages=2, text="before start")   # swept at start
    digests = {early.name: sha(early)}
    async with daemon(cfg) as d:
        for name, pages in (("15555551212.pdf", 1), ("15555551217_memo.pdf", 3)):
            pdf = drop(make_pdf(tmp_path / name, pages=pages, text=name), outbox)
            digests[pdf.name] = sha(pdf)
        (outbox / "scan.tif").write_bytes((SAMPLES / "tiff/fax-g4-3pages-400dpi-ghostscript.tiff").read_bytes())
        (outbox / "scan.json").write_text('{"to": "15555551213", "resolution": "fine"}')
        (outbox / "nonumber.pdf").write_bytes(make_pdf(tmp_path / "n.pdf").read_bytes())
        await async_wait_until(lambda: all_final(cfg, 5), timeout=60, what="5 final results")
        sent = sends(d)
    got = results(cfg)
    assert sorted(got) == ["15555551210_early.result.json", "15555551212.result.json",
                           "15555551217_memo.result.json", "nonumber.result.json", "scan.result.json"]
    by_to = {s.to: s for s in sent}
    assert sorted(by_to) == ["+15555551210", "+15555551212", "+15555551213", "+15555551217"] and len(sent) == 4
    assert by_to["+15555551210"].pdf_sha256 == digests["15555551210_early.pdf"]      # byte for byte
    assert by_to["+15555551212"].pdf_sha256 == digests["15555551212.pdf"]
    assert by_to["+15555551213"].pages == 3
    assert got["15555551210_early.result.json"]["state"] == "delivered"
    assert got["15555551212.result.json"]["pages"] == 1
    assert (got["15555551217_memo.result.json"]["state"], got["15555551217_memo.result.json"]["reason"]) == \
        ("failed", "No Answer: there was no answer on all 3 attempts")
    assert got["scan.result.json"]["resolution"] == "fine"
    assert got["nonumber.result.json"]["state"] == "rejected"
    assert got["nonumber.result.json"]["reason"].startswith("no fax number for nonumber.pdf")
    w = cfg.watch[0]
    assert sorted(os.listdir(w.done)) == ["15555551210_early.pdf", "15555551212.pdf", "scan.json", "scan.tif"]
    assert sorted(os.listdir(w.failed)) == ["15555551217_memo.pdf", "nonumber.pdf"]
    assert sorted(os.listdir(outbox)) == [".faxbridge"]
    assert os.listdir(w.path / ".faxbridge" / "processing") == []


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
async def test_a_file_written_in_chunks_over_seconds_is_sent_once_whole(tmp_path: Path, poll: bool) -> None:
    """Pauses between chunks are longer than ``settle``: the content check holds the file back."""
    cfg = config(tmp_path, poll=poll)
    cfg.watch[0].path.mkdir(parents=True)
    whole = make_pdf(tmp_path / "source.pdf", pages=5, text="chunked").read_bytes()
    target = cfg.watch[0].path / "15555551212.pdf"
    async with daemon(cfg) as d:
        chunks = 6
        step = -(-len(whole) // chunks)
        for i in range(chunks):
            with target.open("ab") as fh:        # appended by path, a new open each time
                fh.write(whole[i * step:(i + 1) * step])
            await asyncio.sleep(0.5)             # the writer's own pace (2.5 x settle), not a wait for us
        await async_wait_until(lambda: all_final(cfg, 1), timeout=30, what="the result")
        sent = sends(d)
    assert len(sent) == 1
    assert sent[0].pdf_sha256 == hashlib.sha256(whole).hexdigest() and sent[0].pdf_size == len(whole)
    assert results(cfg)["15555551212.result.json"]["state"] == "delivered"


async def test_500_files_dropped_at_once_each_sent_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    outbox = cfg.watch[0].path
    outbox.mkdir(parents=True)
    made = tmp_path / "made"
    files = [make_pdf(made / f"1555555{n:04d}.pdf", text=f"file {n}") for n in range(500)]
    digests = Counter(sha(f) for f in files)
    assert len(digests) == 500
    async with daemon(cfg) as d:
        for f in files:
            drop(f, outbox)
        await async_wait_until(lambda: all_final(cfg, 500), timeout=90, interval=0.2, what="500 results")
        sent = sends(d)
    assert Counter(s.pdf_sha256 for s in sent) == digests              # all sent, each exactly once
    assert len(os.listdir(cfg.watch[0].done)) + len(os.listdir(cfg.watch[0].failed)) == 500
