"""What only the PostgreSQL store does: several daemons on one database (claims, per_destination,
dedup, leases, start-up), migrations under the advisory lock, documents in chunks, the error
chokepoint. On a real server the tests start (tests/pg.py); each test has its own database."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import structlog
from psycopg import errors as pg_errors

from faxbridge.errors import DuplicateJob, StoreBusy, StoreError, UnreadableJob
from faxbridge.models import FaxOutcome, JobState, NewJob, Source, StatusUpdate
from faxbridge.states import Accepted, Claimed, Policy, Status, Transition, decide
from faxbridge.store import JobStore, new_job_id, open_store
from faxbridge.store.pg_schema import CHUNK, MIGRATION_LOCK, MIGRATIONS
from faxbridge.store.postgres import PostgresStore, translate
from tests.pg import PgServer
from tests.stores import NOW, Backend, enqueue, stage_doc
from tests.support import LoopTicks

POLICY = Policy()


@pytest.fixture
def pg(tmp_path: Path, pg_url: str) -> Backend:
    return Backend("postgres", tmp_path, pg_url)


@pytest.fixture(autouse=True)
async def _close(pg: Backend) -> None:   # type: ignore[misc]
    yield
    for store in pg.opened:
        await store.close()


async def step(store: JobStore, job_id: str, outcome: object, now: datetime = NOW) -> None:
    job = await store.get(job_id)
    t = decide(job, outcome, now, POLICY)  # type: ignore[arg-type]
    assert isinstance(t, Transition)
    await store.apply(job, t, now)


async def test_two_daemons_claiming_at_once_never_claim_a_job_twice(pg: Backend) -> None:
    a, b = await pg.open("a"), await pg.open("b")
    ids = {await enqueue(a, to=f"+1555555{n:04d}") for n in range(40)}
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    async def claimer(store: JobStore, name: str) -> None:
        while True:
            jobs = await store.claim_due(name, NOW, 3, 600)
            if not jobs and await store.claim_due(name, NOW, 3, 600) == []:
                return
            claimed[name] += [j.id for j in jobs]

    await asyncio.gather(claimer(a, "a"), claimer(b, "b"), claimer(a, "a"), claimer(b, "b"))
    every = claimed["a"] + claimed["b"]
    assert sorted(every) == sorted(ids)                   # each job once, none twice
    assert claimed["a"] and claimed["b"]                  # both took part
    # the claiming daemon has each document locally, the other need not
    assert all(b.spool.document_path(i).read_bytes() == b"%PDF-1.4 test" for i in claimed["b"])


async def test_per_destination_holds_across_daemons(pg: Backend) -> None:
    a, b = await pg.open("a"), await pg.open("b")
    to = "+15555551212"
    first, *rest = [await enqueue(a, to=to) for _ in range(6)]
    results = await asyncio.gather(*(s.claim_due(s_name, NOW, 10, 600, per_destination=1)
                                     for s, s_name in [(a, "a"), (b, "b")] * 4))
    got = [j.id for jobs in results for j in jobs]
    assert got == [first]                                  # one at a time to the number, the oldest
    holder = a if first in [j.id for r in results[0::2] for j in r] else b
    await step(holder, first, Claimed())
    assert await a.claim_due("a", NOW, 10, 600, per_destination=1) == []
    assert await b.claim_due("b", NOW, 10, 600, per_destination=1) == []
    await step(holder, first, Accepted("77"))
    await step(holder, first, Status(StatusUpdate("simulator", "77", FaxOutcome.DELIVERED, pages=2, attempts=1)))
    nxt = await asyncio.gather(a.claim_due("a", NOW, 10, 600, per_destination=1),
                               b.claim_due("b", NOW, 10, 600, per_destination=1))
    assert [j.id for jobs in nxt for j in jobs] == [rest[0]]
    # with room for two, two more go, whoever asks
    more = await asyncio.gather(a.claim_due("a", NOW, 10, 600, per_destination=3),
                                b.claim_due("b", NOW, 10, 600, per_destination=3))
    assert sorted(j.id for jobs in more for j in jobs) == sorted(rest[1:3])


async def test_dedup_across_daemons_makes_one_job(pg: Backend) -> None:
    stores = [await pg.open(f"n{i}") for i in range(3)]
    new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", dedup_key="smtp|mid-9|+15555551212|x")
    ids = [new_job_id() for _ in stores]
    outcomes = await asyncio.gather(
        *(s.enqueue(i, new, stage_doc(s, i), NOW, dedup_since=NOW - timedelta(days=5)) for s, i in zip(
            stores, ids, strict=True)), return_exceptions=True)
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, DuplicateJob)]
    assert len(made) == 1 and len(refused) == 2
    assert {r.job_id for r in refused} == {made[0].id}
    assert [j.id for j in await stores[0].jobs()] == [made[0].id]


async def test_a_dead_daemons_lease_is_taken_over_once_it_expires(pg: Backend) -> None:
    dead, alive = await pg.open("dead"), await pg.open("alive")
    job_id = await enqueue(dead)
    assert [j.id for j in await dead.claim_due("dead-1", NOW, 10, 30)] == [job_id]
    assert await alive.claim_due("alive-1", NOW + timedelta(seconds=29), 10, 30) == []
    taken = await alive.claim_due("alive-1", NOW + timedelta(seconds=31), 10, 30)
    assert [j.id for j in taken] == [job_id]
    assert alive.spool.document_path(job_id).read_bytes() == b"%PDF-1.4 test"   # fetched from the database


async def test_start_up_never_wipes_another_daemons_live_lease(pg: Backend) -> None:
    a, b = await pg.open("a"), await pg.open("b")
    now = datetime.now(UTC)
    mid, queued = await enqueue(a, now=now), await enqueue(a, now=now)
    await a.claim_due("a-1", now, 1, 600)                       # mid: leased by a, then mid-submission
    await step(a, mid, Claimed(), now)
    await a.claim_due("a-1", now, 1, 600)                       # queued: leased by a
    assert await b.recover() == []                              # b starts: a's work stays a's
    assert await b.claim_due("b-1", now, 10, 600) == []
    assert await b.abandoned(now, "b-1") == []
    # a restarts (same node): its old leases are dropped, its mid-submission job is found
    restarted = await pg.open("a")
    assert [j.id for j in await restarted.recover()] == [mid]
    assert [j.id for j in await b.claim_due("b-1", now, 10, 600)] == [queued]


async def test_outbox_rows_go_to_one_daemon_until_the_lease_runs_out(pg: Backend) -> None:
    a, b = await pg.open("a", lease=30), await pg.open("b", lease=30)
    job_id = await enqueue(a, Source.SMTP)
    await step(a, job_id, Claimed())
    await step(a, job_id, Accepted("5"))
    await step(a, job_id, Status(StatusUpdate("simulator", "5", FaxOutcome.DELIVERED, pages=2, attempts=1)))
    got = await asyncio.gather(a.outbox_due(NOW, ["mail"]), b.outbox_due(NOW, ["mail"]))
    assert sorted(len(g) for g in got) == [0, 1]
    assert await a.outbox_due(NOW + timedelta(seconds=10), ["mail"]) == []
    [again] = await b.outbox_due(NOW + timedelta(seconds=31), ["mail"])         # the first daemon died
    assert b.spool.document_path(job_id).is_file()             # a reply may attach the document
    await b.outbox_delivered(again.id, NOW + timedelta(seconds=31))
    assert await a.outbox_due(NOW + timedelta(hours=1), ["mail"]) == []


async def test_a_second_opener_waits_while_the_schema_is_migrated(pg: Backend, pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as migrating:
        await migrating.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))    # as a migrating daemon
        opener = asyncio.create_task(pg.open("late"))
        async with LoopTicks() as loop:
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                cur = await migrating.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                row = await cur.fetchone()
                if row is not None and row[0] >= 1:
                    break
                await asyncio.sleep(0.02)
            assert row is not None and row[0] == 1 and not opener.done() and loop.ticks > 0
        await migrating.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        store = await asyncio.wait_for(opener, 30)
        assert await store.counts() == {}
        cur = await migrating.execute("SELECT version FROM migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == list(range(1, len(MIGRATIONS) + 1))
    # opened again: nothing to do, nothing lost
    job_id = await enqueue(store)
    again = await pg.open("later")
    assert (await again.get(job_id)).state is JobState.QUEUED


async def test_documents_are_stored_in_chunks_and_fetched_by_another_daemon(pg: Backend, pg_url: str) -> None:
    a, b = await pg.open("a"), await pg.open("b")
    content = b"%PDF-1.4\n" + bytes(range(256)) * (CHUNK * 5 // 2 // 256)
    job_id = await enqueue(a, content=content)
    async with await psycopg.AsyncConnection.connect(pg_url) as raw:
        cur = await raw.execute("SELECT seq, length(chunk) FROM documents WHERE job_id = %s ORDER BY seq", (job_id,))
        sizes = [r[1] for r in await cur.fetchall()]
    assert len(sizes) == 3 and max(sizes) == CHUNK and sum(sizes) == len(content)
    assert not b.spool.document_path(job_id).exists()
    [job] = await b.claim_due("b-1", NOW, 1, 60)
    path = b.spool.document_path(job.id)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == job.doc_sha256
    assert path.stat().st_mode & 0o777 == 0o600
    assert await b.integrity_check() == "ok"


async def test_a_document_that_does_not_match_its_hash_is_not_handed_out(pg: Backend, pg_url: str) -> None:
    a, b = await pg.open("a"), await pg.open("b")
    bad, good = await enqueue(a), await enqueue(a)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        await raw.execute("UPDATE documents SET chunk = 'tampered' WHERE job_id = %s", (bad,))
    with structlog.testing.capture_logs() as logs:
        assert [j.id for j in await b.claim_due("b-1", NOW, 10, 60)] == [good]     # the others go on
    assert [(e["event"], e["job_id"]) for e in logs] == [("store.bad_document", bad)]
    assert not b.spool.document_path(bad).exists()
    assert await a.claim_due("a-1", NOW, 10, 60) == []          # held by its lease (a back-off), no busy loop
    # once it runs out, a daemon with an intact copy (the one that took it in) sends it
    later = await a.claim_due("a-1", NOW + timedelta(seconds=61), 10, 60)
    assert sorted(j.id for j in later) == sorted([bad, good])   # (b's lease on the good one ran out too)
    assert a.spool.document_path(bad).read_bytes() == b"%PDF-1.4 test"


async def test_a_row_that_does_not_decode_is_skipped_by_lists_and_named_by_get(pg: Backend, pg_url: str) -> None:
    store = await pg.open()
    bad, good = await enqueue(store), await enqueue(store)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        await raw.execute("UPDATE jobs SET state = 'no-such-state' WHERE id = %s", (bad,))
    with structlog.testing.capture_logs() as logs:
        assert [j.id for j in await store.jobs()] == [good]
        assert [j.id for j in await store.jobs()] == [good]                 # logged once only
    assert [(e["event"], e["job_id"]) for e in logs] == [("store.bad_row", bad)]
    with pytest.raises(UnreadableJob, match=bad):
        await store.get(bad)


@pytest.mark.parametrize(("raised", "expected", "words"), [
    (psycopg.OperationalError("connection to server lost"), StoreBusy, "connection"),
    (pg_errors.SerializationFailure("could not serialize"), StoreBusy, "serialize"),
    (pg_errors.DeadlockDetected("deadlock detected"), StoreBusy, "deadlock"),
    (pg_errors.DiskFull("could not extend file"), StoreBusy, "extend"),
    (pg_errors.UniqueViolation("duplicate key"), StoreError, "duplicate key"),
    (pg_errors.UndefinedTable("relation jobs does not exist"), StoreError, "does not exist"),
    (OSError(28, "No space left on device"), StoreBusy, "No space left"),
    (KeyError("state"), StoreError, "KeyError"),
], ids=["connection", "serialization", "deadlock", "disk-full", "unique", "no-table", "os-disk-full", "bug"])
def test_every_foreign_error_becomes_a_store_error(raised: Exception, expected: type[Exception], words: str) -> None:
    mapped = translate(raised)
    assert type(mapped) is expected and words in str(mapped)


async def test_a_database_that_does_not_answer_is_busy_not_a_crash(tmp_path: Path) -> None:
    from tests.conftest import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with pytest.raises(StoreBusy):
        await PostgresStore.open(url, tmp_path / "var", "simulator", node="x", timeout=1.0)


async def test_a_raw_error_inside_a_call_reaches_the_caller_as_a_store_error(pg: Backend, pg_url: str) -> None:
    store = await pg.open()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        await raw.execute("DROP TABLE kv")
    with pytest.raises(StoreError, match="kv") as caught:
        await store.kv_get("cursor")
    assert isinstance(caught.value.__cause__, psycopg.Error)


async def test_the_cli_reads_a_shared_store_read_only_and_never_makes_one(pg: Backend, pg_url: str,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no job store"):
        await open_store(tmp_path / "cli", "simulator", url=pg_url, readonly=True)
    daemon = await pg.open("daemon")
    job_id = await enqueue(daemon)
    cli = await open_store(tmp_path / "cli", "simulator", url=pg_url, readonly=True)
    try:
        assert [j.id for j in await cli.jobs()] == [job_id]
    finally:
        await cli.close()


async def test_a_database_restart_is_busy_meanwhile_and_the_store_resumes_by_itself(
        pg: Backend, pg_server: PgServer) -> None:
    store = await pg.open()
    job_id = await enqueue(store)
    pg_server.stop()
    try:
        with pytest.raises(StoreBusy):
            await store.get(job_id)
    finally:
        pg_server.start()
    deadline = asyncio.get_running_loop().time() + 60
    while True:                                 # the pool replaces its broken connections by itself
        try:
            job = await store.get(job_id)
            break
        except StoreBusy:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
    assert job.state is JobState.QUEUED
    await store.kv_set("after", "restart")
    assert await store.kv_get("after") == "restart"


async def test_daemons_starting_together_on_a_new_database_all_open_it(pg: Backend) -> None:
    stores = await asyncio.gather(*(pg.open(f"n{i}") for i in range(3)))
    ids = [await enqueue(s) for s in stores]
    assert sorted(j.id for j in await stores[0].jobs()) == sorted(ids)


async def test_enqueue_many_is_all_or_none_documents_included(pg: Backend, pg_url: str) -> None:
    from tests.test_store_protocol import new_jobs

    store = await pg.open()
    items = new_jobs(store, 3)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        # a real failure inside the transaction, after the first job's rows and document are written
        await raw.execute(f"""CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.job_id = '{items[1].job_id}' THEN RAISE EXCEPTION 'disk trouble'; END IF;
            RETURN NEW; END $$""")
        await raw.execute("CREATE TRIGGER fail BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fail()")
        with pytest.raises(StoreError, match="disk trouble"):
            await store.enqueue_many(items, NOW)
        assert await store.jobs() == []
        cur = await raw.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM documents)")
        assert (await cur.fetchone()) == (0,)
        assert [p.name for p in store.spool.root.iterdir()] == [".staging"]   # no document left without its job
        await raw.execute("DROP TRIGGER fail ON events")
    again = new_jobs(store, 3)
    assert len(await store.enqueue_many(again, NOW)) == 3 and len(await store.jobs()) == 3


async def test_a_folder_jobs_result_goes_to_the_daemon_that_took_it_in(pg: Backend) -> None:
    watching, other = await pg.open("watching"), await pg.open("other")
    folder_job = await enqueue(watching, Source.FOLDER)
    mail_job = await enqueue(watching, Source.SMTP)
    for job_id in (folder_job, mail_job):                       # the other daemon sends both
        await step(other, job_id, Claimed())
        await step(other, job_id, Accepted(job_id[-4:]))
        await step(other, job_id, Status(StatusUpdate("simulator", job_id[-4:], FaxOutcome.DELIVERED, pages=2,
                                                      attempts=1)))
    mine = await other.outbox_due(NOW, ["sidecar", "mail"])
    assert [(i.kind, i.job_id) for i in mine] == [("mail", mail_job)]          # a reply mail: any daemon
    [result] = await watching.outbox_due(NOW, ["sidecar", "mail"])
    assert (result.kind, result.job_id) == ("sidecar", folder_job)


async def test_a_row_that_does_not_decode_neither_waits_its_turn_nor_holds_its_number(pg: Backend,
                                                                                       pg_url: str) -> None:
    store = await pg.open()
    bad, good = await enqueue(store), await enqueue(store)           # both to one number
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        await raw.execute("UPDATE jobs SET state = 'submitted', paper = 'no-such-paper' WHERE id = %s", (bad,))
    with structlog.testing.capture_logs():
        assert await store.submitted() == []                          # seen (and logged) by a list read
    assert await store.next_due(per_destination=1) == NOW
    assert [j.id for j in await store.claim_due("x", NOW, 10, 60, per_destination=1)] == [good]


async def test_max_in_flight_holds_across_daemons_claiming_at_once(pg: Backend) -> None:
    stores = [await pg.open(f"n{i}") for i in range(4)]
    for n in range(20):
        await enqueue(stores[0], to=f"+1555555{n:04d}")
    for per in (0, 5):           # with and without per_destination (its own claiming query)
        got = await asyncio.gather(*(s.claim_due(f"o{i}", NOW, 10, 600, max_in_flight=3, per_destination=per)
                                     for i, s in enumerate(stores * 2)))
        assert sum(len(jobs) for jobs in got) == 3, per
        for i, jobs in enumerate(got):
            for job in jobs:
                await stores[0].release(job.id, f"o{i}")


async def test_one_daemon_leads_a_role_until_its_connection_ends(pg: Backend) -> None:
    a, b, c = await pg.open("a"), await pg.open("b"), await pg.open("c")
    assert await a.lead("poller")
    assert not await b.lead("poller") and not await c.lead("poller")
    assert await b.lead("balance")                       # another role, another lock
    assert await a.lead("poller")                        # kept while alive
    await a.close()                                      # (a daemon killed: its connections end too)
    taken = [await b.lead("poller"), await c.lead("poller")]
    assert taken == [True, False]


async def test_an_outbox_row_taken_over_after_its_lease_is_not_kept_by_the_first_daemon(pg: Backend) -> None:
    a, b = await pg.open("a", lease=30), await pg.open("b", lease=30)
    job_id = await enqueue(a, Source.SMTP)
    await step(a, job_id, Claimed())
    await step(a, job_id, Accepted("5"))
    await step(a, job_id, Status(StatusUpdate("simulator", "5", FaxOutcome.DELIVERED, pages=2, attempts=1)))
    [item] = await a.outbox_due(NOW, ["mail"])
    assert await a.outbox_keep(item.id, NOW + timedelta(seconds=20))       # renewed to 50 s
    assert await b.outbox_due(NOW + timedelta(seconds=40), ["mail"]) == []
    [again] = await b.outbox_due(NOW + timedelta(seconds=51), ["mail"])    # a slow past its lease
    assert again.id == item.id
    assert not await a.outbox_keep(item.id, NOW + timedelta(seconds=52))   # a leaves it to b
    assert await b.outbox_keep(item.id, NOW + timedelta(seconds=52))


async def test_the_sender_limit_holds_across_daemons_committing_at_once(pg: Backend) -> None:
    from faxbridge.errors import SenderOverLimit

    stores = [await pg.open(f"n{i}") for i in range(4)]
    new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", sender="bob@example.com")
    ids = [new_job_id() for _ in stores * 2]
    outcomes = await asyncio.gather(
        *(s.enqueue(i, new, stage_doc(s, i), NOW, sender_limit=(NOW - timedelta(hours=1), 3))
          for s, i in zip(stores * 2, ids, strict=True)), return_exceptions=True)
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 3
    assert sum(1 for o in outcomes if isinstance(o, SenderOverLimit)) == 5
    assert len(await stores[0].jobs()) == 3
