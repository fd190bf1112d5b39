"""Live progress on the command line (CONTRACT §13): ``faxbridge send --wait`` and ``faxbridge jobs --watch``.

Both read the job store the running daemon writes (read-only, its own connection), a few times a
second; they never change a job.

- :func:`follow` prints each state change of one job as it happens: on a terminal one line kept
  current in place (state, number, pages, time since queued; ``\\r`` and erase-line), and each
  state it passes kept above it; otherwise one plain line per change (for logs and pipes). It
  returns the final job; ``send --wait`` exits 0 when it was delivered, 1 otherwise with the reason.
- :func:`watch_jobs` redraws the ``faxbridge jobs`` table in place on a terminal until Ctrl-C.

Every value shown comes through :func:`faxbridge.jobview.shown` (no control characters from a file
name or subject reach the terminal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TextIO

from faxbridge.clock import shown_time
from faxbridge.jobview import JOBS_HEADER, job_line, shown
from faxbridge.models import Job, JobEvent, JobState
from faxbridge.store import JobStore

POLL_S = 0.25
ERASE = "\r\x1b[K"          # back to the line's start, erase it
HOME_CLEAR = "\x1b[H\x1b[2J"


def event_line(event: JobEvent) -> str:
    reason = f"  {shown(event.reason)}" if event.reason else ""
    return f"{shown_time(event.at)}  {event.state.value:<10}  {shown(event.event)}{reason}"


def status_line(job: Job, now: datetime) -> str:
    """The one line a terminal shows while waiting: ``submitted  +15555551212  3 pages  12 s``."""
    elapsed = max(0, round((now - job.created_at).total_seconds()))
    note = ""
    if job.state is JobState.QUEUED and job.options.send_at is not None and job.options.send_at > now:
        note = f"  waits until {shown_time(job.options.send_at)}"
    elif job.hold:
        note = "  held: checking the provider's records"
    return f"{job.state.value:<10}  {shown(job.to)}  {job.pages} page{'s' if job.pages != 1 else ''}  {elapsed} s{note}"


async def follow(store: JobStore, job_id: str, out: TextIO, *, tty: bool, now: Callable[[], datetime],
                 poll: float = POLL_S) -> Job:
    """Print ``job_id``'s history as it grows until the job is final; returns the final job."""
    seen = 0
    shown_status = ""
    while True:
        job = await store.get(job_id)
        events = await store.events(job_id)
        fresh = events[seen:]
        seen = len(events)
        if tty:
            if fresh:
                out.write(ERASE + "".join(event_line(e) + "\n" for e in fresh))
                shown_status = ""
            status = status_line(job, now())
            if job.final:
                out.write(ERASE)
            elif status != shown_status:
                out.write(ERASE + status)
                shown_status = status
        else:
            out.write("".join(event_line(e) + "\n" for e in fresh))
        out.flush()
        if job.final:
            return job
        await asyncio.sleep(poll)


async def watch_jobs(store: JobStore, out: TextIO, *, state: JobState | None, limit: int | None,
                     now: Callable[[], datetime], interval: float = 1.0, rounds: int | None = None) -> None:
    """Redraw the jobs table in place every ``interval`` seconds (``rounds``: that many, for tests)."""
    done = 0
    while rounds is None or done < rounds:
        jobs = await store.jobs(state, limit)
        counts = await store.counts()
        summary = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()) if n) or "no jobs"
        out.write(HOME_CLEAR + JOBS_HEADER + "\n" + "".join(job_line(j) + "\n" for j in jobs)
                  + f"\n{summary}; updated {shown_time(now())} (Ctrl-C to stop)\n")
        out.flush()
        done += 1
        if rounds is None or done < rounds:
            await asyncio.sleep(interval)
