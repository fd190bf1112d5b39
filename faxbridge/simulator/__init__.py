"""A simulated fax network speaking the Openfax, Phaxio and Sinch (Fax API v3) wire protocols.

Outcomes follow the destination's last digit (contract section 6; :mod:`.timing`)::

    from faxbridge.simulator import Simulator, SimulatorServer, credentials
    sim = Simulator(speed=1000.0)
    server = SimulatorServer(sim, port=0)
    base = await server.start()        # http://127.0.0.1:PORT
    ...                                # Phaxio at base + "/v2" or "/v2.1", Openfax at base,
                                       # Sinch at base + "/v3/projects/" + credentials.SINCH_PROJECT_ID
    await sim.idle(30)                 # every fax final, every webhook delivered
    await server.stop()

Modules: timing (call model), documents (page counting), records (what is remembered),
phaxio_*, openfax_* and sinch_routes (the three protocols), webhooks, faults, control (``/_sim``), core
(the Simulator), app (routing), server (uvicorn, ``serve_forever``).
"""

from faxbridge.simulator import credentials
from faxbridge.simulator.core import Simulator
from faxbridge.simulator.faults import Fault
from faxbridge.simulator.records import PostbackTarget, SimSend
from faxbridge.simulator.server import SimulatorServer, serve_forever
from faxbridge.simulator.webhooks import phaxio_signature

__all__ = [
    "Fault",
    "PostbackTarget",
    "SimSend",
    "Simulator",
    "SimulatorServer",
    "credentials",
    "phaxio_signature",
    "serve_forever",
]
