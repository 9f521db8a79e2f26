"""The catalog service on its own (a real store, a real client, the simulator over loopback): its time to
live comes from its constructor, a model it lacks is looked up once more before anyone is told it does
not exist, and `video_rules` answers for ids the listings do not name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alltoken_mcp.catalog import Catalog, CatalogTTL, ImageOperations, image_models_for, image_operations
from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from alltoken_mcp.store import SqliteStore, Store

VIDEO_LISTING = "GET /v1/videos/models"


@pytest.fixture
async def parts(sim: RunningSimulator, tmp_path: Path) -> AsyncIterator[tuple[Store, AllTokenClient]]:
    store = await SqliteStore.open(tmp_path / "state.sqlite3")
    try:
        async with AllTokenClient(sim.base_url, SIM_API_KEY) as client:
            yield store, client
    finally:
        await store.close()


def video_listings(sim: RunningSimulator) -> int:
    return int(sim.state.counters()["requests"].get(VIDEO_LISTING, 0))


async def test_the_time_to_live_is_the_one_passed_in(
    sim: RunningSimulator, parts: tuple[Store, AllTokenClient]
) -> None:
    store, client = parts
    kept = Catalog(store, client)
    await kept.snapshot()
    await kept.snapshot()
    assert video_listings(sim) == 1
    expired = Catalog(store, client, ttl=CatalogTTL(complete=0.0))
    await expired.snapshot()
    await expired.snapshot()
    assert video_listings(sim) == 3


async def test_a_model_the_copy_lacks_is_looked_up_again_once_the_copy_is_old_enough(
    sim: RunningSimulator, parts: tuple[Store, AllTokenClient]
) -> None:
    store, client = parts
    young = Catalog(store, client)  # a copy seconds old is not fetched again for one unknown id
    assert "seedance-9.9" not in [m.id for m in await young.models("video", expecting="seedance-9.9")]
    assert video_listings(sim) == 1
    old = Catalog(store, client, ttl=CatalogTTL(partial=0.0))  # the same copy, from the store
    await old.models("video", expecting="seedance-2.0")  # known: no second look
    assert video_listings(sim) == 1
    await old.models("video", expecting="seedance-9.9")
    assert video_listings(sim) == 2


async def test_video_rules_come_from_the_listing_or_for_unlisted_ids_from_the_family(
    parts: tuple[Store, AllTokenClient],
) -> None:
    catalog = Catalog(*parts)
    listed = await catalog.video_rules("seedance-2.0")
    assert listed.source == "capabilities"
    assert listed.durations is not None
    assert (listed.durations.min, listed.durations.max) == (4, 15)
    unlisted = await catalog.video_rules("seedance-2.5-turbo")
    assert unlisted.source == "family"
    assert unlisted.resolutions == ["480p", "720p"]
    assert (await catalog.video_rules("acme-video")).source == "none"


async def test_which_image_endpoints_take_a_model_comes_from_its_listed_inputs(
    parts: tuple[Store, AllTokenClient],
) -> None:
    images = await Catalog(*parts).models("image")
    assert image_models_for(images, "generation") == ["gpt-image-2", "wan2.7-image", "wan2.7-image-pro"]
    assert image_models_for(images, "edit") == ["gpt-image-2", "wan2.7-image", "wan2.7-image-pro"]
    assert image_models_for(images, "variation") == ["dall-e-2"]
    by_id = {m.id: m for m in images}
    assert "image_edit" in by_id["gpt-image-2"].supports
    assert by_id["dall-e-2"].supports == ["image_variation"]


@pytest.mark.parametrize(
    ("model_id", "inputs", "expected"),
    [
        ("gpt-image-2", ["text", "image"], ImageOperations(generation=True, edit=True)),
        ("acme-draw", ["text"], ImageOperations(generation=True, edit=False)),
        ("acme-remix", ["image"], ImageOperations(generation=False, edit=False, variation=True)),
        (
            "DALL-E-2-2026-01-01",
            ["text", "image"],
            ImageOperations(generation=True, edit=True, variation=True),
        ),
        ("dall-e-2", [], ImageOperations(variation=True)),  # §4.3 names it; the rest is not published
        ("acme-unlisted", [], ImageOperations()),  # nothing published: the gateway decides
        ("dall-e-20", ["text"], ImageOperations(generation=True, edit=False)),  # not a dall-e-2 variant
    ],
)
def test_image_operations_follow_the_published_inputs_and_the_variation_models(
    model_id: str, inputs: list[str], expected: ImageOperations
) -> None:
    assert image_operations(model_id, inputs) == expected
