"""media_args: tool arguments → AllToken wire bodies, or an ArgumentProblem naming field, value and what
the model accepts.

The capabilities come from the simulator's real `/videos/models` and `/images/models` answers (and its
`/v1/models`, whose video entries carry no capabilities, for the §5.1 fallback), fetched once for the
module. Bodies the checks accept are submitted to the same simulator, so "accepted here" is shown to
mean "accepted by the server"; for the rules the gateway enforces itself, the raw value is shown to be
rejected there too. Hand-built ModelInfo objects cover shapes the simulator does not publish (enum
durations, steps, prompt limits, a capability-less unknown family). Every listing goes through the
catalog's `merge_listings`, as the server's does, so the rules checked are the ones the catalog computes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from alltoken_mcp.catalog import ModelEntry, VideoRules, merge_listings
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.client.models import ModelInfo
from alltoken_mcp.errors import BadRequestError
from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator
from alltoken_mcp.tools.media_args import (
    ArgumentProblem,
    FrameRef,
    ImageInputs,
    image_body,
    image_model,
    video_body,
)

HTTPS_PNG = "https://example.com/frames/first.png"
FIRST_ITEM = {"type": "image_url", "image_url": {"url": HTTPS_PNG}, "role": "first_frame"}


@dataclass(frozen=True)
class Live:
    client: AllTokenClient
    videos: list[ModelEntry]  # /videos/models, with capabilities
    images: list[ModelEntry]  # /images/models
    bare_videos: list[ModelEntry]  # the video entries of /v1/models: no capabilities


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def live(anyio_backend: str) -> AsyncIterator[Live]:
    async with (
        serve_simulator(SimConfig(speed=0.01)) as sim,
        AllTokenClient(sim.base_url, SIM_API_KEY) as client,
    ):
        videos = entries(await client.list_video_models())
        images = entries(await client.list_image_models())
        bare = entries([m for m in await client.list_models() if m.object == "video"])
        yield Live(client, videos, images, bare)


def entries(listing: Sequence[ModelInfo]) -> list[ModelEntry]:
    return merge_listings(listing, [], [], [])


def by_id(models: Sequence[ModelEntry], model_id: str) -> ModelEntry:
    return next(m for m in models if m.id == model_id)


def rules(entry: ModelEntry) -> VideoRules:
    assert entry.video is not None
    return entry.video


def video_args(models: Sequence[ModelEntry], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": "seedance-2.0",
        "prompt": "a horse galloping on a beach at dusk",
        "duration": None,
        "ratio": None,
        "resolution": None,
        "generate_audio": None,
        "seed": None,
        "camera_fixed": None,
        "watermark": None,
        "return_last_frame": None,
        "frames": (),
        "video_models": models,
    }
    return {**args, **overrides}


def image_args(models: Sequence[ModelEntry], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": "gpt-image-2",
        "prompt": "a lighthouse in a storm, oil painting",
        "n": 1,
        "size": "auto",
        "quality": "low",
        "output_format": "png",
        "background": "auto",
        "moderation": "auto",
        "seed": None,
        "image_models": models,
    }
    return {**args, **overrides}


def problem_text(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ArgumentProblem) as caught:
        call(**kwargs)
    return str(caught.value)


def first(url: str | None = HTTPS_PNG, upload_id: str | None = None) -> FrameRef:
    return FrameRef("first_frame", url=url, upload_id=upload_id)


def last(url: str | None = "https://example.com/frames/last.png", upload_id: str | None = None) -> FrameRef:
    return FrameRef("last_frame", url=url, upload_id=upload_id)


# ------------------------------------------------------------------------ videos: simulator catalog

VIDEO_PROBLEMS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown model, close match first", {"model": "seedence-2.0"}, ["model='seedence-2.0'", "seedance-2.0"]),
    (
        "duration below the range",
        {"model": "seedance-1.5-pro", "duration": 3},
        ["duration=3", "4–12 s", "-1"],
    ),
    ("duration above the range", {"model": "seedance-2.0", "duration": 16}, ["duration=16", "4–15 s"]),
    ("seedance-2.5 goes to 30 s only", {"model": "seedance-2.5", "duration": 31}, ["duration=31", "4–30 s"]),
    (
        "auto where it is not offered",
        {"model": "seedance-1.0-pro", "duration": -1},
        ["duration=-1", "2–12 s"],
    ),
    ("negative duration", {"duration": -5}, ["duration=-5", "4–15 s, or -1 for auto"]),
    (
        "ratio not offered",
        {"model": "happyhorse-1.0-t2v", "ratio": "21:9"},
        ["ratio='21:9'", "16:9, 9:16, 1:1"],
    ),
    ("ratio not a ratio", {"ratio": "2:1"}, ["ratio='2:1'", "16:9, 9:16, 4:3, 3:4, 21:9, 1:1, adaptive"]),
    (
        "ratio on a model that sets it",
        {"model": "happyhorse-1.0-i2v", "ratio": "16:9", "frames": (first(),)},
        ["ratio='16:9'", "happyhorse-1.0-i2v", "omit ratio"],
    ),
    (
        "1080p on seedance-2.5",
        {"model": "seedance-2.5", "resolution": "1080p"},
        ["resolution='1080p'", "480p, 720p"],
    ),
    (
        "480p on happyhorse",
        {"model": "happyhorse-1.0-t2v", "resolution": "480p"},
        ["resolution='480p'", "720p, 1080p"],
    ),
    (
        "camera_fixed where the feature is off",
        {"camera_fixed": True},
        ["camera_fixed=true", "seedance-2.0", "generate_audio, seed, watermark, return_last_frame"],
    ),
    (
        "audio where the feature is off",
        {"model": "seedance-1.0-pro", "generate_audio": True},
        ["generate_audio=true", "seedance-1.0-pro", "camera_fixed"],
    ),
    (
        "last frame where the feature is off",
        {"model": "happyhorse-1.0-t2v", "return_last_frame": True},
        ["return_last_frame=true", "seed, watermark"],
    ),
    (
        "text only on an image-to-video model",
        {"model": "happyhorse-1.0-i2v"},
        ["happyhorse-1.0-i2v", "text only", "a first frame", "happyhorse-1.0-t2v"],
    ),
    (
        "first and last frames where only a first frame is taken",
        {"model": "seedance-1.0-pro-fast", "frames": (first(), last())},
        [
            "seedance-1.0-pro-fast",
            "first and last frames",
            "it takes text only, a first frame",
            "seedance-1.5-pro",
        ],
    ),
    (
        "a first frame on a text-only model",
        {"model": "happyhorse-1.0-t2v", "frames": (first(),)},
        ["happyhorse-1.0-t2v", "does not take a first frame", "seedance-2.0"],
    ),
    (
        "a reference-only model cannot be driven by frames",
        {"model": "happyhorse-1.0-r2v", "frames": (first(),)},
        ["happyhorse-1.0-r2v", "reference images"],
    ),
    ("a last frame alone", {"frames": (last(),)}, ["last frame", "first_frame"]),
    ("two first frames", {"frames": (first(), first(upload_id=None))}, ["2 images", "first_frame"]),
    (
        "an http URL",
        {"frames": (first("http://example.com/a.png"),)},
        ["http://example.com/a.png", "https", "local file"],
    ),
    ("an ftp URL", {"frames": (first("ftp://example.com/a.png"),)}, ["ftp://", "https"]),
    (
        "a data: URL",
        {"frames": (last(), first("data:image/png;base64,iVBORw0K"))},
        ["data:", "2026-08-06", "local file"],
    ),
    ("a frame with neither source", {"frames": (first(url=None),)}, ["first frame", "exactly one"]),
    ("a frame with both sources", {"frames": (first(upload_id="upl_1"),)}, ["first frame", "exactly one"]),
    ("an empty prompt", {"prompt": "   "}, ["prompt is empty"]),
    (
        "a prompt over the model's limit",
        {"model": "happyhorse-1.0-t2v", "prompt": "x" * 5001},
        ["5001", "at most 5000"],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), [c[1:] for c in VIDEO_PROBLEMS], ids=[c[0] for c in VIDEO_PROBLEMS]
)
def test_video_arguments_a_model_does_not_take_are_refused_with_what_it_accepts(
    live: Live, overrides: dict[str, Any], fragments: list[str]
) -> None:
    text = problem_text(video_body, **video_args(live.videos, **overrides))
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from: {text}"


def test_an_unknown_video_model_lists_every_model_close_matches_first(live: Live) -> None:
    text = problem_text(video_body, **video_args(live.videos, model="seedence-2.0"))
    assert "Did you mean seedance-2.0" in text
    listed = text.split("Video models: ")[1].rstrip(".").split(", ")
    assert sorted(listed) == sorted(m.id for m in live.videos)
    assert listed[0] == "seedance-2.0"


VIDEO_ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("text only: only model and prompt are sent", {}, {}),
    (
        "range edges",
        {"model": "seedance-2.5", "duration": 30, "resolution": "720p"},
        {"duration": 30, "resolution": "720p"},
    ),
    ("lowest duration", {"model": "seedance-1.0-pro", "duration": 2}, {"duration": 2}),
    ("auto duration", {"model": "seedance-1.5-pro", "duration": -1}, {"duration": -1}),
    ("duration 0 means the default and is omitted", {"duration": 0}, {}),
    (
        "spelling is normalised",
        {"model": "Seedance-2.0", "ratio": "Adaptive", "resolution": "1080P"},
        {"ratio": "adaptive", "resolution": "1080p"},
    ),
    (
        "every option the model has",
        {
            "model": "seedance-1.5-pro",
            "generate_audio": True,
            "seed": 7,
            "camera_fixed": True,
            "watermark": True,
            "return_last_frame": True,
        },
        {
            "generate_audio": True,
            "seed": 7,
            "camera_fixed": True,
            "watermark": True,
            "return_last_frame": True,
        },
    ),
    (
        "false is sent even for an option the model lacks",
        {"camera_fixed": False, "generate_audio": False},
        {"camera_fixed": False, "generate_audio": False},
    ),
    (
        "a first frame by URL",
        {"frames": (first(),)},
        {"content": [FIRST_ITEM]},
    ),
    (
        "first and last frames, first frame first whatever the order given",
        {"model": "seedance-1.0-pro", "frames": (last(), first())},
        {
            "content": [
                FIRST_ITEM,
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/frames/last.png"},
                    "role": "last_frame",
                },
            ]
        },
    ),
    (
        "image-to-video with its one frame",
        {"model": "happyhorse-1.0-i2v", "frames": (first(),), "duration": 3},
        {"duration": 3, "content": [FIRST_ITEM]},
    ),
    (
        "a prompt exactly at the limit, counted in characters",
        {"model": "happyhorse-1.0-t2v", "prompt": "é" * 5000},
        {},
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in VIDEO_ACCEPTED], ids=[c[0] for c in VIDEO_ACCEPTED]
)
async def test_video_arguments_a_model_takes_become_a_body_the_server_accepts(
    live: Live, overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    args = video_args(live.videos, **overrides)
    body, warnings = video_body(**args)
    assert body == {"model": args["model"].lower(), "prompt": args["prompt"], **expected}
    assert warnings == []
    task = await live.client.create_video(body, idempotency_key=str(uuid.uuid4()))
    assert task.status == "queued"
    assert task.model == body["model"]


def test_an_uploaded_frame_becomes_an_image_item_with_its_upload_id(live: Live) -> None:
    body, _ = video_body(**video_args(live.videos, frames=(first(url=None, upload_id="upl_abc"), last())))
    assert body["content"][0] == {"type": "image", "upload_id": "upl_abc", "role": "first_frame"}
    assert body["content"][1]["role"] == "last_frame"


@pytest.mark.parametrize(
    ("raw", "refused_here"),
    [
        ({"model": "seedance-1.5-pro", "duration": 3}, {"duration": 3}),
        ({"model": "seedance-1.0-pro", "duration": -1}, {"duration": -1}),
        ({"model": "seedance-2.5", "resolution": "1080p"}, {"resolution": "1080p"}),
        (
            {
                "model": "seedance-2.0",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
            },
            {"frames": (first("data:image/png;base64,AA"),)},
        ),
    ],
)
async def test_what_the_checks_refuse_the_server_refuses_too(
    live: Live, raw: dict[str, Any], refused_here: dict[str, Any]
) -> None:
    with pytest.raises(ArgumentProblem):
        video_body(**video_args(live.videos, model=raw["model"], **refused_here))
    with pytest.raises(BadRequestError):
        await live.client.create_video({"prompt": "a horse", **raw}, idempotency_key=str(uuid.uuid4()))


async def test_every_simulator_model_that_takes_text_or_a_first_frame_gets_a_body_the_server_accepts(
    live: Live,
) -> None:
    refused = []
    for info in live.videos:
        types = rules(info).input_types
        frames = () if types is None or "text" in types else (first(),)
        try:
            body, _ = video_body(**video_args(live.videos, model=info.id, frames=frames))
        except ArgumentProblem:
            refused.append(info.id)
            continue
        task = await live.client.create_video(body, idempotency_key=str(uuid.uuid4()))
        assert task.status == "queued"
    # alltoken_video drives text and first/last frames only; these two take references.
    assert refused == ["happyhorse-1.0-r2v", "happyhorse-1.0-video-edit"]


# ------------------------------------------------------------ videos: no capabilities (§5.1 fallback)

FALLBACK_PROBLEMS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "seedance-2.5 1080p",
        {"model": "seedance-2.5", "resolution": "1080p"},
        ["resolution='1080p'", "480p, 720p"],
    ),
    (
        "seedance-2.5 31 s",
        {"model": "seedance-2.5", "duration": 31},
        ["duration=31", "4–30 s, or -1 for auto"],
    ),
    (
        "1.0-pro-fast has no auto",
        {"model": "seedance-1.0-pro-fast", "duration": -1},
        ["duration=-1", "2–12 s"],
    ),
    ("1.5-pro from 4 s", {"model": "seedance-1.5-pro", "duration": 3}, ["duration=3", "4–12 s"]),
    ("2.0-fast to 15 s", {"model": "seedance-2.0-fast", "duration": 16}, ["duration=16", "4–15 s"]),
    (
        "camera_fixed only on 1.0-pro/1.5-pro",
        {"model": "seedance-2.0", "camera_fixed": True},
        ["camera_fixed=true", "seedance-2.0"],
    ),
    (
        "camera_fixed on an unknown family",
        {"model": "happyhorse-1.0-t2v", "camera_fixed": True},
        ["camera_fixed=true"],
    ),
    (
        "the wire's ratio list still applies",
        {"model": "happyhorse-1.0-t2v", "ratio": "2:1"},
        ["ratio='2:1'", "21:9"],
    ),
    (
        "the wire's resolution list still applies",
        {"model": "happyhorse-1.0-t2v", "resolution": "4k"},
        ["resolution='4k'", "480p, 720p, 1080p"],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), [c[1:] for c in FALLBACK_PROBLEMS], ids=[c[0] for c in FALLBACK_PROBLEMS]
)
def test_without_capabilities_the_documented_family_rules_apply(
    live: Live, overrides: dict[str, Any], fragments: list[str]
) -> None:
    text = problem_text(video_body, **video_args(live.bare_videos, **overrides))
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from: {text}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "seedance-2.5", "duration": 30, "resolution": "720p"},
        {"model": "seedance-1.0-pro-fast", "duration": 2, "camera_fixed": True},
        {"model": "seedance-1.5-pro", "duration": -1, "camera_fixed": True},
        {"model": "seedance-2.0", "duration": 4, "frames": (first(), last())},
    ],
    ids=["2.5 at 30 s", "1.0-pro-fast 2 s", "1.5-pro auto", "2.0 first+last"],
)
async def test_without_capabilities_family_values_are_sent_without_warnings(
    live: Live, overrides: dict[str, Any]
) -> None:
    body, warnings = video_body(**video_args(live.bare_videos, **overrides))
    assert warnings == []
    task = await live.client.create_video(body, idempotency_key=str(uuid.uuid4()))
    assert task.status == "queued"


def test_an_unknown_family_without_capabilities_passes_values_through_with_a_warning(live: Live) -> None:
    body, warnings = video_body(
        **video_args(live.bare_videos, model="happyhorse-1.0-t2v", duration=99, ratio="1:1")
    )
    assert body["duration"] == 99
    assert body["ratio"] == "1:1"
    assert len(warnings) == 1
    assert "happyhorse-1.0-t2v" in warnings[0]
    assert "duration, ratio" in warnings[0]


def test_an_unavailable_catalog_skips_the_model_check_but_keeps_the_family_rules() -> None:
    body, _ = video_body(**video_args([], model="seedance-9.0", duration=500))
    assert body["model"] == "seedance-9.0"
    text = problem_text(video_body, **video_args([], model="seedance-2.5", resolution="1080p"))
    assert "480p, 720p" in text


# ----------------------------------------------------------- videos: hand-built capability shapes


def hand_built(model_id: str, **capabilities: Any) -> ModelEntry:
    info = ModelInfo.model_validate({"id": model_id, "object": "video", "capabilities": capabilities})
    return entries([info])[0]


DECIDES_DURATION = hand_built("acme-edit", duration=None)
ENUM_DURATIONS = hand_built("acme-enum", duration={"type": "enum", "values": [5, 10], "supports_auto": False})
STEPPED = hand_built(
    "acme-step", duration={"type": "range", "min": 4, "max": 12, "step": 2, "supports_auto": True}
)
SHORT_PROMPTS = hand_built("acme-short", prompt={"max_length": 10})
ONE_IMAGE = hand_built(
    "acme-one-image",
    input_types=["text", "image_first_frame", "image_first_last_frame"],
    content={"image_count": {"min": 0, "max": 1}, "allowed_roles": None},
)
FIRST_ROLE_ONLY = hand_built(
    "acme-first-only",
    input_types=["text", "image_first_frame", "image_first_last_frame"],
    content={"image_count": {"min": 0, "max": 2}, "allowed_roles": ["first_frame"]},
)
SINGLE_TIER = hand_built("acme-tier", resolutions={"values": None, "default": None})
NO_FEATURES = hand_built("acme-plain", features={"seed": False, "watermark": True})
# Seedance models whose capabilities leave parts out: the §5.1 family rule fills the gaps.
PARTIAL_25 = hand_built("seedance-2.5", duration={"type": "range", "min": 4, "max": 30})
PARTIAL_10 = hand_built(
    "seedance-1.0-pro",
    ratios={"values": ["16:9"], "default": "16:9"},
    duration={"type": "range", "min": 2, "max": 12},
)
ACME = [
    PARTIAL_25,
    PARTIAL_10,
    DECIDES_DURATION,
    ENUM_DURATIONS,
    STEPPED,
    SHORT_PROMPTS,
    ONE_IMAGE,
    FIRST_ROLE_ONLY,
    SINGLE_TIER,
    NO_FEATURES,
]

HAND_BUILT_PROBLEMS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "duration: null refuses any duration",
        {"model": "acme-edit", "duration": 5},
        ["duration=5", "acme-edit", "omit duration"],
    ),
    ("duration: null refuses auto too", {"model": "acme-edit", "duration": -1}, ["duration=-1"]),
    ("enum durations", {"model": "acme-enum", "duration": 7}, ["duration=7", "one of 5, 10 s"]),
    ("enum without auto", {"model": "acme-enum", "duration": -1}, ["duration=-1", "one of 5, 10 s"]),
    (
        "off-step duration",
        {"model": "acme-step", "duration": 5},
        ["duration=5", "4–12 s in steps of 2", "-1 for auto"],
    ),
    (
        "prompt limit in runes",
        {"model": "acme-short", "prompt": "ééééééééééé"},
        ["11 characters", "at most 10"],
    ),
    (
        "image count",
        {"model": "acme-one-image", "frames": (first(), last())},
        ["acme-one-image", "0–1 input images", "2 were given"],
    ),
    (
        "allowed roles",
        {"model": "acme-first-only", "frames": (first(), last())},
        ["acme-first-only", "last_frame", "first_frame"],
    ),
    (
        "single resolution tier",
        {"model": "acme-tier", "resolution": "720p"},
        ["resolution='720p'", "omit resolution"],
    ),
    (
        "seed where the feature is off",
        {"model": "acme-plain", "seed": 3},
        ["seed=3", "acme-plain", "watermark"],
    ),
    (
        "camera_fixed where unpublished on a non-Seedance model",
        {"model": "acme-plain", "camera_fixed": True},
        ["camera_fixed=true"],
    ),
    (
        "unpublished resolutions follow the family",
        {"model": "seedance-2.5", "resolution": "1080p"},
        ["resolution='1080p'", "480p, 720p"],
    ),
    (
        "unpublished durations follow the family",
        {"model": "seedance-1.0-pro", "duration": -1},
        ["duration=-1", "2–12 s"],
    ),
    ("published ratios still win", {"model": "seedance-1.0-pro", "ratio": "9:16"}, ["ratio='9:16'", "16:9"]),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), [c[1:] for c in HAND_BUILT_PROBLEMS], ids=[c[0] for c in HAND_BUILT_PROBLEMS]
)
def test_capability_shapes_the_simulator_does_not_publish_are_enforced(
    overrides: dict[str, Any], fragments: list[str]
) -> None:
    text = problem_text(video_body, **video_args(ACME, **overrides))
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from: {text}"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"model": "acme-edit"}, {}),
        ({"model": "seedance-2.5", "duration": -1}, {"duration": -1}),
        ({"model": "seedance-1.0-pro", "camera_fixed": True}, {"camera_fixed": True}),
        ({"model": "acme-edit", "duration": 0}, {}),
        ({"model": "acme-enum", "duration": 10}, {"duration": 10}),
        ({"model": "acme-step", "duration": 12}, {"duration": 12}),
        ({"model": "acme-step", "duration": -1}, {"duration": -1}),
        ({"model": "acme-short", "prompt": "éééééééééé"}, {}),
        ({"model": "acme-plain", "watermark": True, "seed": None}, {"watermark": True}),
        (
            {"model": "acme-one-image", "frames": (first(upload_id=None),)},
            {"content": [FIRST_ITEM]},
        ),
    ],
    ids=[
        "no duration",
        "family auto when supports_auto is unpublished",
        "family camera_fixed when features are unpublished",
        "duration 0 omitted",
        "enum value",
        "last step",
        "auto",
        "10 runes",
        "allowed feature",
        "one image",
    ],
)
def test_capability_shapes_the_simulator_does_not_publish_accept_what_they_allow(
    overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    args = video_args(ACME, **overrides)
    body, warnings = video_body(**args)
    assert body == {"model": args["model"], "prompt": args["prompt"], **expected}
    assert warnings == []


# ---------------------------------------------------------------------------- VideoRules.describe


def test_the_rules_describe_published_capabilities(live: Live) -> None:
    line = rules(by_id(live.videos, "seedance-2.0")).describe()
    assert line.startswith("duration an integer 4–15 s, or -1 for auto (default 5)")
    assert "ratios 16:9, 9:16, 4:3, 3:4, 21:9, 1:1, adaptive" in line
    assert "resolutions 480p, 720p, 1080p" in line
    assert "first and last frames" in line
    assert "options generate_audio, seed, watermark, return_last_frame" in line
    edit = rules(by_id(live.videos, "happyhorse-1.0-video-edit")).describe()
    assert "duration set by the model" in edit
    assert "ratio set by the model" in edit
    assert "prompt ≤ 5000 characters" in edit


def test_the_rules_fall_back_to_the_family_or_say_nothing_is_published(live: Live) -> None:
    assert rules(by_id(live.bare_videos, "seedance-2.5")).describe() == (
        "duration an integer 4–30 s, or -1 for auto (default 5); resolutions 480p, 720p"
    )
    assert "no published constraints" in rules(by_id(live.bare_videos, "happyhorse-1.0-t2v")).describe()
    assert "one of 5, 10 s" in rules(ENUM_DURATIONS).describe()


# ------------------------------------------------------------------------------------------- images

IMAGE_PROBLEMS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "unknown model",
        {"model": "gpt-image"},
        ["model='gpt-image'", "Did you mean gpt-image-2", "wan2.7-image-pro"],
    ),
    (
        "size not divisible by 16",
        {"size": "1000x1000"},
        ["size='1000x1000'", "multiples of 16", "nearest: 992x992"],
    ),
    ("size beyond 3840x2160", {"size": "4000x2000"}, ["size='4000x2000'", "3840x2160", "2160x3840"]),
    ("short side beyond 2160", {"size": "2304x2304"}, ["size='2304x2304'", "3840x2160"]),
    ("aspect beyond 3:1", {"size": "3840x1024"}, ["size='3840x1024'", "3:1", "1:3"]),
    ("aspect beyond 1:3", {"size": "512x1600"}, ["size='512x1600'", "3:1"]),
    ("too small", {"size": "128x128"}, ["size='128x128'", "at least 256"]),
    ("not a size", {"size": "large"}, ["size='large'", '"auto" or WIDTHxHEIGHT']),
    (
        "other models: sane bounds",
        {"model": "wan2.7-image", "size": "5000x5000"},
        ["size='5000x5000'", "4096x4096"],
    ),
    ("other models: sane aspect", {"model": "wan2.7-image", "size": "4096x256"}, ["size='4096x256'", "8:1"]),
    ("no images", {"n": 0}, ["n=0", "1 to 10"]),
    ("too many images", {"n": 11}, ["n=11", "1 to 10"]),
    ("quality", {"quality": "ultra"}, ["quality='ultra'", "auto, low, medium, high"]),
    ("output_format", {"output_format": "gif"}, ["output_format='gif'", "png, jpeg, webp"]),
    ("background", {"background": "clear"}, ["background='clear'", "auto, opaque, transparent"]),
    ("moderation", {"moderation": "off"}, ["moderation='off'", "auto, low"]),
    (
        "transparent jpeg",
        {"background": "transparent", "output_format": "jpeg"},
        ["transparent", "jpeg", "png", "webp"],
    ),
    ("seed out of range", {"model": "wan2.7-image", "seed": -1}, ["seed=-1", "0–2147483647"]),
    ("empty prompt", {"prompt": ""}, ["prompt is empty"]),
    ("prompt too long", {"prompt": "p" * 32001}, ["32001", "at most 32000"]),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), [c[1:] for c in IMAGE_PROBLEMS], ids=[c[0] for c in IMAGE_PROBLEMS]
)
def test_image_arguments_a_model_does_not_take_are_refused_with_what_it_accepts(
    live: Live, overrides: dict[str, Any], fragments: list[str]
) -> None:
    text = problem_text(image_body, **image_args(live.images, **overrides))
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from: {text}"


IMAGE_ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("defaults", {}, {}),
    ("largest landscape", {"size": "3840x2160"}, {"size": "3840x2160"}),
    ("largest portrait", {"size": "2160x3840"}, {"size": "2160x3840"}),
    ("exactly 3:1", {"size": "1536x512"}, {"size": "1536x512"}),
    ("size spelling normalised", {"size": "1024×1536"}, {"size": "1024x1536"}),
    ("AUTO", {"size": "AUTO"}, {"size": "auto"}),
    (
        "transparent png",
        {"background": "transparent", "quality": "HIGH"},
        {"background": "transparent", "quality": "high"},
    ),
    (
        "ten jpegs",
        {"n": 10, "output_format": "jpeg", "background": "opaque"},
        {"n": 10, "output_format": "jpeg", "background": "opaque"},
    ),
    (
        "wan with a seed",
        {"model": "wan2.7-image-pro", "seed": 2147483647, "size": "1008x1008"},
        {"seed": 2147483647, "size": "1008x1008"},
    ),
    ("case-insensitive model id", {"model": "WAN2.7-Image"}, {"model": "wan2.7-image"}),
]


@pytest.mark.parametrize(
    ("overrides", "changed"), [c[1:] for c in IMAGE_ACCEPTED], ids=[c[0] for c in IMAGE_ACCEPTED]
)
async def test_image_arguments_a_model_takes_become_a_body_the_server_accepts(
    live: Live, overrides: dict[str, Any], changed: dict[str, Any]
) -> None:
    args = image_args(live.images, **overrides)
    body, warnings = image_body(**args)
    expected = {k: v for k, v in args.items() if k != "image_models" and v is not None}
    assert body == {**expected, **changed}
    assert warnings == []
    task = await live.client.create_image(body, idempotency_key=str(uuid.uuid4()))
    assert task.status in ("queued", "processing")


def test_a_seed_on_a_model_that_ignores_it_is_sent_with_a_warning(live: Live) -> None:
    body, warnings = image_body(**image_args(live.images, seed=42))
    assert body["seed"] == 42
    assert warnings == [
        "seed is honoured only by wan2.7-image, wan2.7-image-pro; gpt-image-2 ignores it, "
        "so the same seed will not reproduce an image."
    ]


def test_an_unavailable_image_catalog_skips_the_model_check_but_not_the_size_rule() -> None:
    body, _ = image_body(**image_args([], model="gpt-image-3"))
    assert body["model"] == "gpt-image-3"
    assert "multiples of 16" in problem_text(image_body, **image_args([], size="1000x1000"))
    assert "multiples of 16" in problem_text(
        image_body, **image_args([], model="gpt-image-2-2026-05-01", size="1000x1000")
    )


# ------------------------------------------------------------------------------ edits and variations


async def test_an_edit_body_is_the_generation_body_plus_its_uploads(live: Live) -> None:
    edit = ImageInputs("upl_source", "upl_mask")
    body, warnings = image_body(**image_args(live.images, size="1024x1536", inputs=edit))
    assert body == {
        "model": "gpt-image-2",
        "prompt": "a lighthouse in a storm, oil painting",
        "n": 1,
        "size": "1024x1536",
        "quality": "low",
        "output_format": "png",
        "background": "auto",
        "moderation": "auto",
        "image_upload_id": "upl_source",
        "mask_upload_id": "upl_mask",
    }
    assert warnings == []


async def test_a_variation_body_carries_only_model_image_and_size(live: Live) -> None:
    variation = ImageInputs("upl_source", variation=True)
    body, _ = image_body(
        **image_args(live.images, model="dall-e-2", prompt=None, quality="auto", inputs=variation)
    )
    assert body == {"model": "dall-e-2", "image_upload_id": "upl_source", "size": "auto"}
    # A quality other than the default is something a variation cannot honour: refused by name.
    text = problem_text(
        image_body, **image_args(live.images, model="dall-e-2", prompt=None, inputs=variation)
    )
    assert "drop quality='low'" in text


async def test_an_unset_model_becomes_one_that_can_do_the_operation(live: Live) -> None:
    assert image_model(None, "gpt-image-2", "edit", live.images) == ("gpt-image-2", [])
    chosen, warnings = image_model(None, "gpt-image-2", "variation", live.images)
    assert chosen == "dall-e-2"
    assert warnings == ["Used dall-e-2: the default image model gpt-image-2 cannot make variations."]
    assert image_model("gpt-image-2", "gpt-image-2", "variation", live.images) == ("gpt-image-2", [])
    assert image_model(None, "gpt-image-2", "variation", []) == ("gpt-image-2", [])  # no listing: unchecked
