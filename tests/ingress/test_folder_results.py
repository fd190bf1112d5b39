"""Result files and moving originals (ingress/folder/results.py, through notify/sidecar.py): real files, a
real store, the real OutboxWorker."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from faxbridge.ingress.folder import claims
from faxbridge.ingress.folder.results import FolderOrigin, move_original, write_result
from faxbridge.models import FaxOptions, FaxOutcome, Job, JobState, NewJob, Source, StatusUpdate
from faxbridge.notify import sidecar
from faxbridge.notify.outbox import NotifyRetry, OutboxWorker
from faxbridge.states import Accepted, CancelRequested, Claimed, Policy, Status
from faxbridge.store import JobStore, open_store
from faxbridge.workflow import advance
from tests.ingress.folder_kit import Folder, claim_of_job, open_folder, sha
from tests.support import make_pdf


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    yield from open_folder(tmp_path)


@pytest.fixture
async def store(folder: Folder) -> AsyncIterator[JobStore]:
    """The daemon's kind of store (async) on the folder's state dir, for the worker and the state machine."""
    opened = await open_store(folder.cfg.state_dir, "simulator")
    yield opened
    await opened.close()


def take(folder: Folder, name: str, control: str | None = None) -> Job:
    if control is not None:
        (folder.root / (name.rsplit(".", 1)[0] + ".json")).write_text(control)
    make_pdf(folder.root / name, text=name)
    folder.intake.sweep()
    before = {j.id for j in folder.jobs()}
    assert folder.settle(2) == 1
    [job] = [j for j in folder.jobs() if j.id not in before]
    return job


def results(folder: Folder) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in folder.cfg.watch[0].results.iterdir()}


async def deliver(folder: Folder, job: Job) -> None:
    job = folder.store.get(job.id)
    await sidecar.deliver(job, folder.store.events(job.id), None)  # type: ignore[arg-type]


async def test_rejected_result_at_once_and_original_to_failed(folder: Folder, store: JobStore) -> None:
    job = take(folder, "letter.pdf")
    assert job.state is JobState.REJECTED
    worker = OutboxWorker(store, folder.clock, "sidecar", sidecar.deliver)
    assert await worker.run_once() == 1
    w = folder.cfg.watch[0]
    assert sorted(os.listdir(w.failed)) == ["letter.pdf"] and os.listdir(w.done) == []
    assert sorted(os.listdir(w.results)) == ["letter.result.json"]
    result = results(folder)["letter.result.json"]
    assert result["schema_version"] == 1
    assert (result["id"], result["state"], result["final"], result["source"], result["document"]) == \
        (job.id, "rejected", True, "folder", "letter.pdf")
    assert result["reason"].startswith("no fax number for letter.pdf")
    assert [e["state"] for e in result["events"]] == ["rejected"]
    for key in ("to", "pages", "attempts", "provider", "provider_id", "status_code", "duration_s", "cost",
                "sender", "subject", "created_at", "finished_at"):
        assert key in result
    assert list(folder.area.iterdir()) == []               # the claim is gone
    assert await worker.run_once() == 0                     # once per final job


async def test_delivered_goes_to_done_with_its_control_file(folder: Folder, store: JobStore) -> None:
    job = take(folder, "invoice.pdf", control='{"to": "15555551212", "tags": {"ref": "7"}}')
    digest = job.doc_sha256
    done = await _final(store, folder, job, delivered=True)
    assert done.state is JobState.DELIVERED
    await deliver(folder, done)
    w = folder.cfg.watch[0]
    assert sorted(os.listdir(w.done)) == ["invoice.json", "invoice.pdf"]
    assert sha(w.done / "invoice.pdf") == digest
    result = results(folder)["invoice.result.json"]
    assert (result["state"], result["to"], result["tags"]) == ("delivered", "+15555551212", {"ref": "7"})
    assert [e["state"] for e in result["events"]] == ["queued", "submitting", "submitted", "delivered"]


async def _final(store: JobStore, folder: Folder, job: Job, delivered: bool) -> Job:
    """Drive a queued job to a final state through the state machine, as dispatcher and tracker would."""
    await advance(store, job.id, Claimed(), folder.clock, Policy())
    await advance(store, job.id, Accepted("p1"), folder.clock, Policy())
    update = StatusUpdate(provider="simulator", provider_id="p1",
                          outcome=FaxOutcome.DELIVERED if delivered else FaxOutcome.FAILED,
                          reason=None if delivered else "Busy: the line was busy on all 3 attempts", pages=1,
                          attempts=1)
    final, _ = await advance(store, job.id, Status(update), folder.clock, Policy())
    assert final.final
    return final


async def test_name_clash_gets_a_suffix_never_overwrites(folder: Folder) -> None:
    w = folder.cfg.watch[0]
    w.failed.mkdir(exist_ok=True)
    (w.failed / "letter.pdf").write_bytes(b"someone else's file")
    first = take(folder, "letter.pdf")
    await deliver(folder, first)
    second = take(folder, "letter.pdf")
    await deliver(folder, second)
    assert sorted(os.listdir(w.failed)) == ["letter-2.pdf", "letter-3.pdf", "letter.pdf"]
    assert (w.failed / "letter.pdf").read_bytes() == b"someone else's file"
    got = results(folder)
    assert sorted(got) == ["letter-2.result.json", "letter.result.json"]
    assert got["letter.result.json"]["id"] == first.id and got["letter-2.result.json"]["id"] == second.id


async def test_redelivery_repeats_nothing(folder: Folder) -> None:
    job = take(folder, "memo.pdf")
    await deliver(folder, job)
    await deliver(folder, job)                     # a crash before the outbox row was marked
    w = folder.cfg.watch[0]
    assert os.listdir(w.failed) == ["memo.pdf"] and os.listdir(w.results) == ["memo.result.json"]


async def test_crash_between_move_and_result(folder: Folder) -> None:
    job = take(folder, "memo.pdf")
    moved = move_original(folder.store.get(job.id))      # then the daemon died
    assert moved == folder.cfg.watch[0].failed / "memo.pdf"
    assert not (folder.cfg.watch[0].results / "memo.result.json").exists()
    await deliver(folder, job)
    assert os.listdir(folder.cfg.watch[0].failed) == ["memo.pdf"]
    assert results(folder)["memo.result.json"]["id"] == job.id


async def test_canceled_goes_to_failed(folder: Folder, store: JobStore) -> None:
    job = take(folder, "15555551212.pdf")
    canceled, _ = await advance(store, job.id, CancelRequested(), folder.clock, Policy())
    assert canceled.state is JobState.CANCELED
    await deliver(folder, canceled)
    assert os.listdir(folder.cfg.watch[0].failed) == ["15555551212.pdf"]
    assert results(folder)["15555551212.result.json"]["state"] == "canceled"


async def test_unwritable_results_folder_is_retried(folder: Folder) -> None:
    job = take(folder, "memo.pdf")
    results_dir = folder.cfg.watch[0].results
    results_dir.rmdir()
    results_dir.write_text("a file where the folder should be")
    with pytest.raises(NotifyRetry, match=r"result file for memo\.pdf"):
        await deliver(folder, job)
    results_dir.unlink()
    await deliver(folder, job)
    assert results(folder)["memo.result.json"]["id"] == job.id


async def test_not_a_folder_job_is_given_up(folder: Folder, store: JobStore) -> None:
    job = await store.reject("01JNOTAFOLDERJOB0000000000", NewJob(source=Source.FOLDER, to="", document="x.pdf",
                                                                  options=FaxOptions()), "why", folder.clock.now())
    worker = OutboxWorker(store, folder.clock, "sidecar", sidecar.deliver)
    assert job.final
    assert await worker.run_once() == 1 and worker.delivered == 0     # recorded as undeliverable
    assert await store.outbox_backlog() == 0 and os.listdir(folder.cfg.watch[0].results) == []


def test_a_polling_reader_never_sees_a_partial_result(folder: Folder) -> None:
    job = take(folder, "memo.pdf")
    job = folder.store.get(job.id)
    events = folder.store.events(job.id)
    results_dir = folder.cfg.watch[0].results
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            for name in os.listdir(results_dir):
                if not name.endswith(".result.json"):
                    continue
                try:
                    text = (results_dir / name).read_text()
                except FileNotFoundError:
                    continue
                try:
                    assert json.loads(text)["id"] == job.id
                    seen.append(name)
                except (ValueError, KeyError, AssertionError):
                    bad.append(text[:80])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        big = [*events] * 200                     # a large file makes a torn read likely if writes were not atomic
        for _ in range(300):
            write_result(results_dir, job, big)
    finally:
        stop.set()
        thread.join()
    assert bad == [] and seen
    assert os.listdir(results_dir) == ["memo.result.json"]


def test_hostile_document_names_stay_in_the_results_folder(folder: Folder) -> None:
    job = take(folder, "memo.pdf")
    job = folder.store.get(job.id)
    results_dir = folder.cfg.watch[0].results
    for name in ("../../escape.pdf", "..", "/etc/passwd", "a/../../b.pdf"):
        from dataclasses import replace

        path = write_result(results_dir, replace(job, document=name, id=job.id + name), [])
        assert path.parent == results_dir
    assert not (folder.root.parent / "escape.result.json").exists()
    assert all(p.parent == results_dir for p in results_dir.iterdir())
    assert claims.processing_dir(folder.root).exists()


# ---- the typed origin a folder job carries -------------------------------------------------------

def _flat(origin: FolderOrigin) -> dict[str, str]:
    """The meta an earlier version wrote: six flat strings."""
    return {"watch": str(origin.watch), "claim": origin.claim, "file": str(origin.file),
            "results": str(origin.results), "done": str(origin.done), "failed": str(origin.failed)}


def test_the_origin_round_trips_through_the_job_row(folder: Folder) -> None:
    job = take(folder, "15555551212_memo.pdf")
    origin = FolderOrigin.of(job.meta)
    w = folder.cfg.watch[0]
    assert origin == FolderOrigin(w.path, claim_of_job(job), PurePosixPath("15555551212_memo.pdf"), w.results,
                                  w.done, w.failed)
    assert json.loads(json.dumps(origin.meta())) == dict(job.meta)       # what the row holds, and only that
    assert FolderOrigin.of(origin.meta()) == origin == FolderOrigin.of(_flat(origin))


@pytest.mark.parametrize("meta", [{}, {"message_id": "<m1@example.com>"}, {"folder": "x"},
                                  {"folder": {"watch": "/w", "claim": "c"}},
                                  {"watch": "/w", "claim": "c", "file": "f", "results": "r", "done": "d"},
                                  {"watch": "/w", "claim": "", "file": "f", "results": "r", "done": "d", "failed": "x"},
                                  {"watch": "/w", "claim": 7, "file": "f", "results": "r", "done": "d", "failed": "x"}],
                         ids=["empty", "mail", "not-a-table", "part", "five-flat", "empty-claim", "not-a-string"])
def test_a_job_without_a_whole_origin_has_none(meta: dict[str, Any]) -> None:
    assert FolderOrigin.of(meta) is None


async def test_a_row_from_the_previous_version_still_gets_its_result(folder: Folder, store: JobStore) -> None:
    """A store written before the typed origin: the job's meta holds the six flat strings. Its
    pending result file is delivered as before, and the original moved."""
    (folder.root / "letter.json").write_text('{"to": "15555551212"}')
    job = take(folder, "letter.pdf")
    origin = FolderOrigin.of(job.meta)
    assert origin is not None
    db = sqlite3.connect(folder.store.db_path)
    db.execute("UPDATE jobs SET meta = ? WHERE id = ?", (json.dumps(_flat(origin)), job.id))
    db.commit()
    db.close()
    canceled, _ = await advance(store, job.id, CancelRequested(), folder.clock, Policy())
    assert dict(canceled.meta) == _flat(origin) and FolderOrigin.of(canceled.meta) == origin
    worker = OutboxWorker(store, folder.clock, "sidecar", sidecar.deliver)
    assert await worker.run_once() == 1 and worker.delivered == 1
    w = folder.cfg.watch[0]
    assert sorted(os.listdir(w.failed)) == ["letter.json", "letter.pdf"]
    result = results(folder)["letter.result.json"]
    assert (result["id"], result["state"]) == (job.id, "canceled")
    assert list(folder.area.iterdir()) == []
