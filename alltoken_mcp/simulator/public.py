"""Model lists (`/v1/models`, `/v1/images/models`, `/v1/videos/models`) and the public `/api-account` API.

`/api-account/{models,providers,rankings,health}` need no auth; `/api-account/user/*` accepts only a web
session, which the simulator never issues, so it always answers 401 `invalid_token` (§1.1).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator import catalog
from alltoken_mcp.simulator.endpoint import Ctx, public, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid


@v1
async def models(ctx: Ctx) -> Response:
    data = [catalog.chat_model_info(m) for m in catalog.CHAT_MODELS]
    data += [catalog.image_model_info(m) for m in catalog.IMAGE_MODELS]
    data += [catalog.video_model_info(m, with_capabilities=False) for m in catalog.VIDEO_MODELS]
    return JSONResponse({"object": "list", "data": data})


@v1
async def image_models(ctx: Ctx) -> Response:
    return JSONResponse(
        {"object": "list", "data": [catalog.image_model_info(m) for m in catalog.IMAGE_MODELS]}
    )


@v1
async def video_models(ctx: Ctx) -> Response:
    data = [catalog.video_model_info(m, with_capabilities=True) for m in catalog.VIDEO_MODELS]
    return JSONResponse({"object": "list", "data": data})


@public
async def account_models(request: Request) -> Response:
    return JSONResponse({"data": catalog.public_catalog()})


@public
async def account_model(request: Request) -> Response:
    model_id = request.path_params["model_path"]
    entry = catalog.public_entry(model_id)
    if entry is None:
        raise ApiFailure(404, "model_not_found", f"The model `{model_id}` does not exist.")
    return JSONResponse({"data": entry})


@public
async def account_model_filters(request: Request) -> Response:
    entries = catalog.public_catalog()
    return JSONResponse(
        {
            "data": {
                "brands": sorted({e["brand"] for e in entries}),
                "modalities": sorted({e["modality"] for e in entries}),
                "tags": sorted({t for e in entries for t in e["tags"]}),
            }
        }
    )


@public
async def providers(request: Request) -> Response:
    rows = catalog.health_routes()
    names = sorted({r["provider"] for r in rows})
    data = []
    for name in names:
        mine = [r for r in rows if r["provider"] == name]
        data.append(
            {
                "id": name,
                "name": name,
                "models": sorted({r["model"] for r in mine}),
                "availability": round(sum(r["availability"] for r in mine) / len(mine), 2),
                "throughput_tps": sum(r["throughput_tps"] for r in mine) // len(mine),
            }
        )
    return JSONResponse({"data": data})


@public
async def rankings(request: Request) -> Response:
    by_speed = sorted(catalog.health_routes(), key=lambda r: r["latency_p50_ms"])
    return JSONResponse(
        {
            "data": {
                "speed": [
                    {"model": r["model"], "provider": r["provider"], "latency_p50_ms": r["latency_p50_ms"]}
                    for r in by_speed[:10]
                ]
            }
        }
    )


@public
async def health_summary(request: Request) -> Response:
    return JSONResponse({"data": catalog.health_summary()})


@public
async def health_routes(request: Request) -> Response:
    time_range = request.query_params.get("time_range", "24h")
    if time_range not in ("1h", "24h", "7d", "30d"):
        raise invalid("time_range must be one of: 1h, 24h, 7d, 30d", "time_range")
    rows = catalog.health_routes()
    model = request.query_params.get("model")
    if model:
        rows = [r for r in rows if r["model"] == model]
    return JSONResponse({"data": rows, "time_range": time_range})


@public
async def account_user(request: Request) -> Response:
    raise ApiFailure(401, "invalid_token")
