"""The polling plan of the adapters whose provider lists faxes by creation time (Phaxio, Sinch).

The list endpoint takes the bulk: the faxes created within ``horizon_s`` are read from it,
created since the oldest of them (1,000 a page: 10,000 in flight cost about 10 requests). Older
ones (a fax found again by reconciliation, one stuck at the provider) are asked for one by one,
at most ``budget`` a cycle and each at most every ``recheck_s``; when there are more of them than
that, the list window is widened to take them in too. A recent fax missing from the list (list
lag) is asked for alone once it is ``lag_s`` old. One fax's lookup failing (404, 429, a 5xx) never
throws away the cycle's list results: each is isolated, and only an account error (a bad key),
which concerns every fax, goes up. A 404 names the fax as unknown to the provider; a 429 ends the
cycle's lookups (the rest are asked for next cycle).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from faxbridge.errors import AccountError, PermanentProviderError, TransientProviderError
from faxbridge.models import FaxOutcome, PendingFax, PollResult, StatusUpdate

log = structlog.get_logger("faxbridge.providers")


class PollPlan:
    def __init__(self, provider: str, *, horizon_s: float, budget: int, lag_s: float, recheck_s: float) -> None:
        self.provider = provider
        self.horizon_s = horizon_s
        self.budget = budget
        self.lag_s = lag_s
        self.recheck_s = recheck_s
        self.checked: dict[str, float] = {}   # provider id → when it was last asked for alone

    def _old(self, pending: Sequence[PendingFax], now: datetime) -> list[PendingFax]:
        return [p for p in pending if (now - p.submitted_at).total_seconds() > self.horizon_s]

    def listed(self, pending: Sequence[PendingFax], now: datetime) -> list[PendingFax]:
        """The faxes to look for in the list."""
        old = self._old(pending, now)
        return [p for p in pending if p not in old] if len(old) <= self.budget else list(pending)

    async def look_up(self, pending: Sequence[PendingFax], found: dict[str, StatusUpdate], now: datetime,
                      status: Callable[[str], Awaitable[StatusUpdate]], counter: list[int]) -> tuple[str, ...]:
        """Ask for the overdue faxes the list did not show, into ``found``; the ids the provider
        says it has no record of."""
        old = self._old(pending, now)
        stamp = now.timestamp()
        overdue = [
            p for p in pending
            if p.provider_id not in found
            and ((now - p.submitted_at).total_seconds() >= self.lag_s or p in old)
            and stamp - self.checked.get(p.provider_id, float("-inf")) >= self.recheck_s
        ]
        overdue.sort(key=lambda p: (self.checked.get(p.provider_id, float("-inf")), p.submitted_at))
        unknown: list[str] = []
        for p in overdue[: self.budget]:
            counter[0] += 1
            self.checked[p.provider_id] = stamp
            try:
                found[p.provider_id] = await status(p.provider_id)
            except AccountError:
                raise
            except (TransientProviderError, PermanentProviderError) as exc:
                log.warning("provider.status_failed", provider=self.provider, provider_id=p.provider_id,
                            job_id=p.job_id, code=exc.code, error=exc.reason)
                if exc.code == "404":
                    unknown.append(p.provider_id)
                if exc.code == "429":
                    break                     # rate limited: ask the rest next cycle
        by_id = {p.provider_id for p in pending}
        for gone in self.checked.keys() - by_id:
            del self.checked[gone]
        return tuple(unknown)


def poll_result(pending: Sequence[PendingFax], found: Mapping[str, StatusUpdate], cursor: str | None,
                requests: int, unknown: tuple[str, ...]) -> PollResult:
    """The updates that say something (not PENDING), each naming its job."""
    jobs = {p.provider_id: p.job_id for p in pending}
    updates = [u if u.job_id else replace(u, job_id=jobs[i])
               for i, u in found.items() if u.outcome is not FaxOutcome.PENDING]
    return PollResult(updates, cursor, requests, unknown=unknown)
