"""Simulated video tasks and uploads: §5.1 validation, lifecycle, cancel, list, presign + PUT + claim."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx2
import pytest

from alltoken_mcp.simulator import RunningSimulator, SimConfig

PNG = b"\x89PNG\r\n\x1a\n" + b"frame" * 100


def _video(model: str = "seedance-2.0", **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "a horse on a beach", **extra}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (_video("seedance-1.0-pro", duration=-1), "duration", "2 to 12"),
        (_video("seedance-1.5-pro", duration=3), "duration", "4 to 12"),
        (_video("seedance-1.5-pro", duration=13), "duration", "-1 (auto)"),
        (_video("seedance-2.0", duration=16), "duration", "4 to 15"),
        (_video("seedance-2.5", duration=31), "duration", "4 to 30"),
        (_video("seedance-2.5", resolution="1080p"), "resolution", "480p, 720p"),
        (_video("seedance-2.0", resolution="4k"), "resolution", "480p"),
        (_video("seedance-1.0-pro", frames=30), "frames", "25+4n"),
        (_video("seedance-1.0-pro", frames=293), "frames", "289"),
        (
            _video("seedance-2.5", omni_reference_task_type="edit", ratio="16:9", duration=-1),
            "ratio",
            "adaptive",
        ),
        (
            _video("seedance-2.5", omni_reference_task_type="edit", ratio="adaptive", duration=5),
            "duration",
            "-1",
        ),
        (_video("seedance-2.5", omni_reference_task_type="extend", ratio="1:1"), "ratio", "adaptive"),
        (_video(ratio="2:1"), "ratio", "16:9"),
        (
            _video(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
            "content[0]",
            "presign",
        ),
        (
            _video(content=[{"type": "image", "url": "https://x.test/a.png", "upload_id": "upl_1"}]),
            "content[0]",
            "not both",
        ),
        (_video(content=[{"type": "image", "upload_id": "upl_unknown"}]), "content[0].upload_id", "presign"),
        (_video(prompt=""), "prompt", "required"),
    ],
)
async def test_video_create_fails_fast_with_400_invalid_request_saying_what_is_accepted(
    sim: RunningSimulator, api: httpx2.AsyncClient, body: dict[str, Any], param: str, says: str
) -> None:
    response = await api.post("/videos/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert says in error["message"]
    assert sim.state.tasks_created["videos"] == 0


@pytest.mark.parametrize(
    ("body", "duration", "frames"),
    [
        (_video("seedance-2.5", duration=30, resolution="720p"), 30, None),
        (_video("seedance-2.0", duration=0), 5, None),
        (_video("seedance-2.0"), 5, None),
        (_video("seedance-1.5-pro", duration=-1), None, None),
        (_video("seedance-1.0-pro", frames=29, duration=99), 1, 29),  # frames wins over duration
        (_video("seedance-2.0", frames=30), 5, None),  # other models drop frames silently
        (_video("seedance-2.5", omni_reference_task_type="edit", ratio="adaptive", duration=-1), None, None),
        (_video("happyhorse-1.0-video-edit", duration=99), 5, None),  # duration decided upstream
    ],
)
async def test_valid_video_requests_are_accepted_with_the_effective_duration(
    api: httpx2.AsyncClient, body: dict[str, Any], duration: int | None, frames: int | None
) -> None:
    response = await api.post("/videos/generations", json=body)
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "queued"
    assert task["is_expired"] is False
    assert task["id"].startswith("vgen_")
    if duration is not None:
        assert task["duration"] == duration
    assert task.get("frames") == frames


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_video_lifecycle_runs_queued_processing_completed_expired(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    created = await api.post("/videos/generations", json=_video(resolution="480p", return_last_frame=True))
    task_id = created.json()["id"]
    timeline = sim.state.videos[task_id].timeline
    assert 30 <= timeline.finished - timeline.created <= 120  # §11.24: 480p takes 30–120 s
    sim.state.advance_to(timeline.started + 0.01)
    assert (await api.get(f"/videos/generations/{task_id}")).json()["status"] == "processing"
    sim.state.advance_to(timeline.finished + 0.01)
    done = (await api.get(f"/videos/generations/{task_id}")).json()
    assert done["status"] == "completed"
    assert (done["resolution"], done["ratio"], done["fps"], done["duration"]) == ("480p", "16:9", 24, 5)
    assert done["usage"]["completion_tokens"] > 0
    assert 86390 <= done["video_url_ttl"] <= 86400
    async with httpx2.AsyncClient() as anonymous:
        video = await anonymous.get(done["video_url"])
        assert video.status_code == 200
        assert video.content[4:8] == b"ftyp"
        assert video.headers["content-type"] == "video/mp4"
        frame = await anonymous.get(done["last_frame_url"])
        assert frame.content.startswith(b"\x89PNG")
        sim.state.advance(3600)
        later = (await api.get(f"/videos/generations/{task_id}")).json()
        assert later["video_url_ttl"] == done["video_url_ttl"] - 3600
        sim.state.advance(86400)
        expired = (await api.get(f"/videos/generations/{task_id}")).json()
        assert expired["status"] == "expired"
        assert expired["is_expired"] is True
        assert "video_url" not in expired
        assert (await anonymous.get(done["video_url"])).status_code == 404


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_cancel_works_only_while_queued(sim: RunningSimulator, api: httpx2.AsyncClient) -> None:
    first = (await api.post("/videos/generations", json=_video())).json()["id"]
    cancelled = await api.post(f"/videos/generations/{first}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await api.post(f"/videos/generations/{first}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_status"
    second = (await api.post("/videos/generations", json=_video(prompt="other"))).json()["id"]
    sim.state.advance_to(sim.state.videos[second].timeline.started + 0.01)
    assert (await api.post(f"/videos/generations/{second}/cancel")).status_code == 409
    unknown = await api.post("/videos/generations/vgen_missing/cancel")
    assert unknown.status_code == 404
    sim.state.advance(10_000)
    assert (await api.get(f"/videos/generations/{first}")).json()["status"] == "cancelled"


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_list_is_newest_first_filtered_by_status_and_limited(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    ids = [
        (await api.post("/videos/generations", json=_video(prompt=f"p{i}"))).json()["id"] for i in range(3)
    ]
    await api.post(f"/videos/generations/{ids[1]}/cancel")
    everything = (await api.get("/videos/generations")).json()
    assert [t["id"] for t in everything["items"]] == ids[::-1]
    assert everything["total"] == 3
    queued = (await api.get("/videos/generations", params={"status": "queued", "limit": 1})).json()
    assert queued["total"] == 2
    assert [t["id"] for t in queued["items"]] == [ids[2]]
    bad = await api.get("/videos/generations", params={"status": "done"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "status"


async def test_a_fail_prompt_ends_the_video_failed_with_an_error(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    task_id = (await api.post("/videos/generations", json=_video(prompt="[fail] x"))).json()["id"]
    sim.state.advance_to(sim.state.videos[task_id].timeline.finished + 0.01)
    failed = (await api.get(f"/videos/generations/{task_id}")).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "upstream_content_violation"


@pytest.mark.parametrize(("honour", "second_status"), [(True, 409), (False, 202)])
async def test_video_idempotency_can_be_honoured_or_ignored(
    sim: RunningSimulator, api: httpx2.AsyncClient, honour: bool, second_status: int
) -> None:
    sim.state.update_config(honour_video_idempotency=honour)
    headers = {"Idempotency-Key": "v-1"}
    first = await api.post("/videos/generations", json=_video(), headers=headers)
    second = await api.post("/videos/generations", json=_video(), headers=headers)
    assert first.status_code == 202
    assert second.status_code == second_status
    assert sim.state.tasks_created["videos"] == (1 if honour else 2)
    if honour:
        assert second.json()["error"]["task_id"] == first.json()["id"]


def _presign_body(data: bytes, **change: Any) -> dict[str, Any]:
    return {
        "purpose": "video_input_image",
        "content_type": "image/png",
        "content_length": len(data),
        "content_md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "checksum_sha256": hashlib.sha256(data).hexdigest(),
        **change,
    }


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"purpose": "avatar"}, 400, "invalid_purpose"),
        ({"content_type": "image/gif"}, 400, "invalid_content_type"),
        ({"content_type": "video/mp4"}, 400, "invalid_content_type"),
        ({"content_md5": "abc"}, 400, "invalid_content_md5"),
        ({"checksum_sha256": "A" * 64}, 400, "invalid_checksum_sha256"),
        ({"content_length": 0}, 400, "invalid_request"),
        ({"content_length": 31 * 1024 * 1024}, 413, "payload_too_large"),
    ],
)
async def test_presign_validates_each_field_with_its_own_code(
    api: httpx2.AsyncClient, change: dict[str, Any], status: int, code: str
) -> None:
    response = await api.post("/uploads/presign", json=_presign_body(PNG, **change))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_presign_put_and_a_one_time_claim_in_video_content(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    presigned = (await api.post("/uploads/presign", json=_presign_body(PNG))).json()
    assert presigned["method"] == "PUT"
    assert presigned["upload_id"].startswith("upl_")
    assert presigned["expires_in"] >= 1
    assert set(presigned["required_headers"]) == {"Content-Type", "Content-MD5"}
    item = {"type": "image", "upload_id": presigned["upload_id"], "role": "first_frame"}
    not_yet = await api.post("/videos/generations", json=_video(content=[item]))
    assert not_yet.status_code == 400
    assert "PUT" in not_yet.json()["error"]["message"]
    async with httpx2.AsyncClient() as storage:
        leaked = await storage.put(
            presigned["upload_url"],
            content=PNG,
            headers={**presigned["required_headers"], "Authorization": "Bearer x"},
        )
        assert leaked.status_code == 400  # S3 refuses a second auth mechanism
        wrong = await storage.put(
            presigned["upload_url"], content=PNG[:-1] + b"!", headers=presigned["required_headers"]
        )
        assert wrong.status_code == 400
        assert b"BadDigest" in wrong.content
        short = await storage.put(
            presigned["upload_url"], content=PNG[:-1], headers=presigned["required_headers"]
        )
        assert b"IncompleteBody" in short.content
        unsigned = await storage.put(
            presigned["upload_url"], content=PNG, headers={"Content-Type": "image/png"}
        )
        assert unsigned.status_code == 403
        ok = await storage.put(presigned["upload_url"], content=PNG, headers=presigned["required_headers"])
        assert ok.status_code == 200
    assert sim.state.foreign_authorization == 1
    created = await api.post("/videos/generations", json=_video(content=[item]))
    assert created.status_code == 202
    assert created.json()["input_type"] == "image_first_frame"
    reused = await api.post("/videos/generations", json=_video(prompt="again", content=[item]))
    assert reused.status_code == 400
    assert "already used" in reused.json()["error"]["message"]


async def test_an_upload_binds_only_for_its_purpose_and_not_after_its_claim_window(
    sim: RunningSimulator, api: httpx2.AsyncClient
) -> None:
    presigned = (
        await api.post("/uploads/presign", json=_presign_body(PNG, purpose="image_edit_source"))
    ).json()
    async with httpx2.AsyncClient() as storage:
        await storage.put(presigned["upload_url"], content=PNG, headers=presigned["required_headers"])
    item = {"type": "image", "upload_id": presigned["upload_id"]}
    wrong_purpose = await api.post("/videos/generations", json=_video(content=[item]))
    assert wrong_purpose.status_code == 400
    assert "video_input_image" in wrong_purpose.json()["error"]["message"]
    sim.state.advance(7200 * 0.01 + 1)
    edit = await api.post(
        "/images/edits",
        json={"model": "gpt-image-2", "prompt": "hat", "image_upload_id": presigned["upload_id"]},
    )
    assert edit.status_code == 400
    assert "expired" in edit.json()["error"]["message"]


async def test_image_edit_claims_its_source_upload_and_gets_an_iedit_id(api: httpx2.AsyncClient) -> None:
    presigned = (
        await api.post("/uploads/presign", json=_presign_body(PNG, purpose="image_edit_source"))
    ).json()
    async with httpx2.AsyncClient() as storage:
        await storage.put(presigned["upload_url"], content=PNG, headers=presigned["required_headers"])
    body = {"model": "gpt-image-2", "prompt": "add a hat", "image_upload_id": presigned["upload_id"]}
    edit = await api.post("/images/edits", json=body)
    assert edit.status_code == 202
    assert edit.json()["id"].startswith("igen_iedit_")
    assert (await api.post("/images/edits", json=body)).status_code == 400
