"""Shared fixtures: a fresh, fast simulator per test and an httpx2 client authenticated against it.

Override `sim_config` in a test module (or with `@pytest.mark.parametrize("sim_config", [...])`) to
start the simulator with other settings; tests that need two simulators call `serve_simulator` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig, serve_simulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(sim_config) as running:
        yield running


@pytest.fixture
async def api(sim: RunningSimulator) -> AsyncIterator[httpx2.AsyncClient]:
    """A plain httpx2 client on the simulator's /v1 base URL with the simulator's API key."""
    headers = {"Authorization": f"Bearer {SIM_API_KEY}"}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=headers, timeout=10) as client:
        yield client
