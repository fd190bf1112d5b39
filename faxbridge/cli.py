"""The ``faxbridge`` command: one function per command.

Exit codes: 0 ok, 1 runtime failure, 2 usage, configuration or input error. Errors are
one readable line on stderr (``faxbridge: error: ...``); ``--debug`` adds the traceback.

Every command that needs the job store opens it through the one factory
(:func:`faxbridge.store.open_store`, read-only where it only reads) inside ``asyncio.run`` at
the command's edge. Commands that only look at or act on jobs (``jobs``, ``job``, ``cancel``,
``retry``) never create a store where none is.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import structlog
import uvloop

from faxbridge import __version__, config, crashpoints, heap, logs
from faxbridge.clock import SystemClock, shown_time
from faxbridge.config import Config
from faxbridge.errors import (
    ConfigError,
    FaxbridgeError,
    InputError,
    JobNotFound,
    ProviderError,
    UsageError,
)
from faxbridge.jobview import JOBS_HEADER, JOBS_HEADER_NODES, job_line, job_object, job_text, shown, waiting
from faxbridge.models import InputFile, Job, JobEvent, JobState, NewJob, Source
from faxbridge.notify.mail import notices_of
from faxbridge.statelock import has_store, is_served
from faxbridge.states import CancelRequested, Decision, Ignore, Outcome, RetryRequested
from faxbridge.store import JobStore, open_store
from faxbridge.workflow import advance

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")
log = structlog.get_logger("faxbridge.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="faxbridge", description="Email and folders to cloud fax.")
    p.add_argument("--version", action="version", version=f"faxbridge {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("-c", "--config", type=Path, help="config file (default: $FAXBRIDGE_CONFIG, "
                       "else the built-in defaults)")
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return c

    cmd("run", "run the daemon in the foreground")
    cmd("check-config", "validate the configuration and print a summary")
    s = cmd("send", "queue one fax from the shell; prints the job id")
    s.add_argument("--to", required=True, help="destination fax number")
    s.add_argument("--header", help="fax header text")
    s.add_argument("--fine", action="store_true", help="fine resolution (204x196 dpi)")
    s.add_argument("--paper", metavar="P", help="paper for images and text: letter, legal or a4")
    s.add_argument("--low", action="store_true", help="low priority (Openfax)")
    s.add_argument("--at", metavar="TIME", help="send later: 2026-12-03T09:00:00+01:00, or 2026-12-03 09:00 in "
                   "time_zone (at most 30 days ahead; a past time sends now)")
    s.add_argument("--wait", action="store_true", help="show each state change until the fax is final; exit 0 "
                   "when it was delivered, 1 when it failed, was rejected or canceled")
    s.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PDF, image or text files, in order")
    j = cmd("jobs", "list jobs, newest first")
    j.add_argument("--state", choices=[s.value for s in JobState])
    j.add_argument("--limit", type=_positive, default=None, metavar="N", help="show at most N jobs (newest first)")
    j.add_argument("--json", action="store_true", help="one job object per line")
    j.add_argument("--watch", action="store_true", help="keep the table current on the terminal (Ctrl-C ends it)")
    one = cmd("job", "one job with its history")
    one.add_argument("id")
    one.add_argument("--json", action="store_true")
    cmd("cancel", "cancel a job that is not final yet").add_argument("id")
    cmd("retry", "send a failed or canceled job again").add_argument("id")
    cmd("balance", "the provider account balance")
    sim = sub.add_parser("simulate", help="run a standalone simulated fax network",
                         description="A simulated fax network speaking the Openfax, Phaxio and Sinch "
                                     "(Fax API v3) wire protocols.")
    sim.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default 127.0.0.1:8090)")
    sim.add_argument("--speed", type=float, default=10.0, help="time compression (1.0 = real time)")
    sim.add_argument("--openfax-postback", metavar="URL", help="where to post Openfax postbacks")
    sim.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _no_store(cfg: Config) -> str:
    return (f"no job store in {cfg.state_dir}: no daemon has run with this configuration here "
            "(check -c / $FAXBRIDGE_CONFIG, or the folder you run this from)")


async def _existing_store(cfg: Config, *, readonly: bool = False) -> JobStore:
    """The store for commands that only look or act on jobs: never made anew where none is."""
    if not cfg.store.url and not has_store(cfg.state_dir):    # (a shared store says so itself)
        raise FaxbridgeError(_no_store(cfg))
    return await _store(cfg, readonly=readonly)


def _load(args: argparse.Namespace) -> Config:
    path = args.config or (Path(os.environ["FAXBRIDGE_CONFIG"]) if os.environ.get("FAXBRIDGE_CONFIG") else None)
    return config.load(path, os.environ)


async def _store(cfg: Config, *, readonly: bool = False) -> JobStore:
    # cfg.provider.kind = app.provider_name, without importing the daemon
    return await open_store(cfg.state_dir, cfg.provider.kind, readonly=readonly, notices=notices_of(cfg),
                            url=cfg.store.url, node=cfg.store.node, lease=cfg.store.lease)


def _with_store(open_: Callable[[], Awaitable[JobStore]], use: Callable[[JobStore], Awaitable[T]]) -> T:
    """Open the store, ``use`` it, close it: one ``asyncio.run`` at the command's edge."""
    async def main() -> T:
        store = await open_()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(main())


# ---- commands --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    try:
        crashpoints.check()          # a test hook: a misspelt point must not silently test nothing
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    cfg = _load(args)
    logs.setup(cfg.log.level, cfg.log.format, cfg.log.show_numbers)

    async def main() -> None:
        stop = asyncio.Event()
        from faxbridge.app import Daemon  # the daemon's parts load only for `run`

        daemon = Daemon(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)
        greet = asyncio.create_task(_greet(daemon.ready, cfg)) if sys.stderr.isatty() else None
        settle = asyncio.create_task(_settle_heap(daemon.ready))
        try:
            await daemon.run(stop)
        finally:
            settle.cancel()
            if greet is not None:
                greet.cancel()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:   # libuv's loop: a third less CPU
        runner.run(main())                                              # per mail than asyncio's own
    return EXIT_OK


async def _settle_heap(ready: asyncio.Event) -> None:
    """Once the daemon serves: start-up's objects out of the collector's way (faxbridge.heap)."""
    await ready.wait()
    heap.settle()


async def _greet(ready: asyncio.Event, cfg: Config) -> None:
    """On a terminal: a short summary in words once the daemon is ready (faxbridge.welcome)."""
    from faxbridge.welcome import ready_lines

    await ready.wait()
    print("\n".join(ready_lines(cfg)), file=sys.stderr, flush=True)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print("configuration OK")
    for line in config.summary(cfg):
        print(f"  {line}")
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    cfg = _load(args)
    for f in args.files:
        if not f.is_file():
            raise UsageError(f"{f}: no such file")
    from faxbridge import options as fax_options
    from faxbridge.intake import (
        accept,
        destination,  # number policy loads only when sending
    )
    from faxbridge.providers.limits import header_limit

    number = destination(args.to, cfg.numbers)
    given = {"resolution": "fine" if args.fine else None, "paper": args.paper, "header": args.header,
             "priority": "Low" if args.low else None, "send_at": args.at}
    asked = fax_options.read({k: v for k, v in given.items() if v is not None}, fax_options.CLI,
                             zone=cfg.zone(), now=SystemClock().now(), header_limit=header_limit(cfg) or 50)
    options = asked.options()
    files = [InputFile(name=f.name, path=f) for f in args.files]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    new = NewJob(source=Source.CLI, to=number.e164, document=", ".join(f.name for f in files),
                 options=options, sender=user)
    job = _with_store(lambda: _store(cfg), lambda store: accept(store, SystemClock(), new, files,
                                                       max_pages=cfg.numbers.max_pages))
    print(job.id)
    if options.send_at is not None:
        print(f"faxbridge: note: the fax waits until {shown_time(options.send_at)} (--at)", file=sys.stderr)
    if not cfg.store.url and not is_served(cfg.state_dir):   # (a shared store's daemons are elsewhere)
        print(f"faxbridge: note: no daemon serves {cfg.state_dir} now; the fax is sent once "
              "`faxbridge run` is started with this configuration", file=sys.stderr)
    return _wait(cfg, job.id) if args.wait else EXIT_OK


def _wait(cfg: Config, job_id: str) -> int:
    """``send --wait``: follow the job to its end; 0 delivered, 1 failed, rejected or canceled."""
    from faxbridge.progress import follow

    sys.stdout.flush()
    try:
        job = _with_store(lambda: _existing_store(cfg, readonly=True), lambda store: follow(
            store, job_id, sys.stdout, tty=sys.stdout.isatty(), now=SystemClock().now))
    except KeyboardInterrupt:
        print(f"\nfaxbridge: stopped waiting; the fax goes on (faxbridge job {job_id})", file=sys.stderr)
        return EXIT_FAIL
    if job.state is JobState.DELIVERED:
        print(f"faxbridge: delivered: {job.pages} page{'s' if job.pages != 1 else ''} to {job.to}")
        return EXIT_OK
    print(f"faxbridge: {job.state.value}: {shown(job.reason or 'no reason given')}", file=sys.stderr)
    return EXIT_FAIL


def cmd_jobs(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.watch:
        return _watch(cfg, args)
    if not cfg.store.url and not has_store(cfg.state_dir):    # (a shared store says so itself)
        print(f"faxbridge: note: {_no_store(cfg)}", file=sys.stderr)
        if not args.json:
            print(JOBS_HEADER)
        return EXIT_OK
    jobs = _with_store(lambda: _store(cfg, readonly=True),
                       lambda store: store.jobs(JobState(args.state) if args.state else None, args.limit))
    if args.json:
        for job in jobs:
            print(json.dumps(job_object(job)))
    else:
        nodes = any(job.node for job in jobs)          # a shared store: which daemon handled each
        print(JOBS_HEADER_NODES if nodes else JOBS_HEADER)
        for job in jobs:
            print(job_line(job, nodes=nodes))
    return EXIT_OK


def _watch(cfg: Config, args: argparse.Namespace) -> int:
    if args.json:
        raise UsageError("--watch and --json do not go together (--json prints the jobs once)")
    if not sys.stdout.isatty():
        raise UsageError("--watch keeps a table current on a terminal; use `faxbridge jobs` (or --json) elsewhere")
    from faxbridge.progress import watch_jobs

    try:
        _with_store(lambda: _existing_store(cfg, readonly=True), lambda store: watch_jobs(
            store, sys.stdout, state=JobState(args.state) if args.state else None, limit=args.limit or 40,
            now=SystemClock().now))
    except KeyboardInterrupt:
        print()
    return EXIT_OK


def cmd_job(args: argparse.Namespace) -> int:
    cfg = _load(args)

    async def read(store: JobStore) -> tuple[Job, list[JobEvent], int]:
        job = await store.get(args.id)
        busy = await store.at_provider(job.to) if job.state is JobState.QUEUED and job.to else 0
        return job, await store.events(job.id), busy

    job, events, busy = _with_store(lambda: _existing_store(cfg, readonly=True), read)
    waits = waiting(job, SystemClock().now(), at_provider=busy, per_destination=cfg.limits.per_destination)
    if args.json:
        print(json.dumps({**job_object(job, events), "waiting": waits}))
    else:
        print(job_text(job, events, waits=waits))
    return EXIT_OK


def _operator(args: argparse.Namespace, outcome: Outcome, done: str) -> int:
    cfg = _load(args)
    from faxbridge.app import policy_of

    async def act(store: JobStore) -> tuple[Job, Decision]:
        job = await store.get(args.id)
        return await advance(store, job.id, outcome, SystemClock(), policy_of(cfg))

    job, decision = _with_store(lambda: _existing_store(cfg), act)
    if isinstance(decision, Ignore):
        print(f"faxbridge: job {job.id}: {decision.why}", file=sys.stderr)
        return EXIT_FAIL if decision.refused else EXIT_OK
    if job.cancel_requested and not job.final:
        done = "cancel requested; the daemon asks the provider to stop it"
    print(f"job {job.id}: {done} (state {job.state.value})")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    return _operator(args, CancelRequested("faxbridge cancel"), "canceled")


def cmd_retry(args: argparse.Namespace) -> int:
    return _operator(args, RetryRequested("faxbridge retry"), "queued again")


def cmd_balance(args: argparse.Namespace) -> int:
    cfg = _load(args)

    async def main() -> tuple[float, list[tuple[str, float | str]]]:
        from faxbridge.app import open_provider

        async with open_provider(cfg, serve_simulator=False) as handle:
            amount = (await handle.provider.balance()).amount       # provider.kind's: its error is the command's
            others: list[tuple[str, float | str]] = []
            for name, provider in handle.providers.items():        # the routes' and fallbacks' (section 14)
                if name == cfg.provider.kind:
                    continue
                try:
                    others.append((name, (await provider.balance()).amount))
                except ProviderError as exc:
                    others.append((name, exc.reason))
            return amount, others

    amount, others = asyncio.run(main())
    print(f"balance: {amount:.2f}")
    for name, other in others:
        print(f"balance {name}: {other:.2f}" if isinstance(other, float) else f"balance {name}: {other}")
    threshold = cfg.provider.low_balance
    low = [name for name, value in [(cfg.provider.kind, amount), *others]
           if isinstance(value, float) and threshold > 0 and value < threshold]
    for name in low:
        print(f"faxbridge: warning: the {name} balance is below provider.low_balance ({threshold:.2f})"
              if others else f"faxbridge: warning: the balance is below provider.low_balance ({threshold:.2f})",
              file=sys.stderr)
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from faxbridge.config_parse import parse_hostport
    from faxbridge.simulator import serve_forever

    try:
        hp = parse_hostport(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from exc
    if args.speed <= 0:
        raise UsageError("--speed: must be greater than 0")
    logs.setup()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(hp.host, hp.port, args.speed, args.openfax_postback, stop)

    asyncio.run(main())
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "check-config": cmd_check_config, "send": cmd_send, "jobs": cmd_jobs, "job": cmd_job,
    "cancel": cmd_cancel, "retry": cmd_retry, "balance": cmd_balance, "simulate": cmd_simulate,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    daemon = "run" in argv[:3]  # `faxbridge run`: every stderr line is JSON (contract section 8)
    parser = _parser()
    logs.setup(level="warning")  # commands other than run log only trouble, on stderr

    def fail(lines: Sequence[str], code: int) -> int:
        for line in lines:
            if daemon:
                log.error("daemon.failed", error=logs.scrub(line), exit_code=code)
            else:
                print(logs.scrub(line), file=sys.stderr)
        return code

    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        code = COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`faxbridge jobs | head -1`): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        return fail(exc.problems, EXIT_USAGE)
    except (UsageError, InputError) as exc:
        return fail([f"faxbridge: error: {exc}"], EXIT_USAGE)
    except (JobNotFound, ProviderError, FaxbridgeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        return fail([f"faxbridge: error: {exc}"], EXIT_FAIL)
    except KeyboardInterrupt:
        return 130
