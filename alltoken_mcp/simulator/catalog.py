"""The simulated model catalog: chat, image and video models with prices, capabilities and route health.

Shapes follow alltoken-api.md §3 (ModelInfo, VideoCapabilities) and §8 (public catalog, health). Where the
live field set is undocumented (public catalog pricing, health rows) the names here are our choice and are
listed in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed epoch keeps listings deterministic


@dataclass(frozen=True)
class ChatModel:
    id: str
    display_name: str
    brand: str
    family: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    context_length: int
    max_completion_tokens: int
    vision: bool = False
    thinking: bool = False
    search: bool = False  # searches for real (DeepSeek, Qwen); others ignore or reject the flag

    @property
    def input_per_1k(self) -> Decimal:
        return self.input_per_1m / 1000

    @property
    def output_per_1k(self) -> Decimal:
        return self.output_per_1m / 1000


def _chat(
    id: str, name: str, brand: str, inp: str, out: str, ctx: int, max_out: int, **flags: bool
) -> ChatModel:
    return ChatModel(id, name, brand, brand, Decimal(inp), Decimal(out), ctx, max_out, **flags)


CHAT_MODELS: tuple[ChatModel, ...] = (
    _chat(
        "deepseek-v4-pro",
        "DeepSeek V4 Pro",
        "deepseek",
        "0.55",
        "2.19",
        1_000_000,
        65_536,
        thinking=True,
        search=True,
    ),
    _chat(
        "deepseek-v3.2",
        "DeepSeek V3.2",
        "deepseek",
        "0.28",
        "0.42",
        128_000,
        32_768,
        thinking=True,
        search=True,
    ),
    _chat(
        "qwen3.6-flash",
        "Qwen3.6 Flash",
        "qwen",
        "0.05",
        "0.40",
        1_000_000,
        32_768,
        thinking=True,
        search=True,
    ),
    _chat(
        "qwen3.6-max-preview",
        "Qwen3.6 Max Preview",
        "qwen",
        "1.20",
        "6.00",
        262_144,
        32_768,
        thinking=True,
        search=True,
        vision=True,
    ),
    _chat(
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "anthropic",
        "3.00",
        "15.00",
        1_000_000,
        64_000,
        thinking=True,
        vision=True,
    ),
    _chat(
        "claude-opus-4-7",
        "Claude Opus 4.7",
        "anthropic",
        "5.00",
        "25.00",
        1_000_000,
        128_000,
        thinking=True,
        vision=True,
    ),
    _chat("glm-5.1", "GLM-5.1", "zhipu", "0.60", "2.20", 200_000, 128_000, thinking=True),
    _chat("kimi-k2.6", "Kimi K2.6", "moonshot", "0.60", "2.50", 262_144, 65_536, thinking=True, vision=True),
    _chat("minimax-m2.7", "MiniMax M2.7", "minimax", "0.30", "1.20", 204_800, 131_072, thinking=True),
    _chat(
        "gemini-3.1-pro-preview",
        "Gemini 3.1 Pro Preview",
        "google",
        "2.00",
        "12.00",
        1_048_576,
        65_536,
        thinking=True,
        vision=True,
    ),
    _chat("gpt-5.4", "GPT-5.4", "openai", "1.25", "10.00", 400_000, 128_000, vision=True),
    _chat("gpt-5.4-nano", "GPT-5.4 nano", "openai", "0.20", "1.25", 400_000, 128_000, vision=True),
    _chat("gpt-5.5", "GPT-5.5", "openai", "2.50", "15.00", 400_000, 128_000, vision=True),
)


@dataclass(frozen=True)
class ImageModel:
    id: str
    display_name: str
    brand: str
    series: str
    price_per_image: dict[str, str]
    honours_seed: bool = False
    operations: tuple[str, ...] = ("generation", "edit")
    """Which image endpoints take the model (§4.3): generations, edits, variations."""

    @property
    def input_modalities(self) -> list[str]:
        """What its listing publishes: text for prompts, image for edits and variations."""
        takes_text = "generation" in self.operations or "edit" in self.operations
        takes_image = "edit" in self.operations or "variation" in self.operations
        return [m for m, on in (("text", takes_text), ("image", takes_image)) if on]

    @property
    def description(self) -> str:
        words = {"generation": "text-to-image", "edit": "image editing", "variation": "image variations"}
        return f"{self.display_name}: {' and '.join(words[o] for o in self.operations)}."


IMAGE_MODELS: tuple[ImageModel, ...] = (
    ImageModel(
        "gpt-image-2",
        "GPT Image 2",
        "openai",
        "GPT Image",
        {"low": "0.011", "medium": "0.042", "high": "0.167"},
    ),
    ImageModel(
        "wan2.7-image",
        "Wan 2.7 Image",
        "alibaba",
        "Wan",
        {"low": "0.02", "medium": "0.02", "high": "0.02"},
        honours_seed=True,
    ),
    ImageModel(
        "wan2.7-image-pro",
        "Wan 2.7 Image Pro",
        "alibaba",
        "Wan",
        {"low": "0.05", "medium": "0.05", "high": "0.05"},
        honours_seed=True,
    ),
    # §4.3 names dall-e-2 for variations; it is not in the generation enum (§4.1), so here it only varies.
    ImageModel(
        "dall-e-2",
        "DALL·E 2",
        "openai",
        "DALL·E",
        {"low": "0.02", "medium": "0.02", "high": "0.02"},
        operations=("variation",),
    ),
)

ALL_RATIOS = ("16:9", "9:16", "4:3", "3:4", "21:9", "1:1", "adaptive")
ALL_INPUT_TYPES = (
    "text",
    "image_first_frame",
    "image_first_last_frame",
    "image_reference",
    "video_reference",
    "multimodal",
    "draft_task",
)


@dataclass(frozen=True)
class VideoModel:
    """A video model: its advertised capabilities and the server-side rules of §5.1."""

    id: str
    display_name: str
    brand: str
    series: str
    capabilities: dict[str, Any]
    duration_min: int | None  # None: duration is decided upstream (video edit)
    duration_max: int | None
    supports_auto: bool
    resolutions: tuple[str, ...]
    frames: bool = False
    camera_fixed: bool = False
    omni: bool = False  # omni_reference_task_type and output_format=mov (seedance-2.5)
    price_per_second: dict[str, str] = field(default_factory=dict)


def _features(**on: bool) -> dict[str, bool]:
    names = (
        "generate_audio",
        "return_last_frame",
        "camera_fixed",
        "watermark",
        "seed",
        "draft",
        "service_tier_flex",
        "tools_web_search",
    )
    return {name: on.get(name, False) for name in names}


def _seedance(
    id: str,
    name: str,
    dmin: int,
    dmax: int,
    auto: bool,
    resolutions: tuple[str, ...],
    input_types: tuple[str, ...],
    features: dict[str, bool],
    *,
    frames: bool = False,
    camera_fixed: bool = False,
    omni: bool = False,
    content: dict[str, Any] | None = None,
) -> VideoModel:
    default_res = "720p" if "720p" in resolutions else resolutions[0]
    caps = {
        "ratios": {"values": list(ALL_RATIOS), "default": "16:9"},
        "resolutions": {"values": list(resolutions), "default": default_res},
        "duration": {
            "type": "range",
            "min": dmin,
            "max": dmax,
            "step": 1,
            "default": 5,
            "supports_auto": auto,
        },
        "frames": {"min": 29, "max": 289, "step": 4, "base": 25} if frames else None,
        "features": features,
        "prompt": None,
        "content": content,
        "input_types": list(input_types),
    }
    prices = {"480p": "0.025", "720p": "0.052", "1080p": "0.12"}
    return VideoModel(
        id,
        name,
        "bytedance",
        "Seedance",
        caps,
        dmin,
        dmax,
        auto,
        resolutions,
        frames,
        camera_fixed,
        omni,
        {r: prices[r] for r in resolutions},
    )


_FRAME_ROLES = {
    "image_count": {"min": 0, "max": 2},
    "video_count": {"min": 0, "max": 0},
    "allowed_roles": ["first_frame", "last_frame"],
}
_THREE = ("480p", "720p", "1080p")


def _happyhorse(
    id: str,
    name: str,
    ratios: list[str] | None,
    duration: dict[str, Any] | None,
    content: dict[str, Any] | None,
    input_types: list[str],
) -> VideoModel:
    # [INFERRED, alltoken-api.md §3.3] 720P/1080P, 3–15 s, five ratios, long prompt limit.
    caps = {
        "ratios": {"values": ratios, "default": ratios[0] if ratios else None},
        "resolutions": {"values": ["720p", "1080p"], "default": "1080p"},
        "duration": duration,
        "frames": None,
        "features": _features(watermark=True, seed=True),
        "prompt": {"max_length": 5000},
        "content": content,
        "input_types": input_types,
    }
    dmin, dmax = (3, 15) if duration is not None else (None, None)
    return VideoModel(
        id,
        name,
        "alibaba",
        "HappyHorse",
        caps,
        dmin,
        dmax,
        False,
        ("720p", "1080p"),
        price_per_second={"720p": "0.08", "1080p": "0.14"},
    )


_HH_DURATION = {"type": "range", "min": 3, "max": 15, "step": 1, "default": 5, "supports_auto": False}
_HH_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4"]

VIDEO_MODELS: tuple[VideoModel, ...] = (
    _seedance(
        "seedance-1.0-pro",
        "Seedance 1.0 Pro",
        2,
        12,
        False,
        _THREE,
        ("text", "image_first_frame", "image_first_last_frame"),
        _features(
            return_last_frame=True, camera_fixed=True, watermark=True, seed=True, service_tier_flex=True
        ),
        frames=True,
        camera_fixed=True,
        content=_FRAME_ROLES,
    ),
    _seedance(
        "seedance-1.0-pro-fast",
        "Seedance 1.0 Pro Fast",
        2,
        12,
        False,
        _THREE,
        ("text", "image_first_frame"),
        _features(return_last_frame=True, camera_fixed=True, watermark=True, seed=True),
        frames=True,
        camera_fixed=True,
        content=_FRAME_ROLES,
    ),
    _seedance(
        "seedance-1.5-pro",
        "Seedance 1.5 Pro",
        4,
        12,
        True,
        _THREE,
        ("text", "image_first_frame", "image_first_last_frame", "draft_task"),
        _features(
            generate_audio=True,
            return_last_frame=True,
            camera_fixed=True,
            watermark=True,
            seed=True,
            draft=True,
            service_tier_flex=True,
        ),
        camera_fixed=True,
        content=_FRAME_ROLES,
    ),
    _seedance(
        "seedance-2.0",
        "Seedance 2.0",
        4,
        15,
        True,
        _THREE,
        ALL_INPUT_TYPES,
        _features(
            generate_audio=True, return_last_frame=True, watermark=True, seed=True, tools_web_search=True
        ),
    ),
    _seedance(
        "seedance-2.0-fast",
        "Seedance 2.0 Fast",
        4,
        15,
        True,
        _THREE,
        ALL_INPUT_TYPES,
        _features(generate_audio=True, return_last_frame=True, watermark=True, seed=True),
    ),
    _seedance(
        "seedance-2.5",
        "Seedance 2.5",
        4,
        30,
        True,
        ("480p", "720p"),
        ALL_INPUT_TYPES,
        _features(
            generate_audio=True, return_last_frame=True, watermark=True, seed=True, tools_web_search=True
        ),
        omni=True,
    ),
    _happyhorse("happyhorse-1.0-t2v", "HappyHorse 1.0 T2V", _HH_RATIOS, _HH_DURATION, None, ["text"]),
    _happyhorse(
        "happyhorse-1.0-i2v",
        "HappyHorse 1.0 I2V",
        None,
        _HH_DURATION,
        {
            "image_count": {"min": 1, "max": 1},
            "video_count": {"min": 0, "max": 0},
            "allowed_roles": ["first_frame"],
        },
        ["image_first_frame"],
    ),
    _happyhorse(
        "happyhorse-1.0-r2v",
        "HappyHorse 1.0 R2V",
        _HH_RATIOS,
        _HH_DURATION,
        {
            "image_count": {"min": 1, "max": 4},
            "video_count": {"min": 0, "max": 0},
            "allowed_roles": ["reference_image"],
        },
        ["image_reference"],
    ),
    _happyhorse(
        "happyhorse-1.0-video-edit",
        "HappyHorse 1.0 Video Edit",
        None,
        None,
        {"image_count": {"min": 0, "max": 4}, "video_count": {"min": 1, "max": 1}, "allowed_roles": None},
        ["video_reference", "multimodal"],
    ),
)

CHAT_BY_ID = {m.id: m for m in CHAT_MODELS}
IMAGE_BY_ID = {m.id: m for m in IMAGE_MODELS}
VIDEO_BY_ID = {m.id: m for m in VIDEO_MODELS}


def chat_model_info(m: ChatModel) -> dict[str, Any]:
    inputs = ["text", "image"] if m.vision else ["text"]
    return {
        "id": m.id,
        "object": "model",
        "created": CREATED,
        "owned_by": "chat",
        "modality": "vision" if m.vision else "text",
        "display_name": m.display_name,
        "brand": m.brand,
        "family": m.family,
        "input_modalities": inputs,
        "output_modalities": ["text"],
    }


def image_model_info(m: ImageModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "image",
        "created": CREATED,
        "owned_by": "image",
        "modality": "image",
        "display_name": m.display_name,
        "brand": m.brand,
        "family": m.brand,
        "series": m.series,
        "description": m.description,
        "input_modalities": m.input_modalities,
        "output_modalities": ["image"],
    }


def video_model_info(m: VideoModel, *, with_capabilities: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": m.id,
        "object": "video",
        "created": CREATED,
        "owned_by": "video",
        "modality": "video",
        "display_name": m.display_name,
        "brand": m.brand,
        "family": m.brand,
        "series": m.series,
        "input_modalities": ["text", "image", "video"],
        "output_modalities": ["video"],
    }
    if with_capabilities:
        info["capabilities"] = m.capabilities
    return info


def _money(value: Decimal) -> str:
    return f"{value:.4f}"


def public_entry(model_id: str) -> dict[str, Any] | None:
    """One `/api-account/models` entry: the rich catalog with pricing (USD per 1M tokens, as strings)."""
    if (c := CHAT_BY_ID.get(model_id)) is not None:
        params = [
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "tools",
            "tool_choice",
            "response_format",
            "stream",
            "stream_options",
        ]
        if c.thinking:
            params += ["thinking", "thinking_budget"]
        params.append("enable_search")
        return {
            **chat_model_info(c),
            "description": f"{c.display_name} via AllToken.",
            "context_length": c.context_length,
            "max_completion_tokens": c.max_completion_tokens,
            "pricing": {
                "currency": "USD",
                "unit": "1M tokens",
                "input": _money(c.input_per_1m),
                "output": _money(c.output_per_1m),
                "cached_input": _money(c.input_per_1m / 10),
            },
            "supported_parameters": params,
            "tags": [
                t
                for t, on in (("vision", c.vision), ("reasoning", c.thinking), ("web_search", c.search))
                if on
            ],
        }
    if (i := IMAGE_BY_ID.get(model_id)) is not None:
        return {
            **image_model_info(i),
            "pricing": {"currency": "USD", "unit": "image", "per_image": i.price_per_image},
            "supported_parameters": (
                [
                    "n",
                    "size",
                    "quality",
                    "output_format",
                    "output_compression",
                    "background",
                    "moderation",
                    *(["seed"] if i.honours_seed else []),
                ]
                if i.input_modalities != ["image"]
                else ["size"]  # a variation takes the image and a size only (§4.3)
            ),
            "tags": [f"image_{o}" for o in i.operations],
        }
    if (v := VIDEO_BY_ID.get(model_id)) is not None:
        return {
            **video_model_info(v, with_capabilities=True),
            "pricing": {"currency": "USD", "unit": "second", "per_second": v.price_per_second},
            "tags": ["video_generation"],
        }
    return None


def public_catalog() -> list[dict[str, Any]]:
    ids = [m.id for m in CHAT_MODELS] + [m.id for m in IMAGE_MODELS] + [m.id for m in VIDEO_MODELS]
    return [e for e in (public_entry(i) for i in ids) if e is not None]


_PROVIDERS: dict[str, tuple[str, ...]] = {
    "deepseek": ("deepseek", "volcengine"),
    "qwen": ("alibaba-bailian",),
    "anthropic": ("anthropic", "aws-bedrock"),
    "zhipu": ("zhipu",),
    "moonshot": ("moonshot",),
    "minimax": ("minimax",),
    "google": ("google-vertex",),
    "openai": ("openai", "azure-openai"),
}


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def health_routes() -> list[dict[str, Any]]:
    """Per-route health rows; deterministic, with a few degraded routes and one incident."""
    rows: list[dict[str, Any]] = []
    for m in CHAT_MODELS:
        for provider in _PROVIDERS[m.brand]:
            h = _digest(f"{m.id}/{provider}")
            p50 = 300 + h % 900
            status = "healthy"
            availability = 99.5 + (h % 50) / 100
            if h % 11 == 0:
                status, availability = "degraded", 96.0 + (h % 30) / 10
            if m.id == "gemini-3.1-pro-preview":
                status, availability = "incident", 71.4
            rows.append(
                {
                    "model": m.id,
                    "provider": provider,
                    "status": status,
                    "availability": round(availability, 2),
                    "latency_p50_ms": p50,
                    "latency_p95_ms": p50 * 3 + h % 500,
                    "throughput_tps": 40 + h % 120,
                    "incidents": (
                        [{"started_at": "2026-05-12T09:00:00Z", "ended_at": None, "summary": "upstream 5xx"}]
                        if status == "incident"
                        else []
                    ),
                }
            )
    return rows


def health_summary() -> dict[str, Any]:
    rows = health_routes()
    latencies = sorted(r["latency_p50_ms"] for r in rows)
    return {
        "total_routes": len(rows),
        "healthy_routes": sum(r["status"] == "healthy" for r in rows),
        "degraded_routes": sum(r["status"] == "degraded" for r in rows),
        "incident_routes": sum(r["status"] == "incident" for r in rows),
        "median_latency_ms": latencies[len(latencies) // 2],
        "overall_availability": round(sum(r["availability"] for r in rows) / len(rows), 2),
    }
