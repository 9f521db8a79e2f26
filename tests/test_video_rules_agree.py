"""What `list_models` says a video model accepts is exactly what `alltoken_video` enforces, for every video
model of the simulator — with its published capabilities, and without them (the gateway's family rules
alone) — driven through the real server: each duration, ratio and resolution the listing names is sent,
and each value just outside it is refused before anything is sent. And one catalog serves both tools.

The candidate values come from the `list_models` answer only, so a listing that said less (or more) than
the checks enforce would fail here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from alltoken_mcp.catalog import WIRE_RATIOS, WIRE_RESOLUTIONS
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.serverkit import connect, data, error_text, settings_for, text_of

CREATE = "POST /v1/videos/generations"
FIRST_FRAME = "https://example.com/frames/first.png"
SIMULATED_VIDEO_MODELS = 10


@pytest.fixture
def sim_config() -> SimConfig:
    # Renders take minutes at this speed: the jobs started here stay queued, so nothing is downloaded.
    return SimConfig(speed=1.0)


def creates(sim: RunningSimulator) -> int:
    return int(sim.state.counters()["requests"].get(CREATE, 0))


def candidates(rules: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(arguments the listing allows, arguments just outside it), from the listed rules alone."""
    allowed: list[dict[str, Any]] = [{}]
    outside: list[dict[str, Any]] = []
    durations = rules["durations"]
    if rules["duration_fixed"]:
        outside += [{"duration": 5}, {"duration": -1}]
    elif durations is not None:
        if durations["values"] is not None:
            values = durations["values"]
            allowed += [{"duration": v} for v in values]
            outside += [{"duration": max(values) + 1}]
            outside += [{"duration": v} for v in range(min(values), max(values)) if v not in values][:1]
        else:
            low, high, step = durations["min"], durations["max"], durations["step"]
            allowed += [{"duration": low}, {"duration": high}]
            if low + step <= high:
                allowed.append({"duration": low + step})
            outside.append({"duration": high + 1})
            if low > 1:
                outside.append({"duration": low - 1})
            if step > 1:
                outside.append({"duration": low + 1})
        if durations["supports_auto"] is False:
            outside.append({"duration": -1})
        else:
            allowed.append({"duration": -1})
    for field, wire, fixed in (
        ("ratio", WIRE_RATIOS, rules["ratio_fixed"]),
        ("resolution", WIRE_RESOLUTIONS, rules["resolution_fixed"]),
    ):
        listed = rules[f"{field}s"]
        if fixed:
            outside.append({field: wire[0]})
        elif listed is not None:
            allowed += [{field: value} for value in listed]
            outside += [{field: value} for value in wire if value not in listed]
            outside.append({field: "2:1" if field == "ratio" else "4k"})
    return allowed, outside


async def agrees(client: Client, sim: RunningSimulator, model: dict[str, Any]) -> None:
    """Every listed value reaches AllToken; every value just outside is refused with nothing sent."""
    rules = model["video"]
    types = rules["input_types"]
    call: dict[str, Any] = {"prompt": "a heron takes off", "model": model["id"], "wait_seconds": 0}
    if types is not None and "text" not in types:
        if "image_first_frame" not in types:
            # Reference-only models: alltoken_video drives text and first/last frames, so it refuses
            # them whatever the values — and the listing's input types say why.
            text = error_text(await client.call_tool("alltoken_video", call))
            assert f"{model['id']} does not take text only" in text
            return
        call["first_frame"] = FIRST_FRAME
    allowed, outside = candidates(rules)
    for arguments in allowed:
        before = creates(sim)
        result = await client.call_tool("alltoken_video", {**call, **arguments})
        assert creates(sim) == before + 1, f"{model['id']} {arguments}: {text_of(result)}"
    before = creates(sim)
    for arguments in outside:
        field, value = next(iter(arguments.items()))
        text = error_text(await client.call_tool("alltoken_video", {**call, **arguments}))
        assert f"{field}={value!r} is not allowed for {model['id']}" in text, text
    assert creates(sim) == before, f"{model['id']}: a refused value was sent"


async def test_every_video_model_accepts_exactly_what_list_models_reports(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        listed = data(await client.call_tool("list_models", {"modality": "video"}))["models"]
        assert len(listed) == SIMULATED_VIDEO_MODELS
        for model in listed:
            assert model["video"]["source"] == "capabilities", model["id"]
            await agrees(client, sim, model)
    # The listing is not vacuous: every Seedance model names its durations and resolutions.
    seedance = [m["video"] for m in listed if m["id"].startswith("seedance")]
    assert all(r["durations"] is not None and r["resolutions"] for r in seedance)


async def test_without_published_capabilities_both_tools_apply_the_family_rules(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # Only /v1/models answers, and its video entries carry no capabilities.
    sim.state.add_fault(path="/v1/videos/models", status=503, count=None)
    sim.state.add_fault(path="/api-account/models", status=503, count=None)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        listed = data(await client.call_tool("list_models", {"modality": "video"}))["models"]
        assert len(listed) == SIMULATED_VIDEO_MODELS
        for model in listed:
            await agrees(client, sim, model)
    rules = {m["id"]: m["video"] for m in listed}
    assert rules["seedance-2.5"]["source"] == "family"
    assert rules["seedance-2.5"]["durations"]["min"] == 4
    assert rules["seedance-2.5"]["durations"]["max"] == 30
    assert rules["seedance-2.5"]["resolutions"] == ["480p", "720p"]
    assert rules["happyhorse-1.0-t2v"]["source"] == "none"


async def test_list_models_then_two_videos_read_the_video_listing_once(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        data(await client.call_tool("list_models", {"modality": "video"}))
        for duration in (5, 6):
            arguments = {"prompt": "a wave", "model": "seedance-2.0", "duration": duration}
            data(await client.call_tool("alltoken_video", arguments))
    requests = sim.state.counters()["requests"]
    assert requests["GET /v1/videos/models"] == 1
    assert requests[CREATE] == 2
