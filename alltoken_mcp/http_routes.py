"""The plain HTTP endpoints beside `/mcp`, for load balancers, monitoring and remote agents.

    GET /healthz                     200 while the process serves requests (no I/O: never waits on the store)
    GET /readyz                       200 when the store answers (within `store.READY_SECONDS`) with the
                                      schema this code writes and the server is not shutting down; else
                                      503 (the balancer stops sending)
    GET /metrics                      Prometheus text (`metrics.py`); bearer token when one is set
    GET|HEAD /media/{job}/{i}?exp&sig a saved file, by signed URL (`media_urls.py`); no bearer token

`/healthz` and `/readyz` answer without the bearer token (a balancer has none) and say nothing but a
status word. A media URL is its own credential; every refusal of one is the same bare 403, so nothing
tells a forged signature from an expired one. Everything else goes to the MCP app.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs, quote

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.provider import TokenVerifier
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from alltoken_mcp import files
from alltoken_mcp.app_state import HttpServing
from alltoken_mcp.draining import Drain
from alltoken_mcp.media_urls import PATH_PREFIX
from alltoken_mcp.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from alltoken_mcp.store import StoreError

logger = logging.getLogger(__name__)


class RequirePerson:
    """Answers 401 to every HTTP request the SDK's `BearerAuthBackend` found no person for (no
    `Authorization: Bearer`, or a token the verifier does not know), and names the setting to use."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not isinstance(scope.get("user"), AuthenticatedUser):
            body = (
                b'{"error": "unauthorized", "message": "this MCP endpoint needs '
                b"Authorization: Bearer <your token> (ALLTOKEN_MCP_TOKEN, or yours from "
                b'ALLTOKEN_MCP_TOKENS_FILE)"}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="alltoken-mcp"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def require_person(app: ASGIApp, verifier: TokenVerifier) -> ASGIApp:
    """`app` behind the SDK's bearer authentication: the verifier names the person, the SDK's auth
    context carries it to the tool handlers (`people.current_person`), and no person means 401."""
    return AuthenticationMiddleware(
        AuthContextMiddleware(RequirePerson(app)), backend=BearerAuthBackend(verifier)
    )


class HttpRoutes:
    """ASGI app: the endpoints above, and the MCP app for everything else. With a `verifier` (tokens are
    configured), the MCP app and /metrics need a token it accepts."""

    def __init__(
        self, mcp: ASGIApp, *, serving: HttpServing, drain: Drain, verifier: TokenVerifier | None
    ) -> None:
        self._mcp = require_person(mcp, verifier) if verifier else mcp
        self._serving = serving
        self._drain = drain
        self._metrics_app: ASGIApp = require_person(self._metrics, verifier) if verifier else self._metrics
        self._saved_files = files.SavedFileReader()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan and anything else belong to the MCP app
            await self._mcp(scope, receive, send)
            return
        path = scope["path"]
        if path == "/healthz":
            await _json(send, 200, {"status": "ok"}, scope)
        elif path == "/readyz":
            await self._readyz(scope, send)
        elif path == "/metrics":
            await self._metrics_app(scope, receive, send)
        elif path.startswith(PATH_PREFIX):
            await self._media(scope, send)
        else:
            await self._mcp(scope, receive, send)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        state, metrics = self._serving.state, self._serving.metrics
        if state is None or metrics is None:
            await _json(send, 503, {"status": "unavailable"}, scope)
            return
        try:
            body = await metrics.render(state.store)
        except StoreError as exc:
            logger.warning("/metrics: %s", exc)
            await _json(send, 503, {"status": "unavailable"}, scope)
            return
        await _respond(send, 200, body, METRICS_CONTENT_TYPE, scope)

    async def _readyz(self, scope: Scope, send: Send) -> None:
        state = self._serving.state
        if self._drain.draining:
            await _json(send, 503, {"status": "shutting down"}, scope)
            return
        if state is None:
            await _json(send, 503, {"status": "starting"}, scope)
            return
        try:
            await state.store.ready()  # answers or raises within the store's READY_SECONDS
        except StoreError as exc:
            logger.warning("/readyz: not ready: %s", exc)
            await _json(send, 503, {"status": "store unavailable"}, scope)
            return
        await _json(send, 200, {"status": "ready"}, scope)

    async def _media(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"", "text/plain", scope, [(b"allow", b"GET, HEAD")])
            return
        state = self._serving.state
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = self._serving.media_links.check(
            scope["path"], _first(query.get("exp")), _first(query.get("sig"))
        )
        if target is None:
            await _json(send, 403, {"error": "forbidden"}, scope)
            return
        if state is None:
            await _json(send, 503, {"error": "unavailable"}, scope)
            return
        try:
            saved = await state.jobs.media_file(target.job_id, target.index)
        except LookupError:
            await _json(send, 404, {"error": "not found"}, scope)
            return
        except StoreError as exc:
            logger.warning("media %s/%d: %s", target.job_id, target.index, exc)
            await _json(send, 503, {"error": "unavailable"}, scope)
            return
        chunks = self._saved_files.stream(saved.path, size=saved.bytes, sha256=saved.sha256)
        try:
            first = b"" if saved.bytes == 0 else await anext(chunks)
        except files.SavedFileMissing:
            await _json(send, 404, {"error": "not found"}, scope)
            return
        except files.SavedFileError as exc:
            logger.warning("media %s/%d not served: %s", target.job_id, target.index, exc)
            await _json(send, 409, {"error": "the saved file changed on disk"}, scope)
            return
        name = Path(saved.path).name
        headers = [
            (b"content-type", saved.mime_type.encode("latin-1")),
            (b"content-length", str(saved.bytes).encode()),
            (b"content-disposition", f"attachment; filename*=UTF-8''{quote(name)}".encode()),
            (b"cache-control", b"private, no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            await chunks.aclose()
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except files.SavedFileError as exc:
            # The headers are gone: the connection is closed short of Content-Length, so the client sees
            # a broken download rather than a wrong file.
            logger.warning("media %s/%d cut short: %s", target.job_id, target.index, exc)
            return
        finally:
            await chunks.aclose()
        await send({"type": "http.response.body", "body": b""})


def _first(values: list[str] | None) -> str | None:
    return values[0] if values and len(values) == 1 else None


async def _json(send: Send, status: int, body: dict[str, str], scope: Scope) -> None:
    await _respond(send, status, json.dumps(body).encode(), "application/json", scope)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    scope: Scope,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
