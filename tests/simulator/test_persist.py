"""The simulator's state file: faxes and ids survive; an unreadable file is set aside; a read-only
look never writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from faxbridge.simulator import Simulator, SimulatorServer
from tests.simulator.conftest import make_pdf
from tests.simulator.phaxio_helpers import AUTH


async def _send(base: str, to: str) -> str:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        r = await client.post(f"{base}/v2.1/faxes", auth=AUTH, data={"to": to},
                              files={"file": ("a.pdf", make_pdf(), "application/pdf")})
        assert r.status_code == 200, r.text
        return str(r.json()["data"]["id"])


async def test_faxes_and_ids_survive_a_new_simulator(tmp_path: Path) -> None:
    state = tmp_path / "simulator.state"
    first = SimulatorServer(Simulator(speed=1.0, state_file=state))
    fax_id = await _send(await first.start(), "+15555551217")
    await first.stop()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    again = Simulator(speed=1.0, state_file=state)
    assert [s.id for s in again.sends] == [fax_id] and again.get("phaxio", fax_id) is not None
    server = SimulatorServer(again)
    new_id = await _send(await server.start(), "+15555551211")
    await server.stop()
    assert int(new_id) > int(fax_id)


async def test_a_read_only_look_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "simulator.state"
    server = SimulatorServer(Simulator(speed=1.0, state_file=state, read_only=True))
    await _send(await server.start(), "+15555551211")
    await server.stop()
    assert not state.exists()


def test_an_unreadable_state_file_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "simulator.state"
    state.write_bytes(b"not a pickle")
    sim = Simulator(state_file=state)
    assert sim.sends == [] and not state.exists()
    assert (tmp_path / "simulator.state.unreadable").read_bytes() == b"not a pickle"
