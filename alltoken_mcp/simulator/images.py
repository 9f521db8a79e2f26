"""Image tasks: create (generations, edits, variations), idempotency, polling, one-time b64 delivery (§4).

A completed result is delivered as `b64_json` exactly once. Afterwards, in R2 mode, reads return the
durable `r2_url` only; in legacy mode (what was observed live on 2026-05-12) they get 410
`image_already_retrieved`. A result nobody claimed within `image_result_ttl_s` is gone (410 `image_expired`)
in legacy mode, while R2 mode still serves the R2 copy until `r2_url_expires_at`. A prompt containing
"[fail]" makes the task end `failed`.

Each endpoint takes its own models (`ImageModel.operations`, which the listings publish as
`input_modalities`): generations and edits a prompt model, variations dall-e-2 (§4.3). Edits and
variations bind uploads presigned for their purpose (`image_edit_source`, `image_edit_mask`,
`image_variation_source`) and get the ids `igen_iedit_…`, `igen_mask_…` (with a mask), `igen_ivar_…`;
all are polled on `GET /images/generations/{id}`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from decimal import Decimal
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator import media
from alltoken_mcp.simulator.catalog import IMAGE_BY_ID, IMAGE_MODELS
from alltoken_mcp.simulator.endpoint import Ctx, sim_state, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid, new_hex_id, request_id_of, rfc3339
from alltoken_mcp.simulator.state import ImageTask, SimState, Upload
from alltoken_mcp.simulator.uploads import bind, check_claim

_ENUMS = {
    "quality": ("auto", "low", "medium", "high"),
    "output_format": ("png", "jpeg", "webp"),
    "background": ("auto", "opaque", "transparent"),
    "moderation": ("auto", "low"),
}
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}  # per 1024x1024 image


def _int_field(body: dict[str, Any], name: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}", name)
    return value


def _size(value: Any) -> str:
    if value in (None, "auto"):
        return "1024x1024"
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise invalid("size must be 'auto' or 'WIDTHxHEIGHT', e.g. 1024x1024, 1536x1024, 1024x1536", "size")
    width, height = int(match[1]), int(match[2])
    if width % 16 or height % 16:
        raise invalid("size: width and height must both be divisible by 16", "size")
    if max(width, height) > 3840 or min(width, height) > 2160 or min(width, height) < 256:
        raise invalid("size: at most 3840x2160 (either orientation), at least 256 on each side", "size")
    if max(width, height) > 3 * min(width, height):
        raise invalid("size: the aspect ratio must be between 1:3 and 3:1", "size")
    return f"{width}x{height}"


_OPERATION_NAMES = {"generation": "image generation", "edit": "image edits", "variation": "image variations"}
_VARIATION_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")


def _model(body: dict[str, Any], operation: str) -> str:
    """The model id, if it exists and its endpoint (generations, edits, variations) takes it."""
    able = [m.id for m in IMAGE_MODELS if operation in m.operations]
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid(f"model is required: one of {', '.join(able)}", "model")
    if model not in IMAGE_BY_ID:
        raise ApiFailure(
            404,
            "model_not_found",
            f"The model `{model}` does not exist.",
            param="model",
            request_id_at_top=True,
        )
    if operation not in IMAGE_BY_ID[model].operations:
        raise invalid(
            f"{model} does not support {_OPERATION_NAMES[operation]}; models that do: {', '.join(able)}",
            "model",
        )
    return model


def _variation(body: dict[str, Any]) -> dict[str, Any]:
    """§4.3: a variation takes the model, the image and a size; one image, no prompt."""
    model = _model(body, "variation")
    size = body.get("size", "auto")
    if size not in _VARIATION_SIZES:
        raise invalid(f"size must be one of: {', '.join(_VARIATION_SIZES)}", "size")
    return {
        "model": model,
        "prompt": "",
        "n": 1,
        "size": _size(size),
        "quality": "auto",
        "output_format": "png",
        "background": "auto",
    }


def _common(body: dict[str, Any], operation: str) -> dict[str, Any]:
    model = _model(body, operation)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt is required: a non-empty string of at most 32000 characters", "prompt")
    if len(prompt) > 32000:
        raise invalid(f"prompt is {len(prompt)} characters; the maximum is 32000", "prompt")
    params: dict[str, Any] = {"model": model, "prompt": prompt}
    for name, allowed in _ENUMS.items():
        value = body.get(name, "auto" if name != "output_format" else "png")
        if value not in allowed:
            raise invalid(f"{name} must be one of: {', '.join(allowed)}", name)
        params[name] = value
    params["n"] = _int_field(body, "n", 1, 10, 1)
    _int_field(body, "output_compression", 0, 100, None)
    _int_field(body, "seed", 0, 2_147_483_647, None)
    params["size"] = _size(body.get("size"))
    return params


def _duplicate(ctx: Ctx, task: ImageTask) -> Response:
    if ctx.state.config.duplicate_mode == "replay":
        return JSONResponse(_created_body(ctx.state, task), status_code=202)
    raise ApiFailure(
        409,
        "duplicate_request",
        f"A request with this Idempotency-Key was received within the last "
        f"{ctx.state.config.idempotency_window_s:g} s; the original task is {task.id}",
        task_id=task.id,
    )


def _created_body(state: SimState, task: ImageTask) -> dict[str, Any]:
    return {
        "id": task.id,
        "status": status_of(state, task),
        "model": task.model,
        "created_at": rfc3339(state.wall(task.timeline.created)),
    }


def status_of(state: SimState, task: ImageTask) -> str:
    phase = task.timeline.phase(state.now())
    return phase if phase != "done" else ("failed" if task.fail else "completed")


async def _create(ctx: Ctx, prefix: str, kind: str) -> Response:
    body = await ctx.json()
    key = ctx.request.headers.get("idempotency-key")
    state = ctx.state
    if key:
        original = state.remembered(ctx.owner, "images", key)
        if original is not None and original in state.images:
            return _duplicate(ctx, state.images[original])
    params = _variation(body) if kind == "variation" else _common(body, kind)
    claims: list[Upload] = []
    if kind == "edit":
        claims.append(
            check_claim(state, ctx.owner, body.get("image_upload_id"), "image_edit_source", "image_upload_id")
        )
        if body.get("mask_upload_id") is not None:
            prefix = "igen_mask_"
            claims.append(
                check_claim(state, ctx.owner, body["mask_upload_id"], "image_edit_mask", "mask_upload_id")
            )
    elif kind == "variation":
        claims.append(
            check_claim(
                state, ctx.owner, body.get("image_upload_id"), "image_variation_source", "image_upload_id"
            )
        )
    ctx.require_balance()

    quality = "medium" if params["quality"] == "auto" else params["quality"]
    width, height = (int(x) for x in params["size"].split("x"))
    tier = "high" if width * height > 1024 * 1024 else quality
    seed = f"{params['model']}|{params['prompt']}|{quality}|{params['size']}"
    task = ImageTask(
        id=new_hex_id(prefix),
        owner=ctx.owner,
        model=params["model"],
        prompt=params["prompt"],
        n=params["n"],
        size=params["size"],
        quality=quality,
        output_format=params["output_format"],
        background=params["background"],
        timeline=state.timeline(seed, state.config.image_render_s[tier]),
        fail="[fail]" in params["prompt"],
    )
    bind(claims, task.id)
    state.images[task.id] = task
    state.tasks_created["images"] += 1
    price = Decimal(IMAGE_BY_ID[task.model].price_per_image.get(quality, "0"))
    state.charge(
        ctx.owner, "image", task.model, price * task.n, request_id=request_id_of(ctx.request), task_id=task.id
    )
    if key:
        state.remember(ctx.owner, "images", key, task.id)
    return JSONResponse(_created_body(state, task), status_code=202)


@v1
async def create_generation(ctx: Ctx) -> Response:
    return await _create(ctx, "igen_", "generation")


@v1
async def create_edit(ctx: Ctx) -> Response:
    return await _create(ctx, "igen_iedit_", "edit")


@v1
async def create_variation(ctx: Ctx) -> Response:
    return await _create(ctx, "igen_ivar_", "variation")


def _render(state: SimState, task: ImageTask) -> list[bytes]:
    if task.images is None:
        width, height = (int(x) for x in task.size.split("x"))
        pad = state.config.image_payload_bytes
        task.images = [media.png(f"{task.prompt}#{i}", width, height, pad_to=pad) for i in range(task.n)]
    return task.images


def _completed_body(ctx: Ctx, task: ImageTask, images: list[bytes] | None) -> dict[str, Any]:
    """The completed task; `images` given means this read is the one-time b64 delivery."""
    state, config = ctx.state, ctx.state.config
    finished = task.timeline.finished
    data: list[dict[str, Any]] = []
    for i in range(task.n):
        item: dict[str, Any] = {"mime_type": "image/png"}
        if images is not None:
            item["b64_json"] = base64.b64encode(images[i]).decode()
        if config.r2_mode:
            item["r2_url"] = f"{ctx.origin}/_r2/images/{task.id}/{i}.png"
            item["r2_url_expires_at"] = rfc3339(state.wall(finished + config.scaled(config.image_r2_ttl_s)))
        data.append(item)
    width, height = (int(x) for x in task.size.split("x"))
    text_tokens = len(task.prompt.split())
    output = math.ceil(_OUTPUT_TOKENS[task.quality] * width * height / (1024 * 1024)) * task.n
    return {
        "id": task.id,
        "status": "completed",
        "model": task.model,
        "created": int(state.wall(task.timeline.created)),
        "data": data,
        "usage": {
            "input_tokens": text_tokens,
            "output_tokens": output,
            "total_tokens": text_tokens + output,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
        },
        "size": task.size,
        "quality": task.quality,
        "output_format": "png",  # the simulator only encodes PNG (see media.py)
        "background": task.background,
        "created_at": rfc3339(state.wall(task.timeline.created)),
        "completed_at": rfc3339(state.wall(finished)),
        "expires_at": rfc3339(state.wall(finished + config.scaled(config.image_result_ttl_s))),
    }


@v1
async def get_generation(ctx: Ctx) -> Response:
    state, config = ctx.state, ctx.state.config
    task_id = ctx.request.path_params["task_id"]
    task = state.images.get(task_id)
    if task is None or task.owner != ctx.owner:
        raise ApiFailure(404, "not_found", f"Image task {task_id} not found")
    now = state.now()
    phase = task.timeline.phase(now)
    created_at = rfc3339(state.wall(task.timeline.created))
    if phase != "done":
        wait = config.scaled(2.0)
        return JSONResponse(
            {
                "id": task.id,
                "status": phase,
                "model": task.model,
                "next_poll_after_ms": max(1, round(wait * 1000)),
                "created_at": created_at,
                "updated_at": rfc3339(state.wall(min(now, task.timeline.started))),
            },
            # Retry-After must be whole seconds; at high speeds it rounds to 0, so prefer next_poll_after_ms.
            headers={"retry-after": str(round(wait))},
        )
    if task.fail:
        return JSONResponse(
            {
                "id": task.id,
                "status": "failed",
                "model": task.model,
                "error": {
                    "code": "upstream_content_violation",
                    "type": "invalid_request_error",
                    "message": "The prompt was rejected by the provider's content policy",
                },
                "created_at": created_at,
                "updated_at": rfc3339(state.wall(task.timeline.finished)),
            }
        )
    if task.claiming:
        raise ApiFailure(
            409, "claim_in_progress", "Another request is currently claiming this result; retry shortly"
        )
    finished = task.timeline.finished
    if config.r2_mode and now > finished + config.scaled(config.image_r2_ttl_s):
        raise ApiFailure(410, "image_expired")
    temp_alive = now <= finished + config.scaled(config.image_result_ttl_s)
    if not task.delivered and temp_alive:
        task.claiming = True
        try:
            await anyio.sleep(config.scaled(config.image_claim_s))
            images = await anyio.to_thread.run_sync(_render, state, task)
            body = _completed_body(ctx, task, images)
            task.delivered = True
            state.b64_deliveries += 1
        finally:
            task.claiming = False
        return JSONResponse(body)
    if config.r2_mode:
        return JSONResponse(_completed_body(ctx, task, None))
    raise ApiFailure(410, "image_already_retrieved" if task.delivered else "image_expired")


async def r2_object(request: Request) -> Response:
    """The public R2 copy of a completed image; no auth, gone after `r2_url_expires_at`."""
    state = sim_state(request)
    if "authorization" in request.headers:
        state.foreign_authorization += 1
    task = state.images.get(request.path_params["task_id"])
    index = int(request.path_params["index"])
    config = state.config
    if (
        task is None
        or not config.r2_mode
        or status_of(state, task) != "completed"
        or index >= task.n
        or state.now() > task.timeline.finished + config.scaled(config.image_r2_ttl_s)
    ):
        return Response("NoSuchKey", status_code=404, media_type="text/plain")
    images = await anyio.to_thread.run_sync(_render, state, task)
    data = images[index]
    return Response(data, media_type="image/png", headers={"etag": f'"{hashlib.md5(data).hexdigest()}"'})
