"""Both adapters end to end over real HTTP against the simulator (faxbridge.simulator)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from faxbridge.errors import AccountError, PermanentProviderError, TransientProviderError
from faxbridge.models import (
    FaxOptions,
    FaxOutcome,
    Paper,
    PendingFax,
    Resolution,
    StatusUpdate,
    SubmissionLookup,
    SubmitRequest,
)
from faxbridge.providers.base import Provider
from faxbridge.providers.openfax import OpenfaxProvider
from faxbridge.providers.phaxio import PhaxioProvider, parse_callback, verify_signature
from faxbridge.simulator import Fault, Simulator, SimulatorServer, credentials

from .conftest import Reply, StubServer, eventually, make_pdf

PROVIDERS = ["openfax", "phaxio"]
SEND_PATH = {"openfax": "faxSendSubmit", "phaxio": "/faxes"}


@dataclass
class Net:
    sim: Simulator
    base: str


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    sim = Simulator(speed=1000.0)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    base = await server.start()
    try:
        yield Net(sim, base)
    finally:
        await server.stop()


Factory = Callable[..., Provider]


@pytest.fixture
async def make(net: Net) -> AsyncIterator[Factory]:
    clients: list[httpx.AsyncClient] = []

    def build(kind: str, *, timeout: float = 10.0, version: str = "v2.1", grace: float = 0.0, **kw: str) -> Provider:
        client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        clients.append(client)
        if kind == "openfax":
            return OpenfaxProvider(
                client, base_url=net.base, send_path="/faxSendSubmit.php",
                balance_path="/getAvailableCredit.php", report_path="/outboundDetailsbyDate.php",
                account_id=kw.get("account_id", credentials.OPENFAX_ACCOUNT_ID),
                api_key=kw.get("api_key", credentials.OPENFAX_API_KEY), from_header="faxbridge test",
                lookup_grace_s=grace, lookup_grace_per_page_s=0.0,
            )
        return PhaxioProvider(
            client, base_url=f"{net.base}/{version}", api_key=kw.get("api_key", credentials.PHAXIO_API_KEY),
            api_secret=credentials.PHAXIO_API_SECRET, header_text="faxbridge test",
        )

    yield build
    for client in clients:
        await client.aclose()


def request(pdf: Path, to: str, job: str, pages: int = 2, callback_url: str | None = None) -> SubmitRequest:
    return SubmitRequest(job_id=job, to=to, pdf=pdf, filename="doc.pdf", pages=pages, paper=Paper.LETTER,
                         options=FaxOptions(resolution=Resolution.FINE), callback_url=callback_url)


EXPECTED: dict[int, tuple[FaxOutcome, int, str | None]] = {
    **{d: (FaxOutcome.DELIVERED, 1, None) for d in range(6)},
    6: (FaxOutcome.DELIVERED, 2, None),
    7: (FaxOutcome.FAILED, 3, "No Answer: there was no answer on all 3 attempts"),
    8: (FaxOutcome.FAILED, 1, "Not a fax machine: the number answered but no fax machine did"),
    9: (FaxOutcome.FAILED, 3, "Busy: the line was busy on all 3 attempts"),
}


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_every_outcome_digit(kind: str, net: Net, make: Factory, pdf: Path) -> None:
    p = make(kind)
    started = datetime.now(UTC)
    pending: dict[str, PendingFax] = {}
    for digit in range(10):
        to = f"+1555555121{digit}"
        receipt = await p.submit(request(pdf, to, f"J{digit}"))
        pending[receipt.provider_id] = PendingFax(f"J{digit}", receipt.provider_id, to, 2, started)
    sends = {s.id: s for s in net.sim.sends}
    digest = hashlib.sha256(pdf.read_bytes()).hexdigest()
    for fax_id, pend in pending.items():
        send = sends[fax_id]
        assert (send.provider, send.to, send.pdf_sha256, send.pages) == (kind, pend.to, digest, 2)
        if kind == "phaxio":
            assert (send.job_tag, send.header) == (pend.job_id, "faxbridge test")
        else:
            assert (send.header, send.resolution, send.paper) == ("faxbridge test", "fine", "letter")

    finals: dict[str, StatusUpdate] = {}
    cursor: str | None = None
    polls = 0

    async def cycle() -> int:
        nonlocal cursor, polls
        result = await p.poll([v for k, v in pending.items() if k not in finals], cursor)
        cursor, polls = result.cursor, polls + 1
        assert result.requests <= 2
        for u in result.updates:
            assert u.outcome is not FaxOutcome.PENDING
            finals[u.provider_id] = u
        return len(finals)

    await eventually(cycle, lambda n: n == 10, 60, "every fax final", interval=0.05)
    for fax_id, pend in pending.items():
        outcome, attempts, reason = EXPECTED[int(pend.to[-1])]
        u = finals[fax_id]
        assert (u.provider, u.outcome, u.attempts, u.reason) == (kind, outcome, attempts, reason), pend.to
        assert u.job_id == pend.job_id
        assert u.pages == 2
        if outcome is FaxOutcome.DELIVERED:
            assert u.cost == pytest.approx(0.14) if kind == "phaxio" else True
        assert (await p.status(fax_id)).outcome is outcome


@pytest.mark.parametrize("version", ["v2", "v2.1"])
async def test_phaxio_versions_and_signed_callback(version: str, net: Net, make: Factory, pdf: Path,
                                                   stub: StubServer) -> None:
    p = make("phaxio", version=version)
    stub.reply("/hooks/phaxio", Reply("ok", content_type="text/plain"))
    hook = f"{stub.base}/hooks/phaxio?job=J1"
    receipt = await p.submit(request(pdf, "+15555551219", "J1", callback_url=hook))
    assert receipt.callback_url == hook
    await net.sim.idle(30)
    posts = [s for s in stub.seen if s.path == "/hooks/phaxio"]
    assert len(posts) == 1, "one final callback, accepted the first time"
    final = None
    for seen in posts:
        fields = dict(seen.fields)
        files = [(name, data) for name, _, _, data in seen.files]
        assert verify_signature(net.sim.callback_token, hook, fields, files,
                                seen.headers.get("x-phaxio-signature"))
        assert not verify_signature("wrong-token", hook, fields, files, seen.headers.get("x-phaxio-signature"))
        update = parse_callback(fields)
        if update is not None and update.outcome.final:
            final = update
    assert final is not None and final.provider_id == receipt.provider_id
    assert final.reason == "Busy: the line was busy on all 3 attempts" and final.job_id == "J1"


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_request_timeout_is_maybe_sent(kind: str, net: Net, make: Factory, pdf: Path) -> None:
    net.sim.inject(Fault(kind="hang", path=SEND_PATH[kind], seconds=1.5))
    p = make(kind, timeout=0.3)
    with pytest.raises(TransientProviderError) as info:
        await p.submit(request(pdf, "+15555551210", "JT"))
    assert info.value.maybe_sent and info.value.code == "timeout"


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_503_then_429_with_retry_after(kind: str, net: Net, make: Factory, pdf: Path) -> None:
    net.sim.inject(Fault(kind="status", status=503, path=SEND_PATH[kind]))
    net.sim.inject(Fault(kind="status", status=429, retry_after=7, path=SEND_PATH[kind]))
    p = make(kind)
    req = request(pdf, "+15555551210", "JR")
    with pytest.raises(TransientProviderError) as first:
        await p.submit(req)
    # a 5xx came after the request was sent: it may have been taken, reconcile before resending
    assert first.value.code == "503" and first.value.maybe_sent
    with pytest.raises(TransientProviderError) as second:
        await p.submit(req)
    assert second.value.code == "429" and second.value.retry_after == 7
    assert net.sim.sends == []
    await p.submit(req)
    assert len(net.sim.sends) == 1


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_find_submission_after_accept_then_hang(kind: str, net: Net, make: Factory, pdf: Path) -> None:
    p = make(kind, timeout=0.3)
    since = datetime.now(UTC)
    await p.submit(request(pdf, "+15555551212", "JOLD"))      # same number and pages, another job
    net.sim.inject(Fault(kind="accept_then_hang", path=SEND_PATH[kind], seconds=1.5))
    with pytest.raises(TransientProviderError) as info:
        await p.submit(request(pdf, "+15555551212", "JH"))
    assert info.value.maybe_sent
    old_id, new_id = (s.id for s in net.sim.sends)
    lookup = SubmissionLookup(job_id="JH", to="+15555551212", pages=2, since=since, known_ids=frozenset({old_id}))
    # Openfax lists a fax once its first call attempt is over: wait for the record, with a deadline.
    found = await eventually(lambda: p.find_submission(lookup), lambda r: r is not None, 30, "the record")
    assert found == new_id
    nobody = SubmissionLookup(job_id="JNONE", to="+15555551202", pages=2, since=since)
    assert await p.find_submission(nobody) is None


async def test_openfax_recent_missing_record_is_not_proof(make: Factory) -> None:
    # Openfax lists a fax once its first call is over: a fresh "no record" must not cause a resend.
    p = make("openfax", grace=600.0)
    lookup = SubmissionLookup(job_id="J", to="+15555551202", pages=2, since=datetime.now(UTC))
    with pytest.raises(TransientProviderError) as info:
        await p.find_submission(lookup)
    assert info.value.code == "not_listed_yet"


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_balance(kind: str, make: Factory) -> None:
    bal = await make(kind).balance()
    expected = credentials.OPENFAX_OPENING_CREDIT if kind == "openfax" else \
        credentials.PHAXIO_OPENING_BALANCE_CENTS / 100
    assert bal.amount == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kind", "creds", "err_kind"),
    [
        ("openfax", {"account_id": credentials.OPENFAX_INACTIVE_ACCOUNT_ID}, "inactive"),
        ("openfax", {"api_key": "wrong-key"}, "auth"),
        ("phaxio", {"api_key": credentials.PHAXIO_INACTIVE_KEY}, "credit"),
        ("phaxio", {"api_key": "wrong-key"}, "auth"),
    ],
)
async def test_account_errors(kind: str, creds: dict[str, str], err_kind: str, make: Factory, pdf: Path) -> None:
    with pytest.raises(AccountError) as info:
        await make(kind, **creds).submit(request(pdf, "+15555551210", "JA"))
    assert info.value.kind == err_kind
    assert "wrong-key" not in str(info.value)


async def test_phaxio_cancel(net: Net, make: Factory, pdf: Path) -> None:
    p = make("phaxio")
    started = datetime.now(UTC)
    receipt = await p.submit(request(pdf, "+15555551219", "JC", pages=2))
    await p.cancel(receipt.provider_id)
    pend = [PendingFax("JC", receipt.provider_id, "+15555551219", 2, started)]
    result = await eventually(lambda: p.poll(pend, None), lambda r: bool(r.updates), 30, "canceled")
    (u,) = result.updates
    assert u.outcome is FaxOutcome.CANCELED and u.reason and u.reason.startswith("Canceled")


async def test_openfax_cancel_refused(make: Factory) -> None:
    with pytest.raises(PermanentProviderError):
        await make("openfax").cancel("1")


async def test_openfax_many_pages_pdf(net: Net, make: Factory, tmp_path: Path) -> None:
    big = make_pdf(tmp_path / "many.pdf", 25)
    receipt = await make("openfax").submit(request(big, "+15555551210", "JP", pages=25))
    assert net.sim.sends[-1].id == receipt.provider_id and net.sim.sends[-1].pages == 25


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_openfax_postback(method: str, net: Net, make: Factory, pdf: Path, stub: StubServer) -> None:
    from faxbridge.providers.openfax import parse_postback
    from faxbridge.simulator import PostbackTarget

    stub.reply("/hooks/openfax/tok", Reply("ok", content_type="text/plain"))
    net.sim.openfax_postback = PostbackTarget(f"{stub.base}/hooks/openfax/tok", method)
    receipt = await make("openfax").submit(request(pdf, "+15555551217", "JPB"))
    await net.sim.idle(30)
    (seen,) = [s for s in stub.seen if s.path == "/hooks/openfax/tok"]
    u = parse_postback(dict(seen.fields) if method == "POST" else dict(seen.query))
    assert (u.provider_id, u.outcome) == (receipt.provider_id, FaxOutcome.FAILED)
    assert u.reason and u.reason.startswith("No Answer: there was no answer")


@pytest.mark.parametrize("fault", [None, 429, 500], ids=["404", "429", "500"])
async def test_phaxio_one_failing_single_lookup_keeps_the_cycles_list_results(
        net: Net, make: Factory, pdf: Path, fault: int | None) -> None:
    """A fax the provider forgot (404), or a lookup rate limited or failing: the others still finish."""
    p = make("phaxio")
    started = datetime.now(UTC)
    receipt = await p.submit(request(pdf, "+15555551212", "JOK", pages=1))
    await net.sim.idle(30)
    ghost = PendingFax("JGHOST", "98765432", "+15555551213", 1, started - timedelta(hours=3))
    if fault is not None:
        net.sim.inject(Fault(kind="status", status=fault, path="/faxes/98765432"))
    result = await p.poll([PendingFax("JOK", receipt.provider_id, "+15555551212", 1, started), ghost], None)
    (u,) = result.updates
    assert (u.provider_id, u.outcome, u.job_id) == (receipt.provider_id, FaxOutcome.DELIVERED, "JOK")
    assert result.unknown == (("98765432",) if fault is None else ())
    assert result.requests == 2                  # the list, then the one lookup that failed


async def test_openfax_reports_a_fax_its_report_never_showed_as_unknown(net: Net, make: Factory, pdf: Path) -> None:
    p = make("openfax")
    started = datetime.now(UTC)
    receipt = await p.submit(request(pdf, "+15555551212", "JOK", pages=1))
    await net.sim.idle(30)
    ghost = PendingFax("JGHOST", "555", "+15555551213", 1, started - timedelta(days=2))
    fresh = PendingFax("JNEW", "556", "+15555551214", 1, started)       # not listed yet: too soon to say
    result = await p.poll([PendingFax("JOK", receipt.provider_id, "+15555551212", 1, started), ghost, fresh],
                          None)
    (u,) = result.updates
    assert (u.provider_id, u.outcome) == (receipt.provider_id, FaxOutcome.DELIVERED)
    assert result.unknown == ("555",)
