"""The simulator's ASGI application: routes, plus an outer layer for request ids, counters and faults.

The outer layer sits outside Starlette so that it sees every request first and the raw ASGI `send`:
that is what lets a fault drop the connection after the request was processed (headers sent with a
Content-Length, then half the body, then close), which no Starlette response can express.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import re

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from alltoken_mcp.simulator import billing, chat, control, images, public, uploads, videos
from alltoken_mcp.simulator.envelope import DEFAULT_CODES, api_error, new_request_id
from alltoken_mcp.simulator.state import Fault, SimState

_CONVERTOR = re.compile(r":\w+}")
# Set in the request's own context, which is also where uvicorn logs about that request: the filter
# below can tell our requests (and our deliberate drops) from another server's in the same process.
_serving: contextvars.ContextVar[bool] = contextvars.ContextVar("alltoken_sim_serving", default=False)
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("alltoken_sim_dropping", default=False)


class _QuietIntentionalDrops(logging.Filter):
    """Hide uvicorn's errors about what we do on purpose: abandoned responses (a drop fault) and
    handlers cancelled at shutdown because their client had already gone."""

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        return not (_serving.get() and (_dropping.get() or cancelled))


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietIntentionalDrops) for f in logger.filters):
        logger.addFilter(_QuietIntentionalDrops())


class _Dropped(Exception):
    """Raised from `send` to abandon a response half-way; caught by `SimApp`."""


def _is_drop(exc: BaseException) -> bool:
    nested = getattr(exc, "exceptions", None)
    if isinstance(nested, tuple) and nested:
        return all(_is_drop(e) for e in nested)
    return isinstance(exc, _Dropped)


def _routes() -> list[Route]:
    r = Route
    return [
        r("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        r("/v1/models", public.models, methods=["GET"]),
        r("/v1/images/models", public.image_models, methods=["GET"]),
        r("/v1/videos/models", public.video_models, methods=["GET"]),
        r("/v1/images/generations/async", images.create_generation, methods=["POST"]),
        r("/v1/images/generations", images.create_generation, methods=["POST"]),
        r("/v1/images/edits", images.create_edit, methods=["POST"]),
        r("/v1/images/variations", images.create_variation, methods=["POST"]),
        r("/v1/images/generations/{task_id}", images.get_generation, methods=["GET"]),
        r("/v1/videos/generations", videos.create, methods=["POST"]),
        r("/v1/videos/generations", videos.list_tasks, methods=["GET"]),
        r("/v1/videos/generations/{task_id}", videos.get, methods=["GET"]),
        r("/v1/videos/generations/{task_id}/cancel", videos.cancel, methods=["POST"]),
        r("/v1/uploads/presign", uploads.presign, methods=["POST"]),
        r("/v1/usage", billing.usage, methods=["GET"]),
        r("/v1/billing/transactions", billing.transactions, methods=["GET"]),
        r("/v1/billing/transactions/{request_id}", billing.transaction, methods=["GET"]),
        r("/_r2/uploads/{upload_id}", uploads.put_object, methods=["PUT"]),
        r("/_r2/images/{task_id}/{index:int}.png", images.r2_object, methods=["GET"]),
        r("/_cdn/videos/{name}", videos.cdn_object, methods=["GET"]),
        r("/api-account/models", public.account_models, methods=["GET"]),
        r("/api-account/models/filters", public.account_model_filters, methods=["GET"]),
        r("/api-account/models/{model_path:path}", public.account_model, methods=["GET"]),
        r("/api-account/providers", public.providers, methods=["GET"]),
        r("/api-account/rankings/all", public.rankings, methods=["GET"]),
        r("/api-account/health/summary", public.health_summary, methods=["GET"]),
        r("/api-account/health/routes", public.health_routes, methods=["GET"]),
        r(
            "/api-account/user/{rest:path}",
            public.account_user,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
        r("/_sim/faults", control.add_fault, methods=["POST"]),
        r("/_sim/faults", control.list_faults, methods=["GET"]),
        r("/_sim/faults", control.clear_faults, methods=["DELETE"]),
        r("/_sim/counters", control.counters, methods=["GET"]),
        r("/_sim/config", control.get_config, methods=["GET"]),
        r("/_sim/config", control.update_config, methods=["POST"]),
        r("/_sim/reset", control.reset, methods=["POST"]),
        r("/_sim/forget_idempotency", control.forget_idempotency, methods=["POST"]),
        r("/_sim/advance", control.advance, methods=["POST"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = (
        "not_found"
        if status == 404
        else "method_not_allowed"
        if status == 405
        else DEFAULT_CODES.get(status, "error")
    )
    return api_error(
        request, status, code, f"{request.method} {request.url.path}: {http.HTTPStatus(status).phrase}"
    )


class SimApp:
    """ASGI entry point: request id → counters → faults → Starlette routes."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.router = Starlette(routes=_routes(), exception_handlers={404: _http_error, 405: _http_error})
        self.router.state.sim = state

    def template(self, scope: Scope) -> str:
        """The route template a request matches ("/v1/images/generations/{task_id}"), else its path."""
        partial = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL and isinstance(route, Route):
                return _CONVERTOR.sub("}", route.path)
            if match is Match.PARTIAL and partial is None and isinstance(route, Route):
                partial = _CONVERTOR.sub("}", route.path)
        return partial or str(scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        _serving.set(True)
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        method, path = str(scope["method"]), str(scope["path"])
        if path.startswith("/_sim/"):
            await self.router(scope, receive, send)
            return
        template = self.template(scope)
        self.state.requests[f"{method} {template}"] += 1
        fault = self.state.take_fault(method, path, template)
        if path.startswith(("/v1/", "/api-account/")):
            send = _with_request_id(send, request_id)
        if fault is None:
            await self.router(scope, receive, send)
            return
        if fault.latency_ms:
            await anyio.sleep(fault.latency_ms / 1000)
        if fault.status is not None:
            await _fault_response(fault, scope, receive, send)
        elif fault.hold_ms is not None:
            await self.router(scope, receive, _Holder(send, fault))
        elif fault.drop is not None:
            _dropping.set(True)
            try:
                await self.router(scope, receive, _Dropper(send, fault))
            except BaseException as exc:
                if not _is_drop(exc):
                    raise
        else:
            await self.router(scope, receive, send)


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"x-gateway-request-id", request_id.encode())]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _fault_response(fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
    assert fault.status is not None
    status = fault.status
    headers: dict[str, str] = {}
    retry_after = fault.retry_after
    if status == 429 and "retry_after" not in fault.model_fields_set:
        retry_after = 1  # §11.3: a 429 carries Retry-After unless the fault explicitly sets null
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if status == 429:
        headers.update(
            {
                "x-ratelimit-limit": "60",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(retry_after or 1),
            }
        )
    code = fault.code or DEFAULT_CODES.get(status, "error")
    message = fault.message
    if message is None and code not in (
        "rate_limit_exceeded",
        "insufficient_balance",
        "invalid_api_key",
        "all_providers_failed",
    ):
        message = (
            http.HTTPStatus(status).phrase
            if status in http.HTTPStatus._value2member_map_
            else f"HTTP {status}"
        )
    response: JSONResponse = api_error(Request(scope, receive), status, code, message, headers=headers)
    await response(scope, receive, send)


class _Dropper:
    """A `send` that lets the response start, forwards `after_chunks` body parts, then abandons it.

    A final body part is never forwarded whole, so the client can never see a complete response: for a
    Content-Length response it gets half the bytes, for a chunked/SSE one the terminating chunk is missing.
    """

    def __init__(self, send: Send, fault: Fault) -> None:
        self.send = send
        self.budget = fault.after_chunks if fault.drop == "mid_stream" else 0

    async def __call__(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        final = not message.get("more_body", False)
        if self.budget > 0 and not final:
            self.budget -= 1
            await self.send(message)
            return
        if body:
            await self.send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise _Dropped


class _Holder:
    """A `send` that pauses a normally processed response for `hold_ms`, then delivers all of it.

    `before_response`: nothing reaches the client until the pause is over. `mid_body`: the headers and
    `after_chunks` body parts go out first (for a single-part Content-Length body, its first half), so the
    client has started reading (e.g. created its download file) when the pause begins.
    """

    def __init__(self, send: Send, fault: Fault) -> None:
        assert fault.hold_ms is not None
        self.send = send
        self.seconds = fault.hold_ms / 1000
        self.mid_body = fault.hold_at == "mid_body"
        self.budget = fault.after_chunks
        self.held = False

    async def __call__(self, message: Message) -> None:
        if self.held:
            await self.send(message)
        elif message["type"] == "http.response.start":
            if not self.mid_body:
                await self._hold()
            await self.send(message)
        elif message["type"] != "http.response.body":
            await self.send(message)
        elif self.budget > 0 and message.get("more_body", False):
            self.budget -= 1
            await self.send(message)
        else:
            body: bytes = message.get("body", b"")
            half = len(body) // 2
            if half:
                await self.send({"type": "http.response.body", "body": body[:half], "more_body": True})
            await self._hold()
            await self.send({**message, "body": body[half:]})

    async def _hold(self) -> None:
        self.held = True
        await anyio.sleep(self.seconds)


def build_app(state: SimState) -> SimApp:
    install_log_filter()
    return SimApp(state)
