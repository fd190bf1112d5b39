"""Group commit: writes waiting for the store thread share one transaction (``SqliteStore.grouped``).
A write that fails is undone alone; a group whose COMMIT fails reports the failure to every call
and leaves nothing of it in the database; observers hear of changes only once they are committed;
concurrent callers through the ThreadedStore each get their own result."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from faxbridge.errors import Conflict
from faxbridge.models import Job, JobState
from faxbridge.states import Claimed, decide
from faxbridge.store import open_store
from faxbridge.store import sqlite as store_module
from faxbridge.store.sqlite import SqliteStore
from tests.test_states import POLICY
from tests.test_store import new_jobs
from tests.test_store_threaded import _enqueue

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def _claimed(store: SqliteStore, job: Job) -> Any:
    decision = decide(job, Claimed(), NOW, POLICY)
    return lambda: store.apply(job, decision, NOW)


async def _queued(tmp_path: Path, count: int) -> list[Job]:
    store = await open_store(tmp_path, "simulator")
    try:
        return [await _enqueue(store, f"01JGROUP{i:018d}") for i in range(count)]
    finally:
        await store.close()


async def test_a_failing_write_is_undone_alone_and_observers_hear_after_the_commit(tmp_path: Path) -> None:
    a, b, c = await _queued(tmp_path, 3)
    store = SqliteStore(tmp_path, "simulator")
    heard: list[tuple[str, bool]] = []
    outside = sqlite3.connect(tmp_path / "faxbridge.db")
    store.observers.append(lambda before, after, event: heard.append(
        (after.id, outside.execute("SELECT state FROM jobs WHERE id = ?", (after.id,)).fetchone()[0] == "submitting")))
    try:
        stale = replace(b, version=b.version + 7)                           # applying it conflicts
        results = store.grouped([_claimed(store, a), _claimed(store, stale), _claimed(store, c)])
        assert [ok for ok, _ in results] == [True, False, True]
        assert isinstance(results[1][1], Conflict)
        assert [store.get(j.id).state for j in (a, b, c)] == [JobState.SUBMITTING, JobState.QUEUED,
                                                               JobState.SUBMITTING]
        assert heard == [(a.id, True), (c.id, True)]       # told once committed: another connection sees it
        assert [e.event for e in store.events(b.id)] == ["job.queued"]
    finally:
        outside.close()
        store.close()


async def test_a_group_whose_commit_fails_reports_it_to_every_call_and_keeps_nothing(tmp_path: Path) -> None:
    a, b = await _queued(tmp_path, 2)
    store = SqliteStore(tmp_path, "simulator")
    heard: list[str] = []
    store.observers.append(lambda before, after, event: heard.append(event))

    def breaks_the_commit() -> None:     # a foreign key checked only at COMMIT: the COMMIT fails
        store._db.execute("PRAGMA defer_foreign_keys = ON")
        store._db.execute("INSERT INTO events (job_id, at, state, event) VALUES ('nobody', '', 'queued', 'x')")

    try:
        results = store.grouped([_claimed(store, a), breaks_the_commit, _claimed(store, b)])
        assert [ok for ok, _ in results] == [False, False, False]
        assert all(isinstance(exc, Exception) for _, exc in results)
        assert [store.get(j.id).state for j in (a, b)] == [JobState.QUEUED, JobState.QUEUED]
        assert heard == []
        assert not store._db.in_transaction
        store.apply(a, decide(a, Claimed(), NOW, POLICY), NOW)      # and the store goes on
        assert store.get(a.id).state is JobState.SUBMITTING
    finally:
        store.close()


async def test_concurrent_writes_through_the_store_thread_each_get_their_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = await _queued(tmp_path, 12)
    store = await open_store(tmp_path, "simulator")
    grouped: list[int] = []
    real = SqliteStore.grouped

    def counting(self: SqliteStore, calls: Any) -> list[tuple[bool, Any]]:
        grouped.append(len(calls))
        return real(self, calls)

    monkeypatch.setattr(SqliteStore, "grouped", counting)    # counts the groups, runs the real one
    try:
        stale = replace(jobs[3], version=99)
        calls = [store.apply(j, decide(j, Claimed(), NOW, POLICY), NOW) for j in jobs[:3]]
        calls.append(store.apply(stale, decide(stale, Claimed(), NOW, POLICY), NOW))
        calls += [store.apply(j, decide(j, Claimed(), NOW, POLICY), NOW) for j in jobs[4:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[3], Conflict)
        done = [r for i, r in enumerate(results) if i != 3]
        assert [r.id for r in done if isinstance(r, Job)] == [j.id for i, j in enumerate(jobs) if i != 3]
        assert all(isinstance(r, Job) and r.state is JobState.SUBMITTING for r in done)
        assert grouped and max(grouped) > 1               # the writes waiting together shared a commit
        assert (await store.get(jobs[3].id)).state is JobState.QUEUED
    finally:
        await store.close()


def test_a_groups_documents_are_fsynced_once_before_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path, "simulator")
    reader = sqlite3.connect(store.db_path)
    items = new_jobs(store, 3)
    synced: list[tuple[str, int, bool]] = []
    real_fsync_dir = store_module.fsync_dir

    def spy(path: Path) -> None:
        real_fsync_dir(path)
        in_spool = all(store.document_path(job_id).exists() for job_id, _, _ in items)
        synced.append((path.name, reader.execute("SELECT count(*) FROM jobs").fetchone()[0], in_spool))

    monkeypatch.setattr(store_module, "fsync_dir", spy)
    try:
        results = store.grouped([functools.partial(store.enqueue, job_id, new, doc, NOW) for job_id, new, doc in items])
        assert [ok for ok, _ in results] == [True, True, True]
        assert synced == [("spool", 0, True), (".staging", 0, True)]     # once for the lot, before COMMIT
        assert reader.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
    finally:
        reader.close()
        store.close()


def test_a_group_that_fails_leaves_no_document_in_the_spool(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, "simulator")
    items = new_jobs(store, 2)

    def breaks_the_commit() -> None:
        store._db.execute("PRAGMA defer_foreign_keys = ON")
        store._db.execute("INSERT INTO events (job_id, at, state, event) VALUES ('nobody', '', 'queued', 'x')")

    try:
        calls = [functools.partial(store.enqueue, job_id, new, doc, NOW) for job_id, new, doc in items]
        results = store.grouped([*calls, breaks_the_commit])
        assert [ok for ok, _ in results] == [False, False, False]
        assert store.jobs() == []
        assert not any(store.document_path(job_id).exists() for job_id, _, _ in items)
        assert sorted(p.name for p in store.spool.iterdir()) == [".staging"]
    finally:
        store.close()


async def test_writes_taken_before_close_are_committed(tmp_path: Path) -> None:
    jobs = await _queued(tmp_path, 3)
    store = await open_store(tmp_path, "simulator")
    # gather starts the writes first (each queued for the store thread), then the close
    *done, _ = await asyncio.gather(*(store.apply(j, decide(j, Claimed(), NOW, POLICY), NOW) for j in jobs),
                                    store.close())
    assert [job.state for job in done] == [JobState.SUBMITTING] * 3
    reopened = SqliteStore(tmp_path, "simulator")
    try:
        assert [reopened.get(j.id).state for j in jobs] == [JobState.SUBMITTING] * 3
    finally:
        reopened.close()
