"""Contract section 9, folder intake: hostile control files, hostile folder trees, hostile names and
floods. Real files, the real watcher (in the daemon, in this process or in a subprocess), the
built-in simulator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from faxbridge.store import new_job_id
from tests.conftest import async_wait_until, wait_until
from tests.ingress.test_folder_watch import config, daemon, results, sends
from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config

# (control file name, its bytes, the exact reason of the document's rejected result)
BAD_CONTROLS: list[tuple[str, bytes, str]] = [
    ("digits.json", b'{"to": ' + b"1" * 5000 + b"}", "digits.json holds a number of 5,000 digits; at most 30"),
    ("brackets.json", b"[" * 60_000, "brackets.json nests arrays or objects more than 16 deep"),
    ("objects.json", b'{"to": ' + b'{"a": ' * 20 + b"1" + b"}" * 20 + b"}",
     "objects.json nests arrays or objects more than 16 deep"),
    ("longto.json", b'{"to": "' + b"5" * 60_000 + b'"}',
     "longto.json: to has 60,000 characters; a fax number has at most 64"),
    ("huge.json", b'{"to": "+15555551212", "header": "' + b"x" * 70_000 + b'"}', "huge.json is larger than 64 KB"),
    ("listto.json", b'{"to": ["+15555551212"]}', "listto.json: to must be a fax number in a string"),
    ("floatto.json", b'{"to": 1.' + b"1" * 5000 + b"}", "floatto.json: to must be a fax number in a string"),
    ("nan.json", b'{"to": NaN}', "nan.json is not valid JSON: NaN is not a JSON value"),
    ("header.json", b'{"to": "+15555551212", "header": 5}', "header.json: header must be a string"),
    ("tags.json", b'{"to": "+15555551212", "tags": {' + b",".join(b'"k%d": 1' % n for n in range(40)) + b"}}",
     "tags.json: tags has 40 names; at most 32"),
    ("tagval.json", b'{"to": "+15555551212", "tags": {"k": "' + b"v" * 300 + b'"}}',
     "tagval.json: tags.k has 300 characters; at most 256"),
    ("array.json", b'["+15555551212"]', 'array.json must hold a JSON object, like {"to": "+15555551212"}'),
    ("legacy.fax", b"to=" + b"5" * 100 + b"\n", "legacy.fax: to has 100 characters; a fax number has at most 64"),
]


def _stem(control: str) -> str:
    return control.rsplit(".", 1)[0]


async def test_each_hostile_control_file_rejects_only_its_document(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    outbox = cfg.watch[0].path
    outbox.mkdir(parents=True)
    async with daemon(cfg) as d:
        for control, data, _reason in BAD_CONTROLS:
            (outbox / control).write_bytes(data)
            make_pdf(tmp_path / "made" / f"{_stem(control)}.pdf").rename(outbox / f"{_stem(control)}.pdf")
        await async_wait_until(lambda: len(results(cfg)) >= len(BAD_CONTROLS), timeout=60,
                               what="a result for every document")
        good = make_pdf(tmp_path / "made" / "15555551212_good.pdf")
        good.rename(outbox / good.name)
        await async_wait_until(lambda: results(cfg).get("15555551212_good.result.json", {}).get("final"),
                               timeout=60, what="the good file's final result")
        assert d.handle is not None
        sent = sends(d)
    got = results(cfg)
    for control, _data, reason in BAD_CONTROLS:
        result = got[f"{_stem(control)}.result.json"]
        assert (result["state"], result["reason"]) == ("rejected", reason), control
    assert got["15555551212_good.result.json"]["state"] == "delivered"
    assert [s.to for s in sent] == ["+15555551212"]
    assert sorted(os.listdir(cfg.watch[0].failed)) == sorted(
        [c for c, _, _ in BAD_CONTROLS] + [f"{_stem(c)}.pdf" for c, _, _ in BAD_CONTROLS])


def _daemon_config(tmp: Path, **watch: Any) -> Path:
    settings = base_settings(tmp)
    settings["watch"] = [{"path": str(tmp / "outbox"), "results": str(tmp / "results"), "done": str(tmp / "done"),
                          "failed": str(tmp / "failed"), "settle": "200ms", **watch}]
    return write_config(tmp / "faxbridge.toml", settings)


def _results(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in folder.glob("*.result.json"):
        try:
            out[path.name] = json.loads(path.read_text())
        except ValueError:
            continue                      # never half written; a reader skips what it cannot read
    return out


def test_daemon_starts_with_poisoned_claims_left_in_place(tmp_path: Path) -> None:
    """Claims a crash left behind whose control files crashed reconcile at start-up: the daemon
    starts, each is rejected with its reason, and a good file is faxed; again after a restart."""
    config_path = _daemon_config(tmp_path)
    outbox = tmp_path / "outbox"
    processing = outbox / ".faxbridge" / "processing"
    poisoned = {"brackets": b"[" * 60_000, "digits": b'{"to": ' + b"9" * 5000 + b"}"}
    for stem, data in poisoned.items():
        claim = processing / new_job_id()
        claim.mkdir(parents=True)
        make_pdf(claim / f"{stem}.pdf")
        (claim / f"{stem}.json").write_bytes(data)
    for run in (1, 2):
        proc = DaemonProcess(config_path, tmp_path / f"daemon{run}.log").start()
        try:
            proc.wait_ready(60)
            good = make_pdf(tmp_path / "made" / f"1555555121{run}.pdf")
            good.rename(outbox / good.name)
            name = f"1555555121{run}.result.json"
            wait_until(lambda n=name: _results(tmp_path / "results").get(n, {}).get("state") == "delivered",
                       timeout=60, what=f"good file {run} delivered")
            if run == 1:                  # and a fresh poisoned claim for the next start-up
                claim = processing / new_job_id()
                claim.mkdir()
                make_pdf(claim / "again.pdf")
                (claim / "again.json").write_bytes(b"[" * 60_000)
        finally:
            assert proc.stop() == 0
    got = _results(tmp_path / "results")
    assert (got["brackets.result.json"]["state"], got["brackets.result.json"]["reason"]) == \
        ("rejected", "brackets.json nests arrays or objects more than 16 deep")
    assert (got["digits.result.json"]["state"], got["digits.result.json"]["reason"]) == \
        ("rejected", "digits.json holds a number of 5,000 digits; at most 30")
    assert (got["again.result.json"]["state"], got["again.result.json"]["reason"]) == \
        ("rejected", "again.json nests arrays or objects more than 16 deep")
    assert os.listdir(processing) == []


# --- finding 3: hostile folder trees ------------------------------------------------------------------


def _deep_tree(top: Path, levels: int) -> Path:
    """A folder ``levels`` deep under ``top``, made level by level through directory descriptors."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return top


def _remove_tree(top: Path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree recurses on Python 3.11)."""
    stack = [top]
    while stack:
        path = stack[-1]
        subfolders = [path / e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        if subfolders:
            stack += subfolders
            continue
        for entry in os.scandir(path):
            os.unlink(path / entry.name)
        os.rmdir(path)
        stack.pop()


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
async def test_a_deep_tree_and_a_symlink_loop_do_not_stop_a_recursive_watcher(tmp_path: Path, poll: bool) -> None:
    cfg = config(tmp_path, recursive=True, poll=poll)
    outbox = cfg.watch[0].path
    _deep_tree(outbox / "deep", 1100)                    # there before start-up
    os.symlink(".", outbox / "loop")                     # a symbolic link loop, twice
    (outbox / "15555551219").mkdir()
    os.symlink("..", outbox / "15555551219" / "up")
    make_pdf(outbox / "15555551212" / "early.pdf")       # a good file before start-up
    nine = outbox / "/".join(["15555551215"] * 9)        # 9 levels below the watched folder: too deep
    make_pdf(nine / "toodeep.pdf")
    try:
        with structlog.testing.capture_logs() as captured:
            async with daemon(cfg) as d:
                await async_wait_until(lambda: results(cfg).get("early.result.json", {}).get("final"), timeout=60,
                                       what="the early file's result")
                _deep_tree(outbox / "deep2", 1100)            # made while watching
                make_pdf(tmp_path / "made" / "late.pdf").rename(_made_dir(outbox / "15555551214") / "late.pdf")
                await async_wait_until(lambda: results(cfg).get("late.result.json", {}).get("final"), timeout=60,
                                       what="the late file's result")
                assert d.healthy()
                sent = sorted(s.to for s in sends(d))
        got = results(cfg)
        assert (got["early.result.json"]["state"], got["late.result.json"]["state"]) == ("delivered", "delivered")
        assert sent == ["+15555551212", "+15555551214"]
        assert sorted(got) == ["early.result.json", "late.result.json", "loop.result.json", "up.result.json"]
        assert got["loop.result.json"]["reason"] == "loop is a symbolic link; faxbridge takes only regular files"
        assert (nine / "toodeep.pdf").exists()                # never taken, never touched
        deep = [e for e in captured if e["event"] == "folder.too_deep"]
        assert {e["folder"] for e in deep} >= {str(outbox / "deep" / "/".join(["d"] * 8)),
                                                str(outbox / "deep2" / "/".join(["d"] * 8)), str(nine)}
        assert len(deep) == len({e["folder"] for e in deep})      # one line per folder, not per sweep
    finally:
        for top in (outbox / "deep", outbox / "deep2"):
            if top.exists():
                _remove_tree(top)


def _made_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- finding 15: hostile names, floods --------------------------------------------------------------


async def test_control_bytes_in_a_file_name_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    outbox = cfg.watch[0].path
    outbox.mkdir(parents=True)
    sent_name = "15555551212_\x1b]0;owned\x07\x1b[2J.pdf"
    rejected_name = "\x1b[31mred\u202e.pdf"
    async with daemon(cfg) as d:
        for name in (sent_name, rejected_name):
            make_pdf(tmp_path / "made" / "x.pdf").rename(outbox / name)
        await async_wait_until(lambda: len(results(cfg)) == 2 and all(r["final"] for r in results(cfg).values()),
                               timeout=60, what="both results")
        assert [s.to for s in sends(d)] == ["+15555551212"]
    by_doc = {r["document"]: r for r in results(cfg).values()}
    assert sorted(by_doc) == sorted([sent_name, rejected_name])     # the JSON keeps the name as it is
    jobs = cli("jobs", config=cfg.source)
    assert jobs.returncode == 0, jobs.stderr
    assert "\x1b" not in jobs.stdout and "\u202e" not in jobs.stdout and "\x07" not in jobs.stdout
    assert "no fax number for \\x1b[31mred\\u202e.pdf" in jobs.stdout
    for result in by_doc.values():
        shown = cli("job", result["id"], config=cfg.source)
        assert shown.returncode == 0, shown.stderr
        assert not any(c in shown.stdout for c in "\x1b\x07\u202e"), shown.stdout
    assert "document:       15555551212_\\x1b]0;owned\\x07\\x1b[2J.pdf" in \
        cli("job", by_doc[sent_name]["id"], config=cfg.source).stdout


FLOOD = 2000


def _delivered(config_path: Path) -> list[str]:
    out = cli("jobs", "--json", "--state", "delivered", config=config_path)
    return [json.loads(line)["document"] for line in out.stdout.splitlines() if line.strip()]


def test_a_flood_of_empty_files_does_not_starve_a_good_file(tmp_path: Path) -> None:
    """2,000 empty files, then a good one once the flood's rejections are under way: the good file is
    taken while flood files are still waiting in the folder (a starved file would be taken only after
    the last of them), and is faxed; the empty files are rejected with their reason. How much of the
    flood went first depends on how busy the machine is, so only "some still waiting" is asserted."""
    config_path = _daemon_config(tmp_path)
    outbox, failed = tmp_path / "outbox", tmp_path / "failed"
    outbox.mkdir()
    proc = DaemonProcess(config_path, tmp_path / "daemon.log").start()
    try:
        proc.wait_ready(60)
        for n in range(FLOOD):
            (outbox / f"empty{n:05d}.pdf").touch()
        first = wait_until(lambda: next(failed.glob("empty*.pdf"), None), timeout=60, interval=0.01,
                           what="the first empty file rejected")
        good = make_pdf(tmp_path / "made" / "15555551212_good.pdf")
        good.rename(outbox / good.name)
        wait_until(lambda: not (outbox / good.name).exists(), timeout=60, interval=0.005, what="the good file claimed")
        left = len([p for p in os.listdir(outbox) if p.startswith("empty")])
        assert left > 0, f"the good file was taken only after all {FLOOD} files of the flood"
        wait_until(lambda: _delivered(config_path) == [good.name], timeout=90, interval=0.5,
                   what="the good file faxed")
        result = wait_until(lambda: _results(tmp_path / "results").get(first.stem + ".result.json"), timeout=60,
                            what="the first empty file's result")
    finally:
        assert proc.stop() == 0
    assert (result["state"], result["reason"]) == ("rejected", f"{first.name} is empty")


def test_a_claim_nothing_can_be_made_of_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    from tests.ingress.folder_kit import open_folder

    for folder in open_folder(tmp_path):
        claim_id = new_job_id()
        make_pdf(folder.area / claim_id / "odd.pdf")
        folder.intake.claims.quarantine(claim_id, "RecursionError: maximum recursion depth exceeded")
        quarantine = folder.root / ".faxbridge" / "quarantine"
        assert os.listdir(folder.area) == []
        assert sorted(os.listdir(quarantine)) == [claim_id, f"{claim_id}.REASON.txt"]
        assert (quarantine / f"{claim_id}.REASON.txt").read_text() == \
            "RecursionError: maximum recursion depth exceeded\n"
        assert os.listdir(quarantine / claim_id) == ["odd.pdf"]
        assert folder.intake.reconcile() == 0 and folder.jobs() == []     # never taken again
        make_pdf(folder.root / "15555551212.pdf")                          # and intake goes on
        folder.intake.sweep()
        assert folder.settle(2) == 1 and [j.to for j in folder.jobs()] == ["+15555551212"]
