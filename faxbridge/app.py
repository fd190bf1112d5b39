"""Composition root: build the daemon from the configuration, run it, stop it in order.

Holds no job logic, and is the one place that knows who talks to whom: :meth:`Daemon._serve`
builds each part with only what it uses (the store, the clock, the one worker engine shared by
mail and folder intake, wake callbacks, metric counters, the Phaxio callback URL), keeps the
started ones (:class:`~faxbridge.component.Component`) for ``/healthz`` and the stop order, and
the ones that take a reload (:class:`~faxbridge.component.Reconfigurable`) for SIGHUP.

Several providers (contract section 14): :func:`open_provider` builds one adapter per provider
the configuration names (``provider.kind``, the ``[[route]]`` tables, ``provider.fallback``), each
with its own HTTP client (its requests timed under its own name); :meth:`Daemon._serve` puts them
in one :class:`~faxbridge.providers.router.ProviderSet` (the routes and a circuit per provider)
for the dispatcher, and gives each provider its own tracker (polling, webhooks) and balance watch.

Start order: take the state-dir lock, open the store (``open_store``: every
store call is awaited, the event loop never waits on a commit), recover jobs a crash left
mid-work, start the provider (and the built-in simulator when ``provider.kind = "simulator"``),
then the parts (reply mail, receipts and copies when configured, SMTP listener, result files,
folder watcher, balance watch, web server), then the dispatcher and tracker loops, each under a
:class:`faxbridge.loops.Supervisor`: a loop that dies is logged, counted in
``faxbridge_loop_restarts_total{loop}`` and restarted with capped back-off, and ``/healthz``
names it while it is down; it never ends the daemon. Stop order
(SIGTERM/SIGINT): stop taking new work, let calls in progress finish for up to
``shutdown_grace``, close the parts, the worker engine, the provider, the simulator and the
store, exit 0.

Health: :meth:`Daemon.healthy` stays synchronous (the systemd watchdog and tests call it) and
never touches the store: a small probe loop (:meth:`Daemon._probe_store`) asks the store a cheap
question every ``PROBE_S`` seconds and keeps the answer; the store is unhealthy when its last
answer was an error, or when a question has waited longer than ``PROBE_WAIT_S``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
import structlog

from faxbridge import config, logs
from faxbridge.balance import build_balance_watch
from faxbridge.circuit import CircuitState
from faxbridge.clock import Clock, SystemClock
from faxbridge.component import Component, Reconfigurable, SupervisedLoop
from faxbridge.config import Config
from faxbridge.console.server import make_console
from faxbridge.dispatcher import Dispatcher
from faxbridge.errors import AlreadyRunning, ConfigError, FaxbridgeError
from faxbridge.ingress.folder.watch import FolderWatcher
from faxbridge.ingress.smtp.listener import make_listener
from faxbridge.logs import register_secrets
from faxbridge.loops import Supervisor, nap
from faxbridge.metrics import Metrics, transition_observer, watch_core
from faxbridge.models import Job
from faxbridge.notify import mail as mail_notify
from faxbridge.notify import sidecar as sidecar_notify
from faxbridge.notify.mail import notices_of
from faxbridge.notify.preview import render_first_page, render_page
from faxbridge.providers import netio
from faxbridge.providers.base import Provider
from faxbridge.providers.limits import header_limit
from faxbridge.providers.openfax import LOOKUP_GRACE, OpenfaxProvider
from faxbridge.providers.phaxio import PhaxioProvider, label_for
from faxbridge.providers.router import ProviderSet
from faxbridge.providers.sinch import SinchProvider
from faxbridge.providers.transport import TimedTransport
from faxbridge.reload import plan as reload_plan
from faxbridge.sdnotify import Notifier
from faxbridge.simulator import Simulator, SimulatorServer, credentials
from faxbridge.statelock import LOCK_NAME, is_served
from faxbridge.states import Policy, Recovered
from faxbridge.store import JobStore, new_job_id, open_store
from faxbridge.tracker import Tracker
from faxbridge.webserver import build_webserver, phaxio_callback, phaxio_token, sinch_callback
from faxbridge.workers import Engine
from faxbridge.workflow import advance

log = structlog.get_logger("faxbridge.app")

PROBE_S = 5.0            # the store is asked this often whether it answers
PROBE_WAIT_S = 10.0      # ... and is unhealthy when an answer takes longer (SQLite's busy timeout)


def policy_of(cfg: Config) -> Policy:
    p = cfg.provider
    grace = Policy.reconcile_grace if p.reconcile_grace is None else p.reconcile_grace
    return Policy(submit_retries=p.submit_retries, retry_initial=p.retry_initial, retry_max=p.retry_max,
                  reconcile_grace=grace, unknown_grace=p.unknown_grace)


def provider_name(cfg: Config) -> str:
    """The name jobs record: the simulator speaks Phaxio's protocol but jobs say "simulator"."""
    return cfg.provider.kind


def no_callback(job: Job) -> None:
    """No callback URL for a job's fax: the provider's callbacks cannot be checked (or no web server)."""
    return None


def secrets_of(cfg: Config) -> list[str]:
    p = cfg.provider
    return [p.openfax.api_key, p.phaxio.api_key, p.phaxio.api_secret, p.phaxio.callback_token,
            p.sinch.key_id, p.sinch.key_secret, p.sinch.callback_token, cfg.notify.password, cfg.webhook.token]


def build_provider(cfg: Config, client: httpx.AsyncClient, simulator_url: str | None = None) -> Provider:
    p = cfg.provider
    if p.kind == "openfax":
        o = p.openfax
        # provider.reconcile_grace, when set, decides; else the adapter's own (10 min + 1 min a page)
        grace = LOOKUP_GRACE if p.reconcile_grace is None else (p.reconcile_grace, 0.0)
        return OpenfaxProvider(client, base_url=o.base_url, send_path=o.send_path,
                               balance_path=o.balance_path, report_path=o.report_path,
                               account_id=o.account_id, api_key=o.api_key, to_header=o.to_header,
                               from_header=o.from_header, priority=o.priority,
                               lookup_grace_s=grace[0], lookup_grace_per_page_s=grace[1])
    if p.kind == "phaxio":
        x = p.phaxio
        return PhaxioProvider(client, base_url=x.base_url, api_key=x.api_key, api_secret=x.api_secret,
                              header_text=x.header_text, caller_id=x.caller_id or None, test_fail=x.test_fail or None,
                              cancel_timeout=None if x.cancel_timeout is None else round(x.cancel_timeout / 60))
    if p.kind == "sinch":
        s = p.sinch
        return SinchProvider(client, base_url=s.base_url, project_id=s.project_id, key_id=s.key_id,
                             key_secret=s.key_secret, header_text=s.header_text)
    if p.kind == "simulator":
        if simulator_url is None:
            raise FaxbridgeError("the built-in simulator is not running")
        # The default path runs the real Phaxio adapter over real HTTP.
        phaxio = PhaxioProvider(client, base_url=simulator_url + "/v2.1", api_key=credentials.PHAXIO_API_KEY,
                                api_secret=credentials.PHAXIO_API_SECRET, header_text=p.phaxio.header_text,
                                label=label_for("simulator"))
        phaxio.name = "simulator"
        return phaxio
    raise FaxbridgeError(f"provider.kind: unknown provider {p.kind!r}")


ProviderBuilder = Callable[[Config, httpx.AsyncClient, "str | None"], Provider]
"""Makes the provider adapter from the configuration, its HTTP client and the built-in simulator's URL."""


@dataclass
class ProviderHandle:
    provider: Provider                   # provider.kind's adapter
    client: httpx.AsyncClient
    simulator: Simulator | None = None
    server: SimulatorServer | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)   # every configured one, by name, kind first


def for_provider(cfg: Config, name: str) -> Config:
    """``cfg`` as if ``provider.kind`` were ``name``: how a provider builder makes another adapter."""
    return cfg if cfg.provider.kind == name else replace(cfg, provider=replace(cfg.provider, kind=name))


def provider_set(cfg: Config, providers: dict[str, Provider], clock: Clock) -> ProviderSet:
    """The configured adapters with the routes, ``provider.fallback`` and a circuit each."""
    p = cfg.provider
    return ProviderSet(providers, default=p.kind, routes=cfg.routes, fallback=p.fallback,
                       monotonic=clock.monotonic, circuit_failures=p.circuit_failures,
                       circuit_open=p.circuit_open, circuit_open_max=max(p.circuit_open, p.retry_max))


SIMULATOR_URL_FILE = "simulator.url"


def running_simulator_url(state_dir: Path) -> str | None:
    """The URL of the built-in simulator of the daemon serving ``state_dir``; None when no daemon does."""
    if not is_served(state_dir):
        return None
    try:
        return (state_dir / SIMULATOR_URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _timer(latency: Any, name: str) -> Callable[[str, float], None]:
    """Observes one provider's request times (``faxbridge_provider_request_seconds{provider, result}``)."""
    return lambda result, seconds: latency.labels(name, result).observe(seconds)


@asynccontextmanager
async def open_provider(cfg: Config, metrics: Metrics | None = None, *,
                        serve_simulator: bool = True,
                        build: ProviderBuilder = build_provider) -> AsyncIterator[ProviderHandle]:
    """The configured provider with its HTTP client (and the built-in simulator, if chosen);
    with ``metrics``, every provider request is timed. The built-in simulated network belongs to
    the daemon: with ``serve_simulator=False`` (the CLI) it is the running daemon's, reached at
    the URL it left in ``state_dir``, or, with no daemon running, its saved state read only."""
    simulator = server = None
    url = None
    url_file = cfg.state_dir / SIMULATOR_URL_FILE
    if cfg.provider.kind == "simulator":
        url = None if serve_simulator else running_simulator_url(cfg.state_dir)
    if cfg.provider.kind == "simulator" and url is None:
        # its faxes, ids and owed webhooks survive a restart (simulator.persist)
        simulator = Simulator(speed=cfg.provider.simulator.speed, state_file=cfg.state_dir / "simulator.state",
                              read_only=not serve_simulator)
        server = SimulatorServer(simulator, host="127.0.0.1", port=0)
        url = await server.start()
        if serve_simulator:
            url_file.write_text(url + "\n")
        log.info("simulator.started", url=url, speed=cfg.provider.simulator.speed)
    clients: dict[str, httpx.AsyncClient] = {}
    latency = metrics.provider_request_seconds if metrics is not None else None
    for name in cfg.providers():              # one client each: its requests timed under its name
        transport: httpx.AsyncBaseTransport = netio.transport()    # HTTP/1.1 on asyncio with llhttp
        if latency is not None:
            transport = TimedTransport(transport, _timer(latency, name))
        clients[name] = httpx.AsyncClient(timeout=httpx.Timeout(cfg.provider.request_timeout), transport=transport)
    try:
        providers = {name: build(for_provider(cfg, name), client, url) for name, client in clients.items()}
        primary = providers[cfg.provider.kind]
        yield ProviderHandle(primary, clients[cfg.provider.kind], simulator, server, providers=providers)
    finally:
        for client in clients.values():
            await client.aclose()
        if server is not None:
            if serve_simulator:
                url_file.unlink(missing_ok=True)
            await server.stop()


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the state dir for the daemon's life: one daemon per store."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise AlreadyRunning(f"another faxbridge daemon is running on {state_dir}") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (each SMTP session, HTTP request and worker
    pipe holds descriptors); returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("daemon.nofile_not_raised", soft=soft, hard=hard, error=str(exc))
            return soft, hard
        log.info("daemon.nofile_raised", was=soft, soft=hard, hard=hard)
        return hard, hard
    log.info("daemon.nofile", soft=soft, hard=hard)
    return soft, hard


class Daemon:
    def __init__(self, cfg: Config, clock: Clock | None = None, *, build: ProviderBuilder = build_provider,
                 restart_initial: float = 1.0, restart_max: float = 60.0) -> None:
        self.cfg = cfg
        self.build = build                          # the provider adapter (tests pass their own)
        self.restart_initial = restart_initial      # back-off of a core loop that died: first wait
        self.restart_max = restart_max              # ... and its cap
        self.clock = clock or SystemClock()
        self.policy = policy_of(cfg)
        self.owner = f"{os.getpid()}-{new_job_id()[-8:]}"
        self.ready = asyncio.Event()            # set while serving: every part started, until stopping
        self.store: JobStore | None = None
        self.store_ok = False                      # the store probe's last word (see healthy)
        self.handle: ProviderHandle | None = None
        self.dispatcher: Dispatcher | None = None
        self.tracker: Tracker | None = None         # provider.kind's
        self.trackers: dict[str, Tracker] = {}       # one per configured provider (section 14)
        self.providers: ProviderSet | None = None
        self.engine: Engine | None = None          # the one worker engine (mail and folder intake)
        self.components: list[Component] = []     # started parts and core loops, in start order
        self.reconfigurable: list[Reconfigurable] = []   # what a reload reconfigures, in order
        self.notifier = Notifier()
        self.metrics = Metrics()

    def healthy(self) -> bool:
        """The store answered the last probe and every started component (and supervised loop)
        reports healthy. Synchronous, and never calls the store (see the module docstring)."""
        if self.store is None or self.dispatcher is None or not self.store_ok:
            return False
        return all(c.healthy() for c in self.components)

    async def _probe_store(self, store: JobStore, stop: asyncio.Event) -> None:
        """Keep :attr:`store_ok` up to date: a cheap read, awaited, every ``PROBE_S`` seconds."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(PROBE_WAIT_S):
                    await store.kv_get("health")
            except (TimeoutError, FaxbridgeError) as exc:
                if self.store_ok:
                    log.warning("store.unhealthy", error=repr(exc))
                self.store_ok = False
            else:
                self.store_ok = True
            await nap(PROBE_S, stop)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; apply what can change live, log the rest."""
        try:
            new = config.load(self.cfg.source, os.environ)
        except ConfigError as exc:
            log.error("config.reload_failed", problems=exc.problems)
            return
        p = reload_plan(self.cfg, new)
        self.cfg = p.config
        for part in self.reconfigurable:
            part.reconfigure(p.config)
        if self.dispatcher is not None:
            self.dispatcher.max_in_flight = p.config.limits.max_in_flight
            self.dispatcher.per_destination = p.config.limits.per_destination
        if "log.level" in p.applied:
            logs.setup(p.config.log.level, p.config.log.format, p.config.log.show_numbers)
        log.info("config.reloaded", applied=p.applied, source=str(self.cfg.source) if self.cfg.source else None)
        if p.not_applied:
            log.warning("config.not_reloaded", keys=p.not_applied, why="these keys need a restart")

    async def recover(self, store: JobStore) -> None:
        removed = await store.clean_spool()
        if removed:
            log.info("store.spool_cleaned", removed=removed)
        for job in await store.recover():
            await advance(store, job.id, Recovered(), self.clock, self.policy)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        register_secrets(secrets_of(cfg))
        raise_nofile()
        lock = lock_state_dir(cfg.state_dir)
        try:
            store = self.store = await open_store(cfg.state_dir, provider_name(cfg), notices=notices_of(cfg),
                                                  url=cfg.store.url, node=cfg.store.node, lease=cfg.store.lease)
        except BaseException:
            lock.close()
            raise
        try:
            await self.recover(store)
            self.store_ok = True                        # it just answered
            async with open_provider(cfg, self.metrics, build=self.build) as handle:
                self.handle = handle
                await self._serve(store, handle, stop)
        finally:
            await store.close()
            lock.close()

    async def _serve(self, store: JobStore, handle: ProviderHandle, stop: asyncio.Event) -> None:
        cfg = self.cfg
        metrics, clock = self.metrics, self.clock
        self.components.clear()
        self.reconfigurable.clear()
        providers = self.providers = provider_set(cfg, handle.providers or {cfg.provider.kind: handle.provider},
                                                  clock)
        trackers = self.trackers = {name: Tracker(store, provider, clock, self.policy,
                                                  interval=cfg.provider.poll_interval)
                                    for name, provider in providers.providers.items()}
        tracker = self.tracker = trackers[cfg.provider.kind]
        web: Component | None = None
        callbacks: dict[str, Callable[[Job], str | None]] = {}     # by the provider a job is sent to
        if cfg.webhook.enabled:
            token = phaxio_token(cfg, handle.simulator.callback_token if handle.simulator is not None else None)
            server = build_webserver(cfg, store, tracker, metrics, phaxio_token=token,
                                     components=self.components, ready=self.ready.is_set, trackers=trackers,
                                     circuits=providers.states)
            if token:                           # a callback we can check: the dispatcher sends its URL
                phaxio_url = phaxio_callback(cfg, server)
                callbacks.update(phaxio=phaxio_url, simulator=phaxio_url)
            sinch_url = sinch_callback(cfg)     # Sinch: the token is in the URL
            if sinch_url is not None:
                callbacks["sinch"] = sinch_url
            web = server

        def callback_url(job: Job) -> str | None:       # the job records the provider it is sent to
            return callbacks.get(job.provider, no_callback)(job)

        dispatcher = self.dispatcher = Dispatcher(store, providers, clock, self.policy,
                                                  max_in_flight=cfg.limits.max_in_flight, owner=self.owner,
                                                  per_destination=cfg.limits.per_destination,
                                                  callback_url=callback_url, lease_s=cfg.store.lease)
        watch_core(metrics, store, tracker, cfg.provider.kind, trackers=trackers)
        metrics.on_scrape(
            "provider_circuit", "1 for the state each provider's circuit is in (closed: sending; open: failing, "
            "new faxes go to the next provider; half-open: one probe fax allowed)", ["provider", "state"],
            lambda: [((name, state.value), 1.0 if state.value == now else 0.0)
                     for name, now in providers.states().items() for state in CircuitState])
        metrics.on_scrape(
            "provider_account_problem", "1 while sending is paused by an account problem (bad credentials, "
            "an inactive account), else 0", ["provider"],
            lambda: [((cfg.provider.kind,), 1.0 if dispatcher.account_problem else 0.0)])
        metrics.on_scrape(
            "provider_test_fax_updates", "Status updates about faxes the provider marked is_test (a test key "
            "in use), since start", ["provider"],
            lambda: [((name,), float(t.test_faxes)) for name, t in trackers.items()])
        store.observe(transition_observer(metrics))
        engine = self.engine = Engine(cfg)      # started when work comes; closed after every part
        self.reconfigurable.append(engine)
        try:
            components = self._parts(store, providers, dispatcher, engine, web)
            await self._run_parts(components, store, dispatcher, trackers, stop)
        finally:
            await engine.close()

    def _parts(self, store: JobStore, providers: ProviderSet, dispatcher: Dispatcher, engine: Engine,
               web: Component | None) -> list[Component]:
        """The daemon's parts, in start order, each with only what it uses."""
        cfg, clock, metrics = self.cfg, self.clock, self.metrics

        async def first_page(pdf: Path) -> bytes:        # PDFium in a worker, never in the daemon
            data: bytes = await engine.run(render_first_page, pdf)
            return data

        parts: list[Component] = [mail_notify.build(cfg, store, clock, first_page)]
        for notices in (mail_notify.build_receipts(cfg, store, clock),
                        mail_notify.build_copies(cfg, store, clock, first_page)):
            if notices is not None:             # receipts, copies: only when configured
                parts.append(notices)
        if cfg.smtp.enabled:
            reply_codes = metrics.smtp_replies
            refused = metrics.counter("smtp_refused_work_total", "Mails refused for too much work or for an "
                                      "error of ours while reading them, by kind", ["kind"])
            smtp = make_listener(cfg, store, clock, engine, header_limit=header_limit, on_queued=dispatcher.wake,
                                 on_reply=lambda code: reply_codes.labels(code).inc(),
                                 on_refused_work=lambda kind: refused.labels(kind).inc())
            parts.append(smtp)
            self.reconfigurable.append(smtp)
        sidecar = sidecar_notify.build(store, clock)
        parts.append(sidecar)
        if cfg.watch:
            def on_jobs() -> None:              # a folder round made or finished jobs
                sidecar.wake()
                dispatcher.wake()

            files = metrics.folder_files
            folder = FolderWatcher(cfg, store, clock, engine=engine, on_jobs=on_jobs,
                                   on_file=lambda result: files.labels(result).inc())
            parts.append(folder)
            self.reconfigurable.append(folder)
        balances = [build_balance_watch(cfg, provider, metrics, lead=lambda: store.lead("balance"))
                    for provider in providers.providers.values()]    # one daemon asks, for every provider
        balance = balances[0]                   # provider.kind's (the console shows it)
        parts += balances
        if web is not None:
            parts.append(web)

        async def render(pdf: Path, index: int) -> bytes:   # PDFium in a worker, never in the daemon
            data: bytes = await engine.run(render_page, pdf, index)
            return data

        console = make_console(cfg, store, clock, self.policy, render=render, balance=lambda: (
            None if balance.last is None else float(balance.last.amount)),
            health=lambda: {c.name: c.healthy() for c in self.components})
        if console is not None:
            store.observe(console.changes.observe)      # /events: the pages follow the jobs
            parts.append(console)
        return parts

    async def _run_parts(self, components: list[Component], store: JobStore, dispatcher: Dispatcher,
                         trackers: dict[str, Tracker], stop: asyncio.Event) -> None:
        cfg = self.cfg
        started: list[Component] = []
        work_stop = asyncio.Event()
        loops = [SupervisedLoop(self._supervise("dispatcher", lambda: dispatcher.run(work_stop), work_stop))]
        for name, tracker in trackers.items():      # one poller per provider: "tracker" is provider.kind's
            loop_name = "tracker" if name == cfg.provider.kind else f"tracker:{name}"
            loops.append(SupervisedLoop(self._supervise(loop_name, partial(tracker.run, work_stop), work_stop)))
        tasks: list[asyncio.Task[None]] = []
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(self._probe_store(store, work_stop), name="store-probe")]
        try:
            for component in components:
                await component.start()
                started.append(component)
                self.components.append(component)
            for loop in loops:
                await loop.start()
                self.components.append(loop)
                if loop.task is not None:
                    tasks.append(loop.task)
            # without systemd it returns at once
            background.append(asyncio.create_task(self.notifier.watchdog(self.healthy, work_stop),
                                                  name="watchdog"))
            self.ready.set()
            self.notifier.ready(f"serving: {', '.join(c.name for c in started) or 'queue only'}")
            log.info("daemon.ready", state_dir=str(cfg.state_dir), provider=cfg.provider.kind,
                     providers=list(trackers),
                     components=[c.name for c in started], jobs=await store.counts(), pid=os.getpid())
            await stop.wait()            # a core loop that dies is restarted by its supervisor
        finally:
            # Stop order: listeners first, then let provider calls in progress finish, then the rest.
            self.notifier.stopping()
            self.ready.clear()
            log.info("daemon.stopping", grace_s=cfg.shutdown_grace, in_progress=dispatcher.busy)
            deadline = self.clock.monotonic() + cfg.shutdown_grace
            for component in reversed(started):
                await component.stop()
            work_stop.set()
            drained = await dispatcher.drain(cfg.shutdown_grace)
            for component in reversed(started):
                await component.close(max(0.0, deadline - self.clock.monotonic()))
            for task in (*tasks, *background):
                task.cancel()
            results = await asyncio.gather(*tasks, *background, return_exceptions=True)
            log.info("daemon.stopped", drained=drained)
        for result in results:
            if isinstance(result, Exception):
                raise result

    def _supervise(self, name: str, body: Callable[[], Awaitable[None]], stop: asyncio.Event) -> Supervisor:
        return Supervisor(name, body, stop, initial=self.restart_initial, maximum=self.restart_max,
                          on_restart=self.metrics.loop_restarted)

