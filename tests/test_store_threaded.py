"""The SQLite store behind the JobStore protocol: calls off the event loop, errors through one chokepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbridge.errors import JobNotFound, StoreBusy, StoreError
from faxbridge.models import FaxOptions, Job, NewJob, Source
from faxbridge.store import DOC_NAME, JobStore, ThreadedStore, UnreadableJob, open_store
from faxbridge.store.threaded import translate
from tests.support import LoopTicks, make_pdf


def _new(to: str = "+15555551212") -> NewJob:
    return NewJob(source=Source.CLI, to=to, document="a.pdf", options=FaxOptions())


async def _enqueue(store: JobStore, job_id: str) -> Job:
    from faxbridge.documents import prepare
    from faxbridge.models import InputFile

    staged = store.spool.stage(job_id)
    src = staged.parent / f"{job_id}-src.pdf"
    make_pdf(src, pages=1)
    doc = prepare([InputFile("a.pdf", src)], staged / DOC_NAME, max_pages=10)
    src.unlink()
    return await store.enqueue(job_id, _new(), doc, datetime.now(UTC))


def test_calls_run_on_the_store_thread_and_observers_on_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path, "simulator")
        seen: list[tuple[str, str]] = []
        store.observe(lambda before, after, event: seen.append((threading.current_thread().name, event)))
        try:
            job = await _enqueue(store, "01JOBTHREADED0000000000001")
            # the observer ran on the loop's thread, before enqueue returned
            assert seen == [(threading.current_thread().name, "job.queued")]
            assert (await store.get(job.id)).id == job.id
            assert await store.counts() == {"queued": 1}
            with pytest.raises(JobNotFound):
                await store.get("01NOSUCHJOB000000000000000")
        finally:
            await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.counts()

    asyncio.run(main())


def test_the_loop_runs_while_a_call_waits_on_the_write_lock(tmp_path: Path) -> None:
    async def main() -> None:
        store = await ThreadedStore.open(tmp_path, "simulator")
        other = sqlite3.connect(tmp_path / "faxbridge.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")           # another writer holds the lock
        write = asyncio.create_task(store.kv_set("k", "v"))
        try:
            async with LoopTicks() as loop:
                deadline = asyncio.get_running_loop().time() + 5
                while loop.ticks < 20 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.01)
                assert not write.done() and loop.ticks >= 20      # the loop went on while the write waited
            other.execute("COMMIT")
            await asyncio.wait_for(write, 30)
            assert await store.kv_get("k") == "v"
        finally:
            other.close()
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(("raised", "expected", "words"), [
    (sqlite3.OperationalError("database is locked"), StoreBusy, "busy"),
    (sqlite3.DatabaseError("file is not a database"), StoreError, "not a database"),
    (OSError(28, "No space left on device"), StoreBusy, "No space left"),
    (KeyError("state"), StoreError, "KeyError"),
], ids=["locked", "corrupt", "disk-full", "bug"])
def test_every_foreign_error_becomes_a_store_error(raised: Exception, expected: type[Exception], words: str) -> None:
    mapped = translate(raised)
    assert type(mapped) is expected and words in str(mapped)


def test_a_raw_error_inside_a_call_reaches_the_caller_as_a_store_error(tmp_path: Path) -> None:
    async def main() -> None:
        store = await ThreadedStore.open(tmp_path, "simulator")
        try:
            def broken() -> None:
                raise sqlite3.OperationalError("no such table: jobs")
            with pytest.raises(StoreError, match="no such table") as caught:
                await store._run(broken)
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("corruption", [
    "UPDATE jobs SET state = 'no-such-state' WHERE id = ?",
    "UPDATE jobs SET meta = '{not json' WHERE id = ?",
    "UPDATE jobs SET created_at = 'yesterday' WHERE id = ?",
    "UPDATE jobs SET paper = 'a0' WHERE id = ?",
    "UPDATE jobs SET hold = 'no-such-hold' WHERE id = ?",
    "UPDATE jobs SET options = '[1, 2' WHERE id = ?",
], ids=["state", "meta", "time", "paper", "hold", "options"])
def test_a_row_that_does_not_decode_is_skipped_by_lists_and_named_by_get(tmp_path: Path, corruption: str) -> None:
    import structlog

    async def main() -> None:
        store = await open_store(tmp_path, "simulator")
        try:
            bad = await _enqueue(store, "01JOBBADROW000000000000001")
            good = await _enqueue(store, "01JOBGOODROW00000000000001")
            raw = sqlite3.connect(tmp_path / "faxbridge.db", isolation_level=None)
            try:
                raw.execute(corruption, (bad.id,))
            finally:
                raw.close()
            with structlog.testing.capture_logs() as logs:
                assert [j.id for j in await store.jobs()] == [good.id]
                assert [j.id for j in await store.jobs()] == [good.id]            # logged once only
                claimed = await store.claim_due("me", datetime.now(UTC), 10, 60.0)
                assert [j.id for j in claimed] == [good.id]
            assert [(e["event"], e["job_id"]) for e in logs] == [("store.bad_row", bad.id)]
            with pytest.raises(UnreadableJob, match=bad.id):
                await store.get(bad.id)
            # the unreadable row keeps its lease: not due again (no busy loop) until it runs out
            due = await store.next_due()
            assert due is not None and due > datetime.now(UTC)
        finally:
            await store.close()

    asyncio.run(main())
