"""`AllTokenClient`: every AllToken call the server makes, over one `httpx2.AsyncClient`.

Authentication is per request, never a client default: `/v1` calls carry the Bearer key; the public
`/api-account` endpoints and foreign URLs (R2 downloads, presigned uploads) carry none, so the key
cannot leak to another host. Retries follow `RetryPolicy` (see `_retry.py` for which failures are
safe to repeat). Non-2xx answers become typed exceptions through `errors.error_from_response`, the
one envelope mapping; transport failures become `TransportError` naming the method, host and path
(never the query string, which may hold a presigned signature, and never a header).
"""

from __future__ import annotations

import json as json_module
import logging
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from alltoken_mcp import __version__, budget, urlpolicy
from alltoken_mcp.client._b64scan import B64JsonScanner, B64Piece, B64ScanError, ImageSink, decode_piece
from alltoken_mcp.client._retry import (
    ALWAYS_RETRYABLE_STATUSES,
    RetryPolicy,
    is_retryable_exception,
    is_retryable_status,
    never_arrived,
    retry_after_from_headers,
)
from alltoken_mcp.client._sse import DEFAULT_MAX_CHARS, ChatStream, chat_result_from_completion, snippet
from alltoken_mcp.client.models import (
    AccountUsage,
    BillingRecord,
    CatalogModel,
    ChatResult,
    HealthSummary,
    ImageTask,
    ModelInfo,
    PresignedUpload,
    RouteHealth,
    VideoList,
    VideoTask,
    unwrap_data,
)
from alltoken_mcp.errors import (
    AllTokenError,
    IdempotencyWindowClosedError,
    MalformedResponseError,
    MissingAPIKeyError,
    ModelNotFoundError,
    NotFoundError,
    ResponseTooLargeError,
    StreamError,
    TransportError,
    error_from_response,
)
from alltoken_mcp.settings import KEY_NOT_SET, KeyProblem, missing_v1_hint

logger = logging.getLogger("alltoken_mcp.client")

TaskT = TypeVar("TaskT", ImageTask, VideoTask)

USER_AGENT = f"alltoken-mcp/{__version__}"
# ~64 concurrent chat streams plus polls and downloads; idle connections beyond that are closed.
DEFAULT_LIMITS = httpx2.Limits(max_connections=128, max_keepalive_connections=64, keepalive_expiry=30.0)
UPLOAD_CHUNK = 256 * 1024
DEFAULT_TIMEOUT = 60.0
"""The longest one attempt of a request may take (headers, and the body unless it is streamed)."""
CONNECT_TIMEOUT = 15.0

# How much of a body is read, by what it should be: each cap is far above anything AllToken sends and
# far below what would hurt the process. A bigger 2xx body is refused (`ResponseTooLargeError`); an
# error body is cut (a proxy's HTML page still gets quoted).
MAX_ERROR_BODY = 64 * 1024
# JSON dense in small objects costs ~100-200x its size once parsed and validated, so the caps are set
# by what the parsed form may cost, not by what the bytes do.
MAX_SMALL_BODY = 256 * 1024
"""One task, a presign answer, a health summary: a few KiB each."""
MAX_LIST_BODY = 2 * 1024 * 1024
"""A model listing, the public catalog, the route-health table, the video task list (tens of KiB)."""
MAX_LIST_ENTRIES = 2000
"""Entries in one listing: AllToken lists about fifty models; checked before any entry is validated."""
MAX_CHAT_BODY = 8 * 1024 * 1024
"""A non-streamed chat completion (or a JSON answer to a streamed request): 1,000,000 characters of
answer, escaped."""
MAX_IMAGE_BODY = 96 * 1024 * 1024
"""A whole image task with base64 data, when it is not streamed into files (`get_image` without a sink)."""

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) → the IP addresses a connection to it may use; how downloads check a host's addresses."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _via_proxy(url: httpx2.URL) -> bool:
    """Whether the environment routes `url` through a proxy (httpx2 honours it): then the proxy connects
    to the host and the peer we see is the proxy, so only our own resolution of the host can be checked."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.raw_host.decode("ascii"))


def _peer_address(response: httpx2.Response) -> str | None:
    """The IP address the response actually came from (None when the transport does not say)."""
    stream = response.extensions.get("network_stream")
    address = stream.get_extra_info("server_addr") if stream is not None else None
    return str(address[0]) if isinstance(address, tuple) and address else None


def _where(url: httpx2.URL) -> str:
    """Host + path for messages and logs: no query (presigned signatures), no userinfo."""
    return f"{url.host}{':' + str(url.port) if url.port else ''}{url.raw_path.split(b'?')[0].decode('ascii')}"


def _request_id(response: httpx2.Response) -> str | None:
    value: str | None = response.headers.get("x-gateway-request-id") or response.headers.get("x-request-id")
    return value


def image_endpoint(body: Mapping[str, Any]) -> str:
    """The create endpoint an image request body is for (alltoken-api.md §4.1, §4.3): a body with an
    `image_upload_id` edits that image when it has a prompt and asks for variations of it when it has
    none; any other body is a generation. The body alone decides, so a job resent from its stored
    request after a restart reaches the same endpoint."""
    if body.get("image_upload_id") is None:
        return "/images/generations/async"
    return "/images/edits" if body.get("prompt") else "/images/variations"


def _task_path(kind: str, task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise ValueError(f"{kind} task id must be a non-empty string, got {task_id!r}")
    return quote(task_id.strip(), safe="")


async def _read_capped(response: httpx2.Response, limit: int, *, refuse_over: bool = False) -> bytes:
    """At most `limit` bytes of the body. With `refuse_over`, a longer body raises instead of being cut."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if refuse_over:
                raise ResponseTooLargeError(
                    f"AllToken {response.request.method} {_where(response.request.url)} answered with more "
                    f"than {limit // 1024} KiB, far more than such an answer holds; it was not read further."
                )
            break
    return b"".join(parts)[:limit]


def _fits(delay: float, send_before: float | None) -> bool:
    """Whether a retry after `delay` s still ends inside the call's budget and the send window."""
    if delay >= budget.remaining():
        return False
    return send_before is None or time.time() + delay < send_before


ErrorT = TypeVar("ErrorT", bound=AllTokenError)


def _marked(exc: ErrorT, reached: bool) -> ErrorT:
    exc.request_reached = reached
    return exc


def _window_message(method: str, url: httpx2.URL) -> str:
    return (
        f"{method} {_where(url)} was not sent: AllToken no longer remembers the idempotency key "
        "of this request, so sending it again could create (and charge) a second task."
    )


LARGE_BODY_BYTES = 1 << 20
"""Bodies above this are parsed in a worker thread so the event loop stays responsive."""
SNIPPET_BYTES = 200
MAX_REPORTED_RETRY_AFTER = 86400.0
"""A Retry-After longer than a day is reported as a day."""
IMAGE_ANSWER_SECONDS = 300.0
"""The longest a streamed image answer may take to arrive whole (27 MB per 20 MB image)."""
THREAD_DECODE_CHARS = 256 * 1024
"""Base64 pieces at least this long are decoded in a worker thread (~0.5 ms and up)."""


async def _decoded(piece: B64Piece) -> bytes:
    if len(piece.text) >= THREAD_DECODE_CHARS:
        return await anyio.to_thread.run_sync(decode_piece, piece)
    return decode_piece(piece)


ModelT = TypeVar("ModelT", bound=BaseModel)


def _misfit(exc: ValidationError) -> str:
    """The first thing wrong with a body, in a few words: `status: Input should be a valid string`."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    return f"{where}: {first['msg']}"


def _fit(model: type[ModelT], data: Any, what: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedResponseError(
            f"AllToken {what} answered with a body that does not fit the API ({_misfit(exc)})."
        ) from None


def _entries(model: type[ModelT], rows: list[Any], what: str) -> list[ModelT]:
    """Every entry of a listing that fits `model`. One malformed entry must not hide the others (a model
    listing with one broken row still lists every model); the ones left out are logged."""
    kept: list[ModelT] = []
    first_misfit: str | None = None
    for row in rows:
        try:
            kept.append(model.model_validate(row))
        except ValidationError as exc:
            first_misfit = first_misfit or _misfit(exc)
    if first_misfit is not None:
        logger.warning(
            "AllToken %s listed %d of %d entries that do not fit the API; they were left out (first: %s)",
            what,
            len(rows) - len(kept),
            len(rows),
            first_misfit,
        )
    return kept


class AllTokenClient:
    """Async client for AllToken's HTTP API. Use as `async with AllTokenClient(...) as client:`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        key_problem: KeyProblem | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        origin: str | None = None,
        limits: httpx2.Limits = DEFAULT_LIMITS,
        resolver: Resolver = system_resolver,
        on_response: Callable[[httpx2.Response], Awaitable[None]] | None = None,
    ) -> None:
        url = httpx2.URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url must be an http(s) URL such as https://api.alltoken.ai/v1, got {base_url!r}"
            )
        self._base_url = str(url)
        self._origin = (origin or f"{url.scheme}://{url.netloc.decode('ascii')}").rstrip("/")
        self._api_key = api_key or None
        self._key_problem = key_problem  # why there is no key: what a call that needs one says
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        # Downloads may use plain http and reach non-public addresses only on the base URL's own origin.
        self._trusted_origin = urlpolicy.Origin.of(url)
        self._resolve = resolver
        self._limits = limits
        self._on_response = on_response  # every response, each attempt and hop: the HTTP server's metrics
        self._pool: httpx2.AsyncClient | None = None
        self._closed = False

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    @property
    def key_problem(self) -> KeyProblem | None:
        """Why calls that need the key cannot be made (None when there is a key)."""
        if self._api_key is not None:
            return None
        return self._key_problem or KEY_NOT_SET

    def __repr__(self) -> str:
        return f"AllTokenClient(base_url={self._base_url!r}, api_key={'<set>' if self._api_key else None})"

    async def __aenter__(self) -> AllTokenClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            with anyio.CancelScope(shield=True):
                await self._pool.aclose()

    @property
    def _http(self) -> httpx2.AsyncClient:
        """The connection pool, made by the first request: its SSL context (reading the CA bundle) and the
        HTTP core's import cost ~40 ms that a server start, which sends nothing, has no use for."""
        if self._pool is None:
            if self._closed:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            from alltoken_mcp.client._pool import pooled_client  # (imports httpcore2)

            self._pool = pooled_client(
                timeout=httpx2.Timeout(self._timeout, connect=min(self._timeout, CONNECT_TIMEOUT)),
                limits=self._limits,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                follow_redirects=False,
                event_hooks={"response": [self._on_response]} if self._on_response else None,
            )
        return self._pool

    # ------------------------------------------------------------------------------------ plumbing

    def _v1(self, path: str) -> str:
        return f"{self._base_url}{path}"

    def _auth_headers(self) -> dict[str, str]:
        if self._api_key is None:
            raise MissingAPIKeyError(self._key_problem)
        return {"Authorization": f"Bearer {self._api_key}"}

    async def _send(
        self,
        method: str,
        url: str,
        *,
        auth: bool,
        replay_safe: bool,
        max_body: int,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        content_factory: Callable[[], AsyncIterator[bytes]] | None = None,
        send_before: float | None = None,
    ) -> tuple[httpx2.Response, bytes]:
        """One logical request with retries: a 2xx response and its body (b"" if `stream`), or raises.

        With `stream=True` the caller owns the returned response and must close it; error responses are
        read (capped) and closed here, so retries happen only before any success body is consumed. A
        whole body larger than `max_body` is refused (`ResponseTooLargeError`) without being kept.

        Time is bounded twice: each attempt (headers, and the body unless streamed) must finish within
        the client timeout and within the caller's budget (`budget.remaining()`), and a retry whose
        wait does not fit in that budget is not waited for: the last error is raised at once, carrying
        the server's Retry-After. `send_before` (Unix time) is the moment after which no attempt may
        leave (an idempotency key that AllToken no longer remembers would create a second task);
        `IdempotencyWindowClosedError` is raised instead of sending.

        Every exception raised carries `request_reached`: whether any attempt may have reached
        AllToken (False only when every attempt provably did not: connect errors, 408, 429).
        """
        request_headers = dict(headers or {})
        if auth:
            request_headers.update(self._auth_headers())
        policy = self._retry
        request_url = httpx2.URL(url)
        attempt = 0
        reached = False
        while True:
            attempt += 1
            if send_before is not None and time.time() >= send_before:
                raise _marked(IdempotencyWindowClosedError(_window_message(method, request_url)), reached)
            seconds = min(self._timeout, budget.remaining())
            if seconds <= 0:
                out_of_time = f"No time was left in this call's budget for {method} {_where(request_url)}."
                raise _marked(TransportError(out_of_time), reached)
            request = self._http.build_request(
                method,
                url,
                json=json,
                params=params,
                headers=request_headers,
                content=content_factory() if content_factory is not None else None,
                timeout=httpx2.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT)),
            )
            where = _where(request.url)
            try:
                response, body = await self._attempt(request, seconds, stream, max_body)
            except httpx2.TransportError as exc:
                reached = reached or not never_arrived(exc)
                retryable = is_retryable_exception(exc, replay_safe=replay_safe)
                delay = policy.delay(attempt) if retryable and attempt < policy.max_attempts else None
                logger.debug(
                    "%s %s failed on attempt %d: %s%s",
                    method,
                    where,
                    attempt,
                    type(exc).__name__,
                    " (will retry)" if delay is not None else "",
                )
                if delay is not None and _fits(delay, send_before):
                    await policy.sleep(delay)
                    continue
                raise _marked(
                    TransportError(self._transport_message(method, where, attempt, exc, replay_safe)), reached
                ) from exc

            status = response.status_code
            logger.debug(
                "%s %s -> %d (attempt %d, request_id %s)",
                method,
                where,
                status,
                attempt,
                _request_id(response),
            )
            if status < 400:
                return response, body
            reached = reached or status not in ALWAYS_RETRYABLE_STATUSES
            # The server's own figure goes into the error (the caller is told when to come back); the
            # policy caps only how long this loop itself would sleep.
            retry_after = retry_after_from_headers(response.headers, cap=MAX_REPORTED_RETRY_AFTER)
            if is_retryable_status(status, replay_safe=replay_safe) and attempt < policy.max_attempts:
                delay = policy.delay(attempt, retry_after)
                if _fits(delay, send_before):
                    await policy.sleep(delay)
                    continue
            error = error_from_response(status, body, retry_after=retry_after)
            raise _marked(self._explain_not_found(error, url), reached)

    def _explain_not_found(self, error: ErrorT, url: str) -> ErrorT:
        """A 404 for a path under a base URL without /v1 is most likely that: say so in the error."""
        hint = missing_v1_hint(self._base_url)
        if (
            hint is not None
            and isinstance(error, NotFoundError)
            and not isinstance(error, ModelNotFoundError)
            and url.startswith(f"{self._base_url}/")
        ):
            error.message = f"{error.message.rstrip('. ')}. {hint}."
        return error

    async def _attempt(
        self, request: httpx2.Request, seconds: float, stream: bool, max_body: int
    ) -> tuple[httpx2.Response, bytes]:
        """Send once; read an error body (capped) or, unless streaming, the whole body (capped).

        The whole attempt is bounded by `seconds`: httpx's timeouts limit each read, not a body that
        trickles in one byte at a time.
        """
        response: httpx2.Response | None = None
        body = b""
        with anyio.move_on_after(seconds) as scope:
            response = await self._http.send(request, stream=True)
            # Bodies are read as part of the attempt: a connection dropped after the status line (e.g. a
            # 202 whose body never arrives) is a transport failure like any other, retried like one.
            if response.status_code >= 400:
                try:
                    body = await _read_capped(response, MAX_ERROR_BODY)
                finally:
                    await response.aclose()
            elif not stream:
                try:
                    body = await _read_capped(response, max_body, refuse_over=True)
                finally:
                    await response.aclose()
        if scope.cancelled_caught:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            raise httpx2.ReadTimeout(f"no complete answer within {seconds:.3g} s", request=request)
        assert response is not None
        return response, body

    @staticmethod
    def _transport_message(
        method: str, where: str, attempts: int, exc: httpx2.TransportError, replay_safe: bool
    ) -> str:
        detail = str(exc) or "no detail"
        text = (
            f"Could not complete {method} {where}: {type(exc).__name__} ({detail}) "
            f"after {attempts} attempt{'s' if attempts != 1 else ''}."
        )
        if not replay_safe and not never_arrived(exc):
            text += " Not retried: the request may have reached AllToken and repeating it could duplicate it."
        elif isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
            text += " Check the network and ALLTOKEN_BASE_URL."
        return text

    async def _json(
        self,
        method: str,
        url: str,
        *,
        auth: bool = True,
        replay_safe: bool,
        max_body: int,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        send_before: float | None = None,
    ) -> tuple[Any, httpx2.Response]:
        response, body = await self._send(
            method,
            url,
            auth=auth,
            replay_safe=replay_safe,
            max_body=max_body,
            json=json,
            params=params,
            headers=headers,
            send_before=send_before,
        )
        return self._parsed(response, body, method), response

    @staticmethod
    def _parsed(response: httpx2.Response, body: bytes, method: str) -> Any:
        try:
            return json_module.loads(body)
        except (ValueError, RecursionError):
            raise TransportError(
                f"AllToken {method} {_where(response.request.url)} answered {response.status_code} "
                f"with a body that is not JSON ({response.headers.get('content-type', 'no content type')}): "
                f"{snippet(body)!r}"
            ) from None

    @staticmethod
    def _expect_dict(payload: Any, what: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise MalformedResponseError(
                f"AllToken {what} answered with {type(payload).__name__}, expected a JSON object"
            )
        return payload

    @staticmethod
    def _list_of(payload: Any, what: str, *keys: str) -> list[Any]:
        """The list inside `{data: [...]}`, `{items: [...]}` or a bare list, at most MAX_LIST_ENTRIES long."""
        payload = unwrap_data(payload)
        rows: list[Any] | None = None
        if isinstance(payload, dict):
            rows = next(
                (payload[key] for key in ("data", "items", *keys) if isinstance(payload.get(key), list)), None
            )
        elif isinstance(payload, list):
            rows = payload
        if rows is None:
            raise MalformedResponseError(
                f"AllToken {what} answered with an unexpected shape: {snippet(repr(payload)[:1000])}"
            )
        if len(rows) > MAX_LIST_ENTRIES:
            raise ResponseTooLargeError(
                f"AllToken {what} listed {len(rows)} entries, far more than such a listing holds "
                f"(the bound is {MAX_LIST_ENTRIES}); it was not read."
            )
        return list(rows)

    # ------------------------------------------------------------------------------------ chat

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """Non-streaming chat completion. `body` is the wire body (model, messages, …)."""
        wire = {**body, "stream": False}
        wire.pop("stream_options", None)
        payload, response = await self._json(
            "POST", self._v1("/chat/completions"), replay_safe=False, max_body=MAX_CHAT_BODY, json=wire
        )
        return chat_result_from_completion(
            self._expect_dict(payload, "POST /chat/completions"), request_id=_request_id(response)
        )

    @asynccontextmanager
    async def stream_chat(
        self, body: dict[str, Any], *, max_chars: int = DEFAULT_MAX_CHARS
    ) -> AsyncIterator[ChatStream]:
        """Streamed chat: `async with client.stream_chat(body) as stream: async for event in stream: …`.

        Retries (connect errors, 408, 429) happen only before any body byte is consumed. The stream
        stops reading once the answer passes `max_chars` (the result is then marked `truncated`).
        """
        options = body.get("stream_options")
        wire = {
            **body,
            "stream": True,
            "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
        }
        response, _ = await self._send(
            "POST",
            self._v1("/chat/completions"),
            auth=True,
            replay_safe=False,
            max_body=MAX_CHAT_BODY,
            json=wire,
            headers={"Accept": "text/event-stream"},
            stream=True,
        )
        stream: ChatStream | None = None
        try:
            stream = await self._open_stream(response, max_chars)
            yield stream
        finally:
            # Shielded: a cancelled caller must still release the connection instead of leaking it.
            with anyio.CancelScope(shield=True):
                if stream is not None:
                    await stream.aclose()
                await response.aclose()

    async def _open_stream(self, response: httpx2.Response, max_chars: int) -> ChatStream:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        request_id = _request_id(response)
        if content_type == "text/event-stream":
            return ChatStream(response.aiter_bytes(), request_id=request_id, max_chars=max_chars)
        # Not SSE: a JSON completion (stream flag ignored) or an error envelope sent with 200.
        body = await _read_capped(response, MAX_CHAT_BODY, refuse_over=True)
        where = _where(response.request.url)
        if content_type.endswith("json") or body.lstrip()[:1] == b"{":
            try:
                payload = httpx2.Response(200, content=body).json()
            except ValueError:
                payload = None
            if isinstance(payload, dict) and payload.get("error"):
                raise error_from_response(response.status_code, body, retry_after=None)
            if isinstance(payload, dict) and isinstance(payload.get("choices"), list):
                return ChatStream.from_result(chat_result_from_completion(payload, request_id=request_id))
        raise StreamError(
            f"AllToken POST {where} answered {response.status_code} with {content_type or 'no content type'} "
            f"instead of an event stream: {snippet(body)!r}"
        )

    # ------------------------------------------------------------------------------------ catalog

    async def list_models(self) -> list[ModelInfo]:
        payload, _ = await self._json("GET", self._v1("/models"), replay_safe=True, max_body=MAX_LIST_BODY)
        return _entries(ModelInfo, self._list_of(payload, "GET /models"), "GET /models")

    async def list_image_models(self) -> list[ModelInfo]:
        payload, _ = await self._json(
            "GET", self._v1("/images/models"), replay_safe=True, max_body=MAX_LIST_BODY
        )
        return _entries(ModelInfo, self._list_of(payload, "GET /images/models"), "GET /images/models")

    async def list_video_models(self) -> list[ModelInfo]:
        payload, _ = await self._json(
            "GET", self._v1("/videos/models"), replay_safe=True, max_body=MAX_LIST_BODY
        )
        return _entries(ModelInfo, self._list_of(payload, "GET /videos/models"), "GET /videos/models")

    async def catalog(self) -> list[CatalogModel]:
        payload, _ = await self._json(
            "GET", f"{self._origin}/api-account/models", auth=False, replay_safe=True, max_body=MAX_LIST_BODY
        )
        what = "GET /api-account/models"
        return _entries(CatalogModel, self._list_of(payload, what), what)

    async def health_summary(self) -> HealthSummary:
        payload, _ = await self._json(
            "GET",
            f"{self._origin}/api-account/health/summary",
            auth=False,
            replay_safe=True,
            max_body=MAX_SMALL_BODY,
        )
        what = "GET /api-account/health/summary"
        return _fit(HealthSummary, self._expect_dict(unwrap_data(payload), what), what)

    async def health_routes(self) -> list[RouteHealth]:
        payload, _ = await self._json(
            "GET",
            f"{self._origin}/api-account/health/routes",
            auth=False,
            replay_safe=True,
            max_body=MAX_LIST_BODY,
        )
        rows = self._list_of(payload, "GET /api-account/health/routes", "routes")
        return _entries(RouteHealth, rows, "GET /api-account/health/routes")

    # ------------------------------------------------------------------------------------ spend

    async def usage(self) -> AccountUsage:
        """`GET /v1/usage`: the account's USD quota and token grants."""
        payload, _ = await self._json("GET", self._v1("/usage"), replay_safe=True, max_body=MAX_SMALL_BODY)
        return _fit(AccountUsage, self._expect_dict(unwrap_data(payload), "GET /usage"), "GET /usage")

    async def billing_record(self, request_id: str) -> BillingRecord:
        """`GET /v1/billing/transactions/{request_id}`: what one request was charged. A request AllToken
        has no record of raises `NotFoundError`."""
        path = f"/billing/transactions/{_task_path('billing', request_id)}"
        payload, _ = await self._json("GET", self._v1(path), replay_safe=True, max_body=MAX_SMALL_BODY)
        return _fit(BillingRecord, self._expect_dict(unwrap_data(payload), f"GET {path}"), f"GET {path}")

    # ------------------------------------------------------------------------------------ images

    async def create_image(
        self, body: dict[str, Any], *, idempotency_key: str, send_before: float | None = None
    ) -> ImageTask:
        """Submit an image job (202) — a generation, an edit or a variation, to the endpoint the body is
        for (`image_endpoint`). The same `idempotency_key` is sent on every attempt, and no attempt
        leaves at or after `send_before` (Unix time): see `_send`. All three are polled with `get_image`."""
        path = image_endpoint(body)
        payload, response = await self._json(
            "POST",
            self._v1(path),
            replay_safe=True,
            max_body=MAX_SMALL_BODY,
            json=body,
            headers=self._idempotency(idempotency_key),
            send_before=send_before,
        )
        return self._task(ImageTask, payload, response, f"POST {path}")

    async def get_image(self, task_id: str, *, b64_sink: ImageSink | None = None) -> ImageTask:
        """Poll an image task. A completed one carries every image as base64, delivered only once.

        With `b64_sink`, the body is streamed: each `data[i].b64_json` is decoded piece by piece into
        `await b64_sink.write(i, bytes)` as it arrives, and the returned task has `b64_json=None` (the
        other fields — r2_url, mime_type, usage — are there). Memory stays at about one piece per
        image instead of the whole body several times over. If the sink raises, so does this call.
        """
        path = f"/images/generations/{_task_path('image', task_id)}"
        if b64_sink is not None:
            return await self._get_image_streamed(path, b64_sink)
        response, body = await self._send(
            "GET", self._v1(path), auth=True, replay_safe=True, max_body=MAX_IMAGE_BODY
        )
        # A completed task carries every image as base64 (27 MB of JSON for a 20 MB image). Parsing the
        # bytes straight into the model keeps one copy of each string — no decoded str of the whole body,
        # no intermediate dict — and large bodies are parsed off the event loop.
        try:
            if len(body) > LARGE_BODY_BYTES:
                task = await anyio.to_thread.run_sync(ImageTask.model_validate_json, body)
            else:
                task = ImageTask.model_validate_json(body)
        except ValidationError:
            payload = self._parsed(response, body, "GET")
            return self._task(ImageTask, payload, response, f"GET {path}")
        return task.model_copy(update={"retry_after": self._retry.retry_after(response.headers)})

    async def _get_image_streamed(self, path: str, sink: ImageSink) -> ImageTask:
        response, _ = await self._send(
            "GET", self._v1(path), auth=True, replay_safe=True, max_body=MAX_IMAGE_BODY, stream=True
        )
        where = _where(response.request.url)
        scanner = B64JsonScanner()
        head = b""  # the body's first bytes, quoted when it turns out not to be an image task
        received = 0
        seconds = min(IMAGE_ANSWER_SECONDS, budget.remaining())
        try:
            with anyio.fail_after(seconds):
                async for chunk in response.aiter_bytes():
                    if len(head) < SNIPPET_BYTES:
                        head += chunk[: SNIPPET_BYTES - len(head)]
                    received += len(chunk)
                    for piece in scanner.feed(chunk):
                        await sink.write(piece.index, await _decoded(piece))
                remainder = scanner.finish()
        except TimeoutError:
            raise TransportError(
                f"The answer to GET {where} took longer than {seconds:.0f} s ({received} bytes received)."
            ) from None
        except httpx2.TransportError as exc:
            # Not retried: the one-time delivery may already be spent and part of it in the sink.
            raise TransportError(
                f"The answer to GET {where} broke off after {received} bytes: "
                f"{type(exc).__name__} ({exc or 'no detail'})."
            ) from exc
        except B64ScanError as exc:
            content_type = response.headers.get("content-type", "no content type")
            raise TransportError(
                f"AllToken GET {where} answered {response.status_code} ({content_type}) with a body that is "
                f"not a readable image task: {exc}. It began: {snippet(head)!r}"
            ) from None
        finally:
            # Shielded: a cancelled or failed delivery must still release the connection.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        retry_after = self._retry.retry_after(response.headers)
        try:
            task = ImageTask.model_validate_json(remainder)
        except ValidationError:
            try:
                payload = json_module.loads(remainder)
            except (ValueError, RecursionError):
                raise TransportError(
                    f"AllToken GET {where} answered {response.status_code} with a body that is not JSON: "
                    f"{snippet(remainder)!r}"
                ) from None
            return self._task(ImageTask, payload, response, f"GET {path}")
        return task.model_copy(update={"retry_after": retry_after})

    # ------------------------------------------------------------------------------------ videos

    async def create_video(
        self, body: dict[str, Any], *, idempotency_key: str, send_before: float | None = None
    ) -> VideoTask:
        """Submit a video job (202). The same `idempotency_key` is sent on every attempt, and no attempt
        leaves at or after `send_before` (Unix time): see `_send`."""
        payload, response = await self._json(
            "POST",
            self._v1("/videos/generations"),
            replay_safe=True,
            max_body=MAX_SMALL_BODY,
            json=body,
            headers=self._idempotency(idempotency_key),
            send_before=send_before,
        )
        return self._task(VideoTask, payload, response, "POST /videos/generations")

    async def get_video(self, task_id: str) -> VideoTask:
        path = f"/videos/generations/{_task_path('video', task_id)}"
        payload, response = await self._json("GET", self._v1(path), replay_safe=True, max_body=MAX_SMALL_BODY)
        return self._task(VideoTask, payload, response, f"GET {path}")

    async def list_videos(self, *, limit: int | None = None, status: str | None = None) -> VideoList:
        params: dict[str, str | int] = {}
        if limit is not None:
            params["limit"] = limit
        if status is not None:
            params["status"] = status
        payload, _ = await self._json(
            "GET", self._v1("/videos/generations"), replay_safe=True, max_body=MAX_LIST_BODY, params=params
        )
        rows = self._list_of(payload, "GET /videos/generations")
        total = payload.get("total") if isinstance(payload, dict) else None
        return VideoList(
            items=_entries(VideoTask, rows, "GET /videos/generations"),
            total=total if isinstance(total, int) else None,
        )

    async def cancel_video(self, task_id: str) -> VideoTask:
        path = f"/videos/generations/{_task_path('video', task_id)}/cancel"
        payload, response = await self._json(
            "POST", self._v1(path), replay_safe=False, max_body=MAX_SMALL_BODY
        )
        return self._task(VideoTask, payload, response, f"POST {path}")

    # ------------------------------------------------------------------------------------ uploads

    async def presign_upload(
        self,
        *,
        purpose: str,
        content_type: str,
        content_length: int,
        content_md5: str,
        checksum_sha256: str,
    ) -> PresignedUpload:
        body = {
            "purpose": purpose,
            "content_type": content_type,
            "content_length": content_length,
            "content_md5": content_md5,
            "checksum_sha256": checksum_sha256,
        }
        payload, _ = await self._json(
            "POST", self._v1("/uploads/presign"), replay_safe=False, max_body=MAX_SMALL_BODY, json=body
        )
        what = "POST /uploads/presign"
        return _fit(PresignedUpload, self._expect_dict(payload, what), what)

    async def put_upload(self, presigned: PresignedUpload, path: Path) -> None:
        """PUT the file to the presigned URL with exactly its required headers; no Authorization."""
        size = (await anyio.Path(path).stat()).st_size
        headers = {**presigned.required_headers, "Content-Length": str(size)}

        def body() -> AsyncIterator[bytes]:
            # A fresh reader per attempt: a retried PUT must resend the file from the start.
            async def chunks() -> AsyncIterator[bytes]:
                async with await anyio.open_file(path, "rb") as f:
                    while chunk := await f.read(UPLOAD_CHUNK):
                        yield chunk

            return chunks()

        await self._send(
            presigned.method.upper() or "PUT",
            presigned.upload_url,
            auth=False,
            replay_safe=True,  # a PUT of the same bytes to the same object is idempotent
            max_body=MAX_SMALL_BODY,
            headers=headers,
            content_factory=body,
        )

    # ------------------------------------------------------------------------------------ downloads

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[httpx2.Response]:
        """Stream a result file (r2_url, video_url): no Authorization, one attempt, redirects followed here.

        Every hop, the first included, must pass `urlpolicy`: https (or the base URL's own origin), a host
        that resolves only to public addresses, and — unless a proxy makes the connection — a connected
        peer that is public too (a host whose DNS answer changed between our check and the connect). At
        most `urlpolicy.MAX_REDIRECTS` redirects. Raises `urlpolicy.RefusedURL` for a refused hop,
        `APIStatusError` for a non-2xx answer, `TransportError` when no answer arrived. Retrying is the
        caller's decision (a download may be long; the job manager counts attempts).
        """
        try:
            current = first = httpx2.URL(url)
        except httpx2.InvalidURL as exc:
            raise urlpolicy.RefusedURL(f"refused to download an invalid URL ({exc})") from None
        for _ in range(urlpolicy.MAX_REDIRECTS + 1):
            response = await self._download_hop(current)
            status = response.status_code
            if status in urlpolicy.REDIRECT_STATUSES and response.headers.get("location"):
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                current = urlpolicy.redirect_target(current, response.headers["location"])
                continue
            try:
                if status >= 300:
                    body = await _read_capped(response, MAX_ERROR_BODY)
                    raise error_from_response(
                        status, body, retry_after=self._retry.retry_after(response.headers)
                    )
                yield response
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return
        raise urlpolicy.RefusedURL(
            f"refused to download {urlpolicy.where(first)}: more than {urlpolicy.MAX_REDIRECTS} redirects"
        )

    async def _download_hop(self, url: httpx2.URL) -> httpx2.Response:
        """Check `url`, send the GET (streamed) and check whom it reached; the caller closes the response."""
        trusted = urlpolicy.check_url(url, self._trusted_origin)
        where = urlpolicy.where(url)
        if not trusted:
            try:
                addresses = await self._resolve(url.raw_host.decode("ascii"), urlpolicy.Origin.of(url).port)
            except OSError as exc:
                raise TransportError(f"Could not resolve the host of {where}: {exc}.") from exc
            urlpolicy.check_addresses(url, addresses)
        request = self._http.build_request("GET", url, headers={"Accept": "*/*"})
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except httpx2.TransportError as exc:
            raise TransportError(
                f"Could not download {where}: {type(exc).__name__} ({exc or 'no detail'})."
            ) from exc
        logger.debug("GET %s -> %d (download)", where, response.status_code)
        if not trusted and not _via_proxy(url):
            peer = _peer_address(response)
            try:
                if peer is not None:
                    urlpolicy.check_addresses(url, [peer])
            except urlpolicy.RefusedURL:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
        return response

    # ------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _idempotency(key: str) -> dict[str, str]:
        if not isinstance(key, str) or not key.strip() or len(key) > 255:
            raise ValueError("idempotency_key must be a non-empty string of at most 255 characters")
        return {"Idempotency-Key": key}

    def _task(self, cls: type[TaskT], payload: Any, response: httpx2.Response, what: str) -> TaskT:
        data = dict(self._expect_dict(payload, what))
        data["retry_after"] = self._retry.retry_after(response.headers)
        data["request_id"] = _request_id(response) or data.get("request_id")
        return _fit(cls, data, what)
