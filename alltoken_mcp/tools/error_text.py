"""The one place a domain exception becomes a `ToolError` the calling model can act on.

The SDK shows any other exception to the model as a bare "Error executing tool NAME", so every tool
wraps its body with `raise tool_error(exc) from exc`. Each message says what went wrong and what to do
next, and ends with AllToken's `request_id` when there is one (support needs it). Messages are built
from the upstream envelope and our own text only, so they never contain the API key.

A failing state database (full disk, read-only file, file-size limit) can surface in any tool, so each
tool is wrapped with `@reports_store_errors` rather than catching `StoreError` around every store call.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from alltoken_mcp.errors import (
    AllProvidersFailedError,
    AllTokenError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    GoneError,
    InsufficientBalanceError,
    MissingAPIKeyError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamError,
    TransportError,
)
from alltoken_mcp.settings import KEY_HOWTO
from alltoken_mcp.store import StoreError

TOP_UP_URL = "https://alltoken.ai"


def close_matches(name: str, candidates: Iterable[str], limit: int = 5) -> list[str]:
    """Model ids that look like `name`: difflib similarity first, then shared-prefix hits."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(name, pool, n=limit, cutoff=0.5)
    if len(matches) < limit:
        lowered = name.lower()
        stem = lowered.split("-")[0]
        for candidate in pool:
            if candidate in matches:
                continue
            if (stem and candidate.lower().startswith(stem)) or lowered in candidate.lower():
                matches.append(candidate)
            if len(matches) >= limit:
                break
    return matches


def _with_request_id(text: str, exc: AllTokenError) -> str:
    request_id = getattr(exc, "request_id", None)
    return f"{text} (request_id {request_id})" if request_id else text


def _retry_hint(seconds: float | None) -> str:
    if seconds is None:
        return "Wait a minute before retrying, or lower the number of parallel calls."
    return f"Retry in {max(1, math.ceil(seconds))} s or later, or lower the number of parallel calls."


def describe(exc: AllTokenError, *, model: str | None = None, known_models: Sequence[str] = ()) -> str:
    """The actionable text for `exc`. `model`/`known_models` let a model_not_found name close matches."""
    if isinstance(exc, MissingAPIKeyError):
        return str(exc)
    if isinstance(exc, TransportError):
        return f"Could not reach AllToken: {exc} Retry shortly; if it persists check the network."
    if isinstance(exc, StreamError):
        return f"The answer stream from AllToken broke off: {exc} Retrying the call usually works."
    if not isinstance(exc, APIStatusError):
        return str(exc)

    upstream = exc.message.rstrip(".")
    if isinstance(exc, AuthenticationError):
        text = f"AllToken rejected the API key ({exc.code or 'HTTP 401'}: {upstream}). {KEY_HOWTO}"
    elif isinstance(exc, InsufficientBalanceError):
        text = (
            f"The AllToken account is out of credits ({exc.code or 'HTTP 402'}: {upstream}). "
            f"Top up credits at {TOP_UP_URL} (Billing), then retry; nothing was charged for this call."
        )
    elif isinstance(exc, RateLimitError):
        text = f"AllToken is rate-limiting this key (429: {upstream}). " + _retry_hint(exc.retry_after)
    elif isinstance(exc, ModelNotFoundError):
        name = model or exc.param or "that model"
        matches = close_matches(name, known_models) if model else []
        text = f"AllToken has no model {name!r}."
        if matches:
            text += f" Close matches: {', '.join(matches)}."
        text += " Call list_models to see every model id."
    elif isinstance(exc, AllProvidersFailedError):
        text = (
            f"Every provider behind {model or 'this model'} failed ({exc.code}: {upstream}). "
            "Retry later, pick another model, or pass fallback_models."
        )
    elif isinstance(exc, ServerError):
        text = (
            f"AllToken had a server error (HTTP {exc.status_code}{' ' + exc.code if exc.code else ''}: "
            f"{upstream}), still after retries. Retry later or pick another model."
        )
    elif isinstance(exc, PermissionDeniedError):
        text = f"AllToken refused this request (403: {upstream}). Check the key's allowed models and limits."
    elif isinstance(exc, GoneError):
        text = f"AllToken no longer has this result ({exc.code or 'HTTP 410'}: {upstream})."
    elif isinstance(exc, BadRequestError):
        where = f" (parameter {exc.param})" if exc.param else ""
        text = f"AllToken rejected the request{where}: {upstream}. Fix the argument and retry."
    else:
        text = f"AllToken answered HTTP {exc.status_code}{' ' + exc.code if exc.code else ''}: {upstream}."
    return _with_request_id(text, exc)


def tool_error(
    exc: AllTokenError, *, model: str | None = None, known_models: Sequence[str] = ()
) -> ToolError:
    """`raise tool_error(exc) from exc` in a tool: the model sees `describe(exc)` as an isError result."""
    return ToolError(describe(exc, model=model, known_models=known_models))


P = ParamSpec("P")
R = TypeVar("R")


def reports_store_errors(tool: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Tool decorator (below `@server.tool`): a `StoreError` reaches the model as its one-line text (what
    failed, where, what to fix) instead of a bare "Error executing tool NAME" and a logged traceback.
    The signature is kept (`functools.wraps`), so the tool's schema and Context injection are unchanged."""

    @functools.wraps(tool)
    async def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await tool(*args, **kwargs)
        except StoreError as exc:
            raise ToolError(str(exc)) from exc

    return reporting
