"""The job store on a real SQLite file: migrations, enqueue, apply, outbox, leases, recovery."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from faxbridge.errors import DuplicateJob, JobNotFound, StoreError
from faxbridge.models import FaxOutcome, JobState, NewJob, Paper, PreparedDocument, Source, StatusUpdate
from faxbridge.states import Accepted, Claimed, Policy, Status, Transition, decide
from faxbridge.store import DOC_NAME, MIGRATIONS, Conflict, Store, new_job_id
from faxbridge.store import sqlite as store_module

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
POLICY = Policy()


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


def enqueue(store: Store, source: Source = Source.CLI, to: str = "+15555551212") -> str:
    job_id = new_job_id()
    store.enqueue(job_id, NewJob(source=source, to=to, document="a.pdf", sender="alice@example.com"),
                  stage_doc(store, job_id), NOW)
    return job_id


def step(store: Store, job_id: str, outcome: object, now: datetime = NOW) -> None:
    job = store.get(job_id)
    t = decide(job, outcome, now, POLICY)  # type: ignore[arg-type]
    assert isinstance(t, Transition)
    store.apply(job, t, now)


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


def test_enqueue_moves_document_into_spool_and_records_an_event(store: Store) -> None:
    job_id = enqueue(store)
    job = store.get(job_id)
    assert job.state is JobState.QUEUED and job.pages == 2 and job.paper is Paper.A4
    assert store.document_path(job_id).read_bytes() == b"%PDF-1.4 test"
    assert not (store.staging / job_id).exists()
    assert [e.event for e in store.events(job_id)] == ["job.queued"]


def test_enqueue_refuses_an_unstaged_document(store: Store, tmp_path: Path) -> None:
    elsewhere = tmp_path / "x.pdf"
    elsewhere.write_bytes(b"%PDF")
    doc = PreparedDocument(path=elsewhere, pages=1, paper=Paper.LETTER, sha256="x", size=4)
    with pytest.raises(StoreError):
        store.enqueue(new_job_id(), NewJob(source=Source.CLI, to="+1", document="x"), doc, NOW)
    assert store.jobs() == []


def test_get_by_unique_prefix_and_unknown(store: Store) -> None:
    job_id = enqueue(store)
    assert store.get(job_id[:20].lower()).id == job_id
    with pytest.raises(JobNotFound):
        store.get("01ZZZZZZZZZZZZZZZZZZZZZZZZ")


def test_apply_is_optimistic(store: Store) -> None:
    job_id = enqueue(store)
    stale = store.get(job_id)
    step(store, job_id, Claimed())
    t = decide(stale, Claimed(), NOW, POLICY)
    assert isinstance(t, Transition)
    with pytest.raises(Conflict):
        store.apply(stale, t, NOW)
    assert [e.event for e in store.events(job_id)] == ["job.queued", "job.submitting"]


@pytest.mark.parametrize(("source", "kinds"), [(Source.SMTP, ["mail"]), (Source.FOLDER, ["sidecar"]),
                                                (Source.CLI, [])])
def test_final_state_writes_the_outbox_in_the_same_transaction(store: Store, source: Source,
                                                                kinds: list[str]) -> None:
    job_id = enqueue(store, source)
    step(store, job_id, Claimed())
    step(store, job_id, Accepted("42"))
    assert store.outbox_due(NOW, ["mail", "sidecar"]) == []
    final = Status(StatusUpdate("simulator", "42", FaxOutcome.DELIVERED, pages=2, attempts=1))
    step(store, job_id, final)
    due = store.outbox_due(NOW + timedelta(seconds=1), ["mail", "sidecar"])
    assert [i.kind for i in due] == kinds
    assert all(i.job_id == job_id for i in due)
    # a duplicate final status changes nothing and writes no second notification
    assert not isinstance(decide(store.get(job_id), final, NOW, POLICY), Transition)
    for item in due:
        store.outbox_delivered(item.id, NOW)
    assert store.outbox_due(NOW + timedelta(seconds=1), ["mail", "sidecar"]) == []
    assert store.outbox_backlog() == 0


def test_outbox_failure_backs_off(store: Store) -> None:
    job_id = enqueue(store, Source.SMTP)
    step(store, job_id, Claimed())
    step(store, job_id, Accepted("42"))
    step(store, job_id, Status(StatusUpdate("simulator", "42", FaxOutcome.FAILED, reason="Busy")))
    [item] = store.outbox_due(NOW, ["mail"])
    store.outbox_failed(item.id, "smarthost down", NOW + timedelta(minutes=1))
    assert store.outbox_due(NOW + timedelta(seconds=30), ["mail"]) == []
    [again] = store.outbox_due(NOW + timedelta(minutes=2), ["mail"])
    assert again.attempts == 1


def test_a_leased_job_is_not_claimed_twice(tmp_path: Path) -> None:
    a = Store(tmp_path, "simulator")
    b = Store(tmp_path, "simulator")  # a second connection, as another process would have
    ids = {enqueue(a) for _ in range(5)}
    first = a.claim_due("a", NOW, 3, 60)
    second = b.claim_due("b", NOW, 10, 60)
    assert len(first) == 3 and len(second) == 2
    assert {j.id for j in first} | {j.id for j in second} == ids
    assert not {j.id for j in first} & {j.id for j in second}
    assert b.claim_due("b", NOW, 10, 60) == []
    # an expired lease can be taken over
    assert len(b.claim_due("b", NOW + timedelta(seconds=61), 10, 60)) == 5
    a.close()
    b.close()


def test_claim_respects_next_attempt_and_limit(store: Store) -> None:
    enqueue(store)
    assert store.claim_due("x", NOW - timedelta(seconds=1), 10, 60) == []
    assert store.claim_due("x", NOW, 0, 60) == []
    assert len(store.claim_due("x", NOW, 10, 60)) == 1


def test_recover_returns_jobs_caught_mid_submission_and_drops_leases(store: Store) -> None:
    mid = enqueue(store)
    step(store, mid, Claimed())
    queued = enqueue(store)
    store.claim_due("dead-owner", NOW, 10, 600)
    assert [j.id for j in store.recover()] == [mid]
    assert [j.id for j in store.claim_due("new-owner", NOW, 10, 600)] == [queued]


def test_clean_spool_removes_orphans_only(store: Store) -> None:
    job_id = enqueue(store)
    store.stage("01ORPHANSTAGE0000000000000")
    (store.spool / "01ORPHANSPOOL0000000000000").mkdir()
    assert store.clean_spool() == 2
    assert store.document_path(job_id).exists()


def test_kv_and_counts(store: Store) -> None:
    assert store.kv_get("cursor") is None
    store.kv_set("cursor", "1")
    store.kv_set("cursor", "2")
    assert store.kv_get("cursor") == "2"
    enqueue(store)
    assert store.counts() == {"queued": 1}
    assert store.integrity_check() == "ok"


def test_reject_records_a_final_job_that_owes_its_result(store: Store) -> None:
    job_id = new_job_id()
    new = NewJob(source=Source.FOLDER, to="", document="scan.pdf", meta={"path": "/in/scan.pdf"})
    job = store.reject(job_id, new, "no number: name the file after the fax number", NOW)
    assert job.state is JobState.REJECTED and job.final and job.pages == 0
    assert job.reason == "no number: name the file after the fax number"
    assert [i.kind for i in store.outbox_due(NOW, ["sidecar"])] == ["sidecar"]
    assert [e.event for e in store.events(job_id)] == ["job.rejected"]


def test_duplicates_and_sender_counts(store: Store) -> None:
    def add(key: str | None, sender: str, at: datetime) -> str:
        job_id = new_job_id()
        store.enqueue(job_id, NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", sender=sender,
                                     dedup_key=key), stage_doc(store, job_id), at)
        return job_id

    first = add("mid-1|+15555551212|abc", "alice@example.com", NOW - timedelta(hours=2))
    add(None, "alice@example.com", NOW - timedelta(minutes=30))
    add(None, "bob@example.com", NOW - timedelta(minutes=10))
    dup = store.find_duplicate("mid-1|+15555551212|abc", NOW - timedelta(days=1))
    assert dup is not None and dup.id == first
    assert store.find_duplicate("mid-1|+15555551212|abc", NOW - timedelta(hours=1)) is None
    assert store.find_duplicate("other", NOW - timedelta(days=1)) is None
    assert store.count_by_sender("alice@example.com", NOW - timedelta(hours=1)) == 1
    assert store.count_by_sender("alice@example.com", NOW - timedelta(hours=3)) == 2
    assert store.count_by_sender("carol@example.com", NOW - timedelta(hours=3)) == 0


def test_enqueue_with_a_dedup_window_refuses_a_duplicate_in_its_transaction(tmp_path: Path) -> None:
    first_conn, second_conn = Store(tmp_path / "var", "simulator"), Store(tmp_path / "var", "simulator")
    try:
        key = "smtp|mid-7|+15555551212|abc"
        new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", dedup_key=key)
        first = new_job_id()
        first_conn.enqueue(first, new, stage_doc(first_conn, first), NOW, dedup_since=NOW - timedelta(days=5))
        # A second connection (another intake worker) that checked before the first committed:
        second = new_job_id()
        with pytest.raises(DuplicateJob) as caught:
            second_conn.enqueue(second, new, stage_doc(second_conn, second), NOW + timedelta(seconds=1),
                                dedup_since=NOW - timedelta(days=5))
        assert caught.value.job_id == first
        assert [j.id for j in first_conn.jobs()] == [first]
        assert not (first_conn.spool / second).exists() and not (first_conn.staging / second).exists()
        # Outside the window it is a new job again; without a window there is no check.
        third = new_job_id()
        second_conn.enqueue(third, new, stage_doc(second_conn, third), NOW + timedelta(days=6),
                            dedup_since=NOW + timedelta(days=1))
        fourth = new_job_id()
        second_conn.enqueue(fourth, new, stage_doc(second_conn, fourth), NOW + timedelta(days=6))
        assert len(first_conn.jobs()) == 3
    finally:
        first_conn.close()
        second_conn.close()


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


def test_enqueue_many_commits_every_job_with_its_document_and_event(store: Store) -> None:
    items = new_jobs(store, 3)
    jobs = store.enqueue_many(items, NOW)
    assert [j.id for j in jobs] == [job_id for job_id, _, _ in items]
    for (job_id, new, doc), job in zip(items, jobs, strict=True):
        assert (job.state, job.to, job.pages, job.paper, job.doc_sha256) == (
            JobState.QUEUED, new.to, 2, Paper.A4, doc.sha256)
        assert store.find_duplicate(new.dedup_key or "", NOW) == job
        assert job.next_attempt_at == NOW and job.finished_at is None and job.reason is None
        assert store.document_path(job_id).read_bytes() == f"%PDF-1.4 doc {new.document[0]}".encode()
        assert [e.event for e in store.events(job_id)] == ["job.queued"]
    assert list(store.staging.iterdir()) == []
    assert [(j.id, j.state) for j in store.claim_due("w", NOW, 10, 60)] == [(j.id, JobState.QUEUED) for j in jobs]


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


def test_enqueue_many_refuses_an_unstaged_document_and_moves_nothing(store: Store, tmp_path: Path) -> None:
    items = new_jobs(store, 2)
    stray = tmp_path / "elsewhere.pdf"
    stray.write_bytes(b"%PDF-1.4 x")
    job_id, new, _ = items[1]
    items[1] = (job_id, new, PreparedDocument(path=stray, pages=1, paper=Paper.A4, sha256="x", size=10))
    with pytest.raises(StoreError, match="is not staged"):
        store.enqueue_many(items, NOW)
    assert store.jobs() == []
    assert sorted(p.name for p in store.staging.iterdir()) == sorted(j for j, _, _ in items)  # still staged
    assert [p.name for p in store.spool.iterdir()] == [".staging"]
