"""The simulator's fault injection, control API, counters, catalog and lifecycle."""

from __future__ import annotations

import json
import re
import signal
import sys
import time

import anyio
import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig, serve_simulator
from alltoken_mcp.simulator.app import SimApp
from alltoken_mcp.simulator.state import SimState

CAT = {"model": "gpt-image-2", "prompt": "a cat"}
CHAT = {"model": "gpt-5.4-nano", "messages": [{"role": "user", "content": "a b c d e f"}]}


async def test_a_status_fault_answers_n_requests_then_lets_them_through(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    origin = sim.origin
    added = await api.post(
        f"{origin}/_sim/faults",
        json={"path": "/v1/images/generations/async", "status": 503, "count": 2, "retry_after": 3},
    )
    assert added.status_code == 201
    statuses = []
    for _ in range(3):
        response = await api.post("/images/generations/async", json=CAT)
        statuses.append(response.status_code)
    assert statuses == [503, 503, 202]
    counters = (await api.get(f"{origin}/_sim/counters")).json()
    assert counters["requests"]["POST /v1/images/generations/async"] == 3
    assert counters["tasks"]["images"] == 1  # a faulted request is not processed


async def test_faults_match_route_templates_and_methods_and_carry_retry_after(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    state = sim.state
    state.add_fault(path="/v1/images/generations/{task_id}", method="GET", status=429)
    state.add_fault(path="/v1/models", status=500, code="internal_error", message="boom", retry_after=None)
    limited = await api.get("/images/generations/igen_x")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"  # a 429 always says when to retry unless told otherwise
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["x-gateway-request-id"] == limited.json()["error"]["request_id"]
    broken = await api.get("/models")
    assert (broken.status_code, broken.json()["error"]["message"]) == (500, "boom")
    assert "retry-after" not in broken.headers
    assert (await api.get("/images/generations/igen_x")).status_code == 404


async def test_a_before_body_drop_processes_the_request_but_the_client_gets_no_complete_answer(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    state = sim.state
    state.add_fault(path="/v1/images/generations/async", drop="before_body")
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
        await api.post("/images/generations/async", json=CAT, headers={"Idempotency-Key": "lost-answer"})
    assert state.tasks_created["images"] == 1  # the task exists even though the 202 never arrived
    retry = await api.post("/images/generations/async", json=CAT, headers={"Idempotency-Key": "lost-answer"})
    assert retry.status_code == 409
    assert retry.json()["error"]["task_id"] in state.images


async def test_a_mid_stream_drop_cuts_an_sse_stream_after_n_chunks(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    state = sim.state
    state.add_fault(path="/v1/chat/completions", drop="mid_stream", after_chunks=3)
    received: list[str] = []

    async def read() -> None:
        async with api.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line)

    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
        await read()
    assert len(received) == 3
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in received)
    ok = await api.post("/chat/completions", json=CHAT)
    assert ok.status_code == 200


async def test_a_latency_fault_delays_the_answer(sim: RunningSimulator, api: httpx2.AsyncClient) -> None:
    state = sim.state
    state.add_fault(path="/v1/models", latency_ms=300)
    started = time.monotonic()
    with anyio.fail_after(5):
        response = await api.get("/models")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    state.add_fault(path="/v1/models", latency_ms=5000)
    with pytest.raises(httpx2.ReadTimeout):
        await api.get("/models", timeout=0.2)


async def test_a_hold_processes_the_request_and_keeps_the_answer_back(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    state = sim.state
    headers = {"Idempotency-Key": "held-answer"}
    state.add_fault(path="/v1/images/generations/async", hold_ms=5000)
    with pytest.raises(httpx2.ReadTimeout):
        await api.post("/images/generations/async", json=CAT, headers=headers, timeout=0.3)
    assert state.tasks_created["images"] == 1  # created before the client gave up waiting
    retry = await api.post("/images/generations/async", json=CAT, headers=headers)
    assert retry.status_code == 409
    assert retry.json()["error"]["task_id"] in state.images
    state.add_fault(path="/v1/images/generations/async", hold_ms=200)
    started = time.monotonic()
    with anyio.fail_after(5):
        late = await api.post("/images/generations/async", json=CAT)
    assert time.monotonic() - started >= 0.2
    assert late.status_code == 202  # a hold that ends delivers the whole, normal answer
    assert late.json()["id"] in state.images


async def test_a_mid_body_hold_sends_headers_and_half_the_body_then_pauses(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    sim.state.add_fault(path="/v1/models", hold_ms=1500, hold_at="mid_body")
    parts: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with anyio.fail_after(10):
        async with api.stream("GET", "/models") as response:
            length = int(response.headers["content-length"])
            async for chunk in response.aiter_raw():
                parts.append((time.monotonic() - started, chunk))
    body = b"".join(chunk for _, chunk in parts)
    assert len(body) == length
    assert json.loads(body)["object"] == "list"
    first_half = parts[0][1]
    assert len(first_half) == length // 2
    assert parts[0][0] < 1.0  # the first half came at once...
    assert parts[-1][0] >= 1.5  # ...the rest only after the hold


async def test_control_api_validates_hold_faults(sim: RunningSimulator, api: httpx2.AsyncClient) -> None:
    faults = f"{sim.origin}/_sim/faults"
    with_status = await api.post(faults, json={"path": "/v1/models", "hold_ms": 10, "status": 500})
    assert with_status.status_code == 400
    assert "excludes status and drop" in with_status.json()["error"]["message"]
    where_only = await api.post(faults, json={"path": "/v1/models", "hold_at": "mid_body"})
    assert where_only.status_code == 400
    held = await api.post(faults, json={"path": "/v1/models", "hold_ms": 10, "hold_at": "mid_body"})
    assert held.status_code == 201
    assert held.json()["faults"][0]["hold_at"] == "mid_body"


async def test_control_api_validates_faults_config_and_clock_input(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    origin = sim.origin
    no_effect = await api.post(f"{origin}/_sim/faults", json={"path": "/v1/models"})
    assert no_effect.status_code == 400
    assert "at least one of" in no_effect.json()["error"]["message"]
    unknown = await api.post(f"{origin}/_sim/config", json={"sped": 2})
    assert unknown.status_code == 400
    assert "sped" in unknown.json()["error"]["message"]
    negative = await api.post(f"{origin}/_sim/config", json={"speed": -1})
    assert negative.status_code == 400
    assert (await api.post(f"{origin}/_sim/advance", json={"seconds": -1})).status_code == 400
    assert (await api.post(f"{origin}/_sim/advance", json={"seconds": 5})).status_code == 200
    config = (await api.post(f"{origin}/_sim/config", json={"r2_mode": False})).json()
    assert config["r2_mode"] is False
    assert config["speed"] == 0.01


async def test_reset_clears_tasks_faults_counters_and_config(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    origin = sim.origin
    state = sim.state
    await api.post("/images/generations/async", json=CAT)
    state.add_fault(path="/v1/models", status=500, count=None)
    state.update_config(balance_ok=False)
    await api.post(f"{origin}/_sim/reset")
    counters = (await api.get(f"{origin}/_sim/counters")).json()
    assert counters["requests"] == {}  # control calls are not counted
    assert counters["tasks"] == {"images": 0, "videos": 0, "uploads": 0}
    assert state.images == {}
    assert state.config.balance_ok is True
    assert (await api.get("/models")).status_code == 200


async def test_model_lists_carry_modalities_objects_and_video_capabilities(api: httpx2.AsyncClient) -> None:
    models = (await api.get("/models")).json()
    assert models["object"] == "list"
    modality = {m["id"]: m["modality"] for m in models["data"]}
    assert modality["deepseek-v4-pro"] == "text"
    assert modality["claude-sonnet-4-6"] == "vision"
    assert modality["gpt-image-2"] == "image"
    assert modality["seedance-2.0"] == "video"
    images = (await api.get("/images/models")).json()["data"]
    assert {m["object"] for m in images} == {"image"}
    videos = {m["id"]: m for m in (await api.get("/videos/models")).json()["data"]}
    assert {m["object"] for m in videos.values()} == {"video"}
    caps = videos["seedance-2.0"]["capabilities"]
    assert caps["duration"] == {
        "type": "range",
        "min": 4,
        "max": 15,
        "step": 1,
        "default": 5,
        "supports_auto": True,
    }
    assert caps["resolutions"]["values"] == ["480p", "720p", "1080p"]
    assert len(caps["input_types"]) == 7
    assert videos["seedance-1.0-pro"]["capabilities"]["frames"] == {
        "min": 29,
        "max": 289,
        "step": 4,
        "base": 25,
    }
    assert videos["happyhorse-1.0-video-edit"]["capabilities"]["duration"] is None
    assert "1080p" not in videos["seedance-2.5"]["capabilities"]["resolutions"]["values"]


async def test_public_catalog_prices_and_health_summary_agree_with_routes(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    origin = sim.origin
    async with httpx2.AsyncClient(base_url=origin) as anonymous:
        catalog = {m["id"]: m for m in (await anonymous.get("/api-account/models")).json()["data"]}
        nano = (await anonymous.get("/api-account/models/gpt-5.4-nano")).json()["data"]
        missing = await anonymous.get("/api-account/models/nope")
        summary = (await anonymous.get("/api-account/health/summary")).json()["data"]
        routes = (await anonymous.get("/api-account/health/routes")).json()["data"]
        bad_range = await anonymous.get("/api-account/health/routes", params={"time_range": "1y"})
    assert nano == catalog["gpt-5.4-nano"]
    assert (nano["pricing"]["input"], nano["pricing"]["output"]) == ("0.2000", "1.2500")
    assert "enable_search" in nano["supported_parameters"]
    assert catalog["gpt-image-2"]["output_modalities"] == ["image"]
    assert missing.status_code == 404
    assert summary["total_routes"] == len(routes)
    for status in ("healthy", "degraded", "incident"):
        assert summary[f"{status}_routes"] == sum(r["status"] == status for r in routes)
    assert summary["incident_routes"] >= 1
    assert all(r["latency_p95_ms"] >= r["latency_p50_ms"] for r in routes)
    assert bad_range.status_code == 400


async def test_serve_simulator_starts_fast_on_a_free_port_and_releases_it() -> None:
    started = time.monotonic()
    async with serve_simulator(SimConfig(speed=0.01)) as sim:
        assert time.monotonic() - started < 1.0
        assert sim.base_url == f"{sim.origin}/v1"
        async with httpx2.AsyncClient() as client:
            assert (await client.get(f"{sim.origin}/_sim/counters")).status_code == 200
        origin = sim.origin
    async with httpx2.AsyncClient() as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get(f"{origin}/_sim/counters")


async def test_two_simulators_run_side_by_side_with_separate_state() -> None:
    async with serve_simulator(SimConfig(speed=0.01)) as a, serve_simulator(SimConfig(speed=0.01)) as b:
        assert a.origin != b.origin
        a.state.add_fault(path="/v1/models", status=500)
        async with httpx2.AsyncClient(
            headers={"Authorization": "Bearer sk-sim-local-0000000000000000"}
        ) as client:
            assert (await client.get(f"{a.base_url}/models")).status_code == 500
            assert (await client.get(f"{b.base_url}/models")).status_code == 200


def test_the_app_counts_requests_by_route_template() -> None:
    app = SimApp(SimState(SimConfig()))
    scope = {"type": "http", "method": "GET", "path": "/_r2/images/igen_1/0.png", "root_path": ""}
    assert app.template(scope) == "/_r2/images/{task_id}/{index}.png"
    assert app.template({**scope, "path": "/v1/videos/generations/vgen_1/cancel", "method": "POST"}) == (
        "/v1/videos/generations/{task_id}/cancel"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_run_simulator_prints_its_url_on_stderr_only_and_stops_on_sigint() -> None:
    code = "from alltoken_mcp.simulator import SimConfig, run_simulator; run_simulator(SimConfig(), port=0)"
    with anyio.fail_after(15):
        async with await anyio.open_process([sys.executable, "-c", code]) as process:
            assert process.stderr is not None
            assert process.stdout is not None
            announced = b""
            while b"Press Ctrl+C" not in announced:
                announced += await process.stderr.receive()
            match = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", announced)
            assert match is not None
            async with httpx2.AsyncClient() as client:
                health = await client.get(f"{match[1].decode()}/api-account/health/summary")
            assert health.status_code == 200
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            with pytest.raises(anyio.EndOfStream):  # nothing was ever written to stdout
                await process.stdout.receive()


async def test_the_simulator_leaves_the_host_processes_signal_handlers_alone() -> None:
    # `alltoken-mcp --simulate` runs the simulator inside the MCP server, whose SIGTERM handling must
    # stay in charge; stock uvicorn would install its own handlers for the duration of `serve`.
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serve_simulator(SimConfig(speed=0.01)) as sim:
        async with httpx2.AsyncClient() as client:
            assert (await client.get(f"{sim.origin}/_sim/counters")).status_code == 200
        assert {sig: signal.getsignal(sig) for sig in before} == before
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_stopping_the_simulator_cuts_a_held_answer_and_closes_idle_connections() -> None:
    with anyio.fail_after(10):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {SIM_API_KEY}"}) as client:
            held_failed = anyio.Event()
            failures: list[BaseException] = []

            async def held_request(base_url: str) -> None:
                try:
                    await client.post(f"{base_url}/images/generations/async", json=CAT, timeout=30)
                except httpx2.TransportError as exc:
                    failures.append(exc)
                held_failed.set()

            async with anyio.create_task_group() as tg:
                async with serve_simulator(SimConfig(speed=0.01)) as sim:
                    idle = await anyio.connect_tcp("127.0.0.1", sim.port)
                    await idle.send(b"GET /_sim/counters HTTP/1.1\r\nHost: sim\r\n\r\n")
                    assert b"200 OK" in await idle.receive()
                    sim.state.add_fault(path="/v1/images/generations/async", hold_ms=60_000)
                    tg.start_soon(held_request, sim.base_url)
                    # The simulator has no event for "request received"; its counter is the truth.
                    while sim.state.tasks_created["images"] == 0:  # noqa: ASYNC110
                        await anyio.sleep(0.005)
                # The held answer would come in a minute; the stop cancels it within the grace period.
                await held_failed.wait()
                assert len(failures) == 1
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await idle.receive()
                await idle.aclose()


def test_the_uvicorn_internals_the_simulator_relies_on_are_still_there() -> None:
    """`simulator/runner.py` subclasses `uvicorn.Server` (uvicorn is pinned below 1.0): this names what it
    uses, so an uvicorn release that moves them fails here rather than in every test that starts one."""
    import inspect

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(lambda *_: None, log_config=None))
    for method in ("capture_signals", "startup", "main_loop", "on_tick", "shutdown", "serve"):
        assert callable(getattr(server, method)), method
    assert list(inspect.signature(server.startup).parameters) == ["sockets"]
    assert list(inspect.signature(server.shutdown).parameters) == ["sockets"]
    assert list(inspect.signature(server.on_tick).parameters) == ["counter"]
    assert server.server_state.connections == set()
    assert server.server_state.tasks == set()
    assert server.should_exit is False
