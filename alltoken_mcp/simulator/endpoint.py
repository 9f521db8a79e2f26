"""What every `/v1` handler shares: Bearer auth, the JSON body, the balance check, `ApiFailure` → envelope."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from alltoken_mcp.simulator.envelope import ApiFailure, invalid
from alltoken_mcp.simulator.state import SimState


def sim_state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


def origin_of(request: Request) -> str:
    """The origin the client used to reach us (so r2_url/video_url work behind any bind address)."""
    return str(request.base_url).rstrip("/")


@dataclass
class Ctx:
    request: Request
    state: SimState
    owner: str  # the API key: tasks, uploads and idempotency keys are scoped to it

    @property
    def origin(self) -> str:
        return origin_of(self.request)

    async def json(self) -> dict[str, Any]:
        raw = await self.request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise invalid(f"Request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise invalid("Request body must be a JSON object")
        return body

    def require_balance(self) -> None:
        if not self.state.config.balance_ok:
            raise ApiFailure(402, "insufficient_balance")


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


Handler = Callable[[Ctx], Awaitable[Response]]


def v1(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with Bearer auth and error-envelope translation."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        state = sim_state(request)
        key = bearer_key(request)
        try:
            if key is None or key not in state.config.api_keys:
                raise ApiFailure(401, "invalid_api_key")
            return await handler(Ctx(request, state, key))
        except ApiFailure as failure:
            return failure.response(request)

    return endpoint


def public(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an unauthenticated handler with error-envelope translation."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiFailure as failure:
            return failure.response(request)

    return endpoint
