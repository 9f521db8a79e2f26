"""What a video model accepts: the one answer `list_models` shows and `alltoken_video` enforces.

`video_rules(model_id, capabilities)` merges two sources (alltoken-api.md §3.3, §5.1):
1. the model's `capabilities` in `/videos/models`. They are UI hints the gateway does not enforce, but
   they are the only per-model description there is, and a value outside them is at best ignored;
2. for a model that publishes none (or a part it leaves out), the gateway's server-side rules for its
   family (Seedance durations, -1 support, seedance-2.5's resolutions, camera_fixed on 1.0-pro/1.5-pro).
What neither says is passed through and the gateway judges it.

The result is a pydantic model because it is also what the catalog stores and `list_models` returns:
the rules are computed once, when the listings are merged, not re-derived by each reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alltoken_mcp.client.models import DurationSpec, VideoCapabilities

WIRE_RATIOS = ("16:9", "9:16", "4:3", "3:4", "21:9", "1:1", "adaptive")
WIRE_RESOLUTIONS = ("480p", "720p", "1080p")
VIDEO_OPTIONS = ("generate_audio", "seed", "camera_fixed", "watermark", "return_last_frame")
"""The feature flags of the capabilities that alltoken_video takes as arguments."""
INPUT_TYPE_LABELS: Mapping[str, str] = {
    "text": "text only",
    "image_first_frame": "a first frame",
    "image_first_last_frame": "first and last frames",
    "image_reference": "reference images",
    "video_reference": "reference videos",
    "multimodal": "mixed references",
    "draft_task": "a draft task",
}


class DurationRule(BaseModel):
    """Allowed `duration` seconds: a range (min..max by step) or a list of values, and whether -1 (the
    model picks) is allowed. None anywhere means "not known": that part is not checked."""

    model_config = ConfigDict(frozen=True)

    min: int | None = None
    max: int | None = None
    step: int = 1
    values: list[int] | None = Field(None, description="the only allowed values (instead of a range)")
    default: int | None = Field(None, description="what the model renders when duration is omitted")
    supports_auto: bool | None = Field(
        None, description="duration -1 lets the model choose; null: not known, passed to the gateway"
    )

    @classmethod
    def from_spec(cls, spec: DurationSpec, fallback: DurationRule | None) -> DurationRule:
        """The published spec, with what it leaves out taken from `fallback` (the family rule)."""
        base = fallback or cls()
        enum = spec.type == "enum" or (spec.values is not None and spec.min is None and spec.max is None)
        return cls(
            min=spec.min if spec.min is not None else (None if enum else base.min),
            max=spec.max if spec.max is not None else (None if enum else base.max),
            step=spec.step if spec.step and spec.step > 0 else 1,
            values=list(spec.values) if enum and spec.values else None,
            supports_auto=spec.supports_auto if spec.supports_auto is not None else base.supports_auto,
            default=spec.default if spec.default is not None else base.default,
        )

    def allows(self, seconds: int) -> bool:
        if seconds == -1:
            return self.supports_auto is not False
        if seconds < 1:
            return False
        if self.values is not None:
            return seconds in self.values
        if self.min is not None and (seconds < self.min or (seconds - self.min) % self.step):
            return False
        return self.max is None or seconds <= self.max

    def describe(self) -> str:
        if self.values is not None:
            text = "one of " + ", ".join(str(v) for v in self.values) + " s"
        elif self.min is not None and self.max is not None:
            text = f"an integer {self.min}–{self.max} s"
            if self.step > 1:
                text += f" in steps of {self.step}"
        elif self.min is not None:
            text = f"an integer of at least {self.min} s"
        elif self.max is not None:
            text = f"an integer of at most {self.max} s"
        else:
            text = "a positive integer of seconds"
        if self.supports_auto:
            text += ", or -1 for auto"
        return text


class CountLimit(BaseModel):
    model_config = ConfigDict(frozen=True)

    min: int | None = None
    max: int | None = None


class VideoRules(BaseModel):
    """What one video model accepts. A None list means "not known": any wire value is passed through.
    `*_fixed` means the model decides that value itself, so the caller must leave it out."""

    model_config = ConfigDict(frozen=True)

    source: Literal["capabilities", "family", "none"] = Field(
        description="capabilities: published by the model (gaps filled from its family's documented rules); "
        "family: only the family's documented rules; none: nothing is known, values are passed through"
    )
    durations: DurationRule | None = None
    duration_fixed: bool = Field(False, description="the model sets the length itself: omit duration")
    ratios: list[str] | None = None
    ratio_fixed: bool = Field(False, description="the model sets the ratio itself: omit ratio")
    default_ratio: str | None = None
    resolutions: list[str] | None = None
    resolution_fixed: bool = Field(False, description="one resolution only: omit resolution")
    default_resolution: str | None = None
    input_types: list[str] | None = None
    image_count: CountLimit | None = Field(None, description="how many input images it takes")
    allowed_roles: list[str] | None = None
    features: dict[str, bool] = Field(
        default_factory=dict,
        description="optional features: true honoured, false refused; absent ones are passed through",
    )
    frames: dict[str, int | None] | None = None
    prompt_max_length: int | None = None

    def describe(self) -> str:
        """One line: durations, ratios, resolutions, inputs, options, prompt limit."""
        if self.source == "none":
            return "no published constraints (duration, ratio and resolution are passed through)"
        parts: list[str] = []
        if self.duration_fixed:
            parts.append("duration set by the model")
        elif self.durations is not None:
            default = f" (default {self.durations.default})" if self.durations.default is not None else ""
            parts.append(f"duration {self.durations.describe()}{default}")
        if self.ratio_fixed:
            parts.append("ratio set by the model")
        elif self.ratios:
            parts.append("ratios " + ", ".join(self.ratios))
        if self.resolution_fixed:
            parts.append("one resolution")
        elif self.resolutions:
            parts.append("resolutions " + ", ".join(self.resolutions))
        if self.input_types:
            parts.append("inputs: " + inputs_text(self.input_types))
        options = [name for name in VIDEO_OPTIONS if self.features.get(name)]
        if options:
            parts.append("options " + ", ".join(options))
        if self.prompt_max_length is not None:
            parts.append(f"prompt ≤ {self.prompt_max_length} characters")
        return "; ".join(parts)


def inputs_text(input_types: list[str]) -> str:
    return ", ".join(INPUT_TYPE_LABELS.get(kind, kind) for kind in input_types)


@dataclass(frozen=True)
class _Family:
    """The gateway's server-side rules for a Seedance family (§5.1): enforced whatever the model
    publishes, so they also stand in where it publishes nothing."""

    prefix: str
    durations: DurationRule
    resolutions: tuple[str, ...]
    camera_fixed: bool


_FAMILIES = (
    _Family(
        "seedance-1.0-pro",
        DurationRule(min=2, max=12, supports_auto=False, default=5),
        WIRE_RESOLUTIONS,
        True,
    ),
    _Family(
        "seedance-1.5-pro", DurationRule(min=4, max=12, supports_auto=True, default=5), WIRE_RESOLUTIONS, True
    ),
    _Family(
        "seedance-2.0", DurationRule(min=4, max=15, supports_auto=True, default=5), WIRE_RESOLUTIONS, False
    ),
    _Family(
        "seedance-2.5", DurationRule(min=4, max=30, supports_auto=True, default=5), ("480p", "720p"), False
    ),
)


def _family(model: str) -> _Family | None:
    """Also matches variants: seedance-1.0-pro-fast, seedance-2.0-fast."""
    for family in _FAMILIES:
        if model == family.prefix or model.startswith(family.prefix + "-"):
            return family
    return None


def _choices(
    caps: VideoCapabilities, field: Literal["ratios", "resolutions"]
) -> tuple[bool, list[str] | None, str | None]:
    """(published, values, default); values None with published=True means "fixed by the model"."""
    if field not in caps.model_fields_set or getattr(caps, field) is None:
        return False, None, None
    choices = getattr(caps, field)
    return True, choices.values, choices.default


def video_rules(model_id: str, caps: VideoCapabilities | None) -> VideoRules:
    """What `model_id` accepts: each published capability, else its family's rule for that field."""
    family = _family(model_id)
    # §5.1: camera_fixed exists only on seedance-1.0-pro / 1.5-pro, whatever else is unknown.
    features = {"camera_fixed": family is not None and family.camera_fixed}
    if caps is None:
        if family is None:
            return VideoRules(source="none", features=features)
        return VideoRules(
            source="family",
            durations=family.durations,
            resolutions=list(family.resolutions),
            features=features,
        )

    durations = family.durations if family else None
    duration_fixed = "duration" in caps.model_fields_set and caps.duration is None
    if caps.duration is not None:
        durations = DurationRule.from_spec(caps.duration, durations)
    ratios_published, ratios, default_ratio = _choices(caps, "ratios")
    res_published, resolutions, default_resolution = _choices(caps, "resolutions")
    if not res_published and family is not None:
        res_published, resolutions = True, list(family.resolutions)
    if caps.features is not None:
        features.update(caps.features.model_dump(exclude_none=True))
    content = caps.content
    counts = content.image_count if content is not None else None
    return VideoRules(
        source="capabilities",
        durations=None if duration_fixed else durations,
        duration_fixed=duration_fixed,
        ratios=ratios or None,
        ratio_fixed=ratios_published and not ratios,
        default_ratio=default_ratio,
        resolutions=resolutions or None,
        resolution_fixed=res_published and not resolutions,
        default_resolution=default_resolution,
        input_types=list(caps.input_types) if caps.input_types is not None else None,
        image_count=CountLimit(min=counts.min, max=counts.max) if counts is not None else None,
        allowed_roles=list(content.allowed_roles)
        if content is not None and content.allowed_roles is not None
        else None,
        features=features,
        frames=caps.frames.model_dump() if caps.frames is not None else None,
        prompt_max_length=caps.prompt.max_length if caps.prompt is not None else None,
    )
