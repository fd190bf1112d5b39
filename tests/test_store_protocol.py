"""The JobStore protocol on both backends (SQLite, and a real PostgreSQL the tests start): enqueue,
apply, outbox, leases, recovery, dedup, spool. What only one backend does is in test_store.py
(SQLite) and test_store_postgres.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from faxbridge.errors import DuplicateJob, JobNotFound, StoreError
from faxbridge.models import FaxOutcome, JobState, NewJob, Paper, PreparedDocument, Source, StatusUpdate
from faxbridge.states import Accepted, Claimed, Policy, Status, Transition, decide
from faxbridge.store import Conflict, JobStore, Staged, new_job_id
from tests.stores import NOW, Backend, enqueue, stage_doc

POLICY = Policy()


async def step(store: JobStore, job_id: str, outcome: object, now: datetime = NOW) -> None:
    job = await store.get(job_id)
    t = decide(job, outcome, now, POLICY)  # type: ignore[arg-type]
    assert isinstance(t, Transition)
    await store.apply(job, t, now)


async def test_enqueue_keeps_the_document_and_records_an_event(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore)
    job = await jobstore.get(job_id)
    assert job.state is JobState.QUEUED and job.pages == 2 and job.paper is Paper.A4
    assert jobstore.spool.document_path(job_id).read_bytes() == b"%PDF-1.4 test"
    assert not (jobstore.spool.staging / job_id).exists()
    assert [e.event for e in await jobstore.events(job_id)] == ["job.queued"]


async def test_enqueue_refuses_an_unstaged_document(jobstore: JobStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "x.pdf"
    elsewhere.write_bytes(b"%PDF")
    doc = PreparedDocument(path=elsewhere, pages=1, paper=Paper.LETTER, sha256="x", size=4)
    with pytest.raises(StoreError):
        await jobstore.enqueue(new_job_id(), NewJob(source=Source.CLI, to="+1", document="x"), doc, NOW)
    assert await jobstore.jobs() == []


async def test_get_by_unique_prefix_and_unknown(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore)
    assert (await jobstore.get(job_id[:20].lower())).id == job_id
    with pytest.raises(JobNotFound):
        await jobstore.get("01ZZZZZZZZZZZZZZZZZZZZZZZZ")


async def test_apply_is_optimistic(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore)
    stale = await jobstore.get(job_id)
    await step(jobstore, job_id, Claimed())
    t = decide(stale, Claimed(), NOW, POLICY)
    assert isinstance(t, Transition)
    with pytest.raises(Conflict):
        await jobstore.apply(stale, t, NOW)
    assert [e.event for e in await jobstore.events(job_id)] == ["job.queued", "job.submitting"]


@pytest.mark.parametrize(("source", "kinds"), [(Source.SMTP, ["mail"]), (Source.FOLDER, ["sidecar"]),
                                                (Source.CLI, [])], ids=["smtp", "folder", "cli"])
async def test_final_state_writes_the_outbox_in_the_same_transaction(jobstore: JobStore, source: Source,
                                                                      kinds: list[str]) -> None:
    job_id = await enqueue(jobstore, source)
    await step(jobstore, job_id, Claimed())
    await step(jobstore, job_id, Accepted("42"))
    assert await jobstore.outbox_due(NOW, ["mail", "sidecar"]) == []
    final = Status(StatusUpdate("simulator", "42", FaxOutcome.DELIVERED, pages=2, attempts=1))
    await step(jobstore, job_id, final)
    due = await jobstore.outbox_due(NOW + timedelta(seconds=1), ["mail", "sidecar"])
    assert [i.kind for i in due] == kinds
    assert all(i.job_id == job_id for i in due)
    assert not isinstance(decide(await jobstore.get(job_id), final, NOW, POLICY), Transition)
    for item in due:
        await jobstore.outbox_delivered(item.id, NOW)
    assert await jobstore.outbox_due(NOW + timedelta(hours=1), ["mail", "sidecar"]) == []
    assert await jobstore.outbox_backlog() == 0


async def test_outbox_failure_backs_off_and_given_up_shows_in_the_history(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore, Source.SMTP)
    await step(jobstore, job_id, Claimed())
    await step(jobstore, job_id, Accepted("42"))
    await step(jobstore, job_id, Status(StatusUpdate("simulator", "42", FaxOutcome.FAILED, reason="Busy")))
    [item] = await jobstore.outbox_due(NOW, ["mail"])
    await jobstore.outbox_failed(item.id, "smarthost down", NOW + timedelta(minutes=1))
    assert await jobstore.outbox_due(NOW + timedelta(seconds=30), ["mail"]) == []
    [again] = await jobstore.outbox_due(NOW + timedelta(minutes=2), ["mail"])
    assert again.attempts == 1
    await jobstore.outbox_delivered(again.id, NOW + timedelta(minutes=2), error="550 no such user")
    assert (await jobstore.events(job_id))[-1].event == "notify.given_up"
    assert await jobstore.outbox_backlog() == 0


async def test_notices_say_where_each_outbox_row_of_a_job_stands(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore, Source.SMTP)
    assert await jobstore.notices(job_id) == []                      # nothing owed before it is final
    await step(jobstore, job_id, Claimed())
    await step(jobstore, job_id, Accepted("42"))
    await step(jobstore, job_id, Status(StatusUpdate("simulator", "42", FaxOutcome.DELIVERED, pages=2)))
    [owed] = await jobstore.notices(job_id)
    assert (owed.kind, owed.attempts, owed.delivered_at, owed.last_error) == ("mail", 0, None, None)
    assert owed.created_at == NOW and owed.next_at == NOW
    [item] = await jobstore.outbox_due(NOW, ["mail"])
    await jobstore.outbox_failed(item.id, "smarthost down", NOW + timedelta(minutes=1))
    [tried] = await jobstore.notices(job_id)
    assert (tried.attempts, tried.last_error, tried.next_at) == (1, "smarthost down", NOW + timedelta(minutes=1))
    await jobstore.outbox_delivered(item.id, NOW + timedelta(minutes=2))
    [sent] = await jobstore.notices(job_id)
    assert sent.delivered_at == NOW + timedelta(minutes=2) and sent.attempts == 1
    assert await jobstore.notices(await enqueue(jobstore, Source.CLI)) == []


async def test_a_leased_job_is_not_claimed_twice(backend: Backend) -> None:
    a, b = await backend.open("a"), await backend.open("b")      # two connections, as two processes
    ids = {await enqueue(a) for _ in range(5)}
    first = await a.claim_due("a", NOW, 3, 60)
    second = await b.claim_due("b", NOW, 10, 60)
    assert len(first) == 3 and len(second) == 2
    assert {j.id for j in first} | {j.id for j in second} == ids
    assert not {j.id for j in first} & {j.id for j in second}
    assert await b.claim_due("b", NOW, 10, 60) == []
    # an expired lease can be taken over, and the document is there to send
    taken = await b.claim_due("b", NOW + timedelta(seconds=61), 10, 60)
    assert len(taken) == 5
    assert all(b.spool.document_path(j.id).read_bytes() == b"%PDF-1.4 test" for j in taken)


async def test_claim_respects_next_attempt_and_limit(jobstore: JobStore) -> None:
    await enqueue(jobstore)
    assert await jobstore.claim_due("x", NOW - timedelta(seconds=1), 10, 60) == []
    assert await jobstore.claim_due("x", NOW, 0, 60) == []
    assert len(await jobstore.claim_due("x", NOW, 10, 60)) == 1


async def test_per_destination_takes_the_oldest_job_to_a_number_first(jobstore: JobStore) -> None:
    older = [await enqueue(jobstore, to="+15555551212") for _ in range(3)]
    other = await enqueue(jobstore, to="+15555551313")
    claimed = await jobstore.claim_due("x", NOW, 10, 60, per_destination=1)
    assert sorted(j.id for j in claimed) == sorted([older[0], other])
    assert await jobstore.claim_due("x", NOW, 10, 60, per_destination=1) == []
    await step(jobstore, older[0], Claimed())
    assert await jobstore.at_provider("+15555551212") == 1
    await jobstore.release(older[0], "x")
    again = await jobstore.claim_due("x", NOW + timedelta(seconds=61), 10, 60, per_destination=1)
    assert [j.id for j in again] == [other]                     # the number's next waits for the first


async def test_recover_returns_jobs_caught_mid_submission_and_drops_leases(jobstore: JobStore) -> None:
    mid = await enqueue(jobstore)
    await step(jobstore, mid, Claimed())
    queued = await enqueue(jobstore)
    await jobstore.claim_due("dead-owner", NOW, 10, 600)
    assert [j.id for j in await jobstore.recover()] == [mid]
    assert [j.id for j in await jobstore.claim_due("new-owner", NOW, 10, 600)] == [queued]


async def test_clean_spool_removes_orphans_only(jobstore: JobStore) -> None:
    job_id = await enqueue(jobstore)
    jobstore.spool.stage("01ORPHANSTAGE0000000000000")
    (jobstore.spool.root / "01ORPHANSPOOL0000000000000").mkdir()
    assert await jobstore.clean_spool() == 2
    assert jobstore.spool.document_path(job_id).exists()


async def test_kv_and_counts(jobstore: JobStore) -> None:
    assert await jobstore.kv_get("cursor") is None
    await jobstore.kv_set("cursor", "1")
    await jobstore.kv_set("cursor", "2")
    assert await jobstore.kv_get("cursor") == "2"
    await enqueue(jobstore)
    assert await jobstore.counts() == {"queued": 1}
    assert await jobstore.in_flight() == 0
    assert await jobstore.integrity_check() == "ok"


async def test_reject_records_a_final_job_that_owes_its_result(jobstore: JobStore) -> None:
    job_id = new_job_id()
    new = NewJob(source=Source.FOLDER, to="", document="scan.pdf", meta={"path": "/in/scan.pdf"})
    job = await jobstore.reject(job_id, new, "no number: name the file after the fax number", NOW)
    assert job.state is JobState.REJECTED and job.final and job.pages == 0
    assert job.reason == "no number: name the file after the fax number" and job.meta == {"path": "/in/scan.pdf"}
    assert [i.kind for i in await jobstore.outbox_due(NOW, ["sidecar"])] == ["sidecar"]
    assert [e.event for e in await jobstore.events(job_id)] == ["job.rejected"]


async def test_duplicates_and_sender_and_client_counts(jobstore: JobStore) -> None:
    async def add(key: str | None, sender: str, at: datetime, peer: str = "127.0.0.1") -> str:
        job_id = new_job_id()
        await jobstore.enqueue(job_id, NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", sender=sender,
                                              dedup_key=key, meta={"peer": peer}), stage_doc(jobstore, job_id), at)
        return job_id

    first = await add("mid-1|+15555551212|abc", "alice@example.com", NOW - timedelta(hours=2))
    await add(None, "alice@example.com", NOW - timedelta(minutes=30))
    await add(None, "bob@example.com", NOW - timedelta(minutes=10), peer="10.0.0.9")
    dup = await jobstore.find_duplicate("mid-1|+15555551212|abc", NOW - timedelta(days=1))
    assert dup is not None and dup.id == first
    assert await jobstore.find_duplicate("mid-1|+15555551212|abc", NOW - timedelta(hours=1)) is None
    assert await jobstore.find_duplicate("other", NOW - timedelta(days=1)) is None
    assert await jobstore.count_by_sender("alice@example.com", NOW - timedelta(hours=1)) == 1
    assert await jobstore.count_by_sender("alice@example.com", NOW - timedelta(hours=3)) == 2
    assert await jobstore.count_by_sender("carol@example.com", NOW - timedelta(hours=3)) == 0
    assert await jobstore.count_by_client("127.0.0.1", NOW - timedelta(hours=3)) == 2
    assert await jobstore.count_by_client("10.0.0.9", NOW - timedelta(hours=1)) == 1


async def test_enqueue_with_a_dedup_window_refuses_a_duplicate_in_its_transaction(backend: Backend) -> None:
    first_conn, second_conn = await backend.open("a"), await backend.open("b")
    key = "smtp|mid-7|+15555551212|abc"
    new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", dedup_key=key)
    first = new_job_id()
    await first_conn.enqueue(first, new, stage_doc(first_conn, first), NOW, dedup_since=NOW - timedelta(days=5))
    # A second connection (another intake worker, another daemon) that checked before the first committed:
    second = new_job_id()
    with pytest.raises(DuplicateJob) as caught:
        await second_conn.enqueue(second, new, stage_doc(second_conn, second), NOW + timedelta(seconds=1),
                                  dedup_since=NOW - timedelta(days=5))
    assert caught.value.job_id == first
    assert [j.id for j in await first_conn.jobs()] == [first]
    assert not (second_conn.spool.root / second).exists() and not (second_conn.spool.staging / second).exists()
    # Outside the window it is a new job again; without a window there is no check.
    third = new_job_id()
    await second_conn.enqueue(third, new, stage_doc(second_conn, third), NOW + timedelta(days=6),
                              dedup_since=NOW + timedelta(days=1))
    fourth = new_job_id()
    await second_conn.enqueue(fourth, new, stage_doc(second_conn, fourth), NOW + timedelta(days=6))
    assert len(await first_conn.jobs()) == 3
    assert [j.id for j in await first_conn.jobs(limit=2)] == [fourth, third]


def new_jobs(store: JobStore, n: int) -> list[Staged]:
    items = []
    for i in range(n):
        job_id = new_job_id()
        new = NewJob(source=Source.FOLDER, to=f"+1555555121{i}", document=f"{i}.pdf", dedup_key=f"folder:{i}")
        items.append(Staged(job_id, new, stage_doc(store, job_id, f"%PDF-1.4 doc {i}".encode())))
    return items


async def test_enqueue_many_commits_every_job_with_its_document_and_event(jobstore: JobStore) -> None:
    items = new_jobs(jobstore, 3)
    jobs = await jobstore.enqueue_many(items, NOW)
    assert [j.id for j in jobs] == [job_id for job_id, _, _ in items]
    for (job_id, new, doc), job in zip(items, jobs, strict=True):
        assert (job.state, job.to, job.pages, job.paper, job.doc_sha256) == (
            JobState.QUEUED, new.to, 2, Paper.A4, doc.sha256)
        assert await jobstore.find_duplicate(new.dedup_key or "", NOW) == job
        assert job.next_attempt_at == NOW and job.finished_at is None and job.reason is None
        assert jobstore.spool.document_path(job_id).read_bytes() == f"%PDF-1.4 doc {new.document[0]}".encode()
        assert [e.event for e in await jobstore.events(job_id)] == ["job.queued"]
    assert list(jobstore.spool.staging.iterdir()) == []
    assert [(j.id, j.state) for j in await jobstore.claim_due("w", NOW, 10, 60)] == [
        (j.id, JobState.QUEUED) for j in jobs]


async def test_enqueue_many_refuses_an_unstaged_document_and_moves_nothing(jobstore: JobStore,
                                                                            tmp_path: Path) -> None:
    items = new_jobs(jobstore, 2)
    stray = tmp_path / "elsewhere.pdf"
    stray.write_bytes(b"%PDF-1.4 x")
    job_id, new, _ = items[1]
    items[1] = Staged(job_id, new, PreparedDocument(path=stray, pages=1, paper=Paper.A4, sha256="x", size=10))
    with pytest.raises(StoreError, match="is not staged"):
        await jobstore.enqueue_many(items, NOW)
    assert await jobstore.jobs() == []
    assert sorted(p.name for p in jobstore.spool.staging.iterdir()) == sorted(j for j, _, _ in items)
    assert [p.name for p in jobstore.spool.root.iterdir()] == [".staging"]


async def test_observers_run_on_the_loop_before_the_call_returns_and_a_closed_store_says_so(
        backend: Backend) -> None:
    import threading

    store = await backend.open()
    seen: list[tuple[str, str]] = []
    store.observe(lambda before, after, event: seen.append((threading.current_thread().name, event)))
    job_id = await enqueue(store)
    assert seen == [(threading.current_thread().name, "job.queued")]
    await step(store, job_id, Claimed())
    assert [e for _, e in seen] == ["job.queued", "job.submitting"]
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.counts()


async def test_send_now_changes_the_jobs_options(jobstore: JobStore) -> None:
    from faxbridge.models import FaxOptions
    from faxbridge.states import SendNow

    job_id = new_job_id()
    later = NOW + timedelta(hours=3)
    new = NewJob(source=Source.CLI, to="+15555551212", document="a.pdf",
                 options=FaxOptions(header="Invoice", send_at=later))
    job = await jobstore.enqueue(job_id, new, stage_doc(jobstore, job_id), NOW)
    assert job.options.send_at == later and job.next_attempt_at == later
    assert await jobstore.claim_due("x", NOW, 10, 60) == []
    await step(jobstore, job_id, SendNow())
    job = await jobstore.get(job_id)
    assert job.options.send_at is None and job.options.header == "Invoice" and job.next_attempt_at == NOW
    assert [j.id for j in await jobstore.claim_due("x", NOW, 10, 60)] == [job_id]


async def test_search_filters_counts_and_pages_newest_first(jobstore: JobStore) -> None:
    from faxbridge.store import JobFilter

    made = []
    for n, (source, to, sender) in enumerate([
            (Source.SMTP, "+15555551212", "Alice@Example.com"), (Source.SMTP, "+15555551313", "bob@example.com"),
            (Source.CLI, "+15555551212", "alice@example.com"), (Source.FOLDER, "+442079460958", None)]):
        job_id = new_job_id()
        await jobstore.enqueue(job_id, NewJob(source=source, to=to, document=f"doc_{n}%.pdf", sender=sender,
                                              subject=f"Invoice {n}"), stage_doc(jobstore, job_id),
                               NOW + timedelta(minutes=n))
        made.append(job_id)

    async def ids(wanted: JobFilter, offset: int = 0, limit: int = 50) -> tuple[list[str], int]:
        jobs, total = await jobstore.search(wanted, offset, limit)
        return [j.id for j in jobs], total

    assert await ids(JobFilter()) == (made[::-1], 4)
    assert await ids(JobFilter(), offset=1, limit=2) == (made[2:0:-1], 4)
    assert await ids(JobFilter(source=Source.SMTP)) == ([made[1], made[0]], 2)
    assert await ids(JobFilter(number="5551212")) == ([made[2], made[0]], 2)
    assert await ids(JobFilter(sender="ALICE")) == ([made[2], made[0]], 2)          # case-insensitive
    assert await ids(JobFilter(text="invoice 3")) == ([made[3]], 1)
    assert await ids(JobFilter(text="_2%")) == ([made[2]], 1)                       # LIKE signs are literal
    assert await ids(JobFilter(state=JobState.QUEUED, source=Source.CLI, sender="alice")) == ([made[2]], 1)
    assert await ids(JobFilter(state=JobState.DELIVERED)) == ([], 0)


async def test_a_renewed_lease_holds_past_its_first_end_and_only_for_its_owner(jobstore: JobStore) -> None:
    a, b = await enqueue(jobstore), await enqueue(jobstore)
    assert {j.id for j in await jobstore.claim_due("one", NOW, 10, 30)} == {a, b}
    assert await jobstore.renew("one", {a}, NOW + timedelta(seconds=20), 30) == {a}
    assert await jobstore.renew("two", {b}, NOW + timedelta(seconds=20), 30) == set()   # not two's
    # at 40 s: b's first lease ran out, a's renewed one (to 50 s) holds
    assert [j.id for j in await jobstore.claim_due("two", NOW + timedelta(seconds=40), 10, 30)] == [b]
    assert await jobstore.renew("one", {a, b}, NOW + timedelta(seconds=45), 30) == {a}   # b is two's now
    assert await jobstore.claim_due("two", NOW + timedelta(seconds=60), 10, 30) == []
    assert [j.id for j in await jobstore.claim_due("two", NOW + timedelta(seconds=76), 1, 30)] == [a]   # past 75 s


async def test_apply_with_release_ends_that_owners_lease_in_the_same_write(jobstore: JobStore) -> None:
    """The dispatcher's last change of a submission ends its lease with it (one write a fax fewer
    than apply + release); a lease another owner holds is left, and without ``release`` nothing
    changes."""
    ours, theirs, kept = [await enqueue(jobstore) for _ in range(3)]
    assert {j.id for j in await jobstore.claim_due("one", NOW, 10, 600)} == {ours, theirs, kept}
    for job_id, release in ((ours, "one"), (theirs, "two"), (kept, None)):
        job = await jobstore.get(job_id)
        t = decide(job, Claimed(), NOW, POLICY)
        assert isinstance(t, Transition)
        after = await jobstore.apply(job, t, NOW, release=release)
        assert after.state is JobState.SUBMITTING and after.version == job.version + 1
    assert await jobstore.renew("one", {ours, theirs, kept}, NOW, 600) == {theirs, kept}
    assert [e.event for e in await jobstore.events(ours)] == ["job.queued", "job.submitting"]


async def test_max_in_flight_counts_jobs_at_the_provider_and_those_leased_to_be_sent(jobstore: JobStore) -> None:
    ids = [await enqueue(jobstore, to=f"+1555555{n:04d}") for n in range(5)]
    await jobstore.claim_due("one", NOW, 1, 30)
    await step(jobstore, ids[0], Claimed())                   # at the provider (submitting)
    await jobstore.release(ids[0], "one")
    assert len(await jobstore.claim_due("one", NOW, 10, 30, max_in_flight=3)) == 2   # 1 + 2 leased
    assert await jobstore.claim_due("two", NOW, 10, 30, max_in_flight=3) == []
    assert len(await jobstore.claim_due("two", NOW, 10, 30, max_in_flight=4)) == 1
    assert len(await jobstore.claim_due("two", NOW, 10, 30)) == 1                       # 0: no limit


async def test_one_daemon_alone_leads_every_role_and_keeps_its_outbox_rows(jobstore: JobStore) -> None:
    assert await jobstore.lead("poller") and await jobstore.lead("poller") and await jobstore.lead("balance")
    job_id = await enqueue(jobstore, Source.SMTP)
    await step(jobstore, job_id, Claimed())
    await step(jobstore, job_id, Accepted("5"))
    await step(jobstore, job_id, Status(StatusUpdate("simulator", "5", FaxOutcome.DELIVERED, pages=2, attempts=1)))
    [item] = await jobstore.outbox_due(NOW, ["mail"])
    assert await jobstore.outbox_keep(item.id, NOW + timedelta(seconds=40))


async def test_the_sender_limit_is_counted_as_the_job_commits(jobstore: JobStore) -> None:
    from faxbridge.errors import SenderOverLimit

    await enqueue(jobstore)
    await enqueue(jobstore)                                  # alice@example.com: two jobs
    new = NewJob(source=Source.SMTP, to="+15555551212", document="a.pdf", sender="alice@example.com")
    job_id = new_job_id()
    with pytest.raises(SenderOverLimit):
        await jobstore.enqueue(job_id, new, stage_doc(jobstore, job_id), NOW,
                               sender_limit=(NOW - timedelta(hours=1), 2))
    jobstore.spool.discard_stage(job_id)
    assert len(await jobstore.jobs()) == 2
    made = await jobstore.enqueue(job_id, new, stage_doc(jobstore, job_id), NOW,
                                  sender_limit=(NOW - timedelta(hours=1), 3))
    assert made.sender == "alice@example.com" and len(await jobstore.jobs()) == 3
