"""Folder intake: one watched folder's rounds, from a file to a committed job, exactly once.

One :class:`FolderIntake` per ``[[watch]]``, used from ONE thread (the watcher's worker thread): it
is told which paths changed, and on each :meth:`~FolderIntake.tick` takes the files that are ready,
as one round of three steps, each a module with one job::

    scan (scan.Scanner)      the files due: discovery, settling (injected clock), readiness
      │                      (content checks started on the pool, a future per file)
      ▼
    claim (claim.Claimer)    each into the processing area; then every touched folder fsynced once
      │                      (no job is committed before its claim is durable)
      ▼
    commit (commit.Committer) each claim planned and its document staged on the pool (a future
                             per document, started as soon as it is claimed); rejections
                             committed, then the round's jobs in ONE transaction of the daemon's
                             JobStore (reached from this thread through bridge.LoopStore)

so that a burst costs a few fsyncs and one commit per round rather than per file. Either way the
job owes a result file (outbox kind "sidecar"; :mod:`faxbridge.ingress.folder.results`). Trouble on
our side (disk full, database busy) leaves a claim where it is; it is tried again later (and at
every start-up, by :meth:`FolderIntake.reconcile`). The pure content work
(:mod:`faxbridge.ingress.folder.content`) runs in the ``pool`` of worker processes when there is
one, in this thread otherwise.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path, PurePosixPath

from faxbridge import crashpoints
from faxbridge.clock import Clock
from faxbridge.config import NumbersConfig, WatchConfig
from faxbridge.documents import DEFAULT_MAX_DECOMPRESSED, OfficeSettings
from faxbridge.ingress.folder import safedir
from faxbridge.ingress.folder.bridge import LoopStore
from faxbridge.ingress.folder.claim import Claimer, Retry
from faxbridge.ingress.folder.commit import Committer, Offload, Started, Work
from faxbridge.ingress.folder.content import incomplete
from faxbridge.ingress.folder.scan import Pick, Scanner, default_incomplete_after
from faxbridge.ingress.folder.settle import SettleTracker
from faxbridge.store import JobStore, new_job_id


@dataclass(frozen=True)
class TickResult:
    finished: int            # claims that became jobs (queued or rejected) in this tick
    more: bool               # files were left due: tick again at once
    next_in: float | None    # seconds until the next file falls due


class FolderIntake:
    def __init__(self, watch: WatchConfig, store: JobStore, clock: Clock, numbers: NumbersConfig, *,
                 loop: asyncio.AbstractEventLoop, incomplete_after: float | None = None,
                 pool: Executor | None = None, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
                 office: OfficeSettings | None = None, zone: tzinfo = UTC) -> None:
        """``store``: the daemon's JobStore, living on ``loop`` (this intake runs in another thread);
        ``pool``: where content checks and document copies run (None: in this thread)."""
        self.watch = watch
        self.root = watch.path
        self.clock = clock
        bridge = LoopStore(store, loop)
        self.retry = Retry(clock)
        self.offload = Offload(pool, watch.path)
        self.scan = Scanner(watch, SettleTracker(watch.settle, incomplete_after
                                                 or default_incomplete_after(watch.settle)))
        self.claims = Claimer(watch.path, bridge, self.retry)
        self.commit = Committer(watch, bridge, clock, numbers, self.claims, self.offload, self.retry,
                                max_decompressed=max_decompressed, office=office, zone=zone)

    # ---- what the watcher sets and calls ---------------------------------------------------------

    @property
    def numbers(self) -> NumbersConfig:
        return self.commit.numbers

    @numbers.setter
    def numbers(self, numbers: NumbersConfig) -> None:   # SIGHUP: the next file's number policy
        self.commit.numbers = numbers

    @property
    def on_result(self) -> Callable[[str], None]:
        return self.commit.on_result

    @on_result.setter
    def on_result(self, fn: Callable[[str], None]) -> None:          # metrics: "accepted" | "rejected"
        self.commit.on_result = fn

    @property
    def on_folder(self) -> Callable[[Path], None]:
        return self.scan.on_folder

    @on_folder.setter
    def on_folder(self, fn: Callable[[Path], None]) -> None:         # a folder a sweep visited
        self.scan.on_folder = fn

    @property
    def on_swept(self) -> Callable[[set[Path]], None]:
        return self.scan.on_swept

    @on_swept.setter
    def on_swept(self, fn: Callable[[set[Path]], None]) -> None:     # every folder, after a full sweep
        self.scan.on_swept = fn

    def retry_soon(self) -> None:
        """Something failed on our side: the processing area is reconciled again in a moment."""
        self.retry.soon()

    def prepare_folders(self) -> None:
        for folder in (self.root, self.watch.results, self.watch.done, self.watch.failed):
            folder.mkdir(parents=True, exist_ok=True)
        os.close(safedir.open_area(self.root, repair=True))     # made 0700, checked (claims.py)

    def sweep(self, under: Path | None = None) -> int:
        """Look at every file in the folder (or a subfolder just moved in). Returns files seen."""
        return self.scan.sweep(self.clock.monotonic(), under)

    def observe(self, paths: Iterable[Path]) -> None:
        """These paths may have changed: look at them now."""
        self.scan.observe(paths, self.clock.monotonic())

    # ---- the round -------------------------------------------------------------------------------

    def tick(self, changed: Iterable[Path] = (), limit: int = 100) -> TickResult:
        """Take the files that are due, as one round: scan, claim, commit."""
        with safedir.one_check_per_round():
            return self._tick(changed, limit)

    def _tick(self, changed: Iterable[Path], limit: int) -> TickResult:
        self.observe(changed)
        now = self.clock.monotonic()
        self.scan.refresh(now)
        finished = 0
        if self.retry.due(now):
            finished += self.reconcile()
        picks, more = self.scan.picks(now, limit)
        finished += self._take(picks)
        return TickResult(finished, more, self.scan.next_due_in(self.clock.monotonic()))

    def _take(self, picks: list[Pick]) -> int:
        """Claim the picked files (those still being written wait), start staging each claim's
        document at once (in the pool, while the next file is claimed), make the claims durable
        (each folder fsynced once), then commit. No job is committed before its claim is durable."""
        checks: dict[PurePosixPath, Work[str | None]] = {
            p.rel: self.offload.submit(incomplete, self.root / p.rel, p.rel.name) for p in picks if p.check}
        taken: list[tuple[str, PurePosixPath]] = []
        started: list[Started] = []
        for pick in picks:
            if pick.check:
                found = self.offload.outcome(checks[pick.rel])
                why = f"{pick.rel.name} cannot be read: {found}" if isinstance(found, BaseException) else found
                if why is not None:
                    self.scan.incomplete(pick, why)
                    continue
                self.scan.forget(pick)
            claim_id = new_job_id()
            try:
                if not self.claims.take(claim_id, pick):
                    continue                      # renamed or removed meanwhile: its new name is seen anew
            except OSError:
                self.scan.look_again(pick, self.clock.monotonic())
                continue
            taken.append((claim_id, pick.rel))
            started.append(self.commit.start(claim_id, pick.reject))
        if not taken:
            return 0
        if not self.claims.make_durable(taken):
            self.commit.discard(started)
            return 0
        crashpoints.hit("folder.claimed")
        return self.commit.complete(started)

    # ---- after a crash ---------------------------------------------------------------------------

    def reconcile(self, batch: int = 100) -> int:
        """Settle every claim left in the processing area. Returns claims that became jobs now."""
        resumed = self.claims.leftovers()
        finished = 0
        for at in range(0, len(resumed), batch):
            round_ = resumed[at:at + batch]
            if self.claims.make_durable(round_):      # a claim left unsynced is made durable first
                finished += self.commit.finish([claim_id for claim_id, _ in round_])
        return finished
