"""Phaxio over HTTP: each outcome digit ends in the right state, attempts and reason."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest

from faxbridge.clock import FakeClock
from faxbridge.simulator import Simulator, SimulatorServer
from tests.simulator.phaxio_helpers import created_id, get, send

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")

OUTCOMES = [
    *[(str(d), "success", 0, None, None, None) for d in range(6)],
    ("6", "success", 1, None, None, None),
    ("7", "failure", 2, "lineError", 30, "No answer from the fax machine."),
    ("8", "failure", 0, "faxError", 6, "Timed out waiting for initial communication"),
    ("9", "failure", 2, "lineError", 17, "Busy"),
]


@pytest.mark.parametrize("version", ["v2", "v2.1"])
@pytest.mark.parametrize(("digit", "status", "retries", "etype", "eid", "emsg"), OUTCOMES,
                         ids=[o[0] for o in OUTCOMES])
async def test_outcome_by_last_digit(
    sim: Simulator, base: str, client: httpx.AsyncClient, version: str,
    digit: str, status: str, retries: int, etype: str | None, eid: int | None, emsg: str | None,
) -> None:
    fax_id = await created_id(await send(client, base, "+1555555010" + digit, version=version))
    await sim.idle(30)
    fax = await get(client, base, fax_id, version)
    assert fax["status"] == status
    assert fax["direction"] == "sent" and fax["num_pages"] == 2
    assert fax["cost"] == (14 if status == "success" else 0)
    assert RFC3339.match(fax["created_at"]) and RFC3339.match(fax["completed_at"])
    assert ("barcodes" in fax) is (version == "v2.1")
    (rec,) = fax["recipients"]
    assert rec["phone_number"] == "+1555555010" + digit
    assert rec["status"] == status
    assert rec["retry_count"] == retries
    assert (rec["error_type"], rec["error_id"], rec["error_message"]) == (etype, eid, emsg)
    assert (fax["error_type"], fax["error_id"], fax["error_message"]) == (etype, eid, emsg)
    assert rec["bitrate"] == (14400 if status == "success" else None)
    assert RFC3339.match(rec["completed_at"])


@pytest.fixture
async def fake() -> tuple[Simulator, FakeClock]:
    clock = FakeClock(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    return Simulator(speed=1.0, clock=clock), clock


async def test_state_progression_busy_then_delivered(
    fake: tuple[Simulator, FakeClock], client: httpx.AsyncClient
) -> None:
    sim, clock = fake
    async with SimulatorServer(sim) as server:
        base = server.base_url
        fax_id = await created_id(await send(client, base, "+15555550106"))
        first = await get(client, base, fax_id)
        assert first["status"] == "queued" and first["num_pages"] == 0 and first["cost"] == 0
        assert first["created_at"] == "2026-11-22T10:00:00.000+00:00"
        assert first["recipients"][0]["status"] is None
        assert first["completed_at"] is None
        steps = [
            (6, "inprogress", "ringing", 0),          # rendered (5 s), first call ringing
            (5, "inprogress", "willretry", 0),        # busy after 5 s; redial in 240 s
            (240, "inprogress", "ringing", 1),        # the redial
            (20, "inprogress", "callactive", 1),      # answered after 20 s
        ]
        for seconds, status, rstatus, retries in steps:
            clock.advance(seconds)
            fax = await get(client, base, fax_id)
            assert (fax["status"], fax["recipients"][0]["status"]) == (status, rstatus), seconds
            assert fax["recipients"][0]["retry_count"] == retries
            assert fax["num_pages"] == 2
        waiting = await get(client, base, fax_id)
        assert waiting["recipients"][0]["error_type"] is None
        clock.advance(60)
        fax = await get(client, base, fax_id)
        assert fax["status"] == "success"
        assert fax["completed_at"] == "2026-11-22T10:05:30.000+00:00"   # 5 + 5 + 240 + 20 + 2*30
        sim.kick()
        await sim.idle(10)


async def test_willretry_carries_the_busy_error(
    fake: tuple[Simulator, FakeClock], client: httpx.AsyncClient
) -> None:
    sim, clock = fake
    async with SimulatorServer(sim) as server:
        fax_id = await created_id(await send(client, server.base_url, "+15555550109"))
        clock.advance(11)
        rec = (await get(client, server.base_url, fax_id))["recipients"][0]
        assert (rec["status"], rec["error_type"], rec["error_id"]) == ("willretry", "lineError", 17)
        clock.advance(1000)
        sim.kick()
        await sim.idle(10)


async def test_batch_delay_is_pendingbatch(fake: tuple[Simulator, FakeClock], client: httpx.AsyncClient) -> None:
    sim, clock = fake
    async with SimulatorServer(sim) as server:
        fax_id = await created_id(await send(client, server.base_url, batch_delay="60"))
        fax = await get(client, server.base_url, fax_id)
        assert fax["status"] == "pendingbatch" and fax["recipients"][0]["status"] == "queued"
        clock.advance(66)
        assert (await get(client, server.base_url, fax_id))["status"] == "inprogress"
        clock.advance(1000)
        sim.kick()
        await sim.idle(10)


async def test_several_recipients_partialsuccess(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    fax_id = await created_id(await send(client, base, ["+15555550101", "+15555550108"]))
    await sim.idle(30)
    fax = await get(client, base, fax_id)
    assert fax["status"] == "partialsuccess"
    assert [r["status"] for r in fax["recipients"]] == ["success", "failure"]
    assert fax["cost"] == 14
    assert sim.sends[-1].recipients == ("+15555550101", "+15555550108")


@pytest.mark.parametrize(
    ("etype", "eid", "retries"),
    [("documentConversionError", 122, 0), ("lineError", 121, 0), ("faxError", 6, 0),
     ("fatalError", None, 0), ("generalError", None, 0)],
)
async def test_test_fail(sim: Simulator, base: str, client: httpx.AsyncClient,
                         etype: str, eid: int | None, retries: int) -> None:
    fax_id = await created_id(await send(client, base, "+15555550100", test_fail=etype))
    await sim.idle(30)
    fax = await get(client, base, fax_id)
    rec = fax["recipients"][0]
    assert (fax["status"], rec["error_type"], rec["error_id"], rec["retry_count"]) == (
        "failure", etype, eid, retries)


@pytest.mark.parametrize(
    ("name", "content", "ctype", "status", "pages", "eid"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "application/pdf", "failure", 0, 4),
        ("blob.bin", bytes(range(256)) * 4, "application/octet-stream", "failure", 0, 129),
        ("note.txt", b"hello\n" * 70, "text/plain", "success", 2, None),
    ],
    ids=["unreadable-pdf", "unknown-type", "text"],
)
async def test_documents_are_rendered_later(
    sim: Simulator, base: str, client: httpx.AsyncClient,
    name: str, content: bytes, ctype: str, status: str, pages: int, eid: int | None,
) -> None:
    response = await send(client, base, files=[("file", (name, content, ctype))])
    fax_id = await created_id(response)        # accepted at submit, as Phaxio renders later
    await sim.idle(30)
    fax = await get(client, base, fax_id)
    assert (fax["status"], fax["num_pages"], fax["recipients"][0]["error_id"]) == (status, pages, eid)
    if eid is not None:
        assert fax["error_type"] == "documentConversionError"


async def test_image_counts_one_page(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (200, 100), 1).save(out, format="PNG")
    files = [("file[]", ("a.png", out.getvalue(), "image/png")),
             ("file[]", ("b.pdf", (await _pdf(3)), "application/pdf"))]
    fax_id = await created_id(await send(client, base, files=files))
    assert sim.sends[-1].pages == 4 and sim.sends[-1].filenames == ("a.png", "b.pdf")
    await sim.idle(30)
    assert (await get(client, base, fax_id))["num_pages"] == 4


async def _pdf(pages: int) -> bytes:
    from tests.simulator.conftest import make_pdf

    return make_pdf(pages)
