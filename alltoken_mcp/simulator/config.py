"""`SimConfig`: every knob of the simulator, validated, and changeable while it runs.

Durations ending in `_s` are *simulated* seconds: the simulator multiplies them by `speed`, so 1.0 gives
the timings measured against the live API (alltoken-api.md §11.24) and 0.01 makes everything 100× faster.
The exceptions say so explicitly: the idempotency window and fault latencies are real time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SIM_API_KEY = "sk-sim-local-0000000000000000"
"""The API key the simulator accepts by default. It is not a secret: it works only here."""

Range = tuple[float, float]


class SimConfig(BaseModel):
    """What the simulated AllToken does. Build with keywords; update with `SimState.update_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = (SIM_API_KEY,)
    speed: float = Field(default=1.0, gt=0)

    # Billing and routing toggles.
    balance_ok: bool = True
    usage_quota_usd: float = Field(default=100.0, allow_inf_nan=False)
    """The account's balance before anything is charged; `/v1/usage` reports it minus the charges."""
    media_billed_under: Literal["request_id", "task_id"] = "request_id"
    """Which id an image or video charge is filed under: the create call's request id or the task id."""
    search_rejecting_prefixes: tuple[str, ...] = ("gpt-",)

    # Idempotency (§1.4): the window is real seconds, never scaled, because it is a server-side clock
    # a client cannot speed up.
    duplicate_mode: Literal["conflict", "replay"] = "conflict"
    idempotency_window_s: float = Field(default=60.0, ge=0)
    honour_video_idempotency: bool = True

    # Chat latency (scaled).
    chat_first_token_s: float = Field(default=0.6, ge=0)
    chat_token_interval_s: float = Field(default=0.02, ge=0)
    search_latency_s: float = Field(default=8.0, ge=0)

    # Images (scaled). Render time is drawn deterministically from the range for the quality.
    image_render_s: dict[str, Range] = Field(
        default_factory=lambda: {
            "low": (15.0, 25.0),
            "medium": (20.0, 40.0),
            "high": (30.0, 60.0),
        }
    )
    queue_fraction: float = Field(default=0.15, ge=0, le=1)
    image_claim_s: float = Field(default=0.05, ge=0)
    image_result_ttl_s: float = Field(default=1800.0, gt=0)
    image_r2_ttl_s: float = Field(default=30 * 86400.0, gt=0)
    r2_mode: bool = True
    image_payload_bytes: int | None = Field(default=None, ge=0)

    # Videos (scaled), per resolution.
    video_render_s: dict[str, Range] = Field(
        default_factory=lambda: {
            "480p": (30.0, 120.0),
            "720p": (60.0, 180.0),
            "1080p": (180.0, 300.0),
        }
    )
    video_url_ttl_s: float = Field(default=86400.0, gt=0)

    # Uploads (scaled): presigned PUT lifetime and the unbound-claim lifetime (§6).
    upload_url_ttl_s: float = Field(default=300.0, gt=0)
    upload_claim_ttl_s: float = Field(default=7200.0, gt=0)

    def scaled(self, seconds: float) -> float:
        """Real seconds for a simulated duration."""
        return seconds * self.speed

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A validated copy with `changes` applied; raises pydantic.ValidationError on bad input."""
        return SimConfig.model_validate({**self.model_dump(), **changes})
