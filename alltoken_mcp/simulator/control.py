"""The `/_sim/` control API: faults, counters, config, reset, idempotency, clock. No auth.

It lets a test that runs the simulator in another process do what in-process tests do through
`sim.state`. Bad input gets a 400 whose `error.message` lists what pydantic rejected.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator.endpoint import public, sim_state
from alltoken_mcp.simulator.envelope import invalid
from alltoken_mcp.simulator.state import Fault


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise invalid(f"body is not valid JSON: {exc}") from None


def _explain(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


@public
async def add_fault(request: Request) -> Response:
    body = await _json(request)
    try:
        faults = [Fault.model_validate(item) for item in (body if isinstance(body, list) else [body])]
    except ValidationError as exc:
        raise invalid(_explain(exc)) from None
    state = sim_state(request)
    for fault in faults:
        state.add_fault(fault)
    return JSONResponse({"faults": [f.model_dump() for f in state.faults]}, status_code=201)


@public
async def list_faults(request: Request) -> Response:
    return JSONResponse({"faults": [f.model_dump() for f in sim_state(request).faults]})


@public
async def clear_faults(request: Request) -> Response:
    sim_state(request).faults.clear()
    return JSONResponse({"faults": []})


@public
async def counters(request: Request) -> Response:
    return JSONResponse(sim_state(request).counters())


@public
async def get_config(request: Request) -> Response:
    return JSONResponse(sim_state(request).config.model_dump(mode="json"))


@public
async def update_config(request: Request) -> Response:
    body = await _json(request)
    if not isinstance(body, dict):
        raise invalid("body must be a JSON object of SimConfig fields to change")
    try:
        config = sim_state(request).update_config(**body)
    except ValidationError as exc:
        raise invalid(_explain(exc)) from None
    return JSONResponse(config.model_dump(mode="json"))


@public
async def reset(request: Request) -> Response:
    sim_state(request).reset()
    return JSONResponse({"reset": True})


@public
async def forget_idempotency(request: Request) -> Response:
    sim_state(request).forget_idempotency()
    return JSONResponse({"forgotten": True})


@public
async def advance(request: Request) -> Response:
    body = await _json(request)
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise invalid('body must be {"seconds": <non-negative number>}', "seconds")
    sim_state(request).advance(float(seconds))
    return JSONResponse({"advanced": seconds})
