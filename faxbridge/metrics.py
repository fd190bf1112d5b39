"""Prometheus metrics: one :class:`Metrics` per daemon, on its own ``CollectorRegistry``.

Nothing is registered on prometheus-client's global default registry, so two daemons in one
process (tests) never share or clash. Two kinds of metric live here:

- pushed: counters and gauges that a part updates as things happen (webhook verification
  failures, the provider balance). They are attributes of :class:`Metrics`; another part adds
  its own with :meth:`Metrics.counter` / :meth:`Metrics.gauge` / :meth:`Metrics.histogram`.
- pulled: values read at scrape time from the parts that already know them (jobs by state
  from the store, jobs in flight, the poller's request counts), through :meth:`Metrics.on_scrape`.
  Nothing has to remember to keep them up to date, and they are right after a restart.
  What only the store knows is read asynchronously just before the scrape (:meth:`Metrics.refresh`
  awaits the readers given to :meth:`Metrics.on_refresh`, which fill values the gauges then read):
  a scrape never waits on the store on the event loop. A store that does not answer within
  ``REFRESH_S`` leaves the last values read (logged once per stall).

``GET /metrics`` awaits :meth:`Metrics.refresh`, then serves :meth:`Metrics.render`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faxbridge.models import Job, JobState
from faxbridge.states import OVERDUE_S

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "faxbridge_"
REFRESH_S = 10.0         # a scrape waits this long at most for the store's numbers

log = structlog.get_logger("faxbridge.metrics")

Sample = tuple[Sequence[str], float]
"""One labelled value of a scrape-time gauge: (label values, value)."""


class _ScrapeGauge(Collector):
    """A gauge whose samples a function returns at scrape time."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 read: Callable[[], Iterable[Sample]]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.read = read

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.read():
            family.add_metric(list(labels), value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._stalled = False
        self.webhooks = self.counter(
            "webhooks_total", "Provider webhooks received, by provider and result "
            "(applied, ignored, rejected, unknown, error)", ["provider", "result"])
        self.webhook_rejected = self.counter(
            "webhook_verification_failures_total",
            "Webhooks refused with 403: bad signature, wrong token, unknown fax", ["provider", "why"])
        self.balance = self.gauge("provider_balance", "The provider account balance, in currency units",
                                  ["provider"])
        self.balance_low = self.gauge(
            "provider_balance_low", "1 when the balance is below provider.low_balance, else 0", ["provider"])
        self.submissions = self.counter(
            "submissions_total",
            "Provider submissions by outcome (accepted, transient, unknown, refused, failed, account)",
            ["provider", "outcome"])
        self.final_seconds = self.histogram(
            "job_final_seconds", "Seconds from a job's creation to its final state, by final state", ["state"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400))
        self.provider_request_seconds = self.histogram(
            "provider_request_seconds", "Provider HTTP request latency, by result (2xx, 4xx, 5xx, error)",
            ["provider", "result"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.smtp_replies = self.counter("smtp_replies_total", "SMTP replies sent, by reply code", ["code"])
        self.folder_files = self.counter(
            "folder_files_total", "Files taken from watched folders, by result (accepted, rejected)", ["result"])
        self.loop_restarts = self.counter(
            "loop_restarts_total", "Background loops that died and were restarted, by loop", ["loop"])

    def loop_restarted(self, loop: str, error: BaseException) -> None:
        """A :class:`faxbridge.loops.Supervisor` ``on_restart``: count the loop's death."""
        self.loop_restarts.labels(loop).inc()

    # ---- for other parts to add their own -------------------------------------------------

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(PREFIX + name, documentation, list(labels), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, documentation, list(labels), registry=self.registry)

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> Histogram:
        return Histogram(PREFIX + name, documentation, list(labels), registry=self.registry,
                         buckets=tuple(buckets))

    def on_scrape(self, name: str, documentation: str, labels: Sequence[str],
                  read: Callable[[], Iterable[Sample]]) -> None:
        """A gauge read from ``read()`` at each scrape (it must be cheap and must not block long)."""
        self.registry.register(_ScrapeGauge(PREFIX + name, documentation, labels, read))

    def on_refresh(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """A coroutine function awaited before each scrape (it reads what its gauges show)."""
        self._refreshers.append(refresh)

    async def refresh(self, timeout: float = REFRESH_S) -> None:
        """Await every refresher, for ``timeout`` seconds at most; on failure or timeout the
        gauges keep the values last read."""
        if not self._refreshers:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(refresh() for refresh in self._refreshers))
        except Exception as exc:     # a stalled or failing store: last values, said once
            if not self._stalled:
                log.warning("metrics.refresh_failed", error=repr(exc), timeout_s=timeout)
            self._stalled = True
        else:
            self._stalled = False

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ---- the scrape-time gauges of the core parts ---------------------------------------------------


class _Store(Protocol):
    async def counts(self) -> dict[str, int]: ...

    async def in_flight(self) -> int: ...

    async def outbox_backlog(self) -> int: ...

    async def overdue(self, submitted_before: datetime) -> int: ...


class _Tracker(Protocol):
    cycles: int
    requests: int
    last_requests: int
    last_pending: int
    last_cpu_s: float


def watch_core(metrics: Metrics, store: _Store, tracker: _Tracker, provider: str, *,
               trackers: Mapping[str, _Tracker] | None = None) -> None:
    """Register the gauges read from the store (refreshed before each scrape) and the pollers: the
    one ``tracker`` of ``provider``, or with ``trackers`` one per provider (by name)."""
    polled = dict(trackers) if trackers else {provider: tracker}
    read = _StoreNumbers(store)
    metrics.on_refresh(read.refresh)

    def by_state() -> Iterable[Sample]:
        return [((state.value,), float(read.counts.get(state.value, 0))) for state in JobState]

    metrics.on_scrape("jobs", "Jobs in the store, by state", ["state"], by_state)
    metrics.on_scrape("jobs_in_flight", "Jobs submitting or submitted (not final)", [],
                      lambda: [((), float(read.in_flight))])
    metrics.on_scrape("jobs_overdue", "Jobs overdue at the provider: accepted over a day ago and not final, "
                      "or unknown to the provider", [], lambda: [((), float(read.overdue))])
    metrics.on_scrape("outbox_backlog", "Notifications (reply mail, result files) not delivered yet", [],
                      lambda: [((), float(read.outbox_backlog))])
    metrics.on_scrape("poll_requests_last_cycle", "Provider requests the last status poll cycle cost",
                      ["provider"], lambda: [((p,), float(t.last_requests)) for p, t in polled.items()])
    metrics.on_scrape("poll_pending_last_cycle", "Faxes the last status poll cycle asked about",
                      ["provider"], lambda: [((p,), float(t.last_pending)) for p, t in polled.items()])
    metrics.on_scrape("poll_cpu_seconds_last_cycle", "Process CPU seconds the last status poll cycle used",
                      ["provider"], lambda: [((p,), t.last_cpu_s) for p, t in polled.items()])
    metrics.on_scrape("poll_cycles", "Status poll cycles run since start (a counter)", ["provider"],
                      lambda: [((p,), float(t.cycles)) for p, t in polled.items()])
    metrics.on_scrape("poll_requests", "Provider requests made by status polling since start (a counter)",
                      ["provider"], lambda: [((p,), float(t.requests)) for p, t in polled.items()])


class _StoreNumbers:
    """The store's numbers as last read (by :meth:`refresh`, before a scrape)."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.counts: dict[str, int] = {}
        self.in_flight = self.overdue = self.outbox_backlog = 0

    async def refresh(self) -> None:
        store = self.store
        self.counts = await store.counts()
        self.in_flight = await store.in_flight()
        self.overdue = await store.overdue(datetime.now(UTC) - timedelta(seconds=OVERDUE_S))
        self.outbox_backlog = await store.outbox_backlog()


# ---- what the state changes say ------------------------------------------------------------------

SUBMIT_OUTCOMES = {
    "job.submitted": "accepted",
    "job.retry_scheduled": "transient",
    "job.outcome_unknown": "unknown",
    "job.rejected": "refused",
    "job.failed": "failed",
    "job.account_problem": "account",
}


def transition_observer(metrics: Metrics) -> Callable[[Job | None, Job, str], None]:
    """A store observer: submissions by outcome, and seconds to the final state."""

    def observe(before: Job | None, after: Job, event: str) -> None:
        if before is not None and before.state is JobState.SUBMITTING and before.hold is None:
            outcome = SUBMIT_OUTCOMES.get(event)
            if outcome is not None:
                metrics.submissions.labels(after.provider, outcome).inc()
        if after.final and (before is None or not before.final) and after.finished_at is not None:
            seconds = (after.finished_at - after.created_at).total_seconds()
            metrics.final_seconds.labels(after.state.value).observe(max(0.0, seconds))

    return observe
