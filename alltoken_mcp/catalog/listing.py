"""One entry per model, merged from AllToken's four listings, and the filters over them.

`/v1/models` says what the key can call, `/v1/images/models` and `/v1/videos/models` add the media
models (the latter with video capabilities), and the public `/api-account/models` adds prices, limits and
tags. Every video entry carries its `VideoRules` (see rules.py) and every image entry its
`ImageOperations` (see image_ops.py), computed here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from alltoken_mcp.catalog.image_ops import ImageOperation, ImageOperations, image_operations
from alltoken_mcp.catalog.rules import VideoRules, video_rules
from alltoken_mcp.client import CatalogModel, ModelInfo

# alltoken-api.md §2.6: families whose models really search with `enable_search`.
SEARCH_FAMILIES = ("deepseek", "qwen")

Modality = Literal["text", "vision", "image", "video"]
Capability = Literal[
    "search",
    "thinking",
    "image_input",
    "tools",
    "structured_output",
    "first_last_frame",
    "audio",
    "auto_duration",
    "image_edit",
    "image_variation",
]


class ModelEntry(BaseModel):
    id: str
    name: str | None = None
    modality: str = Field(description="text | vision | image | video | audio | unknown")
    family: str | None = None
    description: str | None = None
    input_modalities: list[str] = Field(default_factory=list)
    output_modalities: list[str] = Field(default_factory=list)
    context_length: int | None = None
    max_completion_tokens: int | None = None
    pricing: dict[str, Any] | None = Field(None, description="as AllToken publishes it (USD)")
    supports: list[str] = Field(default_factory=list)
    video: VideoRules | None = Field(None, description="what alltoken_video accepts for this model")
    image: ImageOperations | None = Field(None, description="what alltoken_image can do with it")

    def is_kind(self, kind: Modality | None) -> bool:
        """text = every chat model (vision included); the others their own modality; None = any."""
        if kind is None:
            return True
        if kind == "text":
            return self.modality in ("text", "vision")
        return self.modality == kind


def filter_models(
    models: Sequence[ModelEntry],
    *,
    modality: Modality | None = None,
    search: str | None = None,
    supports: Sequence[str] = (),
) -> list[ModelEntry]:
    wanted = set(supports)
    needle = (search or "").strip().lower()
    return [
        m
        for m in models
        if m.is_kind(modality)
        and (not needle or any(needle in (v or "").lower() for v in (m.id, m.name, m.family)))
        and wanted <= set(m.supports)
    ]


def image_models_for(models: Sequence[ModelEntry], operation: ImageOperation) -> list[str]:
    """The ids of the image models known to be taken for `operation` (see image_ops.py)."""
    return [m.id for m in models if m.image is not None and m.image.allows(operation)]


def find_model(models: Sequence[ModelEntry], model_id: str) -> ModelEntry | None:
    """The entry for `model_id`, also spelt in another case when that is unambiguous."""
    for m in models:
        if m.id == model_id:
            return m
    folded = [m for m in models if m.id.lower() == model_id.strip().lower()]
    return folded[0] if len(folded) == 1 else None


def _modality(info: ModelInfo) -> str:
    if info.modality:
        return info.modality
    outputs = info.output_modalities or []
    for kind in ("image", "video", "audio"):
        if kind in outputs or info.object == kind:
            return kind
    if info.capabilities is not None:
        return "video"
    if "image" in (info.input_modalities or []):
        return "vision"
    return "text" if info.owned_by in (None, "chat") or "text" in outputs else "unknown"


def _supports(entry: ModelEntry, params: set[str], tags: set[str]) -> list[str]:
    found: set[str] = set()
    if entry.modality in ("text", "vision"):
        family = (entry.family or "").lower()
        if "web_search" in tags or family in SEARCH_FAMILIES or entry.id.startswith(SEARCH_FAMILIES):
            found.add("search")
        if "reasoning" in tags or "thinking" in params:
            found.add("thinking")
        if entry.modality == "vision" or "image" in entry.input_modalities:
            found.add("image_input")
        if "tools" in params:
            found.add("tools")
        if "response_format" in params:
            found.add("structured_output")
    if entry.video is not None:
        kinds = set(entry.video.input_types or ())
        if kinds & {"image_first_frame", "image_first_last_frame", "image_reference"}:
            found.add("image_input")
        if "image_first_last_frame" in kinds:
            found.add("first_last_frame")
        if entry.video.features.get("generate_audio"):
            found.add("audio")
        if entry.video.durations is not None and entry.video.durations.supports_auto:
            found.add("auto_duration")
    if entry.image is not None:
        if entry.image.edit:
            found.add("image_edit")
        if entry.image.variation:
            found.add("image_variation")
    return sorted(found)


def merge_listings(
    v1: Sequence[ModelInfo],
    images: Sequence[ModelInfo],
    videos: Sequence[ModelInfo],
    public: Sequence[CatalogModel],
) -> list[ModelEntry]:
    """One entry per model id. Later listings fill what earlier ones lack; video capabilities come from
    `/videos/models` (or the public catalog) and prices, limits and tags from the public catalog."""
    infos: dict[str, ModelInfo] = {}
    for listing in (v1, images, videos, public):
        for info in listing:
            known = infos.get(info.id)
            if known is None:
                infos[info.id] = info
                continue
            updates = {
                k: v
                for k, v in info.model_dump(exclude_unset=True).items()
                if getattr(known, k, None) in (None, [])
            }
            if info.capabilities is not None:
                updates["capabilities"] = info.capabilities
            infos[info.id] = known.model_copy(update=updates)
    public_by_id = {p.id: p for p in public}

    entries: list[ModelEntry] = []
    for model_id, info in infos.items():
        rich = public_by_id.get(model_id)
        modality = _modality(info)
        entry = ModelEntry(
            id=model_id,
            name=info.display_name,
            modality=modality,
            family=info.family or info.brand,
            description=info.description,
            input_modalities=list(info.input_modalities or []),
            output_modalities=list(info.output_modalities or []),
            context_length=rich.context_length if rich else None,
            max_completion_tokens=rich.max_completion_tokens if rich else None,
            pricing=rich.pricing if rich else None,
            video=video_rules(model_id, info.capabilities) if modality == "video" else None,
            image=image_operations(model_id, info.input_modalities or []) if modality == "image" else None,
        )
        params = set(rich.supported_parameters or []) if rich else set()
        tags = set(rich.tags or []) if rich else set()
        entry.supports = _supports(entry, params, tags)
        entries.append(entry)
    order = {"text": 0, "vision": 0, "image": 1, "video": 2}
    entries.sort(key=lambda e: (order.get(e.modality, 3), e.id))
    return entries
