"""Image edits and variations through the real MCP server against the simulator over loopback: a local
file or a URL is checked, uploaded with the purpose its endpoint binds, sent to /images/edits or
/images/variations, polled and delivered like a generation; every refusal (type by the bytes, size, the
mask's dimensions, a model that cannot do it, arguments that do not fit) sends nothing to AllToken, not
even a presign."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from alltoken_mcp.simulator import RunningSimulator
from alltoken_mcp.simulator.media import png
from tests.serverkit import ERAS, connect, data, error_text, settings_for
from tests.test_spend import asking

EDITING_MODELS = "gpt-image-2, wan2.7-image, wan2.7-image-pro"


def picture(folder: Path, name: str, width: int = 64, height: int = 64) -> Path:
    path = folder / name
    path.write_bytes(png(name, width, height))
    return path


def leftover_downloads() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("alltoken-input-*"))


def uploads_by_purpose(sim: RunningSimulator) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for upload in sim.state.uploads.values():
        found.setdefault(upload.purpose, []).append(upload)
    return found


def assert_nothing_sent(sim: RunningSimulator) -> None:
    counters = sim.state.counters()
    assert counters["tasks"].get("images", 0) == 0
    assert counters["tasks"].get("uploads", 0) == 0
    sent = {r for r in counters["requests"] if r.startswith("POST ")}
    assert sent == set(), sent  # no presign, no create


async def test_an_edit_uploads_the_local_image_and_completes_with_its_file(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    source = picture(tmp_path, "cat.png")
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        record = data(
            await client.call_tool("alltoken_image", {"prompt": "give the cat a hat", "image": str(source)})
        )
    assert record["status"] == "completed"
    assert record["upstream_id"].startswith("igen_iedit_")
    assert (await anyio.Path(record["files"][0]["path"]).read_bytes()).startswith(b"\x89PNG")
    [upload] = uploads_by_purpose(sim)["image_edit_source"]
    assert upload.claimed_by == record["upstream_id"]
    assert upload.checksum_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert upload.content_type == "image/png"
    assert sim.state.requests["POST /v1/images/edits"] == 1
    assert "POST /v1/images/generations/async" not in sim.state.requests


async def test_an_edit_with_a_mask_uploads_both_with_their_purposes(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    source, mask = picture(tmp_path, "room.png", 96, 64), picture(tmp_path, "mask.png", 96, 64)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        record = data(
            await client.call_tool(
                "alltoken_image",
                {"prompt": "a window here", "image": "room.png", "mask": str(mask), "model": "wan2.7-image"},
            )
        )
    assert record["status"] == "completed"
    assert record["upstream_id"].startswith("igen_mask_")
    purposes = uploads_by_purpose(sim)
    assert [u.checksum_sha256 for u in purposes["image_edit_source"]] == [
        hashlib.sha256(source.read_bytes()).hexdigest()
    ]
    assert [u.checksum_sha256 for u in purposes["image_edit_mask"]] == [
        hashlib.sha256(mask.read_bytes()).hexdigest()
    ]
    assert all(u.claimed_by == record["upstream_id"] for u in sim.state.uploads.values())


async def test_a_variation_picks_a_model_that_varies_and_is_collected_with_job_status(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    source = picture(tmp_path, "logo.png")
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started = data(
            await client.call_tool(
                "alltoken_image",
                {"image": str(source), "variation": True, "size": "1024x1536", "wait_seconds": 0},
            )
        )
        assert started["model"] == "dall-e-2"
        assert started["warnings"] == [
            "Used dall-e-2: the default image model gpt-image-2 cannot make variations."
        ]
        finished = data(
            await client.call_tool("job_status", {"job_id": started["job_id"], "wait_seconds": 20})
        )
    assert finished["status"] == "completed"
    assert finished["upstream_id"].startswith("igen_ivar_")
    assert len(finished["files"]) == 1
    assert sim.state.images[finished["upstream_id"]].size == "1024x1536"
    assert [u.claimed_by for u in uploads_by_purpose(sim)["image_variation_source"]] == [
        finished["upstream_id"]
    ]


async def test_an_image_url_is_downloaded_and_uploaded_unchanged(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        first = data(await client.call_tool("alltoken_image", {"prompt": "a red door", "size": "1024x1024"}))
        url = f"{sim.origin}/_r2/images/{first['upstream_id']}/0.png"  # the result's r2_url
        edited = data(await client.call_tool("alltoken_image", {"prompt": "paint it blue", "image": url}))
    assert edited["status"] == "completed"
    [upload] = uploads_by_purpose(sim)["image_edit_source"]
    assert upload.checksum_sha256 == first["files"][0]["sha256"]
    assert leftover_downloads() == []


async def test_a_dropped_edit_request_is_resent_with_its_key_and_pays_once(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    picture(tmp_path, "cat.png")
    sim.state.add_fault(path="/v1/images/edits", drop="before_body")  # AllToken created it; we never heard
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "a hat", "image": "cat.png"}))
    assert record["status"] == "completed"
    assert sim.state.requests["POST /v1/images/edits"] == 2
    assert sim.state.counters()["tasks"]["images"] == 1
    [upload] = sim.state.uploads.values()
    assert upload.claimed_by == record["upstream_id"]


def _gif(folder: Path) -> str:
    path = folder / "really-a-gif.png"
    path.write_bytes(b"GIF89a" + bytes(200))
    return str(path)


def _text(folder: Path) -> str:
    path = folder / "notes.webp"
    path.write_text("not an image at all")
    return str(path)


def _huge(folder: Path) -> str:
    path = folder / "huge.png"
    with path.open("wb") as f:
        f.write(png("huge", 64, 64))
        f.truncate(25 * 1024 * 1024 + 1)  # sparse: costs no disk
    return str(path)


def _small_mask(folder: Path) -> str:
    return str(picture(folder, "small-mask.png", 32, 64))


def _source(folder: Path) -> str:
    return str(picture(folder, "source.png", 64, 64))


REFUSALS: list[tuple[str, Any, str]] = [
    ("type from the bytes, not the name", lambda d: {"image": _gif(d)}, "not a PNG, JPEG or WebP"),
    ("not an image", lambda d: {"image": _text(d)}, "not a PNG, JPEG or WebP"),
    ("mask type", lambda d: {"image": _source(d), "mask": _gif(d)}, "mask: "),
    (
        "over 25 MB",
        lambda d: {"image": _huge(d)},
        "26,214,401 bytes (25.0 MiB), over AllToken's limit of 26,214,400",
    ),
    (
        "mask dimensions",
        lambda d: {"image": _source(d), "mask": _small_mask(d)},
        "mask is 32x64 pixels but image is 64x64",
    ),
    (
        "a model that cannot edit",
        lambda d: {"image": _source(d), "model": "dall-e-2"},
        f"dall-e-2 cannot edit images; models that can: {EDITING_MODELS}. It can make variations",
    ),
    (
        "a model that cannot vary",
        lambda d: {"image": _source(d), "variation": True, "prompt": None, "model": "gpt-image-2"},
        "gpt-image-2 cannot make variations; models that can: dall-e-2",
    ),
    (
        "a variation-only model cannot generate",
        lambda d: {"model": "dall-e-2"},
        "dall-e-2 cannot generate images from a prompt; models that can: " + EDITING_MODELS,
    ),
    ("a variation with a prompt", lambda d: {"image": _source(d), "variation": True}, "take no prompt"),
    (
        "a variation with n",
        lambda d: {"image": _source(d), "variation": True, "prompt": None, "n": 2},
        "drop n=2",
    ),
    (
        "a variation size",
        lambda d: {"image": _source(d), "variation": True, "prompt": None, "size": "512x512"},
        "1536x1024",
    ),
    ("an edit without a prompt", lambda d: {"image": _source(d), "prompt": None}, "prompt is required"),
    ("seed on an edit", lambda d: {"image": _source(d), "seed": 7}, "drop seed"),
    ("a mask without an image", lambda d: {"mask": _source(d)}, "mask needs image"),
    (
        "variation without an image",
        lambda d: {"variation": True, "prompt": None},
        "variation=true needs image",
    ),
    (
        "a mask on a variation",
        lambda d: {"image": _source(d), "mask": _source(d), "variation": True},
        "mask applies",
    ),
    ("outside the allowed dirs", lambda d: {"image": "/etc/hostname"}, "outside the allowed"),
    ("a data: URL", lambda d: {"image": "data:image/png;base64,AAAA"}, "data: URL"),
    ("a plain http URL", lambda d: {"image": "http://example.com/a.png"}, "https"),
]


@pytest.mark.parametrize(("case", "arguments", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_each_refusal_names_the_problem_and_sends_nothing(
    sim: RunningSimulator, tmp_path: Path, case: str, arguments: Any, expected: str
) -> None:
    given = {"prompt": "change it", **arguments(tmp_path)}
    given = {k: v for k, v in given.items() if v is not None}
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(await client.call_tool("alltoken_image", given))
    assert expected in message
    assert_nothing_sent(sim)


async def test_a_url_that_is_not_an_image_is_refused_before_any_presign(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    url = f"{sim.origin}/api-account/health/summary"  # JSON, on a host the download policy trusts
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(await client.call_tool("alltoken_image", {"prompt": "x", "image": url}))
    assert "image:" in message
    assert "Nothing was sent to AllToken" in message
    assert_nothing_sent(sim)


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("answer", ["decline", "accept"])
async def test_the_user_is_asked_before_anything_is_uploaded(
    sim: RunningSimulator, tmp_path: Path, mode: str, answer: str
) -> None:
    picture(tmp_path, "cat.png")
    settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_CONFIRM="media")
    async with asking(settings, mode, answer) as (client, asked):
        result = await client.call_tool("alltoken_image", {"prompt": "a hat", "image": "cat.png"})
    assert len(asked) == 1
    if answer == "decline":
        assert "declined the image render" in error_text(result)
        assert_nothing_sent(sim)
    else:
        assert data(result)["upstream_id"].startswith("igen_iedit_")
        assert sim.state.requests["POST /v1/uploads/presign"] == 1  # not once per round of the question
        assert sim.state.requests["POST /v1/images/edits"] == 1
