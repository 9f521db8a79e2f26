"""Load figures for the team server (issue 12 item 8): many MCP clients over HTTP against three replicas
on one PostgreSQL database, then the same load against one replica on SQLite, side by side.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_team.py [--clients 100] [--seconds 60] [--quick]
     [--speed 0.05] [--balancer roundrobin] [--era legacy] [--only postgres,sqlite]

The parts, all real processes on loopback:

- the bundled simulator for AllToken, in its own process (benchmarks/team_sim.py, which also counts GETs
  per video task), at `--speed` (0.05: chat's first token in 30 ms, a low-quality image in 0.75–1.25 s, a
  480p video in 1.5–6 s);
- PostgreSQL: `ALLTOKEN_TEST_DATABASE_URL` when set, else a throwaway server (tests/pgkit.py); a fresh
  database per run;
- three `alltoken-mcp serve --http --stateless` replicas on that database, one shared home (output
  directory), a bearer token and a media secret, as a team deploys them;
- a round-robin balancer in front: `--balancer roundrobin` is the client-side transport of
  tests/test_lb_http.py (each HTTP request to the next replica, as nginx's round robin does), and it knows
  which replica answered each call; `--balancer nginx` needs tests/nginxkit.py.

Each client is its own MCP session (its own HTTP connections) and loops for `--seconds`, one call at a
time, picking at random by the weights in MIX: `alltoken_chat`; `alltoken_image` waiting for the image;
`alltoken_video` (wait_seconds=0) then `job_status(wait_seconds=60)` until the video is done. Calls in
flight when the time is up finish and count.

Reported: throughput (calls/s, overall and by tool), p50/p99 latency by tool, every error (the target is
none), the wake-up latency of waiters (job completion recorded in the store by one replica → the waiter's
`job_status` answer back at the client; a trigger in the benchmark's database records which replica
completed each job, and the balancer records which replica each wait went to), polls per video (GETs of
each video task at the simulator, against the single-replica bound render ÷ poll interval + 3), and the
CPU each process used. The machine's load average is printed with the setup: other work on the same cores
shifts every figure.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types as t
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from procs import cpu_seconds

from alltoken_mcp.jobs import DEFAULT_POLL_SECONDS
from alltoken_mcp.simulator import SIM_API_KEY
from tests import pgkit

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
TEAM_SIM = str(Path(__file__).with_name("team_sim.py"))
TOKEN = "bench-" + secrets.token_hex(16)
MEDIA_SECRET = secrets.token_urlsafe(32)  # one for all replicas: any of them serves another's signed URLs
MIX = {"chat": 0.60, "image": 0.25, "video": 0.15}
WAIT_SECONDS = 60
TERMINAL = ("completed", "failed", "cancelled", "expired")
TOOLS = ("alltoken_chat", "alltoken_image", "alltoken_video", "job_status")
VIDEO_END_TO_END = "video, submit → done"

POSTGRES_COMPLETIONS = """
CREATE TABLE bench_completions (job_id TEXT PRIMARY KEY, replica TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE FUNCTION bench_note_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
        INSERT INTO bench_completions VALUES (NEW.job_id, current_setting('application_name'), NEW.updated_at)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_completion AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION bench_note_completion();
"""
"""Which replica (its connection's application_name) completed each job, and when: the row's updated_at
in the update that completed it, the moment test_replicas.py measures its wake-up from (a later update,
the job's cost, moves updated_at again). Measurement only: the product never reads it."""
SQLITE_COMPLETIONS = """
CREATE TABLE bench_completions (job_id TEXT PRIMARY KEY, replica TEXT NOT NULL, at REAL NOT NULL);
CREATE TRIGGER bench_completion AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'completed' AND OLD.status <> 'completed'
BEGIN
    INSERT OR IGNORE INTO bench_completions VALUES (NEW.job_id, 'replica-1', NEW.updated_at);
END;
"""
"""The same for one replica on SQLite."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# ------------------------------------------------------------------------------------ the parts


@dataclass
class Simulator:
    origin: str
    pid: int

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def video_polls(self) -> dict[str, dict[str, float]]:
        async with httpx2.AsyncClient(timeout=30) as http:
            answer: dict[str, dict[str, float]] = (await http.get(f"{self.origin}/_bench/video_polls")).json()
            return answer


async def until_ready(url: str, what: str, process: subprocess.Popen[bytes], log: Path | None = None) -> None:
    async with httpx2.AsyncClient(timeout=5) as http:
        with anyio.fail_after(60):
            while True:
                if process.poll() is not None:
                    shown = log.read_text()[-2000:] if log is not None else ""  # noqa: ASYNC240
                    raise RuntimeError(f"{what} exited with {process.returncode} while starting\n{shown}")
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)


def spawn(command: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child process, its stderr into `log` (else inherited), its stdout discarded."""
    if log is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    with log.open("wb") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


@contextmanager
def stopped_at_exit(process: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def simulator(speed: float) -> AsyncIterator[Simulator]:
    port = free_port()
    command = [sys.executable, TEAM_SIM, "--port", str(port), "--speed", str(speed)]
    process = spawn(command, os.environ.copy())
    with stopped_at_exit(process):
        origin = f"http://127.0.0.1:{port}"
        await until_ready(f"{origin}/_sim/counters", "the simulator", process)
        yield Simulator(origin, process.pid)


@contextmanager
def postgres_server() -> Iterator[str]:
    """An admin URL: ALLTOKEN_TEST_DATABASE_URL's server, else a throwaway one of our own."""
    with pgkit.admin_server() as url:
        if url is None:
            raise SystemExit(pgkit.NO_SERVER)
        yield url


@dataclass
class Replica:
    name: str
    port: int
    pid: int
    log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def replica_env(home: Path, sim: Simulator, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env.update(
        ALLTOKEN_BASE_URL=sim.base_url,
        ALLTOKEN_API_KEY=SIM_API_KEY,
        ALLTOKEN_MCP_HOME=str(home),
        ALLTOKEN_INPUT_DIRS=str(home),
        ALLTOKEN_MAX_WAIT_SECONDS="120",
        ALLTOKEN_MCP_TOKEN=TOKEN,
        ALLTOKEN_MCP_MEDIA_SECRET=MEDIA_SECRET,
    )
    if database_url is not None:
        env["ALLTOKEN_MCP_DATABASE_URL"] = database_url
    return env


def with_application_name(url: str, name: str) -> str:
    """The URL with libpq's application_name set: PostgreSQL then knows which replica a connection is."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


@asynccontextmanager
async def replicas(
    home: Path, sim: Simulator, database_url: str | None, count: int
) -> AsyncIterator[list[Replica]]:
    """`count` replicas, started one after another (the first migrates the database), each ready."""
    async with AsyncExitStack() as stack:
        started = []
        for index in range(1, count + 1):
            name = f"replica-{index}"
            url = None if database_url is None else with_application_name(database_url, name)
            port, log = free_port(), home / f"{name}.log"
            command = [ENTRY_POINT, "serve", "--http", "--stateless", "--port", str(port)]
            command += ["--log-level", "WARNING"]
            process = spawn(command, replica_env(home, sim, url), log)
            stack.enter_context(stopped_at_exit(process))
            replica = Replica(name, port, process.pid, log)
            await until_ready(f"{replica.origin}/readyz", name, process, log)
            started.append(replica)
        yield started


# ------------------------------------------------------------------------------------ the balancer


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each request to the next of `ports` on 127.0.0.1, as nginx's round robin would, and notes
    which one took the last `tools/call` (a client makes one call at a time)."""

    def __init__(self, ports: Sequence[int], first: int) -> None:
        self._ports = itertools.islice(itertools.cycle(ports), first % len(ports), None)
        self._inner = httpx2.AsyncHTTPTransport()
        self.last_call_port: int | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        request.url = request.url.copy_with(port=port)
        if b'"tools/call"' in request.content:
            self.last_call_port = port
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Target:
    """Where the clients connect, and which replica each port is (empty: the balancer does not say)."""

    url: str
    ports: list[int]
    replica_of: dict[int, str]
    balancer: str


@asynccontextmanager
async def balancer(kind: str, servers: Sequence[Replica]) -> AsyncIterator[Target]:
    if len(servers) == 1:
        yield Target(
            f"{servers[0].origin}/mcp", [servers[0].port], {servers[0].port: servers[0].name}, "none"
        )
    elif kind == "roundrobin":
        names = {s.port: s.name for s in servers}
        label = "round robin in the client (tests/test_lb_http.py's transport)"
        yield Target(f"{servers[0].origin}/mcp", [s.port for s in servers], names, label)
    else:
        try:  # imported by name: the module comes with the nginx replica test, not with this file
            nginxkit = importlib.import_module("tests.nginxkit")
        except ImportError:
            raise SystemExit(
                "--balancer nginx needs tests/nginxkit.py, which is not in this checkout"
            ) from None
        with nginxkit.running_nginx(nginxkit.STATELESS_CONF, [s.port for s in servers]) as nginx:
            port = httpx2.URL(nginx.url).port or 80
            yield Target(f"{nginx.url}/mcp", [port], {}, "nginx round robin (docs/nginx-stateless.conf)")


# ------------------------------------------------------------------------------------ the load


@dataclass
class Wait:
    """A call that waited for a job and returned it finished: when it started and returned (Unix time),
    and which replica answered it."""

    job_id: str
    kind: str
    replica: str | None
    started: float
    returned: float


@dataclass
class Timing:
    ended: float  # time.monotonic()
    seconds: float


@dataclass
class Load:
    """What the clients saw. Throughput counts the calls that ended inside the window (`seconds` from
    `began`); latencies include the calls that were in flight at its end and finished after."""

    seconds: float
    timings: dict[str, list[Timing]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    began: float = 0.0
    connect_s: float = 0.0
    tail_s: float = 0.0
    loop_lags: list[float] = field(default_factory=list)
    """How late a 10 ms sleeper in the clients' event loop woke: the clients' own share of the latencies."""
    transactions: int | None = None
    """PostgreSQL transactions while the load ran (None on SQLite)."""
    server_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per tool, (seconds, calls) of successful calls as the replicas' /metrics count them."""

    def record(self, label: str, seconds: float) -> None:
        self.timings[label].append(Timing(time.monotonic(), seconds))

    def per_second(self, label: str) -> float:
        inside = self.began + self.seconds
        return sum(1 for timing in self.timings.get(label, []) if timing.ended <= inside) / self.seconds

    def latencies(self, label: str) -> list[float]:
        return [timing.seconds for timing in self.timings.get(label, [])]


class Session:
    """One MCP client running the mix."""

    def __init__(self, client: Client, transport: RoundRobin, target: Target, load: Load, name: str) -> None:
        self._client = client
        self._transport = transport
        self._target = target
        self._load = load
        self._name = name
        self._calls = 0

    def _replica(self) -> str | None:
        port = self._transport.last_call_port
        return None if port is None else self._target.replica_of.get(port)

    async def call(
        self, tool: str, arguments: dict[str, Any], label: str | None = None
    ) -> dict[str, Any] | None:
        """The tool's structured answer, its latency recorded; None (and the error recorded) if it failed."""
        started = time.perf_counter()
        try:
            result = await self._client.call_tool(tool, arguments)
        except Exception as exc:  # every failure is a figure of the run, reported in full below
            self._load.errors.append(f"{tool}: {type(exc).__name__}: {exc}")
            return None
        took = time.perf_counter() - started
        if result.is_error or result.structured_content is None:
            text = " ".join(c.text for c in result.content if isinstance(c, t.TextContent))
            self._load.errors.append(f"{tool}: {text[:300]}")
            return None
        self._load.record(label or tool, took)
        answer: dict[str, Any] = result.structured_content
        return answer

    def _prompt(self, what: str) -> str:
        self._calls += 1
        return f"{what} {self._name}, call {self._calls}"

    async def chat(self) -> None:
        await self.call("alltoken_chat", {"prompt": self._prompt("say hello to")})

    async def image(self) -> None:
        arguments = {"prompt": self._prompt("a lighthouse for"), "size": "1024x1024", "quality": "low"}
        started = time.time()
        job = await self.call("alltoken_image", {**arguments, "wait_seconds": WAIT_SECONDS})
        returned = time.time()
        if job is not None and self._completed(job, "image"):
            self._load.waits.append(Wait(job["job_id"], "image", self._replica(), started, returned))

    async def video(self) -> None:
        arguments = {"prompt": self._prompt("waves at dusk for"), "resolution": "480p", "duration": 5}
        submitted_at = time.perf_counter()
        job = await self.call("alltoken_video", {**arguments, "wait_seconds": 0})
        waited_from: float | None = None
        while job is not None and job["status"] not in TERMINAL:
            waited_from = time.time()
            job = await self.call("job_status", {"job_id": job["job_id"], "wait_seconds": WAIT_SECONDS})
        returned = time.time()
        if job is None or not self._completed(job, "video"):
            return
        self._load.record(VIDEO_END_TO_END, time.perf_counter() - submitted_at)
        if waited_from is not None:  # (the last job_status: the one that saw the video done)
            self._load.waits.append(Wait(job["job_id"], "video", self._replica(), waited_from, returned))

    def _completed(self, job: dict[str, Any], kind: str) -> bool:
        if job["status"] != "completed":
            self._load.errors.append(f"{kind} job {job['job_id']} ended {job['status']}: {job.get('error')}")
        return bool(job["status"] == "completed")


class Start:
    """Holds the clients until every one has connected (or failed to), then runs them until `until`."""

    def __init__(self, clients: int) -> None:
        self._connecting = clients
        self.all_connected = anyio.Event()
        self.go = anyio.Event()
        self.until = 0.0

    def connected(self) -> None:
        self._connecting -= 1
        if self._connecting == 0:
            self.all_connected.set()


async def run_client(index: int, target: Target, load: Load, era: str, start: Start) -> None:
    transport = RoundRobin(target.ports, index)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx2.AsyncClient(transport=transport, headers=headers, timeout=httpx2.Timeout(30, read=180))
    waiting = True
    try:
        async with http, Client(streamable_http_client(target.url, http_client=http), mode=era) as client:
            session = Session(client, transport, target, load, f"client {index}")
            waiting = False
            start.connected()
            await start.go.wait()
            rng = random.Random(index)
            kinds, weights = list(MIX), list(MIX.values())
            while time.monotonic() < start.until:
                await getattr(session, rng.choices(kinds, weights)[0])()
    except Exception as exc:  # a session that cannot connect or breaks: reported, the others go on
        load.errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        if waiting:
            start.connected()


async def watch_loop(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await anyio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)


async def run_load(target: Target, clients: int, seconds: float, era: str) -> Load:
    load = Load(seconds)
    start = Start(clients)
    connecting = time.perf_counter()
    async with anyio.create_task_group() as watching:
        watching.start_soon(watch_loop, load.loop_lags)
        async with anyio.create_task_group() as tg:
            for index in range(clients):
                tg.start_soon(run_client, index, target, load, era, start)
            with anyio.fail_after(120):
                await start.all_connected.wait()
            load.began = time.monotonic()
            load.connect_s = time.perf_counter() - connecting
            start.until = load.began + seconds
            start.go.set()
        load.tail_s = time.monotonic() - start.until
        watching.cancel_scope.cancel()
    return load


# ------------------------------------------------------------------------------------ the figures


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency_cell(load: Load, label: str) -> str:
    values = load.latencies(label)
    if not values:
        return "—"
    cell = (
        f"{load.per_second(label):.1f}/s; p50 {percentile(values, 0.5) * 1e3:.0f} ms, "
        f"p99 {percentile(values, 0.99) * 1e3:.0f} ms"
    )
    total, calls = load.server_seconds.get(label, (0.0, 0.0))
    return cell + (f"; mean {total / calls * 1e3:.0f} ms inside the server" if calls else "")


def wake_cell(latencies: Sequence[float]) -> str:
    if not latencies:
        return "—"
    return (
        f"p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms "
        f"(n={len(latencies)})"
    )


@dataclass
class Completion:
    replica: str
    at: float


@dataclass
class Scenario:
    title: str
    balancer: str
    load: Load
    completions: dict[str, Completion]
    knows_replicas: bool  # whether the balancer says which replica answered each call
    video_polls: list[tuple[int, float]]  # (GETs, render seconds) per video task
    cpu: dict[str, float]
    load_average_end: str
    problems: list[str]

    def wakes(self, kind: str, cross: bool | None) -> list[float]:
        """Completion → waiter's answer, for waits under way when the job completed, by waiters on
        another replica than the one that completed the job (`cross`), on that one (False), or all (None:
        also when the balancer does not say which replica answered)."""
        found = []
        for wait in self.load.waits:
            done = self.completions.get(wait.job_id)
            if wait.kind != kind or done is None or wait.started >= done.at:
                continue
            if cross is None or (wait.replica is not None and (wait.replica != done.replica) == cross):
                found.append(wait.returned - done.at)
        return found


def poll_cells(polls: Sequence[tuple[int, float]]) -> tuple[str, str]:
    if not polls:
        return "—", "—"
    gets = [g for g, _ in polls]
    over = sum(1 for g, render in polls if g > render / DEFAULT_POLL_SECONDS + 3)
    return (
        f"mean {statistics.mean(gets):.2f}, max {max(gets)} ({len(gets)} videos, "
        f"render {statistics.mean(r for _, r in polls):.1f} s on average)",
        f"{over} of {len(polls)}",
    )


def table(scenarios: Sequence[Scenario]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("balancer", [s.balancer for s in scenarios]),
        ("sessions connected (all at once)", [f"in {s.load.connect_s:.1f} s" for s in scenarios]),
        (
            "calls in flight at the end finished within",
            [f"{s.load.tail_s:.1f} s (their latencies count, not their throughput)" for s in scenarios],
        ),
        (
            "**throughput, all tool calls**",
            [f"**{sum(map(s.load.per_second, TOOLS)):.1f} calls/s**" for s in scenarios],
        ),
    ]
    for label in (*TOOLS, VIDEO_END_TO_END):
        shown = f"`{label}`" if label in TOOLS else label
        rows.append((f"{shown}: calls/s; latency", [latency_cell(s.load, label) for s in scenarios]))
    rows.append(("**errors**", [f"**{len(s.load.errors)}**" for s in scenarios]))
    rows.append(("clients' event loop: late by (10 ms sleeper)", [_lag_cell(s.load) for s in scenarios]))
    for kind, call in (("video", "`job_status` waiting"), ("image", "`alltoken_image` waiting")):
        for cross, where in ((True, "on another replica"), (False, "on the completing replica"), (None, "")):
            label = f"wake-up, {kind}: job completed → {call} {where or 'anywhere'} answers"
            if (kind, cross) == ("video", True):
                label = f"**{label}** (NOTIFY)"
            rows.append((label, [_wake_cell(s, kind, cross) for s in scenarios]))
    polls = [poll_cells(s.video_polls) for s in scenarios]
    rows += [
        ("**polls per video** (simulator GETs per task)", [p[0] for p in polls]),
        (
            f"videos over the single-replica bound (render ÷ {DEFAULT_POLL_SECONDS:g} s + 3)",
            [p[1] for p in polls],
        ),
        ("CPU used while the load ran (share of one core)", [_cpu_cell(s) for s in scenarios]),
        ("server-side CPU per tool call (replicas + PostgreSQL)", [_cpu_per_call(s) for s in scenarios]),
        ("PostgreSQL transactions per tool call", [_transactions_per_call(s.load) for s in scenarios]),
        ("load average at the end (1/5/15 min)", [s.load_average_end for s in scenarios]),
    ]
    lines = ["| | " + " | ".join(s.title for s in scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def _wake_cell(scenario: Scenario, kind: str, cross: bool | None) -> str:
    if cross is not None and not scenario.knows_replicas:
        return "(the balancer does not say which replica answered)"
    return wake_cell(scenario.wakes(kind, cross))


def _lag_cell(load: Load) -> str:
    lags = load.loop_lags or [0.0]
    return (
        f"p50 {percentile(lags, 0.5) * 1e3:.1f} ms, p99 {percentile(lags, 0.99) * 1e3:.1f} ms, "
        f"max {max(lags) * 1e3:.0f} ms"
    )


def _calls_made(load: Load) -> int:
    return sum(len(load.timings.get(tool, [])) for tool in TOOLS)


def _transactions_per_call(load: Load) -> str:
    if load.transactions is None:
        return "—"
    return f"{load.transactions / max(_calls_made(load), 1):.1f} (all replicas' work: calls, polls, leases)"


def _cpu_per_call(scenario: Scenario) -> str:
    load = scenario.load
    calls = _calls_made(load)
    server = sum(share for name, share in scenario.cpu.items() if "replica" in name or name == "PostgreSQL")
    return f"{server * (load.seconds + load.tail_s) / max(calls, 1) * 1e3:.1f} ms"


def _cpu_cell(scenario: Scenario) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in scenario.cpu.items())


# ------------------------------------------------------------------------------------ the scenarios


def install_completions(database_url: str | None, sqlite_path: Path) -> None:
    if database_url is None:
        with closing(sqlite3.connect(sqlite_path)) as lite, lite:
            lite.executescript(SQLITE_COMPLETIONS)
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(POSTGRES_COMPLETIONS)


def completions(database_url: str | None, sqlite_path: Path) -> dict[str, Completion]:
    query = "SELECT job_id, replica, at FROM bench_completions"
    if database_url is None:
        with closing(sqlite3.connect(sqlite_path)) as lite:
            rows = lite.execute(query).fetchall()
    else:
        import psycopg

        with closing(psycopg.connect(database_url)) as db:
            rows = db.execute(query).fetchall()
    return {job_id: Completion(replica, at) for job_id, replica, at in rows}


def server_version(url: str) -> str:
    import psycopg

    with closing(psycopg.connect(url)) as db:
        row = db.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def problems_logged(servers: Sequence[Replica]) -> list[str]:
    """Lines the replicas logged at WARNING or above (their log level): each is a finding."""
    found = []
    for server in servers:
        for line in server.log.read_text(errors="replace").splitlines():
            if line.strip():
                found.append(f"{server.name}: {line}")
    return found


async def tool_seconds(servers: Sequence[Replica]) -> dict[tuple[str, str], float]:
    """(tool, "sum" or "count") of successful calls, added over the replicas' /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[str, str], float] = defaultdict(float)
    async with httpx2.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for server in servers:
            text = (await http.get(f"{server.origin}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    part = sample.name.removeprefix("alltoken_mcp_tool_call_seconds_")
                    if part in ("sum", "count") and sample.labels.get("outcome") == "ok":
                        totals[(sample.labels["tool"], part)] += sample.value
    return totals


def between(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], tool: str
) -> tuple[float, float]:
    """(seconds, calls) of `tool` between two readings of `tool_seconds`."""
    seconds = after[(tool, "sum")] - before[(tool, "sum")]
    return seconds, after[(tool, "count")] - before[(tool, "count")]


def transactions(url: str) -> int:
    """Transactions committed or rolled back in the database so far (PostgreSQL's statistics; a backend
    reports its own within a second or so of going idle)."""
    import psycopg

    with closing(psycopg.connect(url, autocommit=True)) as db:
        row = db.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu_seconds(port: int) -> float | None:
    """CPU of the PostgreSQL server listening on `port` when it runs on this machine: the postmaster,
    its live backends and the backends it has reaped (its cutime/cstime). None when it is not found."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster, backends = None, []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline, fields = Path(f"/proc/{entry}/cmdline").read_bytes(), _stat(int(entry))
        except OSError:
            continue  # gone meanwhile
        if f"\0-p\0{port}\0".encode() in cmdline and b"postgres" in cmdline:
            postmaster = (int(entry), fields)
        backends.append((int(fields[1]), fields))  # (parent, stat)
    if postmaster is None:
        return None
    pid, own = postmaster
    total = sum(int(own[i]) for i in (11, 12, 13, 14))
    total += sum(int(f[11]) + int(f[12]) for parent, f in backends if parent == pid)
    return total / tick


class CpuMeter:
    """CPU seconds each part used between `start` and `stop`, as shares of one core."""

    def __init__(self, pids: dict[str, list[int]], postgres_port: int | None) -> None:
        self._pids = pids
        self._postgres_port = postgres_port
        self._started: dict[str, float | None] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float | None]:
        times: dict[str, float | None] = {
            name: sum(map(cpu_seconds, pids)) for name, pids in self._pids.items()
        }
        times["PostgreSQL"] = (
            None if self._postgres_port is None else postgres_cpu_seconds(self._postgres_port)
        )
        times["clients"] = time.process_time()
        return times

    def start(self) -> None:
        self._started, self._wall = self._now(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        ended, wall = self._now(), time.perf_counter() - self._wall
        return {
            name: (after - before) / wall
            for name, after in ended.items()
            if after is not None and (before := self._started[name]) is not None
        }


async def scenario(
    title: str,
    sim: Simulator,
    database_url: str | None,
    count: int,
    balancer_kind: str,
    clients: int,
    seconds: float,
    era: str,
) -> Scenario:
    with tempfile.TemporaryDirectory(prefix="bench-team-") as tmp:
        home = Path(tmp)
        async with (
            replicas(home, sim, database_url, count) as servers,
            balancer(balancer_kind, servers) as target,
        ):
            install_completions(database_url, home / "state.sqlite3")
            tasks_before = set(await sim.video_polls())
            replicas_label = f"{count} replica{'s' if count > 1 else ''}"
            pids = {replicas_label: [s.pid for s in servers], "simulator": [sim.pid]}
            port = None if database_url is None else urlsplit(database_url).port
            meter = CpuMeter(pids, port)
            seconds_before = await tool_seconds(servers)
            transactions_before = 0 if database_url is None else transactions(database_url)
            meter.start()
            load = await run_load(target, clients, seconds, era)
            cpu = meter.stop()
            served = await tool_seconds(servers)
            load.server_seconds = {tool: between(seconds_before, served, tool) for tool in TOOLS}
            if database_url is not None:
                load.transactions = transactions(database_url) - transactions_before
            polls = await sim.video_polls()
            completed = completions(database_url, home / "state.sqlite3")
            problems = problems_logged(servers)
        video_polls = [
            (int(p["gets"]), float(p["render_s"])) for k, p in polls.items() if k not in tasks_before
        ]
        return Scenario(
            title,
            target.balancer,
            load,
            completed,
            bool(target.replica_of),
            video_polls,
            cpu,
            load_average(),
            problems,
        )


async def run(args: argparse.Namespace) -> None:
    started_load = load_average()
    scenarios: list[Scenario] = []
    parts = set(args.only.split(","))
    postgres = ""
    async with simulator(args.speed) as sim:
        if "postgres" in parts:
            with postgres_server() as admin_url:
                url = pgkit.create_database(admin_url)
                postgres = server_version(url)
                scenarios.append(
                    await scenario(
                        "3 replicas, PostgreSQL",
                        sim,
                        url,
                        3,
                        args.balancer,
                        args.clients,
                        args.seconds,
                        args.era,
                    )
                )
        if "sqlite" in parts:
            scenarios.append(
                await scenario(
                    "1 replica, SQLite", sim, None, 1, args.balancer, args.clients, args.seconds, args.era
                )
            )
    print(setup(args, started_load, postgres))
    print()
    print(table(scenarios))
    for found in scenarios:
        if found.load.errors or found.problems:
            print(f"\n{found.title}: {len(found.load.errors)} errors, {len(found.problems)} lines logged")
            for message, times in Counter(found.load.errors).most_common(20):
                print(f"- {times}× {message}")
            for line in found.problems[:20]:
                print(f"- log: {line}")


def setup(args: argparse.Namespace, started_load: str, postgres: str) -> str:
    speed = args.speed
    mix = ", ".join(f"{kind} {weight:.0%}" for kind, weight in MIX.items())
    database = (
        f"from {pgkit.TEST_URL_VAR}"
        if os.environ.get(pgkit.TEST_URL_VAR)
        else "a throwaway server (tests/pgkit.py: fsync off, max_connections 300)"
    )
    return "\n".join(
        [
            f"- machine: {os.cpu_count()} CPUs, load average at start {started_load} (1/5/15 min), "
            "shared with everything else running on it",
            f"- simulator: speed {speed:g} (chat's first token in {0.6 * speed * 1e3:.0f} ms, a "
            f"low-quality image in {15 * speed:.2f}–{25 * speed:.2f} s, a 480p video in "
            f"{30 * speed:.1f}–{120 * speed:.1f} s), in its own process",
            f"- {args.clients} MCP clients in this process ({args.era} era, each its own session and "
            f"connections) for {args.seconds:g} s per scenario, one call at a time each; mix {mix} "
            f"(a video is submitted with wait_seconds=0, then job_status(wait_seconds={WAIT_SECONDS}) "
            "until done; an image call waits)",
            f"- PostgreSQL {postgres}: {database}" if postgres else "- PostgreSQL: not run",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=100, help="concurrent MCP clients (default 100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load per scenario (default 60)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 clients for 5 s")
    parser.add_argument("--speed", type=float, default=0.05, help="simulator speed factor (default 0.05)")
    parser.add_argument("--balancer", choices=["roundrobin", "nginx"], default="roundrobin")
    parser.add_argument("--era", choices=["legacy", "auto"], default="legacy", help="the MCP client's mode")
    parser.add_argument("--only", default="postgres,sqlite", help="comma-separated scenarios to run")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds = 10, 5.0
    anyio.run(run, args)


if __name__ == "__main__":
    main()
