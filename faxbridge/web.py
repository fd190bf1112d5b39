"""The daemon's HTTP face (Starlette): provider webhooks, ``/healthz`` and ``/metrics``.

Routes (contract section 5):

- ``POST /webhooks/phaxio``: multipart (or urlencoded) with the fax object as a JSON string in
  the ``fax`` field; v2 (``success``, ``direction``) and v2.1 (``event_type``) payloads alike.
  ``X-Phaxio-Signature`` is checked against the exact ``callback_url`` sent with *that* fax (kept
  on the job; for a job whose URL was never recorded, e.g. one found again by reconciliation, the
  URL the dispatcher sends, which is a pure function of the job). The job is named by the ``job``
  query parameter we put in the URL, else by the fax id or its ``faxbridge_job`` tag; the
  signature is then checked against *that job's* URL, never the URL the request came to, so a
  callback replayed to another job's URL fails, and one about another fax of the job changes
  nothing. A callback to the account-wide URL (Phaxio's console setting: our
  ``/webhooks/phaxio`` with no ``?job=``) is matched by its fax id or tag and its signature
  checked against that configured URL. In-flight events (``transmitting_page``,
  ``retry_scheduled``) never finalize anything.
- ``GET|POST /webhooks/openfax/{token}``: the postback's fields as query parameters or a form
  (the method is undocumented). The token is compared in constant time. Postbacks carry no
  signature: with ``provider.openfax.confirm_postbacks`` one is only a hint, and the job changes
  only when the report confirms it (a poll cycle runs before the answer).
- ``POST /webhooks/sinch/{token}``: a Sinch Fax API v3 callback, JSON (``{"event", "eventTime",
  "fax"}``, asked for with ``callbackUrlContentType``) or multipart with a ``fax`` JSON part (and
  perhaps the PDF as ``file``). Sinch signs nothing: the token (``provider.sinch.callback_token``)
  is compared in constant time *before* the body is read, and only then is a body up to
  ``sinch_max_body`` taken (a callback may carry the fax's PDF, base64 in JSON). A callback is a
  hint: the job changes only after ``GET /faxes/{id}`` confirms it; a fax we cannot tie to a job
  answers 200 ("unknown fax"), one not final at Sinch 202; a confirmation that fails answers 503
  so Sinch retries (polling goes on anyway).
- Several providers (contract section 14): each webhook route belongs to one provider, and a fax id
  it names is looked up among that provider's jobs only; what it confirms or applies goes through
  that provider's tracker (``trackers``; ``tracker`` is ``provider.kind``'s).
- ``GET /healthz``: 200 only when the daemon is ready, the store answers (awaited, within
  ``store_wait`` seconds: a commit waiting on the write lock never holds up the loop), its state
  folder is writable (a file system turned read-only after an error still answers reads) and every started
  component says it is healthy; else 503 naming what is not.
- ``GET /metrics``: Prometheus text from the daemon's own registry (the store's numbers awaited
  first, :meth:`faxbridge.metrics.Metrics.refresh`).

Answers: 403 for a request that fails its check (bad signature, a signature header that is not
ASCII, wrong token, a fax we cannot tie to a job), and nothing changes; 400 for a malformed one
(a form that cannot be read, a ``fax`` field nested too deep, invalid JSON, a missing or mistyped
field: whatever our parsing raises of ``MALFORMED``, logged as a warning without a traceback);
413 for a body over ``webhook.max_body``, found while it streams (:mod:`faxbridge.webform`, which
also parses forms off the event loop), and the connection is closed; 2xx only after the change (if
any) is committed, so a provider that saw a 2xx never has to tell us again; 503 when the store
is busy (the provider retries). Duplicates, replays, late and out-of-order webhooks reach the
state machine, which ignores what changes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from faxbridge import crashpoints
from faxbridge.errors import JobNotFound, PermanentProviderError, ProviderError, StoreError
from faxbridge.metrics import CONTENT_TYPE, Metrics
from faxbridge.models import Hold, Job
from faxbridge.providers import openfax, phaxio, sinch
from faxbridge.providers.base import as_int
from faxbridge.states import OVERDUE_S, Ignore
from faxbridge.store import JobStore
from faxbridge.tracker import Tracker
from faxbridge.webform import BadRequest, TooLarge, parse_form, read_capped, read_form

log = structlog.get_logger("faxbridge.web")

# What a request from outside may make our own parsing raise: a 400, never a 500 (contract 9).
MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


@dataclass
class WebContext:
    store: JobStore
    tracker: Tracker
    metrics: Metrics
    provider: str                                  # "openfax" | "phaxio" | "simulator"
    openfax_token: str | None                      # None: no Openfax route
    openfax_account: str | None                    # checked against a postback's AccountID
    confirm_postbacks: bool
    phaxio_token: str | None                       # None: no Phaxio route
    callback_for: Callable[[Job], str | None]      # the callback_url the dispatcher sends for a job
    components: Sequence[Any]                      # started parts (each has name, healthy())
    ready: Callable[[], bool]
    state_dir: Path                                # /healthz checks that it is writable
    max_body: int = 1_000_000                      # webhook.max_body
    sinch_token: str | None = None                 # None: no Sinch route
    sinch_max_body: int = 80_000_000               # a Sinch callback may carry the PDF (after the token check)
    store_wait: float = 10.0                       # /healthz: the store must answer within this (s)
    trackers: Mapping[str, Tracker] = field(default_factory=dict)   # by provider name (section 14)
    circuits: Callable[[], Mapping[str, str]] | None = None        # each provider's circuit, for /healthz

    @property
    def phaxio_name(self) -> str:
        """The name jobs sent with the Phaxio protocol record: the built-in simulator's are "simulator"."""
        return "simulator" if self.provider == "simulator" else "phaxio"

    def tracker_for(self, name: str) -> Tracker:
        """The tracker of provider ``name`` (``provider.kind``'s when it has none of its own)."""
        return self.trackers.get(name, self.tracker)


def answer(status: int, result: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"result": result, **extra}, status_code=status)


def too_large() -> JSONResponse:
    """413, and the connection is closed: the rest of the body is never read."""
    return JSONResponse({"result": "too large"}, status_code=413, headers={"Connection": "close"})


def _fax_object(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``fax`` field's JSON object; None when there is none. Raises what ``MALFORMED`` names
    (a ``[[[...`` field: ``RecursionError``)."""
    try:
        fax = json.loads(fields.get("fax") or "")
    except ValueError:
        return None
    return fax if isinstance(fax, dict) else None


def _sinch_body(content_type: str, body: bytes) -> Mapping[str, Any]:
    """A Sinch callback body (JSON, or a multipart form) as a mapping; off the event loop, since it
    may carry a PDF. Raises BadRequest or what ``MALFORMED`` names."""
    if content_type.split(";")[0].strip().lower() == "application/json":
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the callback body is not a JSON object")
        return data
    fields, _ = parse_form(content_type, body)
    return fields


def _loggable(value: object) -> str | int | None:
    """A value from a request, short and printable, for a log line or an answer."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18):
        return value
    return _printable(value if isinstance(value, str) else type(value).__name__)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text[:200])


class Handlers:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    # ---- helpers ------------------------------------------------------------------------

    def _reject(self, provider: str, why: str, **kw: Any) -> JSONResponse:
        self.ctx.metrics.webhook_rejected.labels(provider, why).inc()
        self.ctx.metrics.webhooks.labels(provider, "rejected").inc()
        log.warning("webhook.rejected", provider=provider, why=why, **kw)
        return answer(403, "forbidden")

    def _malformed(self, provider: str, error: str, **kw: Any) -> JSONResponse:
        error = _printable(error)
        self.ctx.metrics.webhooks.labels(provider, "malformed").inc()
        log.warning("webhook.malformed", provider=provider, error=error, **kw)
        return answer(400, "malformed", error=error)

    def _count(self, provider: str, result: str) -> None:
        self.ctx.metrics.webhooks.labels(provider, result).inc()

    async def _job_of(self, request: Request, fax: Mapping[str, Any] | None) -> Job | None:
        store = self.ctx.store
        named = request.query_params.get("job")
        fax_id = as_int(fax.get("id")) if fax else None
        if named:
            try:
                return await store.get(named)
            except JobNotFound:
                return None
        if fax_id is not None:
            job = await store.by_provider_id(str(fax_id), self.ctx.phaxio_name)
            if job is not None:
                return job
        tags = fax.get("tags") if fax else None
        tagged = tags.get(phaxio.JOB_TAG) if isinstance(tags, Mapping) else None
        if tagged:
            try:
                return await store.get(str(tagged))
            except JobNotFound:
                return None
        return None

    # ---- Phaxio -------------------------------------------------------------------------

    async def phaxio(self, request: Request) -> Response:
        ctx = self.ctx
        if ctx.phaxio_token is None:
            return answer(404, "not found")
        try:
            fields, files = await read_form(request, ctx.max_body)
        except TooLarge:
            return too_large()
        except BadRequest as exc:
            return self._malformed("phaxio", str(exc))
        try:
            fax = _fax_object(fields)
            job = await self._job_of(request, fax)
        except MALFORMED as exc:
            return self._malformed("phaxio", f"cannot read the fax field: {type(exc).__name__}")
        if job is None or job.provider != ctx.phaxio_name:
            return self._reject("phaxio", "unknown fax", fax_id=_loggable(fax.get("id")) if fax else None)
        url = job.callback_url or ctx.callback_for(job)
        given = request.headers.get("x-phaxio-signature")
        if given is not None and not given.isascii():
            given = None                     # a hex digest is ASCII; anything else cannot match
        urls = [url] if url else []
        if url and "job" not in request.query_params:
            # Phaxio's account-wide callback URL (set in its console, no ?job=): signed over that
            # URL, our own webhook path; the job was found by the fax id or its tag.
            urls.append(urlsplit(url)._replace(query="").geturl())
        if not any(phaxio.verify_signature(ctx.phaxio_token, u, fields, files, given) for u in urls):
            return self._reject("phaxio", "bad signature", job_id=job.id)
        # Authentic from here on.
        try:
            update = phaxio.parse_callback(fields, phaxio.label_for(ctx.provider))
        except MALFORMED as exc:
            return self._malformed("phaxio", str(exc) if isinstance(exc, ValueError) else type(exc).__name__,
                                   job_id=job.id)
        if update is None:
            self._count("phaxio", "ignored")
            log.info("webhook.in_flight", provider="phaxio", job_id=job.id, event_type=fields.get("event_type"))
            return answer(200, "ignored", why="not a final event")
        if job.provider_id and job.provider_id != update.provider_id:
            self._count("phaxio", "ignored")
            log.info("webhook.other_fax", provider="phaxio", job_id=job.id, provider_id=update.provider_id)
            return answer(200, "ignored", why="about an earlier fax of this job")
        if not job.provider_id and job.hold is not Hold.RECONCILE:
            # The submit call is still under way (or the job was sent again): we cannot yet tell
            # this fax is the one. Phaxio retries; polling would find it anyway.
            self._count("phaxio", "deferred")
            return JSONResponse({"result": "retry later"}, status_code=503, headers={"Retry-After": "60"})
        crashpoints.hit("webhook.parsed")
        return await self._apply("phaxio", replace(update, job_id=job.id), ctx.phaxio_name, job=job)

    async def _apply(self, provider: str, update: Any, name: str | None = None, *, job: Job | None = None) -> Response:
        """Apply a checked update through the tracker of provider ``name`` (default ``provider``);
        ``job``: the job the request was checked against, as just read (not read again)."""
        try:
            applied = await self.ctx.tracker_for(name or provider).apply(update, known=job)
        except StoreError as exc:
            self._count(provider, "error")
            log.error("webhook.store_error", provider=provider, error=str(exc))
            return JSONResponse({"result": "busy"}, status_code=503, headers={"Retry-After": "30"})
        crashpoints.hit("webhook.applied")
        if applied is None:
            self._count(provider, "unknown")
            return answer(200, "unknown fax")
        job, decision = applied
        if isinstance(decision, Ignore):
            self._count(provider, "ignored")
            log.info("webhook.no_change", provider=provider, job_id=job.id, why=decision.why)
            return answer(200, "ignored", why=decision.why, state=job.state.value)
        self._count(provider, "applied")
        return answer(200, "applied", state=job.state.value)

    # ---- Openfax ------------------------------------------------------------------------

    async def openfax(self, request: Request) -> Response:
        ctx = self.ctx
        expected = ctx.openfax_token
        if expected is None:
            return answer(404, "not found")
        given = str(request.path_params.get("token", ""))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return self._reject("openfax", "wrong token")
        fields: dict[str, str] = dict(request.query_params.items())
        if request.method == "POST":
            try:
                body, _ = await read_form(request, ctx.max_body)
            except TooLarge:
                return too_large()
            except BadRequest as exc:
                return self._malformed("openfax", str(exc))
            fields.update(body)
        account = (fields.get("AccountID") or "").strip()
        if account and ctx.openfax_account and account != ctx.openfax_account:
            return self._reject("openfax", "other account")
        try:
            update = openfax.parse_postback(fields)
        except MALFORMED as exc:
            return self._malformed("openfax", str(exc) if isinstance(exc, ValueError) else type(exc).__name__)
        job = await ctx.store.by_provider_id(update.provider_id, "openfax")
        if job is None:
            self._count("openfax", "unknown")
            log.info("webhook.unknown_fax", provider="openfax", provider_id=update.provider_id)
            return answer(200, "unknown fax")
        if not ctx.confirm_postbacks:
            return await self._apply("openfax", replace(update, job_id=job.id), job=job)
        # A hint: confirm from the report (one poll cycle, shared with other postbacks). The
        # postback's LastStatus words are kept for a report row that has none.
        tracker = ctx.tracker_for("openfax")
        tracker.hint(update)
        try:
            await tracker.refresh()
        except (ProviderError, StoreError) as exc:
            log.warning("webhook.confirm_failed", provider="openfax", job_id=job.id,
                        error=getattr(exc, "reason", str(exc)))
        job = await ctx.store.get(job.id)
        self._count("openfax", "confirmed" if job.final else "hint")
        log.info("webhook.postback", provider="openfax", job_id=job.id, confirmed=job.final,
                 state=job.state.value)
        if job.final:
            return answer(200, "confirmed", state=job.state.value)
        return answer(202, "noted", why="not final in the provider's report yet; polling goes on")

    # ---- Sinch --------------------------------------------------------------------------

    async def sinch(self, request: Request) -> Response:
        ctx = self.ctx
        expected = ctx.sinch_token
        if expected is None:
            return answer(404, "not found")
        given = str(request.path_params.get("token", ""))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return self._reject("sinch", "wrong token")
        try:
            body = await read_capped(request, max(ctx.max_body, ctx.sinch_max_body))
        except TooLarge:
            return too_large()
        except BadRequest as exc:
            return self._malformed("sinch", str(exc))
        try:
            ctype = request.headers.get("content-type") or ""
            data = await asyncio.get_running_loop().run_in_executor(None, _sinch_body, ctype, body)
            parsed = sinch.parse_callback(data)
        except BadRequest as exc:
            return self._malformed("sinch", str(exc))
        except MALFORMED as exc:
            return self._malformed("sinch", str(exc) if isinstance(exc, ValueError) else type(exc).__name__)
        if parsed is None:
            self._count("sinch", "ignored")
            return answer(200, "ignored", why="not about a sent fax")
        fax_id, fax = parsed
        job = await ctx.store.by_provider_id(fax_id, "sinch")
        label = sinch.job_label(fax)
        if job is None and label:
            try:
                job = await ctx.store.get(label)
            except JobNotFound:
                job = None
        if job is None or job.provider != "sinch":
            self._count("sinch", "unknown")
            log.info("webhook.unknown_fax", provider="sinch", provider_id=_loggable(fax_id))
            return answer(200, "unknown fax")
        if job.provider_id and job.provider_id != fax_id:
            self._count("sinch", "ignored")
            log.info("webhook.other_fax", provider="sinch", job_id=job.id, provider_id=_loggable(fax_id))
            return answer(200, "ignored", why="about another fax of this job")
        if not job.provider_id and job.hold is not Hold.RECONCILE:
            self._count("sinch", "deferred")
            return JSONResponse({"result": "retry later"}, status_code=503, headers={"Retry-After": "60"})
        # Unsigned: a hint. What Sinch says when asked is what counts.
        try:
            update = await ctx.tracker_for("sinch").provider.status(fax_id)
        except PermanentProviderError as exc:
            self._count("sinch", "unknown")
            log.warning("webhook.confirm_failed", provider="sinch", job_id=job.id, error=exc.reason)
            return answer(200, "unknown fax")
        except ProviderError as exc:
            self._count("sinch", "error")
            log.warning("webhook.confirm_failed", provider="sinch", job_id=job.id, error=exc.reason)
            return JSONResponse({"result": "retry later"}, status_code=503, headers={"Retry-After": "60"})
        if update.provider_id != fax_id or (update.job_id and update.job_id != job.id):
            return self._reject("sinch", "fax of another job", job_id=job.id)
        if not update.outcome.final:
            self._count("sinch", "hint")
            log.info("webhook.callback", provider="sinch", job_id=job.id, confirmed=False,
                     status=update.raw_status)
            return answer(202, "noted", why="not final at Sinch yet; polling goes on")
        return await self._apply("sinch", replace(update, job_id=job.id), job=job)

    # ---- health and metrics -------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        ctx = self.ctx
        problems: list[str] = []
        if not ctx.ready():
            problems.append("daemon not ready")
        try:
            # awaited, so a commit waiting on the write lock does not hold up the loop; bounded
            # like SQLite's own busy wait, so a store that stopped answering is named
            async with asyncio.timeout(ctx.store_wait):
                await ctx.store.kv_get("health")
        except TimeoutError:
            problems.append(f"store: no answer within {ctx.store_wait:g} s")
        except Exception as exc:
            problems.append(f"store: {type(exc).__name__}")
        if not _writable(ctx.state_dir):
            problems.append("store: the state folder is not writable")
        parts: dict[str, bool] = {}
        for component in ctx.components:
            try:
                ok = bool(component.healthy())
            except Exception:
                ok = False
            parts[component.name] = ok
            if not ok:
                problems.append(f"{component.name} not healthy")
        status = 503 if problems else 200
        # Worth a look, but no reason to restart the daemon (the watchdog follows /healthz's status).
        warnings: list[str] = []
        try:
            async with asyncio.timeout(ctx.store_wait):
                overdue = await ctx.store.overdue(datetime.now(UTC) - timedelta(seconds=OVERDUE_S))
        except Exception:
            overdue = 0
        if overdue:
            warnings.append(f"{overdue} job(s) overdue at the provider (accepted over {OVERDUE_S // 3600:.0f} h ago, "
                            "or unknown to it): see `faxbridge jobs --state submitted`")
        circuits = dict(ctx.circuits()) if ctx.circuits is not None else {}
        for name, state in circuits.items():
            if state != "closed":          # failing over (or waiting), not a reason to restart the daemon
                warnings.append(f"provider {name}: circuit {state} (failing; new faxes go to the next provider)")
        return JSONResponse({"status": "ok" if not problems else "unhealthy", "components": parts,
                             "problems": problems, "warnings": warnings, "circuits": circuits},
                            status_code=status)

    async def metrics(self, request: Request) -> Response:
        await self.ctx.metrics.refresh()
        return Response(self.ctx.metrics.render(), media_type=CONTENT_TYPE)


def _writable(folder: Path) -> bool:
    """Whether a file in ``folder`` opens for writing (nothing is written). False on a file system
    turned read-only after an error: ext4 ``errors=remount-ro`` still answers reads, and even
    access(2), while every write fails with EROFS."""
    try:
        os.close(os.open(folder / ".healthz", os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        return False
    return True


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            path = request.url.path.split("/webhooks/openfax/")[0].split("/webhooks/sinch/")[0]
            log.exception("web.internal_error", path=path,
                          error=type(exc).__name__)
            return answer(500, "internal error")

    return run


def build_app(ctx: WebContext) -> Starlette:
    h = Handlers(ctx)
    return Starlette(routes=[
        Route("/webhooks/phaxio", _guarded(h.phaxio), methods=["POST"]),
        Route("/webhooks/openfax/{token}", _guarded(h.openfax), methods=["GET", "POST"]),
        Route("/webhooks/sinch/{token}", _guarded(h.sinch), methods=["POST"]),
        Route("/healthz", _guarded(h.healthz), methods=["GET"]),
        Route("/metrics", _guarded(h.metrics), methods=["GET"]),
    ])
