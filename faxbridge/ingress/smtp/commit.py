"""DATA, the daemon's half: the message to a worker (``data.stage_mail``), its plan committed, the reply.

:class:`MailIntake` sends each message to the worker engine and commits what the worker staged
through the :class:`~faxbridge.store.JobStore` (see :mod:`~faxbridge.ingress.smtp.data` for the whole
DATA decision and its answers), so the event loop only moves bytes and awaits.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from faxbridge import crashpoints, intake
from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.errors import DuplicateJob, SenderOverLimit, StoreError
from faxbridge.ingress.smtp.data import DEDUP_WINDOW, MailPlan, mail_settings, stage_mail
from faxbridge.ingress.smtp.policy import Recipient
from faxbridge.ingress.smtp.replies import INTERNAL_ERROR, OUR_TROUBLE, TOO_MUCH_WORK, queued, rate_limited
from faxbridge.store import JobStore, new_job_id
from faxbridge.workers import Engine, Shared, TooMuchWork, WorkerLost

log = structlog.get_logger("faxbridge.smtp")

_REFUSED_WORK = {INTERNAL_ERROR: "bug", TOO_MUCH_WORK: "too_much_work"}

HeaderLimit = Callable[[Config], "int | None"]
"""The provider's fax header length for a configuration, or None when the configuration fixes the
header text (then no job carries one): given to :class:`MailIntake` by whoever builds it."""


class MailIntake:
    """Turns one received message into jobs; ``accept`` returns the SMTP reply for DATA.

    The message goes to a worker process (:func:`stage_mail` on the ``engine``), the plan it
    answers is committed here through the store, so the event loop only moves bytes and awaits.
    ``header_limit`` gives the provider's fax header length for a configuration (or None when the
    configuration fixes the header): the caller knows the provider, ingress does not.
    """

    def __init__(self, cfg: Config, engine: Engine, clock: Clock, *, header_limit: HeaderLimit) -> None:
        self.cfg = cfg
        self.engine = engine
        self.clock = clock
        self.header_limit = header_limit
        self.settings = Shared(mail_settings(cfg, header_limit(cfg)))   # pickled once, not per message
        self.work: Callable[..., MailPlan | str] = stage_mail     # what a worker runs for each message
        # Called with "bug" (INTERNAL_ERROR) or "too_much_work" (TOO_MUCH_WORK) for each such reply,
        # in the daemon's process whichever worker made it: the daemon counts them in a metric.
        self.on_refused_work: Callable[[str], None] = lambda kind: None

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.settings = Shared(mail_settings(cfg, self.header_limit(cfg)))

    async def accept(self, store: JobStore, sender: str, recipients: Sequence[Recipient], raw: bytes | Path,
                     extra_meta: dict[str, Any] | None = None) -> str:
        """The reply to DATA; ``raw`` is the message, or the file a big one was spooled to."""
        reply = await self._accept(store, sender, recipients, raw, extra_meta or {})
        if reply in _REFUSED_WORK:
            self.on_refused_work(_REFUSED_WORK[reply])
        return reply

    async def _accept(self, store: JobStore, sender: str, recipients: Sequence[Recipient], raw: bytes | Path,
                      extra_meta: dict[str, Any]) -> str:
        spool = store.spool
        job_ids = [new_job_id() for _ in recipients]
        message: Path | pickle.PickleBuffer = raw if isinstance(raw, Path) else pickle.PickleBuffer(raw)
        answered = False
        try:
            plan = await self.engine.run(self.work, self.settings, spool, sender, list(recipients), message,
                                         extra_meta, job_ids)
            answered = True
        except TooMuchWork as exc:
            log.warning("smtp.too_much_work", error=f"{type(exc).__name__}: {exc}", sender=sender)
            return TOO_MUCH_WORK
        except WorkerLost as exc:
            log.error("smtp.intake_worker_lost", error=str(exc), sender=sender)
            return OUR_TROUBLE
        except Exception as exc:   # the client hears 451 and keeps its mail; never a silent loss
            log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender, exc_info=exc)
            return OUR_TROUBLE
        finally:
            if not answered:       # the worker may have left staged documents behind: not kept
                for job_id in job_ids:
                    spool.discard_stage(job_id)
        if isinstance(plan, str):
            return plan
        return await self.commit(store, sender, plan)

    async def commit(self, store: JobStore, sender: str, plan: MailPlan) -> str:
        """Each staged job committed (a duplicate of an earlier copy is not); the 250 reply naming
        them, or 451 for our trouble (what was committed stays: the retry finds it)."""
        made: list[str] = []
        duplicates: list[str] = []
        pending = list(plan.staged)
        try:
            while pending:
                item = pending.pop(0)
                try:
                    job = await intake.commit_staged(store, self.clock, item, dedup_window=DEDUP_WINDOW,
                                                     sender_limit=self.cfg.limits.per_sender_per_hour)
                except SenderOverLimit as over:   # another daemon (or session) took this sender's last place
                    log.info("smtp.rate_limited", sender=sender, limit=over.limit, jobs=made)
                    return rate_limited(over.limit)
                except DuplicateJob as dup:   # sent before, or the same mail on another connection just now
                    duplicates.append(dup.job_id)
                    log.info("smtp.duplicate", job_id=dup.job_id, to=item.new.to,
                             message_id=item.new.meta.get("message_id"))
                    continue
                made.append(job.id)
                crashpoints.hit("smtp.job_committed")
        except (StoreError, OSError) as exc:
            log.error("smtp.intake_failed", error=f"{type(exc).__name__}: {exc}", sender=sender)
            return OUR_TROUBLE
        finally:
            for item in pending:       # not committed (our trouble): not left behind
                store.spool.discard_stage(item.job_id)
        log.info("smtp.accepted", jobs=made, duplicates=duplicates, sender=sender)
        return queued(made, duplicates)
