"""AllTokenClient against the simulator over real loopback HTTP: every method, every error class,
retries (with a RetryPolicy that records waits instead of sleeping), idempotent job creation, and the
API key staying out of every exception, repr and log record."""

from __future__ import annotations

import hashlib
import json
import logging
from base64 import b64decode, b64encode
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DuplicateRequestError,
    GoneError,
    InsufficientBalanceError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    TransportError,
)
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig

PNG = b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
CAT = {"model": "gpt-image-2", "prompt": "a cat", "quality": "low"}
VIDEO = {"model": "seedance-1.5-pro", "prompt": "a wave", "duration": 5, "resolution": "480p"}


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(sim: RunningSimulator, sleeps: Sleeps) -> AsyncIterator[AllTokenClient]:
    policy = RetryPolicy(sleep=sleeps, random=lambda: 0.5)
    async with AllTokenClient(base_url=sim.base_url, api_key=SIM_API_KEY, retry=policy, timeout=10) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def finish_image(sim: RunningSimulator, task_id: str) -> None:
    sim.state.advance_to(sim.state.images[task_id].timeline.finished + 0.001)


def finish_video(sim: RunningSimulator, task_id: str) -> None:
    sim.state.advance_to(sim.state.videos[task_id].timeline.finished + 0.001)


# ------------------------------------------------------------------------------------------------ chat


async def test_chat_returns_the_answer_usage_and_gateway_request_id(client: AllTokenClient) -> None:
    result = await client.chat({"model": "gpt-5.4-nano", "messages": user("one two three")})
    assert result.text == "Echo: one two three"
    assert result.finish_reason == "stop"
    assert result.model == "gpt-5.4-nano"
    assert result.id is not None
    assert result.id.startswith("chatcmpl-")
    assert result.usage is not None
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0
    assert result.request_id is not None
    assert len(result.request_id) == 20


async def test_stream_chat_yields_fragments_and_reads_usage_and_the_cost_after_done(
    client: AllTokenClient,
) -> None:
    async with client.stream_chat({"model": "gpt-5.4-nano", "messages": user("one two three")}) as stream:
        fragments = [event.text async for event in stream if event.kind == "content"]
    result = stream.result()
    assert len(fragments) > 1
    assert "".join(fragments) == result.text == "Echo: one two three"
    assert result.usage is not None
    assert result.cost is not None
    assert (result.cost.prompt_tokens, result.cost.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert result.cost.input_price == Decimal("0.0002")
    expected = (
        result.cost.input_price * result.usage.prompt_tokens
        + Decimal("0.00125") * result.usage.completion_tokens
    ) / 1000
    assert result.cost.cost == expected.quantize(Decimal("0.0000000001"))
    assert result.request_id is not None


async def test_stream_chat_reports_reasoning_before_content_with_reasoning_tokens(
    client: AllTokenClient,
) -> None:
    body = {"model": "deepseek-v4-pro", "messages": user("why"), "thinking": {"type": "enabled"}}
    async with client.stream_chat(body) as stream:
        kinds = [event.kind async for event in stream]
    result = stream.result()
    assert kinds.index("content") > kinds.index("reasoning")
    assert "reasoning" not in kinds[kinds.index("content") :]
    assert result.reasoning
    assert result.usage is not None
    assert result.usage.reasoning_tokens == kinds.count("reasoning")
    plain = await client.chat(body)
    assert plain.reasoning == result.reasoning


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["city", "days"],
        },
    },
}


async def test_streamed_and_plain_tool_calls_carry_id_name_and_complete_arguments(
    client: AllTokenClient,
) -> None:
    body = {"model": "kimi-k2.6", "messages": user("[tool] Paris"), "tools": [WEATHER_TOOL]}
    async with client.stream_chat(body) as stream:
        events = [event async for event in stream]
    streamed = stream.result()
    assert {e.kind for e in events} == {"tool_call"}
    assert streamed.finish_reason == "tool_calls"
    [call] = streamed.tool_calls
    assert call.id is not None
    assert call.id.startswith("call_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "days": 3}
    plain = await client.chat(body)
    assert plain.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in plain.tool_calls] == [
        ("get_weather", json.loads(call.arguments))
    ]


async def test_a_stream_dropped_mid_body_raises_stream_error_and_is_not_retried(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    sim.state.add_fault(path="/v1/chat/completions", drop="mid_stream", after_chunks=3)
    received: list[str] = []
    with pytest.raises(StreamError, match="broke off") as caught:
        await read_into(client, {"model": "gpt-5.4-nano", "messages": user("a b c d e f g h")}, received)
    assert received  # fragments that arrived before the drop were delivered
    assert SIM_API_KEY not in str(caught.value)
    assert sim.state.requests["POST /v1/chat/completions"] == 1


async def read_into(client: AllTokenClient, body: dict[str, Any], into: list[str]) -> None:
    async with client.stream_chat(body) as stream:
        async for event in stream:
            into.append(event.text)


# --------------------------------------------------------------------------------------------- catalog


async def test_model_lists_parse_modalities_and_video_capabilities(client: AllTokenClient) -> None:
    models = await client.list_models()
    assert {"text", "image", "video"} <= {m.modality for m in models}
    images = await client.list_image_models()
    assert images
    assert all(m.object == "image" for m in images)
    videos = await client.list_video_models()
    seedance = next(m for m in videos if m.id == "seedance-2.0")
    caps = seedance.capabilities
    assert caps is not None
    assert caps.duration is not None
    assert (caps.duration.type, caps.duration.min, caps.duration.max, caps.duration.supports_auto) == (
        "range",
        4,
        15,
        True,
    )
    assert caps.resolutions is not None
    assert caps.resolutions.values is not None
    assert "1080p" in caps.resolutions.values
    assert caps.input_types
    assert caps.features is not None
    assert caps.features.generate_audio is True


async def test_public_catalog_and_health_need_no_api_key(sim: RunningSimulator) -> None:
    async with AllTokenClient(base_url=sim.base_url, api_key=None) as anonymous:
        catalog = await anonymous.catalog()
        summary = await anonymous.health_summary()
        routes = await anonymous.health_routes()
    assert any(m.id == "gpt-image-2" and m.output_modalities == ["image"] for m in catalog)
    assert any(m.pricing for m in catalog)
    assert summary.total_routes == len(routes) > 0
    assert summary.incident_routes == sum(r.status == "incident" for r in routes)
    assert all(r.model and r.provider and r.availability is not None for r in routes)


# ---------------------------------------------------------------------------------------------- images


async def test_image_job_goes_from_queued_to_completed_with_one_b64_then_r2_url(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    created = await client.create_image(CAT, idempotency_key="img-key-1")
    assert created.status == "queued"
    assert created.id.startswith("igen_")
    polled = await client.get_image(created.id)
    assert polled.status in ("queued", "processing")
    assert polled.next_poll_after_ms is not None
    assert polled.retry_after is not None
    finish_image(sim, created.id)
    done = await client.get_image(created.id)
    assert done.status == "completed"
    assert done.data[0].b64_json is not None
    assert b64decode(done.data[0].b64_json).startswith(b"\x89PNG")
    assert done.data[0].mime_type == "image/png"
    again = await client.get_image(created.id)
    assert again.data[0].b64_json is None
    assert again.data[0].r2_url is not None
    async with client.download(again.data[0].r2_url) as response:
        blob = b"".join([part async for part in response.aiter_bytes()])
    assert blob == b64decode(done.data[0].b64_json)
    assert sim.state.counters()["foreign_authorization"] == 0


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, r2_mode=False)])
async def test_a_second_read_of_a_delivered_image_raises_gone_error(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    created = await client.create_image(CAT, idempotency_key="img-key-2")
    finish_image(sim, created.id)
    await client.get_image(created.id)
    with pytest.raises(GoneError) as caught:
        await client.get_image(created.id)
    assert caught.value.status_code == 410
    assert caught.value.code == "image_already_retrieved"
    assert caught.value.request_id


async def test_a_reused_idempotency_key_raises_duplicate_request_with_the_original_task_id(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    first = await client.create_image(CAT, idempotency_key="same-key")
    with pytest.raises(DuplicateRequestError) as caught:
        await client.create_image(CAT, idempotency_key="same-key")
    assert caught.value.task_id == first.id
    assert caught.value.status_code == 409
    assert sim.state.tasks_created["images"] == 1
    assert sim.state.requests["POST /v1/images/generations/async"] == 2  # a 409 is never retried


async def test_a_dropped_job_creation_is_retried_with_the_same_key_and_creates_one_task(
    sim: RunningSimulator, client: AllTokenClient, caplog: pytest.LogCaptureFixture
) -> None:
    sim.state.add_fault(path="/v1/images/generations/async", drop="before_body")
    caplog.set_level(logging.DEBUG, logger="alltoken_mcp.client")
    with pytest.raises(DuplicateRequestError) as caught:
        await client.create_image(CAT, idempotency_key="drop-key-1")
    assert sim.state.tasks_created["images"] == 1
    [only_task] = sim.state.images
    assert caught.value.task_id == only_task
    assert sim.state.requests["POST /v1/images/generations/async"] == 2
    # The simulator remembers exactly one key, and answered the retry with duplicate_request for it:
    # the second attempt carried the same Idempotency-Key as the first.
    assert [key for (_, _, key) in sim.state.idempotency] == ["drop-key-1"]
    attempts = [r.getMessage() for r in caplog.records if "/v1/images/generations/async" in r.getMessage()]
    assert any("attempt 1" in line and "(will retry)" in line for line in attempts)
    assert any("-> 409 (attempt 2" in line for line in attempts)


async def test_a_dropped_video_creation_is_retried_with_the_same_key_and_creates_one_task(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    sim.state.add_fault(path="/v1/videos/generations", method="POST", drop="before_body")
    with pytest.raises(DuplicateRequestError) as caught:
        await client.create_video(VIDEO, idempotency_key="drop-key-2")
    assert sim.state.tasks_created["videos"] == 1
    assert caught.value.task_id == next(iter(sim.state.videos))


async def test_a_dropped_chat_is_not_resent_because_it_may_have_been_billed(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    sim.state.add_fault(path="/v1/chat/completions", drop="before_body")
    with pytest.raises(TransportError, match="may have reached AllToken") as caught:
        await client.chat({"model": "gpt-5.4-nano", "messages": user("hi")})
    assert "/v1/chat/completions" in str(caught.value)
    assert sim.state.requests["POST /v1/chat/completions"] == 1


async def test_job_creation_is_retried_through_5xx_and_creates_one_task(
    sim: RunningSimulator, client: AllTokenClient, sleeps: Sleeps
) -> None:
    sim.state.add_fault(path="/v1/images/generations/async", status=503, count=2)
    created = await client.create_image(CAT, idempotency_key="five-hundred")
    assert created.status == "queued"
    assert sim.state.tasks_created["images"] == 1
    assert sim.state.requests["POST /v1/images/generations/async"] == 3
    assert sleeps.waits == [0.25, 0.5]  # full jitter with random()=0.5: half of 0.5 s, then of 1 s


# ---------------------------------------------------------------------------------------------- videos


async def test_video_job_lifecycle_list_and_cancel(sim: RunningSimulator, client: AllTokenClient) -> None:
    created = await client.create_video(VIDEO, idempotency_key="vid-1")
    assert (created.status, created.is_expired) == ("queued", False)
    assert created.id.startswith("vgen_")
    finish_video(sim, created.id)
    done = await client.get_video(created.id)
    assert done.status == "completed"
    assert done.video_url is not None
    assert (done.resolution, done.duration, done.fps) == ("480p", 5, 24)
    async with client.download(done.video_url) as response:
        head = await anext(response.aiter_bytes())
    assert head[4:8] == b"ftyp"
    queued = await client.create_video({**VIDEO, "prompt": "another"}, idempotency_key="vid-2")
    listed = await client.list_videos(limit=10)
    assert [v.id for v in listed.items][:2] == [queued.id, created.id]
    assert listed.total == 2
    only_completed = await client.list_videos(status="completed")
    assert [v.id for v in only_completed.items] == [created.id]
    cancelled = await client.cancel_video(queued.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(ConflictError) as caught:
        await client.cancel_video(created.id)
    assert caught.value.status_code == 409
    with pytest.raises(NotFoundError):
        await client.get_video("vgen_doesnotexist")


async def test_a_bad_video_duration_raises_bad_request_naming_the_limits(client: AllTokenClient) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.create_video({**VIDEO, "duration": 99}, idempotency_key="vid-bad")
    assert caught.value.code == "invalid_request"
    assert "duration" in str(caught.value)


async def test_a_local_frame_is_presigned_put_without_auth_and_claimed_by_a_video(
    sim: RunningSimulator, client: AllTokenClient, tmp_path: Path
) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    presigned = await client.presign_upload(
        purpose="video_input_image",
        content_type="image/png",
        content_length=len(PNG),
        content_md5=b64encode(hashlib.md5(PNG).digest()).decode(),
        checksum_sha256=hashlib.sha256(PNG).hexdigest(),
    )
    assert presigned.upload_id.startswith("upl_")
    await client.put_upload(presigned, frame)
    item = {"type": "image", "upload_id": presigned.upload_id, "role": "first_frame"}
    created = await client.create_video({**VIDEO, "content": [item]}, idempotency_key="vid-frame")
    assert created.input_type == "image_first_frame"
    assert sim.state.counters()["foreign_authorization"] == 0


async def _uploaded(client: AllTokenClient, path: Path, purpose: str) -> str:
    data = await anyio.Path(path).read_bytes()
    presigned = await client.presign_upload(
        purpose=purpose,
        content_type="image/png",
        content_length=len(data),
        content_md5=b64encode(hashlib.md5(data).digest()).decode(),
        checksum_sha256=hashlib.sha256(data).hexdigest(),
    )
    await client.put_upload(presigned, path)
    return presigned.upload_id


async def test_edits_and_variations_go_to_their_endpoints_by_their_body_and_poll_like_generations(
    sim: RunningSimulator, client: AllTokenClient, tmp_path: Path
) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(PNG)
    edit = {"model": "gpt-image-2", "prompt": "add a hat"}
    edit["image_upload_id"] = await _uploaded(client, source, "image_edit_source")
    edit["mask_upload_id"] = await _uploaded(client, source, "image_edit_mask")
    variation = {
        "model": "dall-e-2",
        "image_upload_id": await _uploaded(client, source, "image_variation_source"),
    }
    edited = await client.create_image(edit, idempotency_key="edit-key")
    varied = await client.create_image(variation, idempotency_key="variation-key")
    assert edited.id.startswith("igen_mask_")
    assert varied.id.startswith("igen_ivar_")
    requests = sim.state.requests
    assert (requests["POST /v1/images/edits"], requests["POST /v1/images/variations"]) == (1, 1)
    assert "POST /v1/images/generations/async" not in requests
    with pytest.raises(DuplicateRequestError) as caught:  # the key is honoured on these endpoints too
        await client.create_image(edit, idempotency_key="edit-key")
    assert caught.value.task_id == edited.id
    finish_image(sim, varied.id)
    done = await client.get_image(varied.id)
    assert done.status == "completed"
    assert len(done.data) == 1


async def test_a_dropped_edit_is_retried_with_the_same_key_and_binds_its_upload_once(
    sim: RunningSimulator, client: AllTokenClient, tmp_path: Path
) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(PNG)
    edit = {"model": "gpt-image-2", "prompt": "add a hat"}
    edit["image_upload_id"] = await _uploaded(client, source, "image_edit_source")
    sim.state.add_fault(path="/v1/images/edits", drop="before_body")
    with pytest.raises(DuplicateRequestError) as caught:  # not "upload already used": the key wins
        await client.create_image(edit, idempotency_key="edit-drop")
    [only_task] = sim.state.images
    assert caught.value.task_id == only_task
    assert sim.state.uploads[edit["image_upload_id"]].claimed_by == only_task


async def test_a_bad_presign_raises_bad_request_with_the_field_code(client: AllTokenClient) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.presign_upload(
            purpose="video_input_image",
            content_type="image/png",
            content_length=len(PNG),
            content_md5="not-an-md5",
            checksum_sha256=hashlib.sha256(PNG).hexdigest(),
        )
    assert caught.value.code == "invalid_content_md5"


# ---------------------------------------------------------------------------------------------- errors


async def test_a_wrong_key_raises_authentication_error_without_echoing_the_key(sim: RunningSimulator) -> None:
    wrong = "sk-wrong-key-that-must-not-leak-123456"
    async with AllTokenClient(base_url=sim.base_url, api_key=wrong) as c:
        with pytest.raises(AuthenticationError) as caught:
            await c.list_models()
        assert wrong not in repr(c)
    assert caught.value.code == "invalid_api_key"
    assert wrong not in str(caught.value)


async def test_an_empty_balance_raises_insufficient_balance(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    sim.state.update_config(balance_ok=False)
    with pytest.raises(InsufficientBalanceError) as caught:
        await client.chat({"model": "gpt-5.4-nano", "messages": user("hi")})
    assert caught.value.status_code == 402
    assert caught.value.code == "insufficient_balance"


async def test_an_unknown_model_raises_model_not_found_with_the_top_level_request_id(
    client: AllTokenClient,
) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        await client.chat({"model": "no-such-model", "messages": user("hi")})
    assert caught.value.status_code == 404
    assert caught.value.request_id is not None
    assert len(caught.value.request_id) == 20
    assert caught.value.request_id in str(caught.value)


async def test_enable_search_on_openai_models_raises_all_providers_failed_without_retrying(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    with pytest.raises(AllProvidersFailedError):
        await client.chat({"model": "gpt-5.4-nano", "messages": user("news"), "enable_search": True})
    assert sim.state.requests["POST /v1/chat/completions"] == 1


async def test_rate_limits_are_retried_after_the_servers_retry_after(
    sim: RunningSimulator, client: AllTokenClient, sleeps: Sleeps
) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=429, count=2, retry_after=3)
    result = await client.chat({"model": "gpt-5.4-nano", "messages": user("hi")})
    assert result.text == "Echo: hi"
    assert sleeps.waits == pytest.approx([3.3, 3.3])  # the hint, stretched by a fifth of random()=0.5
    assert sim.state.requests["POST /v1/chat/completions"] == 3


async def test_exhausted_rate_limit_retries_raise_rate_limit_error_with_retry_after(
    sim: RunningSimulator, client: AllTokenClient, sleeps: Sleeps
) -> None:
    sim.state.add_fault(path="/v1/models", status=429, count=None, retry_after=120)
    with pytest.raises(RateLimitError) as caught:
        await client.list_models()
    assert caught.value.retry_after == 120.0  # what the server asked for: the caller is told that
    # ...while the loop itself sleeps RetryPolicy.max_retry_after, stretched by a fifth of random()=0.5
    assert sleeps.waits == pytest.approx([66.0, 66.0, 66.0])
    assert sim.state.requests["GET /v1/models"] == 4


async def test_5xx_on_a_get_is_retried_then_succeeds(
    sim: RunningSimulator, client: AllTokenClient, sleeps: Sleeps
) -> None:
    sim.state.add_fault(path="/v1/videos/models", status=502, count=3)
    assert await client.list_video_models()
    assert sim.state.requests["GET /v1/videos/models"] == 4
    assert sleeps.waits == [0.25, 0.5, 1.0]


async def test_5xx_retries_exhausted_raise_server_error(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    sim.state.add_fault(path="/v1/images/models", status=500, count=None)
    with pytest.raises(ServerError) as caught:
        await client.list_image_models()
    assert caught.value.status_code == 500
    assert sim.state.requests["GET /v1/images/models"] == 4


async def test_a_5xx_on_chat_is_not_retried(sim: RunningSimulator, client: AllTokenClient) -> None:
    sim.state.add_fault(path="/v1/chat/completions", status=500)
    with pytest.raises(ServerError):
        await client.chat({"model": "gpt-5.4-nano", "messages": user("hi")})
    assert sim.state.requests["POST /v1/chat/completions"] == 1


async def test_the_key_never_appears_in_exceptions_reprs_or_log_records(
    sim: RunningSimulator, client: AllTokenClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    sim.state.add_fault(path="/v1/chat/completions", drop="before_body")
    sim.state.add_fault(path="/v1/models", status=503, count=None)
    sim.state.add_fault(path="/v1/images/generations/async", drop="before_body")
    for call in (
        client.chat({"model": "gpt-5.4-nano", "messages": user("hi")}),
        client.list_models(),
        client.create_image(CAT, idempotency_key="log-key"),
        client.chat({"model": "no-such-model", "messages": user("hi")}),
        client.get_image("igen_missing"),
    ):
        try:
            await call
        except (TransportError, ServerError, DuplicateRequestError, ModelNotFoundError, NotFoundError) as exc:
            failures.append(exc)
    assert len(failures) == 5
    texts = [str(e) for e in failures] + [repr(e) for e in failures] + [repr(client)]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records  # the client did log
    assert all(SIM_API_KEY not in text for text in texts)
    assert "<set>" in repr(client)
