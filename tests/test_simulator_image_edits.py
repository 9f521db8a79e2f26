"""Simulated image edits and variations (alltoken-api.md §1.6, §4.3, §6): their task id prefixes, the
purpose each upload must have been presigned for, the 25 MB limit, which models each endpoint takes, and
polling them on the generations endpoint."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx2
import pytest

from alltoken_mcp.simulator import RunningSimulator
from alltoken_mcp.simulator.media import png

IMAGE = png("source", 64, 64)


async def upload(api: httpx2.AsyncClient, purpose: str, data: bytes = IMAGE) -> str:
    presigned = await api.post(
        "/uploads/presign",
        json={
            "purpose": purpose,
            "content_type": "image/png",
            "content_length": len(data),
            "content_md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "checksum_sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert presigned.status_code == 200, presigned.text
    target = presigned.json()
    async with httpx2.AsyncClient() as storage:
        put = await storage.put(target["upload_url"], content=data, headers=target["required_headers"])
    assert put.status_code == 200, put.text
    return str(target["upload_id"])


async def test_an_edit_with_a_mask_gets_an_igen_mask_id_and_binds_both_uploads(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    source, mask = await upload(api, "image_edit_source"), await upload(api, "image_edit_mask")
    body = {"model": "gpt-image-2", "prompt": "add a hat", "image_upload_id": source, "mask_upload_id": mask}
    created = await api.post("/images/edits", json=body)
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    assert task_id.startswith("igen_mask_")
    assert len(task_id) == len("igen_mask_") + 24
    assert sim.state.uploads[source].claimed_by == task_id
    assert sim.state.uploads[mask].claimed_by == task_id


async def test_a_variation_gets_an_igen_ivar_id_and_polls_to_one_image_on_the_generations_endpoint(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    source = await upload(api, "image_variation_source")
    created = await api.post(
        "/images/variations", json={"model": "dall-e-2", "image_upload_id": source, "size": "1536x1024"}
    )
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    assert task_id.startswith("igen_ivar_")
    sim.state.advance(5)  # past the render (scaled), within the result's 30 min (scaled)
    done = await api.get(f"/images/generations/{task_id}")
    assert done.status_code == 200
    result = done.json()
    assert result["status"] == "completed"
    assert result["size"] == "1536x1024"
    assert [base64.b64decode(d["b64_json"])[:8] for d in result["data"]] == [b"\x89PNG\r\n\x1a\n"]


@pytest.mark.parametrize(
    ("path", "purpose", "extra", "param", "says"),
    [
        # An upload binds only for the purpose it was presigned for.
        ("/images/edits", "image_variation_source", {}, "image_upload_id", "needs image_edit_source"),
        (
            "/images/edits",
            "image_edit_source",
            {"mask": "image_edit_source"},
            "mask_upload_id",
            "image_edit_mask",
        ),
        ("/images/variations", "image_edit_source", {}, "image_upload_id", "image_variation_source"),
        # Each endpoint takes its own models (§4.1's enum for generations, §4.3 dall-e-2 for variations).
        ("/images/edits", "image_edit_source", {"model": "dall-e-2"}, "model", "gpt-image-2, wan2.7-image"),
        ("/images/variations", "image_variation_source", {"model": "gpt-image-2"}, "model", "dall-e-2"),
        ("/images/variations", "image_variation_source", {"size": "512x512"}, "size", "1536x1024"),
        ("/images/edits", "image_edit_source", {"prompt": " "}, "prompt", "required"),
    ],
)
async def test_edits_and_variations_refuse_what_the_api_refuses_and_bind_nothing(
    sim: RunningSimulator,
    api: httpx2.AsyncClient,
    path: str,
    purpose: str,
    extra: dict[str, Any],
    param: str,
    says: str,
) -> None:
    source = await upload(api, purpose)
    body: dict[str, Any] = {"image_upload_id": source}
    if path.endswith("edits"):
        body.update(model="gpt-image-2", prompt="add a hat")
    else:
        body.update(model="dall-e-2")
    if "mask" in extra:
        body["mask_upload_id"] = await upload(api, extra.pop("mask"), png("mask", 64, 64))
    body.update(extra)
    response = await api.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]
    assert sim.state.tasks_created["images"] == 0
    assert all(u.claimed_by is None for u in sim.state.uploads.values())


async def test_a_generation_with_a_variation_only_model_is_refused_naming_the_models_that_generate(
    api: httpx2.AsyncClient,
) -> None:
    response = await api.post("/images/generations/async", json={"model": "dall-e-2", "prompt": "a cat"})
    assert response.status_code == 400
    assert "gpt-image-2, wan2.7-image, wan2.7-image-pro" in response.json()["error"]["message"]


@pytest.mark.parametrize("purpose", ["image_edit_source", "image_edit_mask", "image_variation_source"])
async def test_edit_and_variation_uploads_are_limited_to_25_mb(api: httpx2.AsyncClient, purpose: str) -> None:
    body = {
        "purpose": purpose,
        "content_type": "image/png",
        "content_length": 25 * 1024 * 1024 + 1,
        "content_md5": base64.b64encode(hashlib.md5(b"x").digest()).decode(),
        "checksum_sha256": hashlib.sha256(b"x").hexdigest(),
    }
    response = await api.post("/uploads/presign", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    accepted = await api.post("/uploads/presign", json={**body, "content_length": 25 * 1024 * 1024})
    assert accepted.json()["max_content_length"] == 25 * 1024 * 1024


def test_the_listings_say_which_image_endpoints_take_each_model() -> None:
    from alltoken_mcp.simulator.catalog import IMAGE_MODELS, image_model_info, public_entry

    published = {m.id: image_model_info(m)["input_modalities"] for m in IMAGE_MODELS}
    assert published == {
        "gpt-image-2": ["text", "image"],
        "wan2.7-image": ["text", "image"],
        "wan2.7-image-pro": ["text", "image"],
        "dall-e-2": ["image"],
    }
    assert public_entry("dall-e-2")["tags"] == ["image_variation"]  # type: ignore[index]
    assert public_entry("gpt-image-2")["tags"] == ["image_generation", "image_edit"]  # type: ignore[index]
