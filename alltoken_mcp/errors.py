"""The error hierarchy, and the one place AllToken's error envelope becomes an exception.

    AllTokenError
    ├── MissingAPIKeyError          no usable key (says why: unset, a placeholder...; and the fix)
    ├── TransportError              connection failed / timed out after the retries
    │   ├── ResponseTooLargeError       a 2xx body far larger than its kind allows (not read further)
    │   └── MalformedResponseError      a 2xx body that does not fit the API (a field missing or mistyped)
    ├── IdempotencyWindowClosedError    a create was not resent: AllToken forgot its key
    ├── StreamError                 an SSE stream ended early or carried malformed data
    └── APIStatusError              a non-2xx answer; carries status, code, type, param,
        │                           message, request_id, task_id, retry_after
        ├── BadRequestError             400
        ├── AuthenticationError         401
        ├── InsufficientBalanceError    402
        ├── PermissionDeniedError       403
        ├── NotFoundError               404
        │   └── ModelNotFoundError          code model_not_found
        ├── ConflictError               409
        │   └── DuplicateRequestError       code duplicate_request (task_id = original task)
        ├── GoneError                   410 (image_already_retrieved / image_expired)
        ├── PayloadTooLargeError        413
        ├── UnprocessableEntityError    422
        ├── RateLimitError              429
        └── ServerError                 5xx
            └── AllProvidersFailedError     code all_providers_failed

Messages never contain the API key: they are built only from the upstream envelope, which does
not echo it, and from our own text.
"""

from __future__ import annotations

import json
from typing import Any

from alltoken_mcp.settings import KEY_NOT_SET, KeyProblem


class AllTokenError(Exception):
    """Base of every error this package raises about AllToken.

    `request_reached` says whether the failed request may have reached AllToken: False only when every
    attempt provably did not (a refused connection, a 408 or 429). Job creation relies on it.
    """

    request_reached: bool = True


class MissingAPIKeyError(AllTokenError):
    """A call needs the key and there is no usable one; the message is `Settings.key_problem`'s."""

    request_reached = False

    def __init__(self, problem: KeyProblem | None = None) -> None:
        self.problem = problem or KEY_NOT_SET
        super().__init__(str(self.problem))


class TransportError(AllTokenError):
    """The request never got an HTTP answer (connection refused, reset, timed out)."""


class ResponseTooLargeError(TransportError):
    """A success body far larger than its kind allows; reading stopped at the cap."""


class MalformedResponseError(TransportError):
    """A success body that does not fit the API: not the shape asked for, or a field missing or mistyped.
    Asking again rarely helps, so job steps treat it as a refusal (see `jobs.MAX_REFUSED_STEPS`)."""


class IdempotencyWindowClosedError(AllTokenError):
    """A create was not (re)sent because AllToken no longer remembers its Idempotency-Key."""


class StreamError(AllTokenError):
    """A streamed response could not be read to its end."""


class APIStatusError(AllTokenError):
    """AllToken answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.type = type
        self.param = param
        self.request_id = request_id
        self.task_id = task_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [f"AllToken {self.status_code}"]
        if self.code:
            parts.append(f"{self.code}")
        text = f"{' '.join(parts)}: {self.message}"
        if self.request_id:
            text += f" (request_id {self.request_id})"
        return text


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class InsufficientBalanceError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ModelNotFoundError(NotFoundError):
    pass


class ConflictError(APIStatusError):
    pass


class DuplicateRequestError(ConflictError):
    pass


class GoneError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


class AllProvidersFailedError(ServerError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_BY_CODE: dict[str, type[APIStatusError]] = {
    "model_not_found": ModelNotFoundError,
    "duplicate_request": DuplicateRequestError,
    "all_providers_failed": AllProvidersFailedError,
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def error_from_response(
    status_code: int, body: bytes | str | None, *, retry_after: float | None = None
) -> APIStatusError:
    """Map an HTTP error answer to the typed exception. The single envelope → exception mapping.

    Accepts the documented envelope `{"error": {code, message, type, param, request_id, task_id}}`
    with `request_id` inside `error` or at the top level, an outdated numeric `code`, and bodies
    that are not JSON at all (a proxy's HTML page): the message then says what was received.
    """
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    payload: Any = None
    try:
        payload = json.loads(raw) if raw.strip() else None
    except ValueError:
        payload = None
    envelope: dict[str, Any] = {}
    top: dict[str, Any] = payload if isinstance(payload, dict) else {}
    if isinstance(top.get("error"), dict):
        envelope = top["error"]
    elif isinstance(top.get("error"), str):
        envelope = {"message": top["error"]}

    code = _text(envelope.get("code"))
    message = _text(envelope.get("message")) or _text(top.get("message"))
    if message is None:
        snippet = " ".join(raw.split())[:200]
        message = (
            f"HTTP {status_code} with an unexpected body: {snippet!r}" if snippet else f"HTTP {status_code}"
        )
    request_id = _text(envelope.get("request_id")) or _text(top.get("request_id"))

    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIStatusError
    return cls(
        message,
        status_code=status_code,
        code=code,
        type=_text(envelope.get("type")),
        param=_text(envelope.get("param")),
        request_id=request_id,
        task_id=_text(envelope.get("task_id")),
        retry_after=retry_after,
    )
