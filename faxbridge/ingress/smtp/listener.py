"""The SMTP listener: aiosmtpd's protocol on the daemon's own event loop, policy in the dialogue.

- :class:`~faxbridge.ingress.smtp.protocol.FaxSMTP` (``protocol``) is aiosmtpd's protocol with
  the contract's size replies, the null sender, a fast DATA path and big messages spooled to a file
  (``stream``).
- :class:`FaxHandler` holds the hooks: the client's address is checked at connect and answered
  at MAIL (550 5.7.1), the sender at MAIL, each recipient at RCPT (``policy``; the hourly limits
  awaited on the :class:`~faxbridge.store.JobStore`), the message at DATA (``data``: staged in a
  worker process; ``commit``: committed here). Every reply string lives in ``replies``.
- AUTH (PLAIN, LOGIN) is offered when ``users_file`` is set: over STARTTLS, or in plain text
  from a loopback client only. ``require_auth`` makes MAIL wait for it (530 5.7.0). After AUTH the
  sender must be one of the login's senders (``auth``; 550 5.7.1); failures are throttled
  (``limits``). How the sender passed is recorded on the job (``meta["sender_check"]``): reply
  mail goes only to a sender that passed (``notify.mail``).
- Section 9: session caps and the per-read timeout (``protocol``, ``limits``); the hourly
  limit counts per sender and per client address; per-connection log lines stay within a budget.
- :class:`SmtpListener` is the daemon component: ``start`` returns once bound, ``stop`` closes the
  listening socket (new connections are refused; sessions in progress go on), ``close`` waits for
  messages being accepted, then drops the remaining sessions. The store and the worker engine are
  the daemon's (app.py closes them after every part); :func:`make_listener` wires the listener
  from them and the callbacks app.py hands it: ``header_limit`` (the provider's, so ingress names
  no provider), ``on_queued`` (wakes the dispatcher), ``on_reply`` and ``on_refused_work`` (metrics).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import weakref
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from faxbridge.clock import Clock
from faxbridge.config import Config
from faxbridge.errors import StoreError
from faxbridge.ingress.smtp import policy, replies
from faxbridge.ingress.smtp.auth import Authenticator, read_users
from faxbridge.ingress.smtp.commit import HeaderLimit, MailIntake
from faxbridge.ingress.smtp.limits import AuthThrottle, LogBudget, SessionCaps, limit_logger
from faxbridge.ingress.smtp.protocol import NULL_SENDER, FaxEnvelope, FaxSMTP, peer_host
from faxbridge.ingress.smtp.replies import OUR_TROUBLE, QUEUED
from faxbridge.store import FileSpool, JobStore
from faxbridge.workers import Engine

log = structlog.get_logger("faxbridge.smtp")

_HOUR = timedelta(hours=1)


def _sender(envelope: Envelope) -> str:
    """The envelope sender as the hourly limit counts it (normalised; "" for the null sender)."""
    return policy.normal_sender("" if envelope.mail_from == NULL_SENDER else envelope.mail_from or "")


def _login(session: Session) -> str | None:
    """The AUTH login of the session, or None before (or without) AUTH."""
    login = getattr(session.auth_data, "login", None)
    if session.authenticated and isinstance(login, bytes):
        return login.decode("utf-8", "replace")
    return None


class FaxHandler:
    """aiosmtpd hooks: each returns the reply line the client hears."""

    def __init__(self, cfg: Config, store: JobStore, intake: MailIntake, auth: Authenticator | None, *,
                 data_dir: Path) -> None:
        self.cfg = cfg
        self.store: JobStore | None = store     # RCPT counts, DATA commits; None once the listener closed
        self.data_dir = data_dir                 # where a big message is spooled
        self.intake = intake
        self.auth = auth
        self.clock = intake.clock
        self.busy = 0
        # Recipients of messages now in DATA, by sender: not committed yet, but they count against
        # the hourly limit, so concurrent sessions of one sender cannot pass it together.
        self.in_flight: Counter[str] = Counter()
        self.in_flight_clients: Counter[str] = Counter()     # the same, by client address
        self.on_reply: Callable[[str], None] = lambda code: None   # metrics: every reply's code
        self.on_queued: Callable[[], None] = lambda: None          # new jobs: wake the dispatcher
        self.idle = asyncio.Event()
        self.idle.set()
        self.sessions = SessionCaps(cfg.smtp.max_sessions, cfg.smtp.max_sessions_per_client)
        self._log_budget = LogBudget()

    def log_limited(self, event: str, **fields: object) -> None:
        """A per-connection log line, within the log budget (a flood of connections is no flood of lines)."""
        ok, left_out = self._log_budget.take()
        if ok:
            log.info(event, **fields, **({"similar_left_out": left_out} if left_out else {}))

    # aiosmtpd finds AUTH mechanisms by these names (excluded when there is no users_file).
    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        assert self.auth is not None
        return await self.auth.auth_PLAIN(server, args)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        assert self.auth is not None
        return await self.auth.auth_LOGIN(server, args)

    async def handle_AUTH(self, server: FaxSMTP, session: Session, envelope: Envelope, args: list[str]) -> object:
        """Before any AUTH exchange: an address locked out for its failures is answered 454 4.7.0."""
        if self.auth is None:
            return MISSING
        locked = self.auth.throttle.locked(peer_host(session.peer))
        if locked is None:
            return MISSING
        self.log_limited("smtp.auth_locked", peer=peer_host(session.peer))
        return locked

    async def handle_EHLO(self, server: FaxSMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.auth is None:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(self, server: FaxSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if not server.client_ok:
            return replies.CLIENT_DENIED
        why = policy.address_problem(address)
        if why is not None:                         # FaxSMTP refuses these first; kept as a second net
            return replies.bad_sender_syntax(why)
        sender = "" if address == NULL_SENDER else address
        login = _login(session)
        allowed = self.cfg.smtp.allowed_senders
        if login is not None and self.auth is not None:
            if not self.auth.may_send_as(login, sender, allowed):
                log.info("smtp.sender_refused", sender=sender, peer=peer_host(session.peer), auth_user=login)
                return replies.LOGIN_SENDER_DENIED.format(user=login)
            check = "login"
        elif not policy.sender_allowed(sender, allowed):
            log.info("smtp.sender_refused", sender=sender, peer=peer_host(session.peer))
            return replies.SENDER_DENIED
        else:
            check = "allowed_senders" if allowed else "any"
        if isinstance(envelope, FaxEnvelope):
            envelope.sender_check = check
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server: FaxSMTP, session: Session, envelope: FaxEnvelope,
                          address: str, options: list[str]) -> str:
        if not server.client_ok:
            return replies.CLIENT_DENIED
        why = policy.address_problem(address)
        if why is not None:
            return replies.bad_rcpt_syntax(why)
        smtp = self.cfg.smtp
        try:
            rcpt = policy.recipient(address, smtp.domains, self.cfg.numbers)
        except policy.Refused as exc:
            log.info("smtp.rcpt_refused", to=address.rpartition("@")[0], reply=exc.reply)
            return exc.reply
        if any(r.number.e164 == rcpt.number.e164 for r in envelope.recipients):
            return replies.OK                       # the same number twice: one fax
        if len(envelope.recipients) >= policy.MAX_RCPTS_PER_MESSAGE:
            return replies.MAX_RECIPIENTS.format(limit=policy.MAX_RCPTS_PER_MESSAGE)
        refused = await self._over_limit(envelope, peer_host(session.peer), len(envelope.recipients))
        if refused is not None:
            return refused
        envelope.recipients.append(rcpt)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return replies.OK

    async def _over_limit(self, envelope: FaxEnvelope, peer: str | None, accepted: int) -> str | None:
        """The reply when one more recipient would pass the hourly limit of the sender
        (``limits.per_sender_per_hour``) or of the client address (``limits.per_client_per_hour``:
        the sender can be forged, the client address cannot), counting jobs of the last hour,
        messages now in DATA, and ``accepted`` of this one. Else None."""
        limit = self.cfg.limits.per_sender_per_hour
        client_limit = self.cfg.limits.per_client_per_hour
        sender = _sender(envelope)
        since = self.clock.now() - _HOUR
        store = self.store
        if store is None:
            return OUR_TROUBLE
        try:
            if limit > 0:
                sent = await store.count_by_sender(sender, since) + self.in_flight[sender]
                if policy.over_limit(sent, accepted, limit):
                    log.info("smtp.rate_limited", sender=sender, sent_last_hour=sent, limit=limit)
                    return replies.rate_limited(limit)
            if client_limit > 0:
                sent = await store.count_by_client(peer or "", since) + self.in_flight_clients[peer or ""]
                if policy.over_limit(sent, accepted, client_limit):
                    log.info("smtp.rate_limited", peer=peer, sent_last_hour=sent, limit=client_limit)
                    return replies.client_rate_limited(client_limit)
        except StoreError as exc:
            log.error("smtp.store_error", error=str(exc))
            return OUR_TROUBLE
        return None

    async def handle_DATA(self, server: FaxSMTP, session: Session, envelope: FaxEnvelope) -> str:
        # Checked again: another session of this sender may have gone through DATA since our RCPT.
        peer = peer_host(session.peer) or ""
        refused = await self._over_limit(envelope, peer, len(envelope.recipients) - 1)
        if refused is not None:
            return refused
        key = _sender(envelope)
        count = len(envelope.recipients)
        self.in_flight[key] += count
        self.in_flight_clients[peer] += count
        try:
            return await self._data(session, envelope)
        finally:
            for counter, k in ((self.in_flight, key), (self.in_flight_clients, peer)):
                counter[k] -= count
                if counter[k] <= 0:
                    del counter[k]

    async def _data(self, session: Session, envelope: FaxEnvelope) -> str:
        raw: bytes | Path = envelope.spooled or envelope.original_content or b""
        sender = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from or ""
        extra = {"peer": peer_host(session.peer), "sender_check": envelope.sender_check}
        login = _login(session)
        if login is not None:
            extra["auth_user"] = login
        if self.store is None:
            return OUR_TROUBLE
        self.busy += 1
        self.idle.clear()
        try:
            reply = await self.intake.accept(self.store, sender, list(envelope.recipients), raw, extra)
            if reply.startswith(QUEUED):
                self.on_queued()
            return reply
        finally:
            self.busy -= 1
            if not self.busy:
                self.idle.set()

    async def handle_exception(self, error: Exception) -> str:
        # Anything unexpected while handling a command: the client keeps its mail and tries again.
        log.error("smtp.error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return OUR_TROUBLE


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    smtp = cfg.smtp
    if smtp.tls_cert is None or smtp.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(smtp.tls_cert), str(smtp.tls_key))
    return context


class SmtpListener:
    """The SMTP listener as a daemon component (see :class:`faxbridge.component.Component`)."""

    name = "smtp"

    def __init__(self, cfg: Config, store: JobStore, intake: MailIntake) -> None:
        self.cfg = cfg
        smtp = cfg.smtp
        users = read_users(smtp.users_file) if smtp.users_file else None
        auth = None if users is None else Authenticator(
            users.hashes, AuthThrottle(smtp.auth_lockout_failures, smtp.auth_lockout), smtp.auth_max_failures,
            users.senders)
        self.handler = FaxHandler(cfg, store, intake, auth, data_dir=FileSpool(cfg.state_dir).staging)
        self.tls = tls_context(cfg)
        self.hostname = socket.gethostname()
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[FaxSMTP] = weakref.WeakSet()
        self.address: tuple[str, int] | None = None

    def _protocol(self) -> FaxSMTP:
        smtp = self.cfg.smtp
        proto = FaxSMTP(
            self.handler, data_size_limit=smtp.max_message_size, enable_SMTPUTF8=True, hostname=self.hostname,
            ident="faxbridge ESMTP", tls_context=self.tls, auth_required=smtp.require_auth, timeout=smtp.timeout,
            auth_require_tls=True,
            auth_exclude_mechanism=None if self.handler.auth else ["PLAIN", "LOGIN"],
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(proto)
        return proto

    async def start(self) -> None:
        # aiosmtpd logs every client line at INFO (AUTH lines carry credentials): keep it quiet.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        limit_logger("mail.log")            # its per-connection warnings, within a budget
        limit_logger("asyncio")             # accept errors (out of file descriptors) likewise
        listen = self.cfg.smtp.listen
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=listen.host, port=listen.port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("smtp.listening", listen=f"{self.address[0]}:{self.address[1]}",
                 domains=list(self.cfg.smtp.domains), tls=self.tls is not None,
                 auth=self.handler.auth is not None, require_auth=self.cfg.smtp.require_auth)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            log.info("smtp.stopped_listening", in_progress=self.handler.busy)

    async def close(self, timeout: float) -> None:
        if self.handler.busy:
            try:
                await asyncio.wait_for(self.handler.idle.wait(), timeout=max(timeout, 0.1))
            except TimeoutError:
                log.warning("smtp.closed_mid_message", in_progress=self.handler.busy)
        for proto in list(self._sessions):
            if proto.transport is not None:
                proto.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.handler.store = None           # the daemon's: it closes it after every part

    def healthy(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: the live keys (allowed senders and clients, number policy, limits, session caps) apply to the
        next command; the listener itself keeps its address, TLS and AUTH until a restart."""
        self.cfg = cfg
        self.handler.cfg = cfg
        self.handler.sessions.total = cfg.smtp.max_sessions
        self.handler.sessions.per_client = cfg.smtp.max_sessions_per_client
        self.handler.intake.reconfigure(cfg)


def make_listener(cfg: Config, store: JobStore, clock: Clock, engine: Engine, *, header_limit: HeaderLimit,
                  on_queued: Callable[[], None] = lambda: None,
                  on_reply: Callable[[str], None] = lambda code: None,
                  on_refused_work: Callable[[str], None] = lambda kind: None) -> SmtpListener:
    """The SMTP listener with its mail intake on ``engine``, committing to ``store`` (both the
    caller's, and closed by it). ``header_limit``: the provider's fax header length for a
    configuration; ``on_queued``: called after a message made jobs; ``on_reply``: each reply's code;
    ``on_refused_work``: each mail refused as a bug of ours or as too much work ("bug",
    "too_much_work")."""
    intake = MailIntake(cfg, engine, clock, header_limit=header_limit)
    intake.on_refused_work = on_refused_work
    listener = SmtpListener(cfg, store, intake)
    listener.handler.on_reply = on_reply
    listener.handler.on_queued = on_queued
    return listener
