"""Mail intake in worker processes (``ingress.intake_procs``), as the daemon runs it.

A real smtplib client against the real listener on a real store, the intake done in real spawned
worker processes: replies and jobs as with threads; the same mail on several connections at once
makes one job; a worker that dies (idle, or with a message in hand) costs at most that message a
451, never a lost or doubled job; a new configuration reaches the workers; closing leaves none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

from faxbridge.ingress.intake_procs import IntakeProcesses
from faxbridge.ingress.smtp.data import OUR_TROUBLE
from faxbridge.store import Store
from tests.conftest import async_wait_until
from tests.ingress.mailkit import Bench, asend, config_of, listening, pdf_bytes, scanner, smtp_settings

SENDER = "scanner@office.example"
TO = ["15555551212@fax.local"]


def processes(bench: Bench) -> IntakeProcesses:
    found = bench.listener.handler.intake.processes
    assert found is not None
    return found


def jobs(store: Store) -> int:
    return sum(store.counts().values())


async def test_a_mail_through_a_worker_process_is_a_durable_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg, processes=True) as bench:
        answers = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, pages=2), message_id=True))
        assert [a.code for a in answers] == [250, 250, 250]
        assert answers[-1].text.startswith("2.0.0 Queued as job ")
        job_id = answers[-1].text.removeprefix("2.0.0 Queued as job ")
        job = bench.store.get(job_id)
        assert (job.to, job.pages, job.state.value) == ("+15555551212", 3, "queued")   # cover page + 2
        assert bench.store.document_path(job_id).is_file()
        pids = [w.process.pid for w in processes(bench)._all]
        assert pids and os.getpid() not in pids    # the work was done in another process


async def test_the_same_mail_on_six_connections_at_once_makes_one_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    message = scanner(pdf_bytes(tmp_path), message_id=True)
    async with listening(cfg, processes=True) as bench:
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


async def test_an_idle_worker_that_died_is_replaced_without_a_refusal(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg, processes=True) as bench:
        first = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="a.pdf", text="a.pdf")))
        assert first[-1].code == 250
        workers = list(processes(bench)._all)
        for w in workers:
            os.kill(w.process.pid, signal.SIGKILL)
        await async_wait_until(lambda: all(w.process.poll() is not None for w in workers), timeout=10)
        second = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="b.pdf", text="b.pdf")))
        assert second[-1].code == 250, second[-1]
        assert jobs(bench.store) == 2
        assert not {w.process.pid for w in processes(bench)._all} & {w.process.pid for w in workers}


async def test_a_worker_killed_with_the_message_in_hand_gives_451_and_the_resend_one_job(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    message = scanner(pdf_bytes(tmp_path), message_id=True)
    async with listening(cfg, processes=True) as bench:
        pool = processes(bench)
        pool.size = 1
        warm = await asend(bench.address, SENDER, TO, scanner(pdf_bytes(tmp_path, name="warm.pdf", text="warm.pdf")))
        assert warm[-1].code == 250
        [worker] = pool._all
        os.kill(worker.process.pid, signal.SIGSTOP)          # it cannot read the message...
        sending = asyncio.ensure_future(asend(bench.address, SENDER, TO, message))
        await async_wait_until(lambda: bench.listener.handler.busy == 1, timeout=10)
        os.kill(worker.process.pid, signal.SIGKILL)          # ...and dies with it in hand
        answers = await asyncio.wait_for(sending, 30)
        assert answers[-1].line == OUR_TROUBLE
        assert jobs(bench.store) == 1                        # the warm-up only
        again = await asend(bench.address, SENDER, TO, message)   # the client sends it again
        assert again[-1].code == 250 and "Queued as job" in again[-1].text
        assert jobs(bench.store) == 2
        assert worker not in pool._all and len(pool._all) == 1


async def test_a_new_configuration_reaches_the_workers(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, smtp_settings(tmp_path))
    async with listening(cfg, processes=True) as bench:
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
    async with listening(cfg, processes=True) as bench:
        mails = [scanner(pdf_bytes(tmp_path, name=f"{i}.pdf", text=f"{i}.pdf")) for i in range(3)]
        await asyncio.gather(*(asend(bench.address, SENDER, TO, m) for m in mails))
        workers = list(processes(bench)._all)
        assert workers
    assert all(w.process.returncode == 0 for w in workers), [w.process.returncode for w in workers]
