"""The ASGI app: the three wire protocols and the control surface, one Starlette application.

Phaxio: ``/v2/...`` and ``/v2.1/...`` (also under ``/phaxio``). Openfax: ``/faxSendSubmit.php``
etc. at the root (also under ``/openfax``). Sinch: ``/v3/projects/{projectId}/...`` (also under
``/sinch``). Control: ``/_sim/...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Mount

from faxbridge.simulator import control, openfax_routes, phaxio_routes, sinch_routes

if TYPE_CHECKING:
    from faxbridge.simulator.core import Simulator


def build_app(sim: Simulator) -> Starlette:
    mounts = [Mount("/_sim", routes=control.routes(sim))]
    for prefix in ("", "/phaxio"):
        for version in ("v2", "v2.1"):
            mounts.append(Mount(f"{prefix}/{version}", routes=phaxio_routes.routes(sim, version)))
    for prefix in ("", "/sinch"):
        mounts.append(Mount(f"{prefix}/v3/projects/{{project_id}}", routes=sinch_routes.routes(sim)))
    mounts.append(Mount("/openfax", routes=openfax_routes.routes(sim)))
    return Starlette(routes=[*mounts, *openfax_routes.routes(sim)])
