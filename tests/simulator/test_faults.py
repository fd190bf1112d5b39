"""Scripted faults: status, hang, accept_then_hang, accept_then_500; consumed in order."""

from __future__ import annotations

import httpx
import pytest

from faxbridge.simulator import Fault, Simulator, SimulatorServer, credentials
from tests.simulator.phaxio_helpers import AUTH, send

OPENFAX = {"AccountID": credentials.OPENFAX_ACCOUNT_ID, "APIKey": credentials.OPENFAX_API_KEY}


async def test_status_fault_with_retry_after_then_normal(sim: Simulator, base: str,
                                                         client: httpx.AsyncClient) -> None:
    sim.inject(Fault("status", count=2, path="/faxes", status=503, retry_after=7))
    for _ in range(2):
        response = await send(client, base)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json() == {"success": False, "message": "Service unavailable"}
    assert sim.sends == []
    assert (await send(client, base)).status_code == 200
    assert len(sim.sends) == 1


async def test_429_body(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("status", status=429))
    response = await client.get(f"{base}/v2/account/status", auth=AUTH)
    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert response.json() == {"success": False, "message": "Rate limited"}


async def test_openfax_status_fault(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("status", path="getAvailableCredit", status=502))
    response = await client.post(f"{base}/getAvailableCredit.php", data=OPENFAX)
    assert response.status_code == 502 and response.json() == {"Response": "Failed"}
    assert (await client.post(f"{base}/getAvailableCredit.php", data=OPENFAX)).status_code == 200


async def test_faults_match_path_and_order(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("status", path="/account/status", status=500))
    sim.inject(Fault("status", status=503))
    assert (await send(client, base)).status_code == 503            # the second one: path matches any
    assert (await client.get(f"{base}/v2/account/status", auth=AUTH)).status_code == 500
    assert (await client.get(f"{base}/v2/account/status", auth=AUTH)).status_code == 200
    assert (await client.get(f"{base}/_sim/state")).status_code == 200   # never faulted


async def test_hang_times_the_client_out_and_sends_nothing(client: httpx.AsyncClient) -> None:
    sim = Simulator(speed=1000.0)
    sim.inject(Fault("hang", seconds=0.4))
    server = SimulatorServer(sim)
    base = await server.start()
    with pytest.raises(httpx.ReadTimeout):
        await _with_timeout(base, 0.1)
    await server.stop()                 # waits for the hung request to finish
    assert sim.faults.pending == []
    assert sim.sends == []


async def _with_timeout(base: str, timeout: float) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as short:
        return await send(short, base)


async def test_short_hang_is_just_slow(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("hang", seconds=0.05))
    assert (await send(client, base)).status_code == 200
    assert len(sim.sends) == 1


async def test_accept_then_hang_is_ambiguous(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("accept_then_hang", path="/faxes", seconds=1.0))
    with pytest.raises(httpx.ReadTimeout):
        await _with_timeout(base, 0.3)
    (sent,) = sim.sends                 # accepted although the client never heard
    listed = (await client.get(f"{base}/v2.1/faxes", auth=AUTH)).json()
    assert [str(f["id"]) for f in listed["data"]] == [sent.id]


async def test_accept_then_500(sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("accept_then_500", path="faxSendSubmit"))
    import base64

    from tests.simulator.conftest import make_pdf

    data = {**OPENFAX, "FaxNumber": "15555550100", "PDF_encode": base64.b64encode(make_pdf()).decode()}
    response = await client.post(f"{base}/faxSendSubmit.php", data=data)
    assert response.status_code == 500 and response.json() == {"Response": "Failed"}
    assert [s.provider for s in sim.sends] == ["openfax"]


async def test_accept_then_status_is_a_gateway_error_after_the_fax_was_taken(
        sim: Simulator, base: str, client: httpx.AsyncClient) -> None:
    sim.inject(Fault("accept_then_status", path="/faxes", status=504))
    response = await send(client, base)
    assert response.status_code == 504
    (sent,) = sim.sends
    listed = (await client.get(f"{base}/v2.1/faxes", auth=AUTH)).json()
    assert [str(f["id"]) for f in listed["data"]] == [sent.id]


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("status", count=0)
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "status", "colour": "red"})
    assert Fault.from_json({"kind": "hang", "seconds": 2}) == Fault("hang", seconds=2.0)
