"""Shared fixtures: a fresh, fast simulator per test and an httpx2 client authenticated against it.

Override `sim_config` in a test module (or with `@pytest.mark.parametrize("sim_config", [...])`) to
start the simulator with other settings; tests that need two simulators call `serve_simulator` directly.

The state database: `database` (parametrized: each test using it runs on SQLite and on PostgreSQL) and
`store` (that database, opened); `postgres_url` is a fresh PostgreSQL database on the session's server.
`nginx_binary` is the nginx the replica tests put in front of their replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig, serve_simulator
from alltoken_mcp.store import Store
from tests import nginxkit, pgkit


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


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server for the session (see tests/pgkit.py); skips only where none can be had."""
    with pgkit.admin_server() as url:
        if url is None:
            pytest.skip(pgkit.NO_SERVER)
        yield url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    """A fresh, empty database for one test."""
    return pgkit.create_database(postgres_admin_url)


@pytest.fixture(scope="session")
def nginx_binary() -> Path:
    """The nginx the replica tests run (tests/nginxkit.py); they skip, saying why, where there is none."""
    found = nginxkit.nginx_binary()
    if found is None:
        pytest.skip(nginxkit.NO_NGINX)
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> pgkit.Database:
    """The test runs once on each backend. PostgreSQL is started only when a test asks for it."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return pgkit.Database(request.param, tmp_path / "state.sqlite3", url)


@pytest.fixture
async def store(database: pgkit.Database) -> AsyncIterator[Store]:
    opened = await database.open()
    try:
        yield opened
    finally:
        await opened.close()
