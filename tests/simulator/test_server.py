"""Serving: free port bound up front, clean stop, serve_forever, and the /_sim control surface."""

from __future__ import annotations

import asyncio
import socket

import httpx

from faxbridge.simulator import Simulator, SimulatorServer, serve_forever
from tests.simulator.conftest import Receiver
from tests.simulator.phaxio_helpers import AUTH, send


async def test_port_is_bound_before_start(client: httpx.AsyncClient) -> None:
    sim = Simulator(speed=1000)
    server = SimulatorServer(sim, host="127.0.0.1", port=0)
    assert server.port > 0
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other.bind(("127.0.0.1", server.port))
            other.listen()
            taken = False
        except OSError:
            taken = True
    assert taken
    base = await server.start()
    assert base == f"http://127.0.0.1:{server.port}"
    assert (await client.get(f"{base}/v2/account/status", auth=AUTH)).status_code == 200
    await server.stop()


async def test_control_surface(sim: Simulator, base: str, client: httpx.AsyncClient,
                               receiver: Receiver) -> None:
    added = await client.post(f"{base}/_sim/faults", json={"kind": "status", "status": 429, "path": "/faxes"})
    assert added.status_code == 201
    assert (await client.post(f"{base}/_sim/faults", json={"kind": "boom"})).status_code == 400
    assert (await client.post(f"{base}/_sim/faults", content=b"[1]")).status_code == 400
    assert (await send(client, base)).status_code == 429
    await client.post(f"{base}/_sim/faults", json={"kind": "status"})
    assert (await client.delete(f"{base}/_sim/faults")).status_code == 200
    fax = (await send(client, base, "+15555550106", **{"tag[faxbridge_job]": "J9"})).json()["data"]["id"]

    pb = await client.post(f"{base}/_sim/openfax-postback", json={"url": f"{receiver.url}/pb", "method": "get"})
    assert pb.status_code == 200
    assert sim.openfax_postback is not None and sim.openfax_postback.method == "GET"
    assert (await client.post(f"{base}/_sim/openfax-postback", json={"url": 5})).status_code == 400

    sends = (await client.get(f"{base}/_sim/sends")).json()
    assert [(s["provider"], s["id"], s["to"], s["job_tag"]) for s in sends] == [
        ("phaxio", str(fax), "+15555550106", "J9")]
    idle = await client.post(f"{base}/_sim/idle", params={"timeout": 30})
    assert idle.json() == {"idle": True}
    state = (await client.get(f"{base}/_sim/state")).json()
    (entry,) = state["faxes"]
    assert (entry["id"], entry["final"], entry["phases"], entry["attempts"]) == (
        str(fax), True, ["delivered"], [2])
    assert state["openfax_postback"] == {"url": f"{receiver.url}/pb", "method": "GET"}
    assert state["faults"] == [] and state["speed"] == 1000.0
    await client.post(f"{base}/_sim/openfax-postback", json={"url": None})
    assert sim.openfax_postback is None


async def test_owed_webhooks_survive_a_restart(client: httpx.AsyncClient, receiver: Receiver) -> None:
    sim = Simulator(speed=1000)
    receiver.statuses = [500]
    first = SimulatorServer(sim)
    base = await first.start()
    await send(client, base, callback_url=f"{receiver.url}/h")
    await receiver.wait_for(1)
    await first.stop()                  # the retry was owed when it stopped
    second = SimulatorServer(sim)
    base2 = await second.start()
    await sim.idle(30)
    assert [s for _, s in sim.webhook_log] == [500, 200]
    assert len((await client.get(f"{base2}/v2/faxes", auth=AUTH)).json()["data"]) == 1
    await second.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_forever(client: httpx.AsyncClient, receiver: Receiver) -> None:
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_forever("127.0.0.1", port, 1000.0, f"GET {receiver.url}/pb", stop))
    base = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(10):
        while True:
            try:
                state = (await client.get(f"{base}/_sim/state")).json()
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
    assert state["openfax_postback"] == {"url": f"{receiver.url}/pb", "method": "GET"}
    stop.set()
    await task
    try:
        await client.get(f"{base}/_sim/state")
        stopped = False
    except httpx.ConnectError:
        stopped = True
    assert stopped
