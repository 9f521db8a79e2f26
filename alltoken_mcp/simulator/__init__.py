"""A faithful local AllToken: the HTTP API of alltoken-api.md §11, over real loopback sockets.

    async with serve_simulator(SimConfig(speed=0.01)) as sim:
        sim.base_url, sim.origin, sim.state

Only the CLI (`simulate`, `--simulate`, `demo`) and tests import this package.
"""

from alltoken_mcp.simulator.config import SIM_API_KEY, SimConfig
from alltoken_mcp.simulator.runner import RunningSimulator, run_simulator, serve_simulator
from alltoken_mcp.simulator.state import Fault, SimState

__all__ = [
    "SIM_API_KEY",
    "Fault",
    "RunningSimulator",
    "SimConfig",
    "SimState",
    "run_simulator",
    "serve_simulator",
]
