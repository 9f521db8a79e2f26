"""The simulator's image tasks: create, validation, idempotency, progression, one-time delivery, expiry."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import anyio
import httpx2
import pytest

from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig, serve_simulator

CAT: dict[str, object] = {"model": "gpt-image-2", "prompt": "a cat", "quality": "low"}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    assert zlib.crc32(data[12 : 16 + length]) == struct.unpack(">I", data[16 + length : 20 + length])[0]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def _create(api: httpx2.AsyncClient, body: dict[str, object] = CAT, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = await api.post("/images/generations/async", json=body, headers=headers)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def _finish(sim: RunningSimulator, task_id: str) -> None:
    """Move the simulator's clock to just after the task's render finished."""
    sim.state.advance_to(sim.state.images[task_id].timeline.finished + 0.001)


async def test_create_returns_202_queued_with_an_igen_id(api: httpx2.AsyncClient) -> None:
    response = await api.post("/images/generations/async", json=CAT)
    assert response.status_code == 202
    body = response.json()
    assert re.fullmatch(r"igen_[0-9a-f]{24}", body["id"])
    assert body["status"] == "queued"
    assert body["model"] == "gpt-image-2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["created_at"])
    legacy = await api.post("/images/generations", json=CAT)
    assert legacy.status_code == 202


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 11}, "n"),
        ({"n": 0}, "n"),
        ({"quality": "ultra"}, "quality"),
        ({"output_format": "gif"}, "output_format"),
        ({"background": "black"}, "background"),
        ({"moderation": "none"}, "moderation"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 32001}, "prompt"),
        ({"size": "1000x1000"}, "size"),
        ({"size": "4096x4096"}, "size"),
    ],
)
async def test_invalid_image_parameters_are_400_naming_the_field(
    sim: RunningSimulator, api: httpx2.AsyncClient, change: dict[str, object], param: str
) -> None:
    response = await api.post("/images/generations/async", json={**CAT, **change})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == "invalid_request"
    assert sim.state.tasks_created["images"] == 0


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])  # real timings: "queued" lasts seconds
async def test_polling_goes_queued_processing_completed_with_poll_hints(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api)
    queued = await api.get(f"/images/generations/{task_id}")
    assert queued.json()["status"] == "queued"
    assert queued.json()["next_poll_after_ms"] == 2000
    assert queued.headers["retry-after"] == "2"
    sim.state.advance_to(sim.state.images[task_id].timeline.started + 0.001)
    assert (await api.get(f"/images/generations/{task_id}")).json()["status"] == "processing"
    _finish(sim, task_id)
    done = await api.get(f"/images/generations/{task_id}")
    assert done.json()["status"] == "completed"
    assert "retry-after" not in done.headers


async def test_b64_is_delivered_once_then_r2_url_until_it_expires(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api, {**CAT, "size": "1536x1024", "n": 2})
    _finish(sim, task_id)
    first = (await api.get(f"/images/generations/{task_id}")).json()
    assert [d["mime_type"] for d in first["data"]] == ["image/png", "image/png"]
    assert _png_size(base64.b64decode(first["data"][0]["b64_json"])) == (1536, 1024)
    assert first["size"] == "1536x1024"
    for field in ("usage", "quality", "output_format", "completed_at", "expires_at"):
        assert field in first
    second = (await api.get(f"/images/generations/{task_id}")).json()
    assert all("b64_json" not in d for d in second["data"])
    r2_url = second["data"][1]["r2_url"]
    assert r2_url == first["data"][1]["r2_url"]
    assert r2_url.startswith(sim.origin)
    async with httpx2.AsyncClient() as anonymous:  # R2 is public: no Authorization header
        copy = await anonymous.get(r2_url)
        assert copy.status_code == 200
        assert copy.content == base64.b64decode(first["data"][1]["b64_json"])
        sim.state.advance(30 * 86400 * 0.01)
        gone = await api.get(f"/images/generations/{task_id}")
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "image_expired"
        assert (await anonymous.get(r2_url)).status_code == 404
    assert sim.state.b64_deliveries == 1


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, r2_mode=False)])
async def test_legacy_mode_answers_410_image_already_retrieved_after_the_one_delivery(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api)
    _finish(sim, task_id)
    first = (await api.get(f"/images/generations/{task_id}")).json()
    assert "r2_url" not in first["data"][0]
    assert "b64_json" in first["data"][0]
    again = await api.get(f"/images/generations/{task_id}")
    assert again.status_code == 410
    error = again.json()["error"]
    assert error["code"] == "image_already_retrieved"
    assert error["message"] == "Image data was already retrieved; please submit a new generation request"


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, r2_mode=False, image_result_ttl_s=10)])
async def test_an_unclaimed_result_expires_with_410_image_expired(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api)
    _finish(sim, task_id)
    sim.state.advance(10 * 0.01 + 0.01)
    late = await api.get(f"/images/generations/{task_id}")
    assert late.status_code == 410
    assert late.json()["error"]["code"] == "image_expired"


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, image_claim_s=30)])
async def test_concurrent_claims_give_exactly_one_b64_delivery_and_a_409(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api)
    _finish(sim, task_id)
    responses: list[httpx2.Response] = []

    async def claim() -> None:
        responses.append(await api.get(f"/images/generations/{task_id}"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            tg.start_soon(claim)
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert sum("b64_json" in r.json().get("data", [{}])[0] for r in responses) == 1
    assert sim.state.b64_deliveries == 1


async def test_a_reused_idempotency_key_is_409_duplicate_request_with_the_original_task_id(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    original = await _create(api, key="key-1")
    again = await api.post("/images/generations/async", json=CAT, headers={"Idempotency-Key": "key-1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_request"
    assert again.json()["error"]["task_id"] == original
    assert sim.state.tasks_created["images"] == 1
    await api.post(f"{sim.origin}/_sim/forget_idempotency")
    assert await _create(api, key="key-1") != original


async def test_the_idempotency_window_is_real_time_and_scoped_to_the_api_key() -> None:
    config = SimConfig(speed=0.01, api_keys=(SIM_API_KEY, "sk-other"), idempotency_window_s=60)
    async with serve_simulator(config) as sim, httpx2.AsyncClient(base_url=sim.base_url) as client:
        mine = {"Authorization": f"Bearer {SIM_API_KEY}", "Idempotency-Key": "k"}
        theirs = {"Authorization": "Bearer sk-other", "Idempotency-Key": "k"}
        assert (await client.post("/images/generations/async", json=CAT, headers=mine)).status_code == 202
        assert (await client.post("/images/generations/async", json=CAT, headers=theirs)).status_code == 202
        sim.state.advance(59)  # not scaled: 59 real seconds is still inside the window
        assert (await client.post("/images/generations/async", json=CAT, headers=mine)).status_code == 409
        sim.state.advance(2)
        assert (await client.post("/images/generations/async", json=CAT, headers=mine)).status_code == 202


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, duplicate_mode="replay")])
async def test_replay_mode_answers_a_duplicate_with_the_original_task(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    original = await _create(api, key="key-2")
    again = await api.post("/images/generations/async", json=CAT, headers={"Idempotency-Key": "key-2"})
    assert again.status_code == 202
    assert again.json()["id"] == original
    assert sim.state.tasks_created["images"] == 1


async def test_another_keys_task_and_unknown_ids_are_404() -> None:
    config = SimConfig(speed=0.01, api_keys=(SIM_API_KEY, "sk-other"))
    async with serve_simulator(config) as sim, httpx2.AsyncClient(base_url=sim.base_url) as client:
        created = await client.post(
            "/images/generations/async", json=CAT, headers={"Authorization": f"Bearer {SIM_API_KEY}"}
        )
        other = {"Authorization": "Bearer sk-other"}
        for task_id in (created.json()["id"], "igen_000000000000000000000000"):
            response = await client.get(f"/images/generations/{task_id}", headers=other)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"


async def test_a_fail_prompt_ends_failed_with_an_error_as_200(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api, {**CAT, "prompt": "[fail] forbidden"})
    _finish(sim, task_id)
    response = await api.get(f"/images/generations/{task_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert set(response.json()["error"]) >= {"code", "message"}


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, image_payload_bytes=3_000_000)])
async def test_image_payload_bytes_pads_the_png_to_benchmark_large_deliveries(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = await _create(api)
    _finish(sim, task_id)
    data = base64.b64decode((await api.get(f"/images/generations/{task_id}")).json()["data"][0]["b64_json"])
    assert 2_900_000 < len(data) <= 3_000_000
    assert _png_size(data) == (1024, 1024)
    assert data.endswith(b"IEND\xaeB`\x82")
