"""The Sinch Fax API v3 adapter over real HTTP against the simulator: every status and outcome
digit, the errors, batched polling, and reconciliation by the job's label."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from faxbridge.errors import AccountError, PermanentProviderError, RefusedError, TransientProviderError
from faxbridge.models import FaxOptions, FaxOutcome, Paper, PendingFax, SubmissionLookup, SubmitRequest
from faxbridge.providers.sinch import SinchProvider
from faxbridge.simulator import Fault, Simulator, SimulatorServer, credentials

from .conftest import make_pdf


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


Factory = Callable[..., SinchProvider]


@pytest.fixture
async def make(net: Net) -> AsyncIterator[Factory]:
    clients: list[httpx.AsyncClient] = []

    def build(*, timeout: float = 10.0, key_id: str = credentials.SINCH_KEY_ID,
              key_secret: str = credentials.SINCH_KEY_SECRET, project: str = credentials.SINCH_PROJECT_ID,
              **kw: Any) -> SinchProvider:
        client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        clients.append(client)
        return SinchProvider(client, base_url=net.base + "/v3", project_id=project, key_id=key_id,
                             key_secret=key_secret, header_text="faxbridge test", **kw)

    yield build
    for client in clients:
        await client.aclose()


def request(pdf: Path, to: str, job: str, **opts: Any) -> SubmitRequest:
    return SubmitRequest(job_id=job, to=to, pdf=pdf, filename="doc.pdf", pages=2, paper=Paper.LETTER,
                         options=FaxOptions(**opts))


EXPECTED: dict[int, tuple[FaxOutcome, int, str | None, int | None]] = {
    **{d: (FaxOutcome.DELIVERED, 1, None, None) for d in range(6)},
    6: (FaxOutcome.DELIVERED, 2, None, None),
    7: (FaxOutcome.FAILED, 3, "No Answer: there was no answer on all 3 attempts", 30),
    8: (FaxOutcome.FAILED, 1, "Not a fax machine: the number answered but no fax machine did", 6),
    9: (FaxOutcome.FAILED, 3, "Busy: the line was busy on all 3 attempts", 17),
}


async def test_every_digit_and_status(net: Net, make: Factory, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", 2)
    p = make()
    ids = {}
    for digit in EXPECTED:
        receipt = await p.submit(request(pdf, f"+1555555121{digit}", f"J{digit}", header="H" * 60))
        assert receipt.provider_id.startswith("01SIMFAX")          # a string id, not a number
        ids[digit] = receipt.provider_id
    await net.sim.idle(30)
    for digit, (outcome, attempts, reason, code) in EXPECTED.items():
        update = await p.status(ids[digit])
        assert (update.outcome, update.attempts, update.reason, update.status_code) == (
            outcome, attempts, reason, code), digit
        assert update.job_id == f"J{digit}" and update.provider == "sinch"
        assert update.raw_status == ("COMPLETED" if outcome is FaxOutcome.DELIVERED else "FAILURE")
        if outcome is FaxOutcome.DELIVERED:
            assert update.pages == 2 and update.cost == 0.14 and update.duration_s is not None
    sent = [s for s in net.sim.sends if s.provider == "sinch"]
    assert {s.job_tag for s in sent} == {f"J{d}" for d in EXPECTED}
    assert all(s.header == "H" * 50 and s.filenames == ("doc.pdf",) for s in sent)


async def test_queued_and_in_progress_are_pending(net: Net, make: Factory, tmp_path: Path) -> None:
    net.sim.speed = 1.0           # real time: rendering takes 5 s, then the call rings for 20 s
    p = make()
    receipt = await p.submit(request(make_pdf(tmp_path / "a.pdf"), "+15555551212", "J1"))
    update = await p.status(receipt.provider_id)
    assert (update.outcome, update.raw_status, update.attempts) == (FaxOutcome.PENDING, "QUEUED", None)
    fax = net.sim.get("sinch", receipt.provider_id)
    assert fax is not None
    fax.accepted_at -= timedelta(seconds=10)         # rendered, now ringing
    update = await p.status(receipt.provider_id)
    assert (update.outcome, update.raw_status, update.attempts) == (FaxOutcome.PENDING, "IN_PROGRESS", 1)


async def test_unreadable_document_fails_with_conversion_error(net: Net, make: Factory, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not a PDF at all")
    p = make()
    receipt = await p.submit(request(bad, "+15555551212", "J1"))
    await net.sim.idle(30)
    update = await p.status(receipt.provider_id)
    assert update.outcome is FaxOutcome.FAILED and update.status_code == 4
    assert update.reason is not None and update.reason.startswith("Document conversion failed: Sinch")


@pytest.mark.parametrize(("build", "to", "exc", "words"), [
    pytest.param({"key_secret": "wrong"}, "+15555551212", AccountError, "access key", id="401-auth"),
    pytest.param({"key_id": credentials.SINCH_INACTIVE_KEY_ID}, "+15555551212", AccountError,
                 "Insufficient credit", id="402-funds"),
    pytest.param({"project": "other-project"}, "+15555551212", AccountError, "project", id="404-project"),
    pytest.param({}, "+1555", RefusedError, "E.164", id="400-number"),
    pytest.param({}, "+19005551212", RefusedError, "not allowed", id="400-restricted"),
])
async def test_submit_errors(make: Factory, tmp_path: Path, build: dict[str, str], to: str,
                             exc: type[Exception], words: str) -> None:
    with pytest.raises(exc) as info:
        await make(**build).submit(request(make_pdf(tmp_path / "a.pdf"), to, "J1"))
    assert words in str(info.value)
    if isinstance(info.value, AccountError):
        assert info.value.kind == ("credit" if "credit" in words.lower() else "auth")


@pytest.mark.parametrize(("status", "maybe_sent"), [(429, False), (500, True), (503, True)])
async def test_transient_statuses(net: Net, make: Factory, tmp_path: Path, status: int, maybe_sent: bool) -> None:
    net.sim.inject(Fault("status", status=status, retry_after=3, path="/faxes"))
    with pytest.raises(TransientProviderError) as info:
        await make().submit(request(make_pdf(tmp_path / "a.pdf"), "+15555551212", "J1"))
    assert (info.value.code, info.value.retry_after, info.value.maybe_sent) == (str(status), 3.0, maybe_sent)
    assert not [s for s in net.sim.sends if s.provider == "sinch"]


async def test_status_of_an_unknown_fax_is_404(make: Factory) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await make().status("01SIMFAX999")
    assert info.value.code == "404" and "Fax not found" in info.value.reason


async def test_balance_and_cancel_are_not_offered(make: Factory) -> None:
    p = make()
    for call in (p.balance(), p.cancel("01SIMFAX1")):
        with pytest.raises(PermanentProviderError) as info:
            await call
        assert info.value.code == "not_offered" and "offers no" in info.value.reason


async def test_poll_lists_final_faxes_in_pages(net: Net, make: Factory, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("faxbridge.providers.sinch.PAGE_SIZE", 2)
    pdf = make_pdf(tmp_path / "a.pdf")
    p = make()
    since = datetime.now(UTC)
    pending = []
    for n, digit in enumerate((1, 2, 3, 9, 8)):
        receipt = await p.submit(request(pdf, f"+1555555121{digit}", f"J{n}"))
        pending.append(PendingFax(f"J{n}", receipt.provider_id, f"+1555555121{digit}", 1, since))
    await net.sim.idle(30)
    result = await p.poll(pending, None)
    got = {u.job_id: u.outcome for u in result.updates}
    assert got == {"J0": FaxOutcome.DELIVERED, "J1": FaxOutcome.DELIVERED, "J2": FaxOutcome.DELIVERED,
                   "J3": FaxOutcome.FAILED, "J4": FaxOutcome.FAILED}
    # COMPLETED: 3 faxes at 2 a page = 2 requests (the first names the next); FAILURE: 2 faxes, 1
    assert result.requests == 3


async def test_a_timeout_is_reconciled_by_the_label_not_resent(net: Net, make: Factory, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "a.pdf")
    p = make()
    other = await p.submit(request(pdf, "+15555551212", "OTHER"))
    since = datetime.now(UTC)
    net.sim.inject(Fault("accept_then_hang", seconds=3.0, path="/faxes", method="POST"))
    with pytest.raises(TransientProviderError) as info:
        await make(timeout=0.5).submit(request(pdf, "+15555551212", "LOST"))
    assert info.value.maybe_sent
    lookup = SubmissionLookup(job_id="LOST", to="+15555551212", pages=1, since=since)
    found = await p.find_submission(lookup)
    lost = [s for s in net.sim.sends if s.job_tag == "LOST"]
    assert len(lost) == 1 and found == lost[0].id and found != other.provider_id
    assert await p.find_submission(SubmissionLookup("LOST", "+15555551212", 1, since,
                                                    known_ids=frozenset({found}))) is None
    assert await p.find_submission(SubmissionLookup("NEVER", "+15555551212", 1, since)) is None
