"""AllToken's error envelope, request ids and localized messages (alltoken-api.md §1.2, §10).

`code` is always a string slug; `Accept-Language` changes only `message`. The request id usually sits
inside `error`; for 404 `model_not_found` it sits at the top level, as observed live.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32hex, lowercase: looks like `d81itf8gdg1fp5ko4bjg`

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "auth_error",
    402: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

DEFAULT_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    402: "insufficient_balance",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    422: "unprocessable_entity",
    429: "rate_limit_exceeded",
    500: "internal_error",
    502: "upstream_error",
    503: "upstream_error",
    504: "gateway_timeout",
}

# Fixed messages per code. Codes missing a language fall back to English; dynamic validation messages get
# a localized prefix instead.
_MESSAGES: dict[str, dict[str, str]] = {
    "invalid_api_key": {
        "en": "Invalid or revoked API key",
        "zh": "API 密钥无效或已被吊销",
        "ja": "API キーが無効か、失効しています",
    },
    "invalid_token": {
        "en": "This endpoint requires a signed-in web session; API keys are not accepted",
        "zh": "此接口需要网页登录会话，不接受 API 密钥",
    },
    "insufficient_balance": {
        "en": "Insufficient balance. Please top up your account at https://alltoken.ai",
        "zh": "余额不足，请前往 https://alltoken.ai 充值",
        "ja": "残高が不足しています。https://alltoken.ai でチャージしてください",
    },
    "rate_limit_exceeded": {
        "en": "Rate limit exceeded, please retry later",
        "zh": "请求过于频繁，请稍后重试",
    },
    "image_already_retrieved": {
        "en": "Image data was already retrieved; please submit a new generation request",
        "zh": "图片数据已被取回，请重新提交生成请求",
    },
    "image_expired": {
        "en": "Image result has expired; please submit a new generation request",
        "zh": "图片结果已过期，请重新提交生成请求",
    },
    "all_providers_failed": {
        "en": "All providers failed to process the request",
        "zh": "所有供应商均未能处理该请求",
    },
}

_PREFIX = {
    "zh": "请求无效：",
    "zh-hant": "請求無效：",
    "ja": "無効なリクエスト：",
    "ko": "잘못된 요청: ",
    "fr": "Requête invalide : ",
    "de": "Ungültige Anfrage: ",
}


def new_request_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def new_hex_id(prefix: str, length: int = 24) -> str:
    return prefix + secrets.token_hex(length // 2)


def rfc3339(ts: float) -> str:
    """UTC with milliseconds and a `Z` (scaled runs make second precision too coarse)."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def language(request: Request) -> str:
    """The first language tag of `Accept-Language`, normalised to en/zh/zh-hant/ja/ko/fr/de."""
    header = request.headers.get("accept-language", "")
    tag = header.split(",")[0].split(";")[0].strip().lower()
    if tag.startswith("zh"):
        return "zh-hant" if tag in ("zh-hant", "zh-tw", "zh-hk") else "zh"
    base = tag.split("-")[0]
    return base if base in ("ja", "ko", "fr", "de") else "en"


def localized(code: str, english: str | None, lang: str) -> str:
    fixed = _MESSAGES.get(code)
    if fixed is not None and (english is None or english == fixed["en"]):
        return fixed.get(lang) or fixed.get("zh" if lang == "zh-hant" else "en") or fixed["en"]
    text = english if english is not None else code.replace("_", " ")
    return _PREFIX.get(lang, "") + text


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def error_body(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str,
    error_type: str | None = None,
    param: str | None = None,
    task_id: str | None = None,
    request_id_at_top: bool = False,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "param": param,
        "type": error_type or ERROR_TYPES.get(status, "api_error"),
    }
    if task_id is not None:
        error["task_id"] = task_id
    if request_id_at_top:
        return {"error": error, "request_id": request_id}
    error["request_id"] = request_id
    return {"error": error}


def api_error(
    request: Request,
    status: int,
    code: str,
    message: str | None = None,
    *,
    error_type: str | None = None,
    param: str | None = None,
    task_id: str | None = None,
    request_id_at_top: bool = False,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in AllToken's envelope; `message` None uses the code's fixed text."""
    body = error_body(
        status,
        code,
        localized(code, message, language(request)),
        request_id=request_id_of(request),
        error_type=error_type,
        param=param,
        task_id=task_id,
        request_id_at_top=request_id_at_top,
    )
    return JSONResponse(body, status_code=status, headers=headers)


class ApiFailure(Exception):
    """Raised anywhere below an endpoint; the endpoint wrapper turns it into the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        error_type: str | None = None,
        param: str | None = None,
        task_id: str | None = None,
        request_id_at_top: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or code)
        self.error_type = error_type
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.task_id = task_id
        self.request_id_at_top = request_id_at_top
        self.headers = headers

    def response(self, request: Request) -> JSONResponse:
        return api_error(
            request,
            self.status,
            self.code,
            self.message,
            error_type=self.error_type,
            param=self.param,
            task_id=self.task_id,
            request_id_at_top=self.request_id_at_top,
            headers=self.headers,
        )


def invalid(message: str, param: str | None = None) -> ApiFailure:
    """A 400 `invalid_request` whose message says what is accepted."""
    return ApiFailure(400, "invalid_request", message, param=param)
