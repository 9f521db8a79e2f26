"""Turn alltoken_image / alltoken_video arguments into AllToken wire bodies, or say exactly what is wrong.

Pure functions, no I/O: the media tools call them before anything is sent or paid for. A refusal is an
`ArgumentProblem` whose text names the field, the bad value and everything this model accepts for that
field, so the calling model can fix its call in one step. Things that are legal but probably not what
the caller meant (a seed the model ignores) come back as warnings next to the body instead.

What a video model accepts is the catalog's answer (`VideoRules`, see alltoken_mcp/catalog/rules.py):
the same rules `list_models` shows are the ones checked here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alltoken_mcp.catalog import (
    INPUT_TYPE_LABELS,
    VIDEO_OPTIONS,
    WIRE_RATIOS,
    WIRE_RESOLUTIONS,
    DurationRule,
    ImageOperation,
    ModelEntry,
    VideoRules,
    find_model,
    image_models_for,
    inputs_text,
    video_rules_of,
)
from alltoken_mcp.tools.error_text import close_matches


class ArgumentProblem(ValueError):
    """A tool argument this model cannot take; `str(exc)` says what is wrong and what is accepted."""


# ------------------------------------------------------------------------------------------ shared


def _resolve_model(model: str, catalog: Sequence[ModelEntry], kind: str) -> ModelEntry | None:
    """The catalog entry for `model` (case-insensitive). None when the catalog is empty (unavailable):
    then the gateway, not us, decides whether the id exists."""
    if not catalog:
        return None
    found = find_model(catalog, model)
    if found is not None:
        return found
    ids = sorted(m.id for m in catalog)
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


# §4.3: what a variation takes besides the model and the image; the other options must stay at these.
VARIATION_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
IMAGE_DEFAULTS: Mapping[str, object] = {
    "n": 1,
    "quality": "auto",
    "output_format": "png",
    "background": "auto",
    "moderation": "auto",
    "seed": None,
}
_DOING = {
    "generation": "generate images from a prompt",
    "edit": "edit images",
    "variation": "make variations",
}
_ASKING = {"generation": "a prompt", "edit": "image and prompt", "variation": "image and variation=true"}


@dataclass(frozen=True)
class ImageInputs:
    """The uploads of an edit (image, optional mask) or a variation (image): upload ids, or stand-ins
    while the arguments are checked before anything is uploaded."""

    image_upload_id: str
    mask_upload_id: str | None = None
    variation: bool = False

    @property
    def operation(self) -> ImageOperation:
        return "variation" if self.variation else "edit"


def image_operation(*, image: bool, mask: bool, variation: bool) -> ImageOperation:
    """What alltoken_image is asked to do: no image generates, an image edits, variation=true varies."""
    if variation and not image:
        raise ArgumentProblem("variation=true needs image: the picture to make variations of.")
    if mask and not image:
        raise ArgumentProblem("mask needs image: the picture whose masked areas are edited.")
    if mask and variation:
        raise ArgumentProblem("mask applies to edits, not variations: drop mask, or drop variation to edit.")
    return "variation" if variation else "edit" if image else "generation"


def image_model(
    requested: str | None, default: str, operation: ImageOperation, image_models: Sequence[ModelEntry]
) -> tuple[str, list[str]]:
    """The model to use, and a warning when the default was replaced: left unset, a model that can do
    `operation` (the default when it can) rather than a refusal."""
    if requested is not None or not image_models:
        return requested or default, []
    info = find_model(image_models, default)
    able = image_models_for(image_models, operation)
    if not able or (
        info is not None and info.image is not None and info.image.allows(operation) is not False
    ):
        return default, []
    return able[0], [f"Used {able[0]}: the default image model {default} cannot {_DOING[operation]}."]


def _check_operation(
    info: ModelEntry | None, model: str, operation: ImageOperation, image_models: Sequence[ModelEntry]
) -> None:
    """Refuse a model the catalog says cannot do `operation`, naming the ones that can."""
    if info is None or info.image is None or info.image.allows(operation) is not False:
        return
    able = image_models_for(image_models, operation)
    operations: tuple[ImageOperation, ...] = ("generation", "edit", "variation")
    does = [o for o in operations if info.image.allows(o)]
    instead = f" It can {' and '.join(_DOING[o] for o in does)} (give {_ASKING[does[0]]})." if does else ""
    which = f"models that can: {', '.join(able)}" if able else "no listed model can"
    raise ArgumentProblem(f"{model} cannot {_DOING[operation]}; {which}.{instead}")


def _variation_body(
    model_id: str, inputs: ImageInputs, prompt: str | None, size: str, options: Mapping[str, object]
) -> dict[str, Any]:
    """§4.3: a variation takes the model, the image and a size; everything else is refused by name."""
    if prompt is not None:
        raise ArgumentProblem(
            "variations take no prompt: drop prompt, or drop variation=true to edit the image with it."
        )
    extra = [f"{k}={v!r}" for k, v in options.items() if v != IMAGE_DEFAULTS[k]]
    if extra:
        raise ArgumentProblem(
            f"variations take only image, model and size; drop {', '.join(extra)}, "
            "or give a prompt instead of variation=true to edit the image."
        )
    wanted = size.strip().lower()
    if wanted not in VARIATION_SIZES:
        raise ArgumentProblem(
            f"size={size!r} is not allowed for variations: use {', '.join(VARIATION_SIZES)}."
        )
    return {"model": model_id, "image_upload_id": inputs.image_upload_id, "size": wanted}


def image_body(
    *,
    model: str,
    prompt: str | None,
    n: int,
    size: str,
    quality: str,
    output_format: str,
    background: str,
    moderation: str,
    seed: int | None,
    image_models: Sequence[ModelEntry],
    inputs: ImageInputs | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The create body and any warnings, or `ArgumentProblem`: a generation (`POST
    /images/generations/async`), or with `inputs` an edit or a variation (§4.3; the client picks the
    endpoint from the body).

    `image_models` is `/images/models`; when it is empty (listing unavailable) the model id is not checked.
    Every chosen value is sent, so the job record shows what was asked for; None fields are omitted.
    """
    info = _resolve_model(model, image_models, "image")
    model_id = info.id if info is not None else model
    operation: ImageOperation = inputs.operation if inputs is not None else "generation"
    _check_operation(info, model_id, operation, image_models)
    if inputs is not None and inputs.variation:
        options = {
            "n": n,
            "quality": quality,
            "output_format": output_format,
            "background": background,
            "moderation": moderation,
            "seed": seed,
        }
        return _variation_body(model_id, inputs, prompt, size, options), []
    if prompt is None:
        needs = "what to change in the image" if inputs is not None else "what to draw"
        raise ArgumentProblem(f"prompt is required: say {needs} (only variation=true takes none).")
    _check_prompt(prompt, model_id, IMAGE_PROMPT_MAX)
    if isinstance(n, bool) or not 1 <= n <= IMAGE_N_MAX:
        raise ArgumentProblem(f"n={n} is not allowed: generate 1 to {IMAGE_N_MAX} images per call.")
    body: dict[str, Any] = {"model": model_id, "prompt": prompt, "n": n, "size": _check_size(size, model_id)}
    if inputs is not None:
        body["image_upload_id"] = inputs.image_upload_id
        if inputs.mask_upload_id is not None:
            body["mask_upload_id"] = inputs.mask_upload_id
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
    if seed is not None and inputs is not None:
        raise ArgumentProblem("seed applies to generating images, not edits (§4.3 takes none): drop seed.")
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

DATA_URL_REMOVED = "2026-08-06"


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


def _models_taking(input_type: str, video_models: Sequence[ModelEntry]) -> list[str]:
    return [m.id for m in video_models if m.video is not None and input_type in (m.video.input_types or ())]


def _check_frames(
    frames: Sequence[FrameRef], model: str, rules: VideoRules, video_models: Sequence[ModelEntry]
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
    if rules.input_types is not None and needed not in rules.input_types:
        takes = inputs_text(rules.input_types)
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
        low, high = rules.image_count.min, rules.image_count.max
        if (low is not None and len(items) < low) or (high is not None and len(items) > high):
            span = f"{low if low is not None else 0}–{high if high is not None else 'any'}"
            raise ArgumentProblem(f"{model} takes {span} input images; {len(items)} were given.")
    return items


def _check_duration(duration: int, model: str, rules: VideoRules) -> int | None:
    """The duration to send; None for 0, which the wire reads as "the default" just like omitting it."""
    if isinstance(duration, bool):
        raise ArgumentProblem(f"duration={duration} is not a number of seconds.")
    if duration == 0:
        return None
    if rules.duration_fixed:
        raise ArgumentProblem(
            f"duration={duration} is not allowed for {model}: the model decides "
            "the length itself; omit duration."
        )
    allowed = rules.durations or DurationRule()
    if not allowed.allows(duration):
        raise ArgumentProblem(f"duration={duration} is not allowed for {model}: use {allowed.describe()}.")
    return duration


def _check_value(
    field: str, value: str, allowed: Sequence[str] | None, fixed: bool, wire: Sequence[str], model: str
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
    video_models: Sequence[ModelEntry],
) -> tuple[dict[str, Any], list[str]]:
    """The `POST /videos/generations` body and any warnings, or `ArgumentProblem`.

    `video_models` are the catalog's video models, each with its `VideoRules`; when there are none
    (listing unavailable) the model id is not checked and its family's rules apply. None arguments are
    omitted (upstream default); False is sent as chosen.
    """
    info = _resolve_model(model, video_models, "video")
    model_id = info.id if info is not None else model
    rules = video_rules_of(info, model_id)
    _check_prompt(prompt, model_id, rules.prompt_max_length)
    body: dict[str, Any] = {"model": model_id, "prompt": prompt}
    content = _check_frames(frames, model_id, rules, video_models)
    if content:
        body["content"] = content
    if duration is not None and (seconds := _check_duration(duration, model_id, rules)) is not None:
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
    features = rules.features
    for name, value in options.items():
        if value is None:
            continue
        asked = value is not False  # a seed, or a flag turned on
        if asked and features.get(name) is False:
            supported = [n for n in VIDEO_OPTIONS if features.get(n)]
            has = f"its options are: {', '.join(supported)}" if supported else "it has none of these options"
            shown = "true" if value is True else value
            raise ArgumentProblem(
                f"{name}={shown} is not supported by {model_id} ({has}); omit {name} or pick another model."
            )
        body[name] = value
    warnings: list[str] = []
    unchecked = [f for f in ("duration", "ratio", "resolution") if f in body]
    if rules.source == "none" and unchecked:
        warnings.append(
            f"{model_id} publishes no constraints, so {', '.join(unchecked)} were checked only against "
            "AllToken's general rules; the model may still reject them."
        )
    return body, warnings
