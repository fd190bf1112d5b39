"""The SQLite job store itself, on a real file: WAL, migrations by user_version, the spool fsynced before
the commit, all-or-none batches, the time format. What every backend does (enqueue, apply, outbox,
leases, recovery, dedup) is tested through the protocol on SQLite and PostgreSQL: test_store_protocol.py."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from faxbridge.errors import StoreError
from faxbridge.models import JobState, NewJob, Paper, PreparedDocument, Source
from faxbridge.store import DOC_NAME, MIGRATIONS, Store, new_job_id
from faxbridge.store import sqlite as store_module

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "var", "simulator")
    yield s  # type: ignore[misc]
    s.close()


def stage_doc(store: Store, job_id: str, content: bytes = b"%PDF-1.4 test") -> PreparedDocument:
    path = store.stage(job_id) / DOC_NAME
    path.write_bytes(content)
    return PreparedDocument(path=path, pages=2, paper=Paper.A4, sha256=hashlib.sha256(content).hexdigest(),
                            size=len(content))


def test_schema_is_migrated_and_wal(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    db = sqlite3.connect(store.db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "jobs", "events", "outbox", "kv"}


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    Store(tmp_path, "simulator").close()
    s = Store(tmp_path, "simulator")
    assert s.schema_version == len(MIGRATIONS)
    s.close()


def test_migration_from_version_1_keeps_jobs(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "faxbridge.db")
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("""INSERT INTO jobs (id, source, to_number, state, pages, paper, provider, document, options, meta,
                  created_at, updated_at, doc_sha256) VALUES ('01OLD', 'cli', '+15555551212', 'queued', 1,
                  'letter', 'simulator', 'a.pdf', '{}', '{}', '2026-11-22T10:00:00.000000Z',
                  '2026-11-22T10:00:00.000000Z', 'x')""")
    db.commit()
    db.close()
    s = Store(tmp_path, "simulator")
    assert s.schema_version == len(MIGRATIONS)
    assert s.get("01OLD").state is JobState.QUEUED
    s.close()


def new_jobs(store: Store, n: int) -> list[tuple[str, NewJob, PreparedDocument]]:
    items = []
    for i in range(n):
        job_id = new_job_id()
        new = NewJob(source=Source.FOLDER, to=f"+1555555121{i}", document=f"{i}.pdf", dedup_key=f"folder:{i}")
        items.append((job_id, new, stage_doc(store, job_id, f"%PDF-1.4 doc {i}".encode())))
    return items


def test_enqueue_many_fsyncs_the_spool_before_it_commits(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    items = new_jobs(store, 3)
    reader = sqlite3.connect(store.db_path)
    synced: list[tuple[str, int, bool]] = []
    real_fsync_dir = store_module.fsync_dir

    def spy(path: Path) -> None:
        real_fsync_dir(path)
        in_spool = all(store.document_path(job_id).exists() for job_id, _, _ in items)
        synced.append((path.name, reader.execute("SELECT count(*) FROM jobs").fetchone()[0], in_spool))

    monkeypatch.setattr(store_module, "fsync_dir", spy)
    store.enqueue_many(items, NOW)
    # each folder once for the lot, with every document already moved in and no row committed yet
    assert synced == [("spool", 0, True), (".staging", 0, True)]
    assert reader.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
    reader.close()


def test_enqueue_gives_the_job_as_a_fresh_read_gives_it(store: Store) -> None:
    """enqueue and enqueue_many hand back the rows their INSERTs returned, not a read after them:
    the same jobs, field for field, as reading them again."""
    many = store.enqueue_many(new_jobs(store, 2), NOW)
    (job_id, new, doc), = new_jobs(store, 1)
    one = store.enqueue(job_id, new, doc, NOW)
    assert [*many, one] == [store.get(job.id) for job in [*many, one]]
    assert [(j.state, j.to, j.document, j.version) for j in many] == [
        (JobState.QUEUED, "+15555551210", "0.pdf", 0), (JobState.QUEUED, "+15555551211", "1.pdf", 0)]


def test_enqueue_many_is_all_or_none_when_the_transaction_fails(store: Store) -> None:
    items = new_jobs(store, 3)
    db = sqlite3.connect(store.db_path)
    # a real failure inside the transaction, after the first job's rows are written
    db.execute(f"CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.job_id = '{items[1][0]}' "
               "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    db.commit()
    with pytest.raises(StoreError, match="disk trouble"):
        store.enqueue_many(items, NOW)
    assert store.jobs() == []
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert [p.name for p in store.spool.iterdir()] == [".staging"]   # no document left without its job
    db.execute("DROP TRIGGER fail")
    db.commit()
    db.close()
    again = new_jobs(store, 3)
    assert len(store.enqueue_many(again, NOW)) == 3 and len(store.jobs()) == 3


def test_times_keep_the_text_format_existing_databases_hold() -> None:
    """The store's times are ``faxbridge.clock.stamp`` text (microseconds, a Z), read back by
    ``parse_iso``: exactly what the store wrote before the helper moved to the clock module."""
    from faxbridge.clock import parse_iso, stamp

    at = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert stamp(at) == "2026-11-22T10:00:00.123456Z" == store_module.ts(at)
    assert stamp(datetime(2026, 11, 22, 11, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-22T10:00:00.000000Z"
    old = datetime.strptime("2026-11-22T10:00:00.123456Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert parse_iso("2026-11-22T10:00:00.123456Z") == old == at
    assert stamp(None) is None and parse_iso(None) is None
