"""Prometheus metrics: one :class:`Metrics` per daemon, on its own ``CollectorRegistry``.

Nothing is registered on prometheus-client's global default registry, so two daemons in one
process (tests) never share or clash. Two kinds of metric live here:

- pushed: counters and gauges that a part updates as things happen (webhook verification
  failures, the provider balance). They are attributes of :class:`Metrics`; another part adds
  its own with :meth:`Metrics.counter` / :meth:`Metrics.gauge` / :meth:`Metrics.histogram`.
- pulled: values read at scrape time from the parts that already know them (jobs by state
  from the store, jobs in flight, the poller's request counts), through :meth:`Metrics.on_scrape`.
  Nothing has to remember to keep them up to date, and they are right after a restart.

``GET /metrics`` serves :meth:`Metrics.render`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faxbridge.models import JobState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "faxbridge_"

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ---- the scrape-time gauges of the core parts ---------------------------------------------------


class _Store(Protocol):
    def counts(self) -> dict[str, int]: ...

    def in_flight(self) -> int: ...


class _Tracker(Protocol):
    cycles: int
    requests: int
    last_requests: int
    last_pending: int
    last_cpu_s: float


def watch_core(metrics: Metrics, store: _Store, tracker: _Tracker, provider: str) -> None:
    """Register the gauges read from the store and the poller."""

    def by_state() -> Iterable[Sample]:
        counts = store.counts()
        return [((state.value,), float(counts.get(state.value, 0))) for state in JobState]

    metrics.on_scrape("jobs", "Jobs in the store, by state", ["state"], by_state)
    metrics.on_scrape("jobs_in_flight", "Jobs submitting or submitted (not final)", [],
                      lambda: [((), float(store.in_flight()))])
    metrics.on_scrape("poll_requests_last_cycle", "Provider requests the last status poll cycle cost",
                      ["provider"], lambda: [((provider,), float(tracker.last_requests))])
    metrics.on_scrape("poll_pending_last_cycle", "Faxes the last status poll cycle asked about",
                      ["provider"], lambda: [((provider,), float(tracker.last_pending))])
    metrics.on_scrape("poll_cpu_seconds_last_cycle", "Process CPU seconds the last status poll cycle used",
                      ["provider"], lambda: [((provider,), tracker.last_cpu_s)])
    metrics.on_scrape("poll_cycles", "Status poll cycles run since start (a counter)", ["provider"],
                      lambda: [((provider,), float(tracker.cycles))])
    metrics.on_scrape("poll_requests", "Provider requests made by status polling since start (a counter)",
                      ["provider"], lambda: [((provider,), float(tracker.requests))])
