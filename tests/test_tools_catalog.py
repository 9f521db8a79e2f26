"""list_models, route_health and their resources through the real MCP server against the simulator over
loopback: the merged catalog, filters, the memory + disk cache (restart without a round trip, stale copy
while the gateway is down), partial listings, and errors that name close matches."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from alltoken_mcp.catalog import CatalogTTL
from alltoken_mcp.simulator import RunningSimulator, SimConfig, serve_simulator
from tests.serverkit import connect, data, error_text, settings_for, text_of


def by_id(out: dict[str, object]) -> dict[str, dict[str, object]]:
    models = out["models"]
    assert isinstance(models, list)
    return {m["id"]: m for m in models}


async def test_the_catalog_merges_listings_prices_and_video_constraints(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool("list_models", {})
    out = data(result)
    models = by_id(out)
    seedance = models["seedance-2.0"]
    assert seedance["modality"] == "video"
    assert seedance["video"]["durations"] == {  # type: ignore[index]
        "min": 4,
        "max": 15,
        "step": 1,
        "values": None,
        "default": 5,
        "supports_auto": True,
    }
    assert seedance["video"]["resolutions"] == ["480p", "720p", "1080p"]  # type: ignore[index]
    assert "image_first_last_frame" in seedance["video"]["input_types"]  # type: ignore[index]
    assert models["seedance-2.5"]["video"]["resolutions"] == ["480p", "720p"]  # type: ignore[index]
    assert models["happyhorse-1.0-video-edit"]["video"]["durations"] is None  # type: ignore[index]
    deepseek = models["deepseek-v4-pro"]
    assert deepseek["pricing"]["input"] == "0.5500"  # type: ignore[index]
    assert deepseek["context_length"] == 1_000_000
    assert {"search", "thinking", "tools", "structured_output"} <= set(deepseek["supports"])  # type: ignore[arg-type]
    assert models["claude-sonnet-4-6"]["modality"] == "vision"
    assert "search" not in models["claude-sonnet-4-6"]["supports"]  # type: ignore[operator]
    assert models["gpt-image-2"]["modality"] == "image"
    assert models["gpt-image-2"]["pricing"]["per_image"]["low"] == "0.011"  # type: ignore[index]
    assert out["stale"] is False
    assert out["warnings"] == []
    assert out["total"] == len(out["models"]) == 13 + 4 + 10  # type: ignore[arg-type]
    assert "seedance-2.0 · video" in text_of(result)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"modality": "video", "search": "seedance-2"},
            {"seedance-2.0", "seedance-2.0-fast", "seedance-2.5"},
        ),
        (
            {"supports": ["search"]},
            {"deepseek-v4-pro", "deepseek-v3.2", "qwen3.6-flash", "qwen3.6-max-preview"},
        ),
        ({"modality": "vision", "supports": ["search"]}, {"qwen3.6-max-preview"}),
        ({"modality": "image"}, {"gpt-image-2", "wan2.7-image", "wan2.7-image-pro", "dall-e-2"}),
        ({"supports": ["image_edit"]}, {"gpt-image-2", "wan2.7-image", "wan2.7-image-pro"}),
        ({"supports": ["image_variation"]}, {"dall-e-2"}),
        ({"search": "OPENAI", "modality": "text"}, {"gpt-5.4", "gpt-5.4-nano", "gpt-5.5"}),
        (
            {"modality": "video", "supports": ["first_last_frame", "audio"]},
            {"seedance-1.5-pro", "seedance-2.0", "seedance-2.0-fast", "seedance-2.5"},
        ),
        ({"search": "no-such-thing"}, set()),
    ],
)
async def test_filters_combine(
    sim: RunningSimulator, tmp_path: Path, arguments: dict[str, object], expected: set[str]
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("list_models", arguments))
    assert set(by_id(out)) == expected
    assert out["total"] == len(expected)


async def test_limit_caps_the_listing_but_total_counts_every_match(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("list_models", {"modality": "text", "limit": 3}))
        bad = await client.call_tool("list_models", {"modality": "audio"})
    assert len(out["models"]) == 3
    assert out["total"] == 13
    assert "modality" in error_text(bad)


async def test_a_burst_of_calls_on_a_cold_cache_fetches_the_catalog_once(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(client.call_tool, "list_models", {"limit": 1})
    requests = sim.state.counters()["requests"]
    assert requests["GET /v1/models"] == 1
    assert requests["GET /api-account/models"] == 1


async def test_a_restarted_server_answers_from_disk_without_the_network(tmp_path: Path) -> None:
    async with serve_simulator(SimConfig(speed=0.01)) as sim:
        settings = settings_for(tmp_path, sim.base_url)
        async with connect(settings) as client:
            first = data(await client.call_tool("list_models", {}))
    # The simulator is gone: any request would now fail to connect.
    async with connect(settings) as client:
        with anyio.fail_after(2):
            again = data(await client.call_tool("list_models", {}))
            resource = await client.read_resource("alltoken://models/seedance-1.5-pro")
    assert again["models"] == first["models"]
    assert again["stale"] is False
    assert again["warnings"] == []
    assert json.loads(resource.contents[0].text)["id"] == "seedance-1.5-pro"  # type: ignore[union-attr]


async def test_a_failed_refresh_serves_the_stale_copy_with_a_warning(tmp_path: Path) -> None:
    async with serve_simulator(SimConfig(speed=0.01)) as sim:
        settings = settings_for(tmp_path, sim.base_url)
        async with connect(settings) as client:
            data(await client.call_tool("list_models", {}))
    # The copy on disk is past its time to live: the server tries a refresh, and the gateway is gone.
    async with connect(settings, catalog_ttl=CatalogTTL(complete=0.0)) as client:
        out = data(await client.call_tool("list_models", {"modality": "image"}))
    assert out["stale"] is True
    assert set(by_id(out)) == {"gpt-image-2", "wan2.7-image", "wan2.7-image-pro", "dall-e-2"}
    assert any("Could not refresh the catalog" in w for w in out["warnings"])


async def test_with_no_copy_and_no_gateway_the_error_says_the_gateway_is_unreachable(tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path)) as client:
        text = error_text(await client.call_tool("list_models", {}))
    assert "Could not reach AllToken" in text


async def test_without_a_key_the_public_catalog_is_listed_with_a_warning(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url, api_key=None)) as client:
        out = data(await client.call_tool("list_models", {"modality": "video"}))
    assert "seedance-2.0" in by_id(out)
    assert by_id(out)["seedance-2.0"]["video"] is not None
    assert any("public catalog" in w for w in out["warnings"])
    assert "GET /v1/models" not in sim.state.counters()["requests"]


async def test_a_listing_that_fails_is_reported_and_the_rest_still_served(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path="/v1/videos/models", status=404, count=None)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("list_models", {"modality": "video"}))
    assert "seedance-2.0" in by_id(out)
    assert any("/videos/models could not be read" in w for w in out["warnings"])


async def test_model_resources_serve_the_catalog_and_name_close_matches(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), "legacy") as client:
        listing = await client.list_resources()
        templates = await client.list_resource_templates()
        everything = json.loads((await client.read_resource("alltoken://models")).contents[0].text)  # type: ignore[union-attr]
        one = json.loads((await client.read_resource("alltoken://models/gpt-image-2")).contents[0].text)  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="Close matches: gpt-image-2"):
            await client.read_resource("alltoken://models/gpt-image-3")
    assert {str(r.uri) for r in listing.resources} >= {"alltoken://models", "alltoken://health"}
    assert {t.uri_template for t in templates.resource_templates} >= {
        "alltoken://models/{model_id}",
        "alltoken://conversations/{conversation_id}",
    }
    assert len(everything["models"]) == 27
    assert one["modality"] == "image"


async def test_route_health_gives_the_summary_and_rows(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        everything = data(await client.call_tool("route_health", {}))
        gemini = await client.call_tool("route_health", {"model": "gemini-3.1-pro-preview"})
        incidents = data(await client.call_tool("route_health", {"status": "incident"}))
        resource = json.loads((await client.read_resource("alltoken://health")).contents[0].text)  # type: ignore[union-attr]
    summary = everything["summary"]
    assert summary["total_routes"] == everything["total"] == len(everything["routes"])
    assert (
        summary["healthy_routes"] + summary["degraded_routes"] + summary["incident_routes"]
        == summary["total_routes"]
    )
    rows = data(gemini)["routes"]
    assert rows
    assert {r["model"] for r in rows} == {"gemini-3.1-pro-preview"}
    assert rows[0]["status"] == "incident"
    assert rows[0]["incidents"]
    assert "incident" in text_of(gemini)
    assert incidents["total"] == summary["incident_routes"]
    assert {r["status"] for r in incidents["routes"]} == {"incident"}
    assert resource["summary"] == summary
    assert len(resource["routes"]) == summary["total_routes"]


async def test_route_health_for_an_unknown_model_names_close_matches(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        text = error_text(await client.call_tool("route_health", {"model": "claude-sonet-4-6"}))
    assert "no model 'claude-sonet-4-6'" in text
    assert "claude-sonnet-4-6" in text


async def test_route_health_for_a_model_without_routes_warns(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        out = data(await client.call_tool("route_health", {"model": "seedance-2.0"}))
    assert out["routes"] == []
    assert out["warnings"] == ["No monitored routes for seedance-2.0."]
