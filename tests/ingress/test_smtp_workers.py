"""Mail intake on the worker engine (``faxbridge.workers``), exactly as the daemon runs it.

A real smtplib client against the real listener on a real store, the intake done in real worker
processes: the same mail on several connections at once makes one job; workers start when mail
comes and leave after ``limits.worker_idle``; a worker that dies (idle, or with a message in hand)
costs at most that message a 451, never a lost or doubled job; a message over the CPU cap is
554 5.3.4 and the next one goes through; a new configuration reaches the workers; closing leaves none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

from faxbridge.config import Config
from faxbridge.ingress.smtp.replies import OUR_TROUBLE, TOO_MUCH_WORK
from faxbridge.store import Store
from tests.conftest import async_wait_until
from tests.ingress.mailkit import asend, config_of, listening, pdf_bytes, scanner, smtp_settings, with_attachment
from tests.support import process_tree, running

SENDER = "scanner@office.example"
TO = ["15555551212@fax.local"]


def jobs(store: Store) -> int:
    return sum(store.counts().values())


def with_limits(cfg: Config, **limits: object) -> Config:
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))


def children() -> set[int]:
    """This test process's child processes (the engine's workers; nothing else here starts any)."""
    return set(process_tree(os.getpid())[1:])


async def test_a_mail_through_a_worker_process_is_a_durable_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        answers = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, pages=2), message_id=True))
        assert [a.code for a in answers] == [250, 250, 250]
        assert answers[-1].text.startswith("2.0.0 Queued as job ")
        job_id = answers[-1].text.removeprefix("2.0.0 Queued as job ")
        job = bench.store.get(job_id)
        assert (job.to, job.pages, job.state.value) == ("+15555551212", 3, "queued")   # cover page + 2
        assert bench.store.document_path(job_id).is_file()
        pids = bench.engine.pids()
        assert pids and os.getpid() not in pids    # the work was done in another process
        assert list(bench.store.staging.iterdir()) == []


async def test_workers_start_when_mail_comes_and_leave_when_idle(tmp_path: Path) -> None:
    cfg = with_limits(config_of(tmp_path, smtp_settings(tmp_path)), worker_idle=1.0)
    before = children()
    async with listening(cfg) as bench:
        assert bench.engine.pids() == [] and children() == before       # at rest: no worker at all
        mails = [scanner(pdf_bytes(tmp_path, name=f"{i}.pdf", text=f"{i}.pdf")) for i in range(3)]
        results = await asyncio.gather(*(asend(bench.address, SENDER, TO, m) for m in mails))
        assert [r[-1].code for r in results] == [250, 250, 250]
        started = set(bench.engine.pids())
        assert started and started <= children() - before
        assert len(started) <= bench.engine.size <= len(os.sched_getaffinity(0))
        await async_wait_until(lambda: children() == before, timeout=30)   # idle 1 s: gone, reaped
        assert bench.engine.pids() == [] and not any(running(p) for p in started)
        again = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="4.pdf", text="4.pdf")))
        assert again[-1].code == 250                                     # a new one for the next mail
        assert set(bench.engine.pids()).isdisjoint(started)
        assert jobs(bench.store) == 4


async def test_the_same_mail_on_six_connections_at_once_makes_one_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    message = scanner(pdf_bytes(tmp_path), message_id=True)
    async with listening(cfg) as bench:
        results = await asyncio.gather(*(asend(bench.address, SENDER, TO, message) for _ in range(6)))
        finals = [answers[-1] for answers in results]
        assert all(a.code == 250 for a in finals), finals
        queued = [a.text for a in finals if "Queued as job" in a.text]
        assert len(queued) == 1, finals
        job_id = queued[0].removeprefix("2.0.0 Queued as job ")
        assert all(a.text == f"2.0.0 Duplicate of job {job_id}: already received, not faxed again"
                   for a in finals if a.text != queued[0]), finals
        assert jobs(bench.store) == 1
        assert [p.name for p in bench.store.spool.iterdir() if p.name != ".staging"] == [job_id]
        assert list(bench.store.staging.iterdir()) == []                 # the copies staged: removed


async def test_an_idle_worker_that_died_is_replaced_without_a_refusal(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        first = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="a.pdf", text="a.pdf")))
        assert first[-1].code == 250
        workers = bench.engine.pids()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        # gone for the engine too: reaped (a killed process's last thread may outlive its zombie leader)
        await async_wait_until(lambda: not set(bench.engine.pids()) & set(workers), timeout=10)
        second = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="b.pdf", text="b.pdf")))
        assert second[-1].code == 250, second[-1]
        assert jobs(bench.store) == 2
        assert not set(bench.engine.pids()) & set(workers)


async def test_a_worker_killed_with_the_message_in_hand_gives_451_and_the_resend_one_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    message = scanner(pdf_bytes(tmp_path), message_id=True)
    async with listening(cfg) as bench:
        bench.engine.size = 1
        warm = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="warm.pdf", text="warm.pdf")))
        assert warm[-1].code == 250
        [worker] = bench.engine.pids()
        os.kill(worker, signal.SIGSTOP)                      # it cannot read the message...
        sending = asyncio.ensure_future(asend(bench.address, SENDER, TO, message))
        await async_wait_until(lambda: bench.listener.handler.busy == 1, timeout=10)
        os.kill(worker, signal.SIGKILL)                      # ...and dies with it in hand
        answers = await asyncio.wait_for(sending, 30)
        assert answers[-1].line == OUR_TROUBLE
        assert jobs(bench.store) == 1                        # the warm-up only
        await async_wait_until(lambda: list(bench.store.staging.iterdir()) == [], timeout=10)
        again = await asend(bench.address, SENDER, TO, message)   # the client sends it again
        assert again[-1].code == 250 and "Queued as job" in again[-1].text
        assert jobs(bench.store) == 2
        assert worker not in bench.engine.pids() and len(bench.engine.pids()) == 1


async def test_a_mail_over_the_cpu_cap_is_554_and_the_next_one_goes_through(tmp_path: Path) -> None:
    cfg = with_limits(config_of(tmp_path, smtp_settings(tmp_path)), job_cpu=1.0)
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    report = with_attachment(line * 60 * 180, name="report.txt", ctype="text/plain",   # ~180 pages: > 1 s
                             message_id="<heavy@example.com>")
    async with listening(cfg) as bench:
        refused: list[str] = []
        bench.listener.handler.intake.on_refused_work = refused.append
        heavy = await asend(bench.address, SENDER, TO, report)
        assert heavy[-1].line == TOO_MUCH_WORK
        assert refused == ["too_much_work"] and jobs(bench.store) == 0
        good = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path), message_id=True))
        assert good[-1].code == 250 and "Queued as job" in good[-1].text
        assert jobs(bench.store) == 1
        assert list(bench.store.staging.iterdir()) == []


async def test_a_new_configuration_reaches_the_workers(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg) as bench:
        three = scanner(pdf_bytes(tmp_path, pages=3, name="a.pdf", text="a.pdf"))
        before = await asend(bench.address, SENDER, TO, three)
        assert before[-1].code == 250
        bench.listener.reconfigure(dataclasses.replace(cfg, numbers=dataclasses.replace(cfg.numbers, max_pages=2)))
        three_more = scanner(pdf_bytes(tmp_path, pages=3, name="b.pdf", text="b.pdf"))
        after = await asend(bench.address, SENDER, TO, three_more)
        assert after[-1].line == ("554 5.3.4 Too many pages: Scan_0001.pdf has 3 pages; the limit is 2")
        assert jobs(bench.store) == 1


async def test_closing_the_listener_stops_every_worker(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    before = children()
    async with listening(cfg) as bench:
        mails = [scanner(pdf_bytes(tmp_path, name=f"{i}.pdf", text=f"{i}.pdf")) for i in range(3)]
        await asyncio.gather(*(asend(bench.address, SENDER, TO, m) for m in mails))
        workers = bench.engine.pids()
        assert workers
    assert children() == before and not any(running(p) for p in workers)
