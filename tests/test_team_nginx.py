"""The team server as it is deployed: three `alltoken-mcp serve --http --stateless` replicas sharing one
PostgreSQL store and one output directory, a real nginx in front with the documented round-robin
configuration (tests/nginxkit.py), three people with their own tokens, and the simulator for AllToken.

One replica is killed with SIGKILL half way through a burst of image and video jobs, at a moment pinned
by a simulator fault rather than by timing: it has sent an image's create request, AllToken has made (and
charged) the task, and the answer is held back. The other replicas take over its lease, send the create
again with the job's idempotency key and adopt the task; every job of every person completes exactly
once, and nobody sees anybody else's jobs.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as t
import pytest
from mcp import Client

from alltoken_mcp.jobs import LEASE_SECONDS
from alltoken_mcp.settings import DATABASE_URL_VAR, MEDIA_SECRET_VAR, PUBLIC_URL_VAR, TOKENS_FILE_VAR
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from alltoken_mcp.store import Job, Store
from tests import nginxkit, pgkit
from tests.serverkit import data, text_of
from tests.test_http import RunningHTTPServer, free_port, http_server_process, server_env
from tests.test_jobs_crash import HOLD_MS, IMAGE_CREATE, until
from tests.test_lb_http import port_of, samples, scrape
from tests.test_people import ALICE, ALICE_LINE, BOB, BOB_LINE, CAROL, CAROL_LINE, as_person

PEOPLE = {"alice": ALICE, "bob": BOB, "carol": CAROL}
ERAS = {"alice": "legacy", "bob": "auto", "carol": "legacy"}
"""2025-era clients (initialize, then calls) and a 2026-07-28 one, all through the same nginx."""
BURST = ["image", "video", "image", "video", "image"]
"""What each person submits, one call after another; the three people at once."""
KILL_AFTER = 6
"""Answered submits (of the 15 in the burst) before the replica is killed."""
TERMINAL = ("completed", "failed", "cancelled", "expired")
NOBODYS_JOB = "job_00000000000000ff"
SECRET = "n" * 40


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.02)


@dataclass
class Team:
    replicas: list[RunningHTTPServer]
    nginx: nginxkit.RunningNginx
    store: Store
    """The shared store, opened by the test to look at what the replicas wrote."""

    @property
    def url(self) -> str:
        return f"{self.nginx.url}/mcp"


@asynccontextmanager
async def team(home: Path, sim: RunningSimulator, database_url: str, binary: Path) -> AsyncIterator[Team]:
    """Three replicas as three machines would run them, a home each; the store, the output volume, the
    tokens file and the media secret shared; nginx in front, which is also where media URLs point."""
    tokens = home / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n{CAROL_LINE}\n")
    listen = free_port()
    shared = {
        DATABASE_URL_VAR: database_url,
        TOKENS_FILE_VAR: str(tokens),
        MEDIA_SECRET_VAR: SECRET,
        PUBLIC_URL_VAR: f"http://127.0.0.1:{listen}",
        "ALLTOKEN_OUTPUT_DIR": str(home / "out"),
    }
    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                http_server_process(
                    server_env(home / f"replica{i}", sim.base_url, **shared), extra_args=["--stateless"]
                )
            )
            for i in range(3)
        ]
        nginx = stack.enter_context(
            nginxkit.running_nginx(nginxkit.STATELESS_CONF, [port_of(r) for r in replicas], binary, listen)
        )
        store = await pgkit.Database("postgresql", home / "unused.sqlite3", database_url).open()
        stack.push_async_callback(store.close)
        yield Team(replicas, nginx, store)


@dataclass
class Burst:
    """What the people's submit calls got back: a job id, or nothing (the replica died under the call)."""

    answered: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in PEOPLE})
    cut_off: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in PEOPLE})
    half_way: anyio.Event = field(default_factory=anyio.Event)
    killed: bool = False
    lost_after_kill: list[str] = field(default_factory=list)
    """Calls made after the kill that got no answer: nginx should have passed each to a live replica."""

    async def submit(self, name: str, client: Client, kind: str, n: int) -> None:
        arguments: dict[str, Any] = {"prompt": f"{name}'s {kind} {n}", "wait_seconds": 0}
        if kind == "video":
            arguments["resolution"] = "480p"
        after_kill = self.killed
        try:
            answer = await client.call_tool(f"alltoken_{kind}", arguments)
        except Exception as exc:  # nginx answered 502, or the event stream ended: no answer
            self.cut_off[name].append(f"{kind} {n}: {exc!r}")
            if after_kill:
                self.lost_after_kill.append(f"{name}'s {kind} {n}: {exc!r}")
            return
        self.answered[name].append(data(answer)["job_id"])
        if sum(map(len, self.answered.values())) >= KILL_AFTER:
            self.half_way.set()

    async def run(self, name: str, client: Client) -> None:
        for n, kind in enumerate(BURST):
            await self.submit(name, client, kind, n)


async def finish(client: Client, job_id: str) -> dict[str, Any]:
    """The job's record once it has ended, waited for with job_status."""
    record = data(await client.call_tool("job_status", {"job_id": job_id}))
    while record["status"] not in TERMINAL:
        record = data(await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 10}))
    return record


def owner_pid(owner: str) -> int:
    """The pid in a lease owner's name (host:pid:random)."""
    return int(owner.split(":")[1])


def files_intact(record: dict[str, Any], out: Path) -> bool:
    return bool(record["files"]) and all(
        Path(f["path"]).parent == out
        and hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest() == f["sha256"]
        for f in record["files"]
    )


def same_refusal(foreign: t.CallToolResult, unknown: t.CallToolResult, job_id: str) -> bool:
    return bool(foreign.is_error) and text_of(foreign).replace(job_id, "X") == text_of(unknown).replace(
        NOBODYS_JOB, "X"
    )


MAX_FAILS = " max_fails=3 fail_timeout=10s"
REPLICA_LINES = {
    nginxkit.STATELESS_CONF: [MAX_FAILS],
    nginxkit.STICKY_CONF: [MAX_FAILS, ""],  # sessions' upstream, then media's (no parameters)
}
"""The documented files' upstreams, in order, by the parameters of their `server` lines."""


@pytest.mark.parametrize("conf", REPLICA_LINES, ids=lambda conf: conf.name)
def test_the_tested_nginx_configuration_is_the_documented_one_but_for_addresses_and_tls(conf: Path) -> None:
    documented = conf.read_text().splitlines()
    tested = nginxkit.site_config(conf, [8001, 8002, 8003], 9000).splitlines()
    changes = [
        " ".join(line.split()).replace("+ ", "+").replace("- ", "-")
        for line in difflib.unified_diff(documented, tested, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert sorted(changes) == sorted(
        [
            *(f"-server 10.0.0.{n}:8000{p};" for p in REPLICA_LINES[conf] for n in (11, 12, 13)),
            *(f"+server 127.0.0.1:{port}{p};" for p in REPLICA_LINES[conf] for port in (8001, 8002, 8003)),
            "-listen 443 ssl;",
            "+listen 127.0.0.1:9000;",
            "-http2 on;",
            "-ssl_certificate /etc/nginx/tls/mcp.example.com.crt;",
            "-ssl_certificate_key /etc/nginx/tls/mcp.example.com.key;",
        ]
    )


async def test_three_replicas_behind_nginx_finish_every_persons_jobs_once_when_one_is_killed_mid_burst(
    sim: RunningSimulator, tmp_path: Path, postgres_url: str, nginx_binary: Path
) -> None:
    out = tmp_path / "out"
    burst = Burst()
    listed: dict[str, list[str]] = {}
    finished: dict[str, dict[str, Any]] = {}
    with anyio.fail_after(90):
        async with team(tmp_path, sim, postgres_url, nginx_binary) as deployed, AsyncExitStack() as clients:
            people = {
                name: await clients.enter_async_context(as_person(deployed.url, token, mode=ERAS[name]))
                for name, token in PEOPLE.items()
            }
            # The first image create reaches AllToken, which makes the task and holds back the answer: the
            # replica that sent it (it holds the job's lease meanwhile) is the one to kill.
            sim.state.add_fault(path=IMAGE_CREATE, method="POST", hold_ms=HOLD_MS)
            async with anyio.create_task_group() as tg:
                tg.start_soon(burst.submit, "alice", people["alice"], "image", -1)
                await until(lambda: len(sim.state.images) == 1, "the held image create")
                [held] = await deployed.store.list_jobs()
                [held_task] = sim.state.images
                assert held.lease_owner is not None
                victim = next(r for r in deployed.replicas if r.process.pid == owner_pid(held.lease_owner))
                survivors = [r for r in deployed.replicas if r is not victim]

                for name, client in people.items():
                    tg.start_soon(burst.run, name, client)
                await burst.half_way.wait()
                os.kill(victim.process.pid, signal.SIGKILL)
                await victim.process.wait()  # reaped: its pid is gone, so its leases are free at once
                burst.killed = True  # and its sockets closed: a call from now on cannot reach it
                killed_at = time.time()

            for name, client in people.items():
                jobs = data(await client.call_tool("list_jobs", {"limit": 200}))["jobs"]
                listed[name] = [job["job_id"] for job in jobs]
                for job_id in listed[name]:
                    finished[job_id] = await finish(client, job_id)

            bob = people["bob"]
            foreign_status = await bob.call_tool("job_status", {"job_id": held.job_id})
            unknown_status = await bob.call_tool("job_status", {"job_id": NOBODYS_JOB})
            foreign_cancel = await bob.call_tool("job_cancel", {"job_id": held.job_id})
            unknown_cancel = await bob.call_tool("job_cancel", {"job_id": NOBODYS_JOB})

            stored: list[Job] = await deployed.store.list_jobs(limit=200)
            held_record = finished[held.job_id]
            assert held_record["status"] == "completed", held_record  # the rest needs its file
            [link] = held_record["download_urls"]
            async with httpx2.AsyncClient(timeout=10) as http:
                download = await http.get(link)
                hidden = [
                    (await http.get(f"{deployed.nginx.url}{p}")).status_code for p in ("/metrics", "/readyz")
                ]
                metrics = [samples(await scrape(http, s, ALICE)) for s in survivors]
            survivor_logs = "\n".join(line for s in survivors for line in s.stderr)
            upstreams = deployed.nginx.upstreams()

    # The call cut off by the kill got no answer; its job (Alice's) was taken over and finished.
    assert any(entry.startswith("image -1:") for entry in burst.cut_off["alice"]), burst.cut_off
    assert held.job_id in listed["alice"]
    assert f"job {held.job_id}: took over the lease of {held.lease_owner}" in survivor_logs
    assert sum(m.get(("alltoken_mcp_lease_takeovers_total", ()), 0.0) for m in metrics) >= 1
    # At once, because the dead owner's pid is gone on this host, not when its lease runs out.
    held_done = next(job for job in stored if job.job_id == held.job_id)
    assert held_done.updated_at - killed_at < LEASE_SECONDS / 2

    # People's jobs are theirs: every stored job is listed for exactly one person, the one who made it.
    assert sorted(j for ids in listed.values() for j in ids) == sorted(job.job_id for job in stored)
    for name in PEOPLE:
        assert set(burst.answered[name]) <= set(listed[name])
        assert {job.person for job in stored if job.job_id in listed[name]} == {name}
        assert len(listed[name]) <= len(BURST) + (name == "alice")  # no call made two jobs
    assert same_refusal(foreign_status, unknown_status, held.job_id)
    assert same_refusal(foreign_cancel, unknown_cancel, held.job_id)

    # Every job completed, its files whole on the shared volume (and downloadable through nginx).
    assert {record["status"] for record in finished.values()} == {"completed"}
    assert all(files_intact(record, out) for record in finished.values())
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == held_record["files"][0]["sha256"]
    assert hidden == [404, 404]  # as documented: for Prometheus and the balancer, not through nginx

    # No task paid twice: one AllToken task per job, each charged once. The held job adopted the task its
    # first create made when its create was sent again (AllToken answered duplicate_request).
    tasks = {job.upstream_id for job in stored}
    assert len(tasks) == len(stored)
    assert tasks == set(sim.state.images) | set(sim.state.videos)
    assert sim.state.tasks_created["images"] + sim.state.tasks_created["videos"] == len(stored)
    charged = [c.task_id for c in sim.state.charges.values() if c.category in ("image", "video")]
    assert sorted(map(str, charged)) == sorted(map(str, tasks))
    assert held_done.upstream_id == held_task
    assert sim.state.requests[f"POST {IMAGE_CREATE}"] > sum(job.kind == "image" for job in stored)

    # nginx spread the calls over all three replicas, and passed on those it tried on the dead one.
    addresses = {f"127.0.0.1:{port_of(r)}" for r in deployed.replicas}
    assert addresses <= {address for line in upstreams for address in line.split(", ")}
    assert any(line.startswith(f"127.0.0.1:{port_of(victim)}, ") for line in upstreams), upstreams
    assert burst.lost_after_kill == []
    for survivor in metrics:
        assert sum(v for (name, _), v in survivor.items() if name == "alltoken_mcp_tool_calls_total") >= 1
