"""Turn alltoken_image / alltoken_video arguments into AllToken wire bodies, or say exactly what is wrong.

Pure functions, no I/O: the media tools call them before anything is sent or paid for. A refusal is an
`ArgumentProblem` whose text names the field, the bad value and everything this model accepts for that
field, so the calling model can fix its call in one step. Things that are legal but probably not what
the caller meant (a seed the model ignores) come back as warnings next to the body instead.

Where the video rules come from, in order (alltoken-api.md §3.3, §5.1):
1. the model's `capabilities` in `/videos/models`. They are UI hints the gateway does not enforce, but
   they are the only per-model description there is, and a value outside them is at best ignored;
2. for a model that publishes none (or a part it leaves out), the documented per-family rules of §5.1
   (Seedance durations, -1 support, seedance-2.5's resolutions, camera_fixed on 1.0-pro/1.5-pro);
3. otherwise the value is passed through and the gateway judges it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alltoken_mcp.client.models import DurationSpec, ModelInfo, VideoCapabilities
from alltoken_mcp.tools.errors import close_matches


class ArgumentProblem(ValueError):
    """A tool argument this model cannot take; `str(exc)` says what is wrong and what is accepted."""


# ------------------------------------------------------------------------------------------ shared


def _resolve_model(model: str, catalog: Sequence[ModelInfo], kind: str) -> ModelInfo | None:
    """The catalog entry for `model` (case-insensitive). None when the catalog is empty (unavailable):
    then the gateway, not us, decides whether the id exists."""
    if not catalog:
        return None
    by_id = {m.id: m for m in catalog}
    if model in by_id:
        return by_id[model]
    folded = [m for m in catalog if m.id.lower() == model.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    ids = sorted(by_id)
    matches = close_matches(model, ids)
    rest = [i for i in ids if i not in matches]
    hint = f" Did you mean {', '.join(matches)}?" if matches else ""
    raise ArgumentProblem(
        f"model={model!r} is not an AllToken {kind} model.{hint} "
        f"{kind.capitalize()} models: {', '.join(matches + rest)}."
    )


def _check_prompt(prompt: str, model: str, max_length: int | None) -> None:
    if not prompt.strip():
        raise ArgumentProblem("prompt is empty: describe what to generate.")
    # AllToken counts runes (code points), which is what len() of a str counts.
    if max_length is not None and len(prompt) > max_length:
        raise ArgumentProblem(
            f"prompt is {len(prompt)} characters; {model} accepts at most {max_length}. Shorten it."
        )


def _check_choice(field: str, value: str, allowed: Sequence[str], model: str) -> str:
    """`value` matched case-insensitively against `allowed`; returns the canonical spelling."""
    for choice in allowed:
        if choice.lower() == value.strip().lower():
            return choice
    raise ArgumentProblem(f"{field}={value!r} is not allowed for {model}: use one of {', '.join(allowed)}.")


# ------------------------------------------------------------------------------------------- images

IMAGE_PROMPT_MAX = 32_000
IMAGE_N_MAX = 10
IMAGE_SEED_MAX = 2_147_483_647
IMAGE_CHOICES: Mapping[str, tuple[str, ...]] = {
    "quality": ("auto", "low", "medium", "high"),
    "output_format": ("png", "jpeg", "webp"),
    "background": ("auto", "opaque", "transparent"),
    "moderation": ("auto", "low"),
}
# §4.1: only the wan2.7 models honour `seed`; the others accept and ignore it.
SEEDED_IMAGE_PREFIXES = ("wan",)


@dataclass(frozen=True)
class SizeRule:
    """What WIDTHxHEIGHT a model takes. `max_long`/`max_short` bound the longer and shorter side, so a
    rule allows both orientations."""

    multiple_of: int
    max_long: int
    max_short: int
    min_side: int
    max_aspect: int  # longer side / shorter side

    def describe(self) -> str:
        parts = ['"auto" or WIDTHxHEIGHT']
        if self.multiple_of > 1:
            parts.append(f"both sides multiples of {self.multiple_of}")
        limit = f"at most {self.max_long}x{self.max_short}"
        if self.max_long != self.max_short:
            limit += f" (or {self.max_short}x{self.max_long})"
        parts.append(f"each side at least {self.min_side}, {limit}")
        parts.append(f"aspect ratio between 1:{self.max_aspect} and {self.max_aspect}:1")
        return ", ".join(parts)


# §4.1 gives the gpt-image-2 rule. No limits are published for the other models, so they get loose
# sanity bounds and the gateway decides the rest.
IMAGE_SIZE_RULES: Mapping[str, SizeRule] = {
    "gpt-image-2": SizeRule(multiple_of=16, max_long=3840, max_short=2160, min_side=256, max_aspect=3),
}
DEFAULT_SIZE_RULE = SizeRule(multiple_of=1, max_long=4096, max_short=4096, min_side=256, max_aspect=8)

_SIZE = re.compile(r"^\s*(\d{1,6})\s*[x×*]\s*(\d{1,6})\s*$", re.IGNORECASE)


def image_size_rule(model: str) -> SizeRule:
    """The size rule for `model`, also for dated variants such as `gpt-image-2-2026-05-01`."""
    for prefix, rule in IMAGE_SIZE_RULES.items():
        if model == prefix or model.startswith(prefix + "-"):
            return rule
    return DEFAULT_SIZE_RULE


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _check_size(size: str, model: str) -> str:
    """`size` normalised to "auto" or "WxH" (accepts 1024X1024, 1024×1024, 1024*1024)."""
    if size.strip().lower() == "auto":
        return "auto"
    rule = image_size_rule(model)
    accepted = f"{model} accepts {rule.describe()}."
    match = _SIZE.match(size)
    if match is None:
        raise ArgumentProblem(f"size={size!r} is not a size: {accepted}")
    width, height = int(match[1]), int(match[2])
    long, short = max(width, height), min(width, height)
    wrong = ""
    if rule.multiple_of > 1 and (width % rule.multiple_of or height % rule.multiple_of):
        nearest = f"{_round_to(width, rule.multiple_of)}x{_round_to(height, rule.multiple_of)}"
        wrong = f"both sides must be multiples of {rule.multiple_of} (nearest: {nearest})"
    elif short < rule.min_side:
        wrong = f"each side must be at least {rule.min_side}"
    elif long > rule.max_long or short > rule.max_short:
        wrong = f"it is larger than {rule.max_long}x{rule.max_short}"
    elif long > rule.max_aspect * short:
        wrong = f"the aspect ratio is beyond {rule.max_aspect}:1"
    if wrong:
        raise ArgumentProblem(f"size={size!r} is not allowed for {model}: {wrong}. {accepted}")
    return f"{width}x{height}"


def image_body(
    *,
    model: str,
    prompt: str,
    n: int,
    size: str,
    quality: str,
    output_format: str,
    background: str,
    moderation: str,
    seed: int | None,
    image_models: Sequence[ModelInfo],
) -> tuple[dict[str, Any], list[str]]:
    """The `POST /images/generations/async` body and any warnings, or `ArgumentProblem`.

    `image_models` is `/images/models`; when it is empty (listing unavailable) the model id is not checked.
    Every chosen value is sent, so the job record shows what was asked for; None fields are omitted.
    """
    info = _resolve_model(model, image_models, "image")
    model_id = info.id if info is not None else model
    _check_prompt(prompt, model_id, IMAGE_PROMPT_MAX)
    if isinstance(n, bool) or not 1 <= n <= IMAGE_N_MAX:
        raise ArgumentProblem(f"n={n} is not allowed: generate 1 to {IMAGE_N_MAX} images per call.")
    body: dict[str, Any] = {"model": model_id, "prompt": prompt, "n": n, "size": _check_size(size, model_id)}
    chosen = {
        "quality": quality,
        "output_format": output_format,
        "background": background,
        "moderation": moderation,
    }
    for field, value in chosen.items():
        body[field] = _check_choice(field, value, IMAGE_CHOICES[field], model_id)
    if body["background"] == "transparent" and body["output_format"] == "jpeg":
        raise ArgumentProblem(
            'background="transparent" needs an alpha channel, which jpeg lacks: '
            'use output_format="png" or "webp", or background="opaque"/"auto".'
        )
    warnings: list[str] = []
    if seed is not None:
        if isinstance(seed, bool) or not 0 <= seed <= IMAGE_SEED_MAX:
            raise ArgumentProblem(f"seed={seed} is out of range: use an integer 0–{IMAGE_SEED_MAX}.")
        body["seed"] = seed
        if not model_id.startswith(SEEDED_IMAGE_PREFIXES):
            seeded = [m.id for m in image_models if m.id.startswith(SEEDED_IMAGE_PREFIXES)]
            which = ", ".join(seeded) if seeded else "the wan2.7 models"
            warnings.append(
                f"seed is honoured only by {which}; {model_id} ignores it, "
                "so the same seed will not reproduce an image."
            )
    return body, warnings


# ------------------------------------------------------------------------------------------- videos

WIRE_RATIOS = ("16:9", "9:16", "4:3", "3:4", "21:9", "1:1", "adaptive")
WIRE_RESOLUTIONS = ("480p", "720p", "1080p")
# The feature flags of VideoCapabilities that alltoken_video exposes as arguments.
VIDEO_FEATURE_ARGS = ("generate_audio", "seed", "camera_fixed", "watermark", "return_last_frame")
INPUT_TYPE_LABELS: Mapping[str, str] = {
    "text": "text only",
    "image_first_frame": "a first frame",
    "image_first_last_frame": "first and last frames",
    "image_reference": "reference images",
    "video_reference": "reference videos",
    "multimodal": "mixed references",
    "draft_task": "a draft task",
}
DATA_URL_REMOVED = "2026-08-06"


@dataclass(frozen=True)
class AllowedDurations:
    """Allowed `duration` seconds: a range (min..max by step) or a list of values, plus whether -1 (the
    model picks) is allowed. None anywhere means "not published": that part is not checked."""

    min: int | None = None
    max: int | None = None
    step: int = 1
    values: tuple[int, ...] | None = None
    auto: bool | None = None
    default: int | None = None

    @classmethod
    def from_spec(cls, spec: DurationSpec, fallback: AllowedDurations | None) -> AllowedDurations:
        base = fallback or cls()
        enum = spec.type == "enum" or (spec.values is not None and spec.min is None and spec.max is None)
        return cls(
            min=spec.min if spec.min is not None else (None if enum else base.min),
            max=spec.max if spec.max is not None else (None if enum else base.max),
            step=spec.step if spec.step and spec.step > 0 else 1,
            values=tuple(spec.values) if enum and spec.values else None,
            auto=spec.supports_auto if spec.supports_auto is not None else base.auto,
            default=spec.default if spec.default is not None else base.default,
        )

    def allows(self, seconds: int) -> bool:
        if seconds == -1:
            return self.auto is not False
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
        if self.auto:
            text += ", or -1 for auto"
        return text


@dataclass(frozen=True)
class _Family:
    """§5.1's documented rules for a Seedance family, used where a model publishes no capabilities."""

    prefix: str
    durations: AllowedDurations
    resolutions: tuple[str, ...]
    camera_fixed: bool


_FAMILIES = (
    _Family("seedance-1.0-pro", AllowedDurations(2, 12, auto=False, default=5), WIRE_RESOLUTIONS, True),
    _Family("seedance-1.5-pro", AllowedDurations(4, 12, auto=True, default=5), WIRE_RESOLUTIONS, True),
    _Family("seedance-2.0", AllowedDurations(4, 15, auto=True, default=5), WIRE_RESOLUTIONS, False),
    _Family("seedance-2.5", AllowedDurations(4, 30, auto=True, default=5), ("480p", "720p"), False),
)


def _family(model: str) -> _Family | None:
    """Also matches variants: seedance-1.0-pro-fast, seedance-2.0-fast."""
    for family in _FAMILIES:
        if model == family.prefix or model.startswith(family.prefix + "-"):
            return family
    return None


@dataclass(frozen=True)
class VideoRules:
    """What one video model accepts, merged from its capabilities and the §5.1 family table.

    For each field None means "not published" (passed through unchecked). `*_fixed` means the model
    decides that value itself (a `null` in the capabilities), so the caller must leave it out.
    """

    model: str
    published: bool  # the model has capabilities, or a documented family rule
    durations: AllowedDurations | None = None
    duration_fixed: bool = False
    ratios: tuple[str, ...] | None = None
    ratio_fixed: bool = False
    resolutions: tuple[str, ...] | None = None
    resolution_fixed: bool = False
    features: Mapping[str, bool] | None = None
    prompt_max: int | None = None
    input_types: tuple[str, ...] | None = None
    image_count: tuple[int | None, int | None] | None = None
    allowed_roles: tuple[str, ...] | None = None


def _choices(
    caps: VideoCapabilities, field: Literal["ratios", "resolutions"]
) -> tuple[bool, list[str] | None]:
    """(published, values) for ratios/resolutions; values None with published=True means "fixed"."""
    if field not in caps.model_fields_set or getattr(caps, field) is None:
        return False, None
    choices = getattr(caps, field)
    return True, choices.values


def video_rules(info: ModelInfo) -> VideoRules:
    """What `info` accepts: each published capability, else the §5.1 family rule for that field."""
    family = _family(info.id)
    caps = info.capabilities
    features: dict[str, bool] = {}
    if family is not None:
        features["camera_fixed"] = family.camera_fixed
    if caps is None:
        if family is None:
            # §5.1: camera_fixed exists only on seedance-1.0-pro / 1.5-pro, whatever else is unknown.
            return VideoRules(model=info.id, published=False, features={"camera_fixed": False})
        return VideoRules(
            model=info.id,
            published=True,
            durations=family.durations,
            resolutions=family.resolutions,
            features=features,
        )

    durations: AllowedDurations | None = family.durations if family else None
    duration_fixed = "duration" in caps.model_fields_set and caps.duration is None
    if caps.duration is not None:
        durations = AllowedDurations.from_spec(caps.duration, durations)
    ratios_published, ratios = _choices(caps, "ratios")
    res_published, resolutions = _choices(caps, "resolutions")
    if not res_published and family is not None:
        res_published, resolutions = True, list(family.resolutions)
    if caps.features is not None:
        published = caps.features.model_dump(include=set(VIDEO_FEATURE_ARGS), exclude_none=True)
        features.update(published)
    if "camera_fixed" not in features:
        features["camera_fixed"] = False  # §5.1: only seedance-1.0-pro / 1.5-pro have it
    content = caps.content
    counts = content.image_count if content is not None else None
    roles = content.allowed_roles if content is not None else None
    return VideoRules(
        model=info.id,
        published=True,
        durations=None if duration_fixed else durations,
        duration_fixed=duration_fixed,
        ratios=tuple(ratios) if ratios else None,
        ratio_fixed=ratios_published and not ratios,
        resolutions=tuple(resolutions) if resolutions else None,
        resolution_fixed=res_published and not resolutions,
        features=features,
        prompt_max=caps.prompt.max_length if caps.prompt is not None else None,
        input_types=tuple(caps.input_types) if caps.input_types is not None else None,
        image_count=(counts.min, counts.max) if counts is not None else None,
        allowed_roles=tuple(roles) if roles is not None else None,
    )


def _inputs_text(input_types: Sequence[str]) -> str:
    return ", ".join(INPUT_TYPE_LABELS.get(kind, kind) for kind in input_types)


def describe_video_model(model: ModelInfo) -> str:
    """One line: what `model` accepts (durations, ratios, resolutions, inputs, options, prompt limit)."""
    rules = video_rules(model)
    if not rules.published:
        return f"{model.id}: no published constraints (duration, ratio and resolution are passed through)"
    parts: list[str] = []
    if rules.duration_fixed:
        parts.append("duration set by the model")
    elif rules.durations is not None:
        default = f" (default {rules.durations.default})" if rules.durations.default is not None else ""
        parts.append(f"duration {rules.durations.describe()}{default}")
    if rules.ratio_fixed:
        parts.append("ratio set by the model")
    elif rules.ratios:
        parts.append("ratios " + ", ".join(rules.ratios))
    if rules.resolution_fixed:
        parts.append("one resolution")
    elif rules.resolutions:
        parts.append("resolutions " + ", ".join(rules.resolutions))
    if rules.input_types:
        parts.append("inputs: " + _inputs_text(rules.input_types))
    options = [name for name in VIDEO_FEATURE_ARGS if (rules.features or {}).get(name)]
    if options:
        parts.append("options " + ", ".join(options))
    if rules.prompt_max is not None:
        parts.append(f"prompt ≤ {rules.prompt_max} characters")
    return f"{model.id}: " + "; ".join(parts)


@dataclass(frozen=True)
class FrameRef:
    """A first or last frame, produced by the tool layer after any upload: exactly one of `url` (https)
    or `upload_id` (from /uploads/presign with purpose video_input_image)."""

    role: Literal["first_frame", "last_frame"]
    url: str | None = None
    upload_id: str | None = None


_ROLE_ORDER = {"first_frame": 0, "last_frame": 1}


def _frame_item(frame: FrameRef) -> dict[str, Any]:
    label = frame.role.replace("_", " ")
    if frame.role not in _ROLE_ORDER:
        raise ArgumentProblem(f"frame role {frame.role!r} is unknown: use first_frame or last_frame.")
    if (frame.url is None) == (frame.upload_id is None):
        raise ArgumentProblem(f"the {label} needs exactly one of an https URL or a local file.")
    if frame.upload_id is not None:
        return {"type": "image", "upload_id": frame.upload_id, "role": frame.role}
    url = (frame.url or "").strip()
    if url[:5].lower() == "data:":
        raise ArgumentProblem(
            f"the {label} is an inline data: URL, which AllToken stopped accepting on {DATA_URL_REMOVED}: "
            "pass a local file path instead (it is uploaded for you) or an https URL."
        )
    if not url.lower().startswith("https://") or len(url) <= len("https://"):
        raise ArgumentProblem(
            f"the {label} URL {url[:80]!r} is not https: use a public https URL or a local file path."
        )
    return {"type": "image_url", "image_url": {"url": url}, "role": frame.role}


def _models_taking(input_type: str, video_models: Sequence[ModelInfo]) -> list[str]:
    return [m.id for m in video_models if input_type in (video_rules(m).input_types or ())]


def _check_frames(
    frames: Sequence[FrameRef], rules: VideoRules, video_models: Sequence[ModelInfo]
) -> list[dict[str, Any]]:
    items = sorted((_frame_item(f) for f in frames), key=lambda item: _ROLE_ORDER[item["role"]])
    roles = [item["role"] for item in items]
    for role in _ROLE_ORDER:
        if roles.count(role) > 1:
            raise ArgumentProblem(f"{roles.count(role)} images were given as the {role}: give at most one.")
    if "last_frame" in roles and "first_frame" not in roles:
        raise ArgumentProblem(
            "a last frame was given without a first frame: add first_frame (or pass the image as the "
            "first frame instead)."
        )
    needed = {0: "text", 1: "image_first_frame", 2: "image_first_last_frame"}[len(roles)]
    model = rules.model
    if rules.input_types is not None and needed not in rules.input_types:
        takes = _inputs_text(rules.input_types)
        others = [i for i in _models_taking(needed, video_models) if i != model]
        alternatives = (
            f" Models that take {INPUT_TYPE_LABELS[needed]}: {', '.join(others)}." if others else ""
        )
        raise ArgumentProblem(
            f"{model} does not take {INPUT_TYPE_LABELS[needed]} (frames: {', '.join(roles) or 'none'}); "
            f"it takes {takes}.{alternatives}"
        )
    if rules.allowed_roles is not None:
        for role in roles:
            if role not in rules.allowed_roles:
                raise ArgumentProblem(
                    f"{model} does not take a {role}; its image roles are: "
                    f"{', '.join(rules.allowed_roles) or 'none'}."
                )
    if rules.image_count is not None:
        low, high = rules.image_count
        if (low is not None and len(items) < low) or (high is not None and len(items) > high):
            span = f"{low if low is not None else 0}–{high if high is not None else 'any'}"
            raise ArgumentProblem(f"{model} takes {span} input images; {len(items)} were given.")
    return items


def _check_duration(duration: int, rules: VideoRules) -> int | None:
    """The duration to send; None for 0, which the wire reads as "the default" just like omitting it."""
    if isinstance(duration, bool):
        raise ArgumentProblem(f"duration={duration} is not a number of seconds.")
    if duration == 0:
        return None
    if rules.duration_fixed:
        raise ArgumentProblem(
            f"duration={duration} is not allowed for {rules.model}: the model decides "
            "the length itself; omit duration."
        )
    allowed = rules.durations or AllowedDurations()
    if not allowed.allows(duration):
        raise ArgumentProblem(
            f"duration={duration} is not allowed for {rules.model}: use {allowed.describe()}."
        )
    return duration


def _check_value(
    field: str, value: str, allowed: tuple[str, ...] | None, fixed: bool, wire: tuple[str, ...], model: str
) -> str:
    if fixed:
        raise ArgumentProblem(
            f"{field}={value!r} is not allowed for {model}: the model sets the {field} itself; omit {field}."
        )
    return _check_choice(field, value, allowed or wire, model)


def video_body(
    *,
    model: str,
    prompt: str,
    duration: int | None,
    ratio: str | None,
    resolution: str | None,
    generate_audio: bool | None,
    seed: int | None,
    camera_fixed: bool | None,
    watermark: bool | None,
    return_last_frame: bool | None,
    frames: Sequence[FrameRef],
    video_models: Sequence[ModelInfo],
) -> tuple[dict[str, Any], list[str]]:
    """The `POST /videos/generations` body and any warnings, or `ArgumentProblem`.

    `video_models` is `/videos/models` (with capabilities); when it is empty (listing unavailable) the
    model id is not checked and the §5.1 family rules apply. None arguments are omitted (upstream
    default); False is sent as chosen.
    """
    info = _resolve_model(model, video_models, "video")
    rules = video_rules(info if info is not None else ModelInfo(id=model, object="video"))
    model_id = rules.model
    _check_prompt(prompt, model_id, rules.prompt_max)
    body: dict[str, Any] = {"model": model_id, "prompt": prompt}
    content = _check_frames(frames, rules, video_models)
    if content:
        body["content"] = content
    if duration is not None and (seconds := _check_duration(duration, rules)) is not None:
        body["duration"] = seconds
    if ratio is not None:
        body["ratio"] = _check_value("ratio", ratio, rules.ratios, rules.ratio_fixed, WIRE_RATIOS, model_id)
    if resolution is not None:
        body["resolution"] = _check_value(
            "resolution", resolution, rules.resolutions, rules.resolution_fixed, WIRE_RESOLUTIONS, model_id
        )
    options: dict[str, bool | int | None] = {
        "generate_audio": generate_audio,
        "seed": seed,
        "camera_fixed": camera_fixed,
        "watermark": watermark,
        "return_last_frame": return_last_frame,
    }
    features = rules.features or {}
    for name, value in options.items():
        if value is None:
            continue
        asked = value is not False  # a seed, or a flag turned on
        if asked and features.get(name) is False:
            supported = [n for n in VIDEO_FEATURE_ARGS if features.get(n)]
            has = f"its options are: {', '.join(supported)}" if supported else "it has none of these options"
            shown = "true" if value is True else value
            raise ArgumentProblem(
                f"{name}={shown} is not supported by {model_id} ({has}); omit {name} or pick another model."
            )
        body[name] = value
    warnings: list[str] = []
    unchecked = [f for f in ("duration", "ratio", "resolution") if f in body]
    if not rules.published and unchecked:
        warnings.append(
            f"{model_id} publishes no constraints, so {', '.join(unchecked)} were checked only against "
            "AllToken's general rules; the model may still reject them."
        )
    return body, warnings
