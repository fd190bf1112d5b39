"""Claim: a picked file (and its control files) into the processing area, durable; and after a crash,
the claims left behind.

:class:`Claimer` is the intake's side of the processing area (the file moves themselves are
:mod:`~faxbridge.ingress.folder.claims`', by descriptor; reading a claimed file is
:mod:`~faxbridge.ingress.folder.claimed`'s):

- :meth:`Claimer.take` renames a pick into a fresh claim (not yet fsynced: a round's claims are
  made durable together by :meth:`Claimer.make_durable`, every folder they touched fsynced once);
- :meth:`Claimer.contents`, :meth:`Claimer.control`, :meth:`Claimer.stat` and
  :meth:`Claimer.copy_out` read what a claim holds for the commit step: its document and control
  files, the control file parsed (:mod:`~faxbridge.ingress.folder.control`), the document checked
  through one descriptor opened without following links;
- :meth:`Claimer.leftovers` is start-up's (and a retry's) look at the processing area: a claim that
  already has its job (``dedup_key``, asked of the job store) is the result writer's; control files
  without their document are given back; an empty claim is removed; a claim that cannot even be
  listed is quarantined; the others are answered, to be made jobs now.

Trouble on our side sets :class:`Retry`: the processing area is reconciled again in ``RETRY_S``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import structlog

from faxbridge.clock import Clock
from faxbridge.ingress.folder import claimed, claims
from faxbridge.ingress.folder.bridge import LoopStore
from faxbridge.ingress.folder.control import Control
from faxbridge.ingress.folder.scan import Pick

log = structlog.get_logger("faxbridge.folder")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RETRY_S = 5.0


class Retry:
    """When the processing area is to be reconciled again (after trouble on our side)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.at: float | None = None

    def soon(self) -> None:
        self.at = self.clock.monotonic() + RETRY_S

    def due(self, now: float) -> bool:
        """Is it time? (Answered once: the retry is cleared.)"""
        if self.at is None or now < self.at:
            return False
        self.at = None
        return True


class Claimer:
    """The processing area of one ``[[watch]]`` (used from one thread)."""

    def __init__(self, root: Path, store: LoopStore, retry: Retry) -> None:
        self.root = root
        self.area = claims.processing_dir(root)
        self.store = store
        self.retry = retry
        self.on_quarantined: Callable[[str], None] = lambda claim_id: None

    # ---- claiming ---------------------------------------------------------------------------

    def take(self, claim_id: str, pick: Pick) -> bool:
        """Rename the pick into claim ``claim_id``; False when it was renamed or removed meanwhile
        (its new name is seen anew). ``OSError``: logged, retried later (reconcile gives back a
        half claim); the caller looks at the files again."""
        try:
            return claims.claim(self.root, claim_id, pick.rel, pick.controls, sync=False)
        except OSError as exc:
            log.error("folder.claim_failed", file=str(pick.rel), watch=str(self.root), error=str(exc))
            self.retry.soon()
            raise

    def make_durable(self, taken: list[tuple[str, PurePosixPath]]) -> bool:
        """fsync every folder the claims touched, once. False (logged, retried later) on trouble:
        reconcile syncs and finishes them."""
        try:
            claims.sync_claims(self.root, taken)
        except OSError as exc:
            log.error("folder.claim_failed", files=len(taken), watch=str(self.root), error=str(exc))
            self.retry.soon()
            return False
        return True

    # ---- what a claim holds -----------------------------------------------------------------

    def contents(self, claim_id: str) -> tuple[PurePosixPath, list[PurePosixPath]]:
        """The claimed document and its control files; ``OSError`` when it holds no document."""
        document, controls = claims.list_claim(self.root, claim_id)
        if document is None:
            raise OSError(f"claim {claim_id} holds no document")
        return document, controls

    def control(self, claim_id: str, controls: list[PurePosixPath]) -> Control | None:
        return claimed.control(self.root, claim_id, controls)

    def stat(self, claim_id: str, document: PurePosixPath) -> os.stat_result:
        return claimed.stat_of(self.root, claim_id, document)

    def copy_out(self, claim_id: str, document: PurePosixPath, copy: Path, max_size: int) -> None:
        claimed.copy_out(self.root, claim_id, document, copy, max_size)

    def quarantine(self, claim_id: str, reason: str) -> bool:
        """Move a claim nothing can be made of out of the processing area, with its reason."""
        try:
            where = claims.quarantine(self.root, claim_id, reason)
        except OSError as exc:
            log.error("folder.quarantine_failed", claim=claim_id, watch=str(self.root), error=str(exc))
            return False
        self.on_quarantined(claim_id)
        log.error("folder.claim_quarantined", claim=claim_id, watch=str(self.root), moved_to=str(where),
                  reason=reason[:500])
        return True

    # ---- after a crash ----------------------------------------------------------------------

    def leftovers(self) -> list[tuple[str, PurePosixPath]]:
        """The claims in the processing area still to be made jobs: (claim id, document), in order.
        Settles the rest (see the module's docstring). A store error is raised (the caller's
        round fails, and is tried again)."""
        try:
            entries = sorted(os.listdir(self.area))
        except FileNotFoundError:
            return []
        resumed: list[tuple[str, PurePosixPath]] = []
        for claim_id in entries:
            folder = self.area / claim_id
            if claim_id.startswith(".") or not folder.is_dir() or folder.is_symlink():
                continue
            if self.store.find_duplicate(claims.dedup_key(claim_id), EPOCH) is not None:
                continue                      # it has its job: the result writer finishes it
            try:
                document, controls = claims.list_claim(self.root, claim_id)
                if document is None:
                    returned = claims.give_back(self.root, claim_id) if controls else []
                    if not controls:
                        claims.remove_claim(self.root, claim_id)
                    log.info("folder.claim_undone", claim=claim_id, watch=str(self.root),
                             returned=[str(r) for r in returned])
                    continue
            except Exception as exc:                  # start-up goes on without this claim
                self.quarantine(claim_id, f"{type(exc).__name__}: {exc}")
                continue
            log.info("folder.claim_resumed", claim=claim_id, file=str(document), watch=str(self.root))
            resumed.append((claim_id, document))
        return resumed
