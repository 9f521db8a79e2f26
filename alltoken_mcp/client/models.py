"""Pydantic models of AllToken's wire objects, as the client returns them.

Every model allows extra fields (the API grows without notice) and treats fields that are optional
anywhere in the spec as optional. Documented variants are accepted and normalised here, once:
`succeeded` → `completed`, `task_id` as an alias of `id`, `{data: …}` envelopes, and usage details
lifted into flat fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class WireModel(BaseModel):
    # Validators are built on first use, not at import: a server start validates no wire object, and
    # building these ~20 models' validators would cost ~10 ms before `initialize` could be answered.
    model_config = ConfigDict(extra="allow", defer_build=True)


def unwrap_data(payload: Any) -> Any:
    """`{data: X}` → X for the /api-account endpoints; anything else unchanged."""
    if isinstance(payload, dict) and "data" in payload and len(payload.keys() - {"data", "object"}) == 0:
        return payload["data"]
    return payload


def _id_from_task_id(data: Any) -> Any:
    if isinstance(data, dict) and not data.get("id") and data.get("task_id"):
        return {**data, "id": data["task_id"]}
    return data


def _normalise_status(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return "completed" if lowered in ("succeeded", "success", "successful") else lowered
    return value


# ---------------------------------------------------------------------------------------------- chat


class Usage(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_details(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        completion = data.get("completion_tokens_details")
        if data.get("reasoning_tokens") is None and isinstance(completion, dict):
            data["reasoning_tokens"] = completion.get("reasoning_tokens")
        prompt = data.get("prompt_tokens_details")
        if data.get("cached_tokens") is None:
            if isinstance(prompt, dict) and prompt.get("cached_tokens") is not None:
                data["cached_tokens"] = prompt.get("cached_tokens")
            elif data.get("cache_read_input_tokens") is not None:
                data["cached_tokens"] = data["cache_read_input_tokens"]
        for name in ("prompt_tokens", "completion_tokens"):
            if data.get(name) is None:
                data[name] = 0
        if data.get("total_tokens") is None:
            data["total_tokens"] = int(data["prompt_tokens"]) + int(data["completion_tokens"])
        return data


class Cost(WireModel):
    """The `: {"cost": …}` comment AllToken sends after `[DONE]`: USD strings, prices per 1K tokens."""

    cost: Decimal
    input_price: Decimal | None = None
    output_price: Decimal | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ToolCall(WireModel):
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: str = ""

    @model_validator(mode="before")
    @classmethod
    def _flatten_function(cls, data: Any) -> Any:
        # Wire form is {id, type, function: {name, arguments}}; ours is flat.
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            function = data["function"]
            data = {k: v for k, v in data.items() if k != "function"}
            data.setdefault("name", function.get("name") or "")
            args = function.get("arguments")
            data.setdefault(
                "arguments", args if isinstance(args, str) else ("" if args is None else str(args))
            )
        return data


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One fragment of a streamed answer. For tool calls, `text` is an arguments fragment.

    A plain slotted dataclass, not a pydantic model: tens of thousands are made per second while
    streaming and they are built by our own assembler, so validation would buy nothing.
    """

    kind: Literal["content", "reasoning", "tool_call"]
    text: str
    index: int | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatResult(WireModel):
    id: str | None = None
    model: str | None = None
    text: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    cost: Cost | None = None
    request_id: str | None = None
    truncated: bool = False
    """The stream was cut at the client's size bound; the rest of the answer was not read."""


# ------------------------------------------------------------------------------------------ catalog


class ValueChoices(WireModel):
    """`values: null` means "hide the control" (a single tier)."""

    values: list[str] | None = None
    default: str | None = None


class DurationSpec(WireModel):
    type: str | None = None  # "range" | "enum"
    values: list[int] | None = None
    min: int | None = None
    max: int | None = None
    step: int | None = None
    default: int | None = None
    supports_auto: bool | None = None


class FramesSpec(WireModel):
    min: int | None = None
    max: int | None = None
    step: int | None = None
    base: int | None = None


class VideoFeatures(WireModel):
    generate_audio: bool | None = None
    return_last_frame: bool | None = None
    camera_fixed: bool | None = None
    watermark: bool | None = None
    seed: bool | None = None
    draft: bool | None = None
    service_tier_flex: bool | None = None
    tools_web_search: bool | None = None


class PromptSpec(WireModel):
    max_length: int | None = None


class CountRange(WireModel):
    min: int | None = None
    max: int | None = None


class ContentSpec(WireModel):
    image_count: CountRange | None = None
    video_count: CountRange | None = None
    allowed_roles: list[str] | None = None


class VideoCapabilities(WireModel):
    """UI hints from `/v1/videos/models` (alltoken-api.md §3.3); not enforced by the server."""

    ratios: ValueChoices | None = None
    resolutions: ValueChoices | None = None
    duration: DurationSpec | None = None
    frames: FramesSpec | None = None
    features: VideoFeatures | None = None
    prompt: PromptSpec | None = None
    content: ContentSpec | None = None
    input_types: list[str] | None = None


class ModelInfo(WireModel):
    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    modality: str | None = None
    display_name: str | None = None
    brand: str | None = None
    family: str | None = None
    series: str | None = None
    logo_url: str | None = None
    description: str | None = None
    input_modalities: list[str] | None = None
    output_modalities: list[str] | None = None
    capabilities: VideoCapabilities | None = None


class CatalogModel(ModelInfo):
    """An `/api-account/models` entry: ModelInfo plus pricing and tags (field set undocumented)."""

    pricing: dict[str, Any] | None = None
    context_length: int | None = None
    max_completion_tokens: int | None = None
    supported_parameters: list[str] | None = None
    tags: list[str] | None = None


class HealthSummary(WireModel):
    total_routes: int | None = None
    healthy_routes: int | None = None
    degraded_routes: int | None = None
    incident_routes: int | None = None
    median_latency_ms: float | None = None
    overall_availability: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        return unwrap_data(data)


class RouteHealth(WireModel):
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    availability: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_tps: float | None = None
    incidents: list[dict[str, Any]] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------- tasks


class TaskError(WireModel):
    code: str | None = None
    message: str | None = None
    type: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"message": data} if isinstance(data, str) else data


class _Task(WireModel):
    id: str
    status: str
    model: str | None = None
    request_id: str | None = None
    """The answering request's `x-gateway-request-id` (what AllToken may file its charge under)."""
    error: TaskError | None = None
    next_poll_after_ms: int | None = None
    retry_after: float | None = None  # seconds, from the Retry-After header (not a body field)
    usage: dict[str, Any] | None = None
    created_at: str | int | None = None
    updated_at: str | int | None = None
    completed_at: str | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _task_id_alias(cls, data: Any) -> Any:
        return _id_from_task_id(data)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return _normalise_status(value)


class ImageDatum(WireModel):
    b64_json: str | None = None
    r2_url: str | None = None
    r2_url_expires_at: str | None = None
    mime_type: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImageTask(_Task):
    """status: queued | processing | completed | failed | cancelled."""

    data: list[ImageDatum] = Field(default_factory=list)
    expires_at: str | int | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None


class VideoTask(_Task):
    """status: queued | processing | completed | failed | expired | cancelled."""

    video_url: str | None = None
    video_url_expires_at: str | int | None = None
    video_url_ttl: int | None = None
    is_expired: bool = False
    last_frame_url: str | None = None
    duration: int | float | None = None
    resolution: str | None = None
    ratio: str | None = None
    fps: int | float | None = None
    input_type: str | None = None


class VideoList(WireModel):
    items: list[VideoTask] = Field(default_factory=list)
    total: int | None = None


class PresignedUpload(WireModel):
    upload_url: str
    method: str = "PUT"
    required_headers: dict[str, str] = Field(default_factory=dict)
    upload_id: str
    expires_in: int | None = None
    claim_expires_at: str | None = None
    max_content_length: int | None = None


# -------------------------------------------------------------------------------------------- spend

_USD_TEXT = re.compile(r"\s*(?P<sign>[-+]?)\s*\$?\s*(?P<digits>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*")


def usd(value: Any) -> Decimal | None:
    """A USD amount as AllToken writes it (a number, "0.0023", "$0.0023", "-$0.0023"), or None when it is
    none of those."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        amount = Decimal(str(value))
    elif isinstance(value, str) and (match := _USD_TEXT.fullmatch(value)):
        amount = Decimal(match["digits"]) * (-1 if match["sign"] == "-" else 1)
    else:
        return None
    return amount if amount.is_finite() else None


class AccountUsage(WireModel):
    """`GET /v1/usage`: the account's USD quota and token grants. Read tolerantly: a field that is not
    what the spec says reads as unknown."""

    currency: Any = None
    usage_quota: Any = None
    usage_quota_str: Any = None
    token_quota: Any = None

    @property
    def quota_usd(self) -> Decimal | None:
        """USD left on the account (negative when overdrawn); None when the answer does not say."""
        return usd(self.usage_quota) if usd(self.usage_quota) is not None else usd(self.usage_quota_str)

    @property
    def tokens_remaining(self) -> int | None:
        tokens = self.token_quota.get("total_remaining") if isinstance(self.token_quota, dict) else None
        return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


class BillingRecord(WireModel):
    """`GET /v1/billing/transactions/{request_id}`: the ledger entries of one request. Read tolerantly."""

    request_id: Any = None
    summary: Any = None
    ledgers: Any = None

    def charged_usd(self) -> Decimal | None:
        """What the request cost: its deductions less its refunds, from the ledger entries, else the
        summary's total (signed by direction, so its size); None when neither says."""
        total: Decimal | None = None
        for entry in self.ledgers if isinstance(self.ledgers, list) else ():
            if not isinstance(entry, dict) or entry.get("direction") not in ("deduct", "refund"):
                continue
            amount = usd(entry.get("cost"))
            amount = usd(entry.get("cost_str")) if amount is None else amount
            if amount is None:
                continue
            total = (total or Decimal(0)) + (abs(amount) if entry["direction"] == "deduct" else -abs(amount))
        if total is not None:
            return max(total, Decimal(0))
        summary = self.summary if isinstance(self.summary, dict) else {}
        amount = usd(summary.get("total_cost"))
        amount = usd(summary.get("total_cost_str")) if amount is None else amount
        return None if amount is None else abs(amount)
