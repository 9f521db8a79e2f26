"""Video tasks: fail-fast validation (§5.1), lifecycle, cancel, list, and the CDN copy (§5, §11.17–20).

Only the rules the gateway is documented to enforce are enforced (capabilities are UI hints): duration
ranges and `-1`, seedance-2.5's 480p/720p, `frames` on seedance-1.0-pro(-fast), the omni rules, content
item shape and `upload_id` claims. Parameters a model does not take (`frames`, `camera_fixed`,
`omni_reference_task_type`, `output_format`) are dropped silently, as documented for `frames`.
HappyHorse durations follow the inferred 3–15 s range. A prompt containing "[fail]" ends `failed`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator import media
from alltoken_mcp.simulator.catalog import ALL_RATIOS, VIDEO_BY_ID, VideoModel
from alltoken_mcp.simulator.endpoint import Ctx, sim_state, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid, new_hex_id, request_id_of, rfc3339
from alltoken_mcp.simulator.state import SimState, Upload, VideoTask
from alltoken_mcp.simulator.uploads import bind, check_claim

STATUSES = ("queued", "processing", "completed", "failed", "expired", "cancelled")
_RESOLUTIONS = ("480p", "720p", "1080p")
_ITEM_TYPES = ("text", "image_url", "video_url", "audio_url", "draft_task", "image", "video", "audio")
_ROLES = ("first_frame", "last_frame", "reference_image", "reference_video", "reference_audio")
_MEDIA_OF = {
    "image_url": "image",
    "video_url": "video",
    "audio_url": "audio",
    "image": "image",
    "video": "video",
    "audio": "audio",
}
_SHORT_SIDE = {"480p": 480, "720p": 720, "1080p": 1080}
_FPS = 24


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise invalid(f"{name} must be an integer", name)
    return value


def _duration(model: VideoModel, raw: int | None, prompt: str) -> int:
    if model.duration_min is None or model.duration_max is None:
        return 5  # decided upstream (video edit): the request's value is not used
    low, high = model.duration_min, model.duration_max
    accepted = f"an integer from {low} to {high} seconds" + (", or -1 (auto)" if model.supports_auto else "")
    if raw in (None, 0):
        return 5
    if raw == -1:
        if not model.supports_auto:
            raise invalid(f"duration -1 (auto) is not supported by {model.id}; use {accepted}", "duration")
        return low + len(prompt) % (high - low + 1)  # what "auto" chose, deterministically
    if raw is not None and not low <= raw <= high:
        raise invalid(
            f"duration {raw} is out of range for {model.id}: use {accepted} (0 or omitted means 5)",
            "duration",
        )
    return int(raw) if raw is not None else 5


def _content(state: SimState, owner: str, items: Any) -> tuple[str, list[Upload]]:
    """Validate `content[]`; returns the derived input_type and the uploads to bind."""
    if items is None:
        return "text", []
    if not isinstance(items, list):
        raise invalid("content must be an array of content items", "content")
    claims: list[Upload] = []
    roles: list[str] = []
    kinds: list[str] = []
    for i, item in enumerate(items):
        param = f"content[{i}]"
        if not isinstance(item, dict) or item.get("type") not in _ITEM_TYPES:
            raise invalid(f"{param}.type must be one of: {', '.join(_ITEM_TYPES)}", param)
        kind = item["type"]
        role = item.get("role")
        if role is not None and role not in _ROLES:
            raise invalid(f"{param}.role must be one of: {', '.join(_ROLES)}", param)
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise invalid(f"{param}: a text item needs a string `text`", param)
            continue
        if kind == "draft_task":
            draft = item.get("draft_task")
            if not isinstance(draft, dict) or not isinstance(draft.get("id"), str):
                raise invalid(f"{param}: a draft_task item needs draft_task: {{id}}", param)
            kinds.append("draft")
            continue
        nested = item.get(kind) if kind.endswith("_url") else None
        url = nested.get("url") if isinstance(nested, dict) else item.get("url")
        upload_id = item.get("upload_id")
        if url is not None and upload_id is not None:
            raise invalid(f"{param}: give either a URL or an upload_id in one content item, not both", param)
        medium = _MEDIA_OF[kind]
        if upload_id is not None:
            if any(c.id == upload_id for c in claims):
                raise invalid(f"{param}: upload_id {upload_id} appears twice; an upload binds once", param)
            claims.append(check_claim(state, owner, upload_id, f"video_input_{medium}", f"{param}.upload_id"))
        elif not isinstance(url, str):
            raise invalid(f"{param}: a {kind} item needs a public http(s) URL or an upload_id", param)
        elif url.startswith("data:"):
            raise invalid(
                f"{param}: inline data: URLs are not accepted; upload the file with "
                "POST /v1/uploads/presign and pass its upload_id",
                param,
            )
        elif not url.startswith(("http://", "https://", "asset://")):
            raise invalid(f"{param}: the URL must be public http(s) (or asset://)", param)
        kinds.append(medium)
        roles.append(role or ("first_frame" if medium == "image" else f"reference_{medium}"))
    if "draft" in kinds:
        return "draft_task", claims
    if "video" in kinds:
        return ("multimodal" if len(set(kinds)) > 1 else "video_reference"), claims
    if "reference_image" in roles:
        return "image_reference", claims
    if "image" in kinds:
        return ("image_first_last_frame" if "last_frame" in roles else "image_first_frame"), claims
    return "text", claims


def _validate(state: SimState, owner: str, body: dict[str, Any]) -> tuple[VideoTask, list[Upload]]:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise invalid(f"model is required: one of {', '.join(VIDEO_BY_ID)}", "model")
    model = VIDEO_BY_ID.get(name)
    if model is None:
        raise ApiFailure(
            404,
            "model_not_found",
            f"The model `{name}` does not exist.",
            param="model",
            request_id_at_top=True,
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt is required: a non-empty string", "prompt")
    caps = model.capabilities
    ratio = body.get("ratio") or (caps["ratios"]["default"] or "adaptive")
    if ratio not in ALL_RATIOS:
        raise invalid(f"ratio must be one of: {', '.join(ALL_RATIOS)}", "ratio")
    raw_duration = _int(body, "duration")
    frames = _int(body, "frames") if model.frames else None  # other models drop frames silently
    # frames takes priority over duration (frames = seconds × 24), so duration is not checked then
    duration = _duration(model, None if frames is not None else raw_duration, prompt)
    resolution = body.get("resolution") or caps["resolutions"]["default"]
    if resolution not in _RESOLUTIONS:
        raise invalid(f"resolution must be one of: {', '.join(_RESOLUTIONS)}", "resolution")
    if resolution not in model.resolutions:
        raise invalid(
            f"resolution {resolution} is not supported by {model.id}; use one of: "
            f"{', '.join(model.resolutions)}",
            "resolution",
        )
    extras: dict[str, Any] = {"frames": frames}
    if frames is not None:
        if not (29 <= frames <= 289 and (frames - 25) % 4 == 0):
            raise invalid(
                "frames must be 25+4n between 29 and 289 (29, 33, 37, …, 289); frames = seconds × 24",
                "frames",
            )
        duration = max(1, round(frames / _FPS))
    omni = body.get("omni_reference_task_type")
    if model.omni and omni not in (None, ""):
        if omni not in ("auto", "edit", "extend"):
            raise invalid(
                "omni_reference_task_type must be '', 'auto', 'edit' or 'extend'", "omni_reference_task_type"
            )
        if omni in ("edit", "extend") and ratio != "adaptive":
            raise invalid(f"omni_reference_task_type={omni} requires ratio=adaptive", "ratio")
        if omni == "edit" and raw_duration != -1:
            raise invalid("omni_reference_task_type=edit requires duration=-1", "duration")
    output_format = body.get("output_format")
    if output_format not in (None, "mp4", "mov"):
        raise invalid("output_format must be mp4 or mov", "output_format")
    extras["output_format"] = output_format if model.omni and output_format else "mp4"
    for flag in (
        "generate_audio",
        "input_has_video",
        "camera_fixed",
        "watermark",
        "return_last_frame",
        "draft",
    ):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise invalid(f"{flag} must be a boolean", flag)
    if body.get("service_tier") not in (None, "default", "flex"):
        raise invalid("service_tier must be default or flex", "service_tier")
    expires_after = _int(body, "execution_expires_after")
    if expires_after is not None and not 3600 <= expires_after <= 259200:
        raise invalid(
            "execution_expires_after must be from 3600 to 259200 seconds", "execution_expires_after"
        )
    safety = body.get("safety_identifier")
    if safety is not None and (not isinstance(safety, str) or len(safety) > 64):
        raise invalid("safety_identifier must be a string of at most 64 characters", "safety_identifier")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or any(t != {"type": "web_search"} for t in tools)):
        raise invalid("tools must be an array of {type: 'web_search'}", "tools")
    _int(body, "seed")
    input_type, claims = _content(state, owner, body.get("content"))
    render = state.config.video_render_s[resolution]
    task = VideoTask(
        id=new_hex_id("vgen_"),
        owner=owner,
        model=model.id,
        prompt=prompt,
        body={**body, **extras},
        duration=duration,
        resolution=resolution,
        ratio=ratio,
        input_type=input_type,
        timeline=state.timeline(f"{model.id}|{prompt}|{resolution}|{duration}", render),
        fail="[fail]" in prompt,
        uploads=[u.id for u in claims],
    )
    return task, claims


def status_of(state: SimState, task: VideoTask) -> str:
    if task.cancelled_at is not None:
        return "cancelled"
    phase = task.timeline.phase(state.now())
    if phase != "done":
        return phase
    if task.fail:
        return "failed"
    expiry = task.timeline.finished + state.config.scaled(state.config.video_url_ttl_s)
    return "expired" if state.now() > expiry else "completed"


def _tokens(task: VideoTask) -> int:
    short = _SHORT_SIDE[task.resolution]
    if task.ratio in ("1:1",):
        long = short
    else:
        num, den = (int(x) for x in (task.ratio if ":" in task.ratio else "16:9").split(":"))
        long = round(short * max(num, den) / min(num, den))
    return long * short * _FPS * task.duration // 1024


def task_body(state: SimState, task: VideoTask, origin: str) -> dict[str, Any]:
    """A `VideoTaskResponse` for the task as it is now."""
    status = status_of(state, task)
    now = state.now()
    body: dict[str, Any] = {
        "id": task.id,
        "status": status,
        "model": task.model,
        "input_type": task.input_type,
        "is_expired": status == "expired",
        "duration": task.duration,
        "fps": _FPS,
        "resolution": task.resolution,
        "ratio": task.ratio,
        "service_tier": task.body.get("service_tier") or "default",
        "created_at": rfc3339(state.wall(task.timeline.created)),
    }
    for name in (
        "frames",
        "seed",
        "generate_audio",
        "input_has_video",
        "draft",
        "execution_expires_after",
        "safety_identifier",
        "tools",
    ):
        if task.body.get(name) is not None:
            body[name] = task.body[name]
    updated = task.timeline.created if status == "queued" else task.timeline.started
    if status == "cancelled" and task.cancelled_at is not None:
        updated = task.cancelled_at
    elif status in ("completed", "failed", "expired"):
        updated = task.timeline.finished
        body["completed_at"] = rfc3339(state.wall(task.timeline.finished))
    body["updated_at"] = rfc3339(state.wall(updated))
    if status == "failed":
        body["error"] = {
            "code": "upstream_content_violation",
            "message": "The prompt or reference material violates the content policy",
        }
    if status in ("completed", "expired"):
        expiry = task.timeline.finished + state.config.scaled(state.config.video_url_ttl_s)
        body["video_url_ttl"] = max(0, math.ceil(expiry - now))
        body["video_url_expires_at"] = rfc3339(state.wall(expiry))
        tokens = _tokens(task)
        body["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        if status == "completed":
            extension = task.body["output_format"]
            body["video_url"] = f"{origin}/_cdn/videos/{task.id}.{extension}"
            if task.body.get("return_last_frame"):
                body["last_frame_url"] = f"{origin}/_cdn/videos/{task.id}_last.png"
    return body


def _find(ctx: Ctx) -> VideoTask:
    task_id = ctx.request.path_params["task_id"]
    task = ctx.state.videos.get(task_id)
    if task is None or task.owner != ctx.owner:
        raise ApiFailure(404, "not_found", f"Video task {task_id} not found")
    return task


@v1
async def create(ctx: Ctx) -> Response:
    body = await ctx.json()
    state = ctx.state
    key = ctx.request.headers.get("idempotency-key") if state.config.honour_video_idempotency else None
    if key:
        original = state.remembered(ctx.owner, "videos", key)
        if original is not None and original in state.videos:
            if state.config.duplicate_mode == "replay":
                return JSONResponse(task_body(state, state.videos[original], ctx.origin), status_code=202)
            raise ApiFailure(
                409,
                "duplicate_request",
                f"A request with this Idempotency-Key was already received; the original task is {original}",
                task_id=original,
            )
    task, claims = _validate(state, ctx.owner, body)
    ctx.require_balance()
    bind(claims, task.id)
    state.videos[task.id] = task
    state.tasks_created["videos"] += 1
    price = Decimal(VIDEO_BY_ID[task.model].price_per_second.get(task.resolution, "0"))
    state.charge(
        ctx.owner,
        "video",
        task.model,
        price * task.duration,
        request_id=request_id_of(ctx.request),
        tokens=_tokens(task),
        task_id=task.id,
    )
    if key:
        state.remember(ctx.owner, "videos", key, task.id)
    return JSONResponse(task_body(state, task, ctx.origin), status_code=202)


@v1
async def get(ctx: Ctx) -> Response:
    return JSONResponse(task_body(ctx.state, _find(ctx), ctx.origin))


@v1
async def cancel(ctx: Ctx) -> Response:
    task = _find(ctx)
    status = status_of(ctx.state, task)
    if status != "queued":
        raise ApiFailure(
            409, "invalid_status", f"Video task {task.id} is {status}; only queued tasks can be cancelled"
        )
    task.cancelled_at = ctx.state.now()
    return JSONResponse(task_body(ctx.state, task, ctx.origin))


@v1
async def list_tasks(ctx: Ctx) -> Response:
    params = ctx.request.query_params
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise invalid(f"status must be one of: {', '.join(STATUSES)}", "status")
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise invalid("limit must be an integer from 1 to 100", "limit")
    state = ctx.state
    mine = [t for t in reversed(state.videos.values()) if t.owner == ctx.owner]
    mine.sort(key=lambda t: t.timeline.created, reverse=True)  # newest first; stable for equal instants
    if status is not None:
        mine = [t for t in mine if status_of(state, t) == status]
    items = [task_body(state, t, ctx.origin) for t in mine[: int(raw_limit)]]
    return JSONResponse({"items": items, "total": len(mine)})


async def cdn_object(request: Request) -> Response:
    """The public CDN copy of a completed video (or its last frame) until the URL expires."""
    state = sim_state(request)
    if "authorization" in request.headers:
        state.foreign_authorization += 1
    name: str = request.path_params["name"]
    stem, _, extension = name.rpartition(".")
    last_frame = stem.endswith("_last")
    task = state.videos.get(stem.removesuffix("_last"))
    if task is None or status_of(state, task) != "completed":
        return Response("NoSuchKey", status_code=404, media_type="text/plain")
    if last_frame and extension == "png" and task.body.get("return_last_frame"):
        return Response(media.png(f"{task.prompt}#last", 64, 36), media_type="image/png")
    if not last_frame and extension == task.body["output_format"]:
        kind = "video/quicktime" if extension == "mov" else "video/mp4"
        return Response(media.mp4(task.prompt), media_type=kind)
    return Response("NoSuchKey", status_code=404, media_type="text/plain")
