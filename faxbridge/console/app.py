"""The console's routes (see the package docstring for the map)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from faxbridge import config as config_module
from faxbridge.clock import Clock, iso, shown_time
from faxbridge.config import Config
from faxbridge.console.access import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_S,
    LoginThrottle,
    Sessions,
    same_token,
)
from faxbridge.console.gate import Gate, behind_tls, client_of
from faxbridge.console.live import SLOW_POLL_S, Changes, events
from faxbridge.console.produced import notices_in_words, produced, received
from faxbridge.console.settings import effective
from faxbridge.errors import JobNotFound, StoreError
from faxbridge.jobview import job_object, waiting
from faxbridge.models import Job, JobState, Source
from faxbridge.states import OVERDUE_S, CancelRequested, Ignore, Outcome, Policy, RetryRequested, SendNow
from faxbridge.store import JobFilter, JobStore
from faxbridge.workflow import advance

log = structlog.get_logger("faxbridge.console")

PAGE_SIZE = 50
REFRESH_S = 2
STATIC = Path(__file__).parent / "static"
ACTIONS: Mapping[str, tuple[str, Callable[[str], Outcome]]] = {
    "cancel": ("Cancel this fax", lambda by: CancelRequested(by=by)),
    "retry": ("Send this fax again", lambda by: RetryRequested(by=by)),
    "send-now": ("Send this fax now instead of at its send time", lambda by: SendNow(by=by)),
}
DONE = {"cancel": "Cancel requested.", "retry": "The fax is queued to be sent again.",
        "send-now": "The fax goes now."}

PageRender = Callable[[Path, int], Awaitable[bytes]]
"""Page ``n`` (from 0) of a PDF as a PNG; the daemon runs it in the worker engine."""


async def _no_render(pdf: Path, page: int) -> bytes:
    raise StoreError("no page renderer")


@dataclass
class ConsoleContext:
    cfg: Config
    store: JobStore
    clock: Clock
    policy: Policy
    render: PageRender = _no_render
    health: Callable[[], Mapping[str, bool]] = dict          # part name -> up
    balance: Callable[[], float | None] = lambda: None       # the last balance read, USD
    users: Mapping[str, bytes] | None = None                 # console.users_file; None: loopback only
    check_password: Callable[[bytes, bytes], bool] = lambda hashed, password: False
    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    changes: Changes = field(default_factory=Changes)       # fed by store.observe (app.py wires it)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("faxbridge.console", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda dt: shown_time(dt) if dt else ""
    env.filters["iso"] = iso
    env.filters["money"] = lambda v: "" if v is None else f"${v:.2f}"
    env.filters["size"] = _size
    return env


def build_app(ctx: ConsoleContext) -> Starlette:
    env = _env()

    def page(name: str, request: Request, status: int = 200, **values: Any) -> HTMLResponse:
        session = request.state.session
        values.setdefault("user", session.user if session is not None else None)
        values.setdefault("csrf", request.state.csrf)
        values.setdefault("refresh_s", REFRESH_S)
        values.setdefault("slow_poll_s", SLOW_POLL_S)
        response = HTMLResponse(env.get_template(name).render(**values), status_code=status)
        if request.state.new_csrf:
            response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict",
                                secure=behind_tls(request), path="/")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        return response

    # ---- the queue ----------------------------------------------------------------------------

    def wanted(request: Request) -> tuple[JobFilter, int, dict[str, str]]:
        q = request.query_params
        state = q.get("state", "")
        source = q.get("source", "")
        shown_filter = {k: q.get(k, "").strip()[:100] for k in ("state", "source", "number", "sender", "text")}
        f = JobFilter(state=JobState(state) if state in {s.value for s in JobState} else None,
                      source=Source(source) if source in {s.value for s in Source} else None,
                      number="".join(ch for ch in shown_filter["number"] if ch.isdigit()),
                      sender=shown_filter["sender"], text=shown_filter["text"])
        try:
            number = max(1, int(q.get("page", "1")))
        except ValueError:
            number = 1
        return f, number, shown_filter

    async def queue_values(request: Request) -> dict[str, Any]:
        f, number, shown_filter = wanted(request)
        jobs, total = await ctx.store.search(f, offset=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        base = {k: v for k, v in shown_filter.items() if v}
        return {"jobs": [_row(j) for j in jobs], "total": total, "page": number, "pages": pages,
                "counts": await ctx.store.counts(), "states": [s.value for s in JobState],
                "sources": [s.value for s in Source], "filter": shown_filter,
                "query": urlencode(base),
                "prev": urlencode({**base, "page": number - 1}) if number > 1 else None,
                "next": urlencode({**base, "page": number + 1}) if number < pages else None}

    async def queue(request: Request) -> Response:
        return page("queue.html", request, **await queue_values(request))

    async def queue_fragment(request: Request) -> Response:
        return page("_queue.html", request, **await queue_values(request))

    # ---- a job ----------------------------------------------------------------------------------

    async def job_values(request: Request) -> dict[str, Any]:
        job = await ctx.store.get(request.path_params["job_id"])
        events = await ctx.store.events(job.id)
        now = ctx.clock.now()
        busy = await ctx.store.at_provider(job.to) if job.state is JobState.QUEUED and job.to else 0
        obj = job_object(job, events)
        actions = [name for name, ok in (
            ("cancel", not job.final), ("retry", job.state in (JobState.FAILED, JobState.CANCELED)),
            ("send-now", job.state is JobState.QUEUED and job.options.send_at is not None
             and job.options.send_at > now)) if ok]
        document = ctx.store.spool.document_path(job.id)
        return {"job": job, "obj": obj, "events": events, "actions": actions,
                "waiting": waiting(job, now, at_provider=busy, per_destination=ctx.cfg.limits.per_destination),
                "has_document": job.pages > 0 and await asyncio.to_thread(document.is_file),
                "received": await asyncio.to_thread(received, ctx.store.spool, job),
                "produced": await asyncio.to_thread(produced, ctx.cfg, job, events),
                "notices": notices_in_words(await ctx.store.notices(job.id)),
                "done": DONE.get(request.query_params.get("done", ""))}

    async def job_page(request: Request) -> Response:
        try:
            return page("job.html", request, **await job_values(request))
        except JobNotFound:
            return page("error.html", request, 404, message="There is no such job.")

    async def job_fragment(request: Request) -> Response:
        try:
            return page("_job.html", request, **await job_values(request))
        except JobNotFound:
            return HTMLResponse("", status_code=404)

    async def page_image(request: Request) -> Response:
        try:
            job = await ctx.store.get(request.path_params["job_id"])
        except JobNotFound:
            return Response(status_code=404)
        n = int(request.path_params["n"])
        document = ctx.store.spool.document_path(job.id)
        if n < 1 or n > max(job.pages, 1) or not await asyncio.to_thread(document.is_file):
            return Response(status_code=404)
        try:
            png = await ctx.render(document, n - 1)
        except Exception as exc:      # a page that cannot be drawn is the page's trouble, not the console's
            log.warning("console.page_not_rendered", job_id=job.id, page=n, error=f"{type(exc).__name__}: {exc}")
            return Response("the page could not be drawn", status_code=500, media_type="text/plain")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def pdf(request: Request) -> Response:
        try:
            job = await ctx.store.get(request.path_params["job_id"])
        except JobNotFound:
            return Response(status_code=404)
        document = ctx.store.spool.document_path(job.id)
        if not await asyncio.to_thread(document.is_file):
            return Response(status_code=404)
        return FileResponse(document, media_type="application/pdf", filename=f"fax-{job.id}.pdf",
                            content_disposition_type="inline")

    async def as_received(request: Request) -> Response:
        try:
            job = await ctx.store.get(request.path_params["job_id"])
        except JobNotFound:
            return Response(status_code=404)
        n = int(request.path_params["n"])
        found = [r for r in await asyncio.to_thread(received, ctx.store.spool, job) if r.index == n]
        if not found:
            return Response(status_code=404)
        # always a download, never shown by the browser: what a stranger mailed in is not our page
        return FileResponse(found[0].path, media_type="application/octet-stream", filename=found[0].name,
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
                                     "Content-Security-Policy": "sandbox"})

    async def confirm(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return page("error.html", request, 404, message="There is no such action.")
        try:
            job = await ctx.store.get(request.path_params["job_id"])
        except JobNotFound:
            return page("error.html", request, 404, message="There is no such job.")
        return page("confirm.html", request, job=job, action=action, question=ACTIONS[action][0])

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        job_id = request.path_params["job_id"]
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), request.state.csrf):
            log.warning("console.csrf_refused", client=client_of(request), action=action)
            return page("error.html", request, 403, message="The form was stale or did not come from this "
                                                            "console; go back, reload the page and try again.")
        if action not in ACTIONS:
            return page("error.html", request, 404, message="There is no such action.")
        who = request.state.session.user if request.state.session else f"the console at {client_of(request)}"
        try:
            _, decision = await advance(ctx.store, job_id, ACTIONS[action][1](who), ctx.clock, ctx.policy)
        except JobNotFound:
            return page("error.html", request, 404, message="There is no such job.")
        if isinstance(decision, Ignore) and decision.refused:
            return page("error.html", request, 409, message=f"Not done: {decision.why}.")
        log.info("console.action", action=action, job_id=job_id, by=who)
        return RedirectResponse(f"/jobs/{job_id}?done={action}", status_code=303)

    # ---- the overview ---------------------------------------------------------------------------

    async def overview_values() -> dict[str, Any]:
        now = ctx.clock.now()
        midnight = now.astimezone(ctx.cfg.zone()).replace(hour=0, minute=0, second=0, microsecond=0)
        recent, _ = await ctx.store.search(JobFilter(), limit=5000)
        today = [j for j in recent if j.finished_at is not None and j.finished_at >= midnight]
        delivered = [j for j in today if j.state is JobState.DELIVERED]
        in_flight = [j for j in recent if j.state in (JobState.SUBMITTING, JobState.SUBMITTED)]
        overdue = [j for j in in_flight if j.submitted_at is not None
                   and now - j.submitted_at > timedelta(seconds=OVERDUE_S)]
        return {"counts": await ctx.store.counts(),
                "sent": len(delivered), "failed": sum(1 for j in today if j.state is JobState.FAILED),
                "pages": sum(j.pages for j in delivered), "cost": sum(j.cost or 0.0 for j in today),
                "in_flight": [_row(j) for j in in_flight], "overdue": [_row(j) for j in overdue],
                "balance": ctx.balance(), "health": dict(ctx.health()),
                "reply_mail": ctx.cfg.notify.smarthost or "", "backlog": await ctx.store.outbox_backlog(),
                "configuration": config_module.summary(ctx.cfg), "settings": effective(ctx.cfg)}

    async def overview(request: Request) -> Response:
        return page("overview.html", request, **await overview_values())

    async def overview_fragment(request: Request) -> Response:
        return page("_overview.html", request, **await overview_values())

    # ---- live updates -----------------------------------------------------------------------------

    async def live(request: Request) -> Response:
        stream = ctx.changes.open()
        if stream is None:
            return Response("too many open pages; this one polls", status_code=503, media_type="text/plain",
                            headers={"Retry-After": "60"})
        token = request.cookies.get(SESSION_COOKIE)

        def alive() -> bool:
            return ctx.users is None or ctx.sessions.get(token) is not None

        return StreamingResponse(events(ctx.changes, stream, alive), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # ---- logging in -------------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        if ctx.users is None:
            return RedirectResponse("/", status_code=303)
        return page("login.html", request, error=None)

    async def login(request: Request) -> Response:
        if ctx.users is None:
            return RedirectResponse("/", status_code=303)
        client = client_of(request)
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), request.state.csrf):
            return page("login.html", request, 403, error="The form was stale; please try again.")
        if ctx.throttle.refused(client):
            log.warning("console.login_throttled", client=client)
            return page("login.html", request, 429, error="Too many failed logins from your address; "
                                                          "wait a few minutes and try again.")
        user = str(form.get("user", ""))[:200]
        password = str(form.get("password", "")).encode()[:1024]
        hashed = ctx.users.get(user)
        ok = hashed is not None and await asyncio.to_thread(ctx.check_password, hashed, password)
        if not ok:
            failures = ctx.throttle.failed(client)
            log.warning("console.login_failed", client=client, user=user, failures=failures)
            return page("login.html", request, 401, error="The user name or the password is not right.")
        ctx.throttle.passed(client)
        token, _ = ctx.sessions.new(user)
        log.info("console.login", client=client, user=user)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_S), httponly=True, samesite="strict",
                            secure=behind_tls(request), path="/")
        return response

    async def logout(request: Request) -> Response:
        form = await request.form()
        if same_token(str(form.get("csrf", "")), request.state.csrf):
            ctx.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login" if ctx.users is not None else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    routes = [
        Route("/", queue), Route("/fragments/queue", queue_fragment),
        Route("/jobs/{job_id}", job_page), Route("/fragments/jobs/{job_id}", job_fragment),
        Route("/jobs/{job_id}/pages/{n:int}.png", page_image), Route("/jobs/{job_id}/fax.pdf", pdf),
        Route("/jobs/{job_id}/received/{n:int}", as_received),
        Route("/jobs/{job_id}/confirm/{action}", confirm), Route("/jobs/{job_id}/{action}", act, methods=["POST"]),
        Route("/overview", overview), Route("/fragments/overview", overview_fragment), Route("/events", live),
        Route("/login", login_form, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Gate, sessions=ctx.sessions, users=ctx.users, env=env)
    return app


def _row(job: Job) -> dict[str, Any]:
    return {"id": job.id, "created": job.created_at, "state": job.state.value, "to": job.to, "pages": job.pages,
            "source": job.source.value, "sender": job.sender or "", "subject": job.subject or "",
            "document": job.document, "reason": job.reason or "", "final": job.final,
            "finished": job.finished_at}


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"
