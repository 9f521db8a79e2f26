"""Inline previews through the real server (in memory, both eras) against the simulator: each generated
image comes back with a small decodable preview next to its resource link, a video with its last frame;
`preview: false` and ALLTOKEN_PREVIEWS=off leave them out; a preview that cannot be made is a warning,
never a failed job; Pillow is not imported at start-up."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import anyio
import mcp_types as t
import pytest
from PIL import Image

from alltoken_mcp.previews import MAX_BYTES, MAX_SIDE, PreviewError, make_preview
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.serverkit import ERAS, connect, data, settings_for


def previews_in(result: t.CallToolResult) -> list[Image.Image]:
    shown = []
    for block in result.content:
        if isinstance(block, t.ImageContent):
            raw = base64.b64decode(block.data)
            assert len(raw) <= MAX_BYTES
            image = Image.open(io.BytesIO(raw))
            image.load()
            assert image.format == {"image/jpeg": "JPEG", "image/webp": "WEBP"}[block.mime_type]
            shown.append(image)
    return shown


@pytest.mark.parametrize("mode", ERAS)
async def test_each_image_comes_back_with_a_small_preview_after_its_link(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        result = await client.call_tool("alltoken_image", {"prompt": "fox", "n": 2, "size": "1536x1024"})
    record = data(result)
    kinds = [type(block).__name__ for block in result.content]
    assert kinds == ["TextContent", "ResourceLink", "ImageContent", "ResourceLink", "ImageContent"]
    for image in previews_in(result):
        assert image.size == (MAX_SIDE, 341)  # the long side is 512, the aspect kept
    assert "preview" not in str(record)  # content for the model, never in the record


async def test_a_2048_pixel_image_gets_a_bounded_preview(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        result = await client.call_tool("alltoken_image", {"prompt": "fox", "size": "2048x2048"})
    [image] = previews_in(result)
    assert image.size == (MAX_SIDE, MAX_SIDE)


async def test_preview_false_and_the_setting_turn_previews_off_also_for_job_status(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        declined = await client.call_tool("alltoken_image", {"prompt": "fox", "preview": False})
        assert previews_in(declined) == []
        again = await client.call_tool("job_status", {"job_id": data(declined)["job_id"]})
        assert previews_in(again) == []  # the caller's choice is kept with the job
        wanted = await client.call_tool("alltoken_image", {"prompt": "fox"})
        assert len(previews_in(wanted)) == 1
        assert len(previews_in(await client.call_tool("job_status", {"job_id": data(wanted)["job_id"]}))) == 1
    off = settings_for(tmp_path, sim.base_url, ALLTOKEN_PREVIEWS="off")
    async with connect(off) as client:
        assert previews_in(await client.call_tool("alltoken_image", {"prompt": "fox"})) == []


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_a_video_is_previewed_by_its_last_frame(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(
            await client.call_tool(
                "alltoken_video", {"prompt": "waves", "resolution": "480p", "return_last_frame": True}
            )
        )
        sim.state.advance_to(sim.state.videos[job["upstream_id"]].timeline.finished + 0.01)
        result = await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 30})
    assert [f["role"] for f in data(result)["files"]] == ["video", "last_frame"]
    kinds = [type(block).__name__ for block in result.content]
    assert kinds == [
        "TextContent",
        "ResourceLink",
        "ResourceLink",
        "ImageContent",
    ]  # the frame's, not the video's
    [frame] = previews_in(result)
    assert max(frame.size) <= MAX_SIDE


async def test_a_preview_that_cannot_be_made_is_a_warning_and_the_job_stays_completed(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_image", {"prompt": "fox", "preview": True}))
        path = Path(job["files"][0]["path"])
        await anyio.Path(path).write_bytes(b"not the saved image any more")
        result = await client.call_tool("job_status", {"job_id": job["job_id"]})
    record = data(result)
    assert record["status"] == "completed"
    assert previews_in(result) == []
    [warning] = record["warnings"]
    assert warning.startswith(f"no preview of {path.name}: ")
    assert "changed on disk" in warning


def test_an_image_with_transparency_keeps_it_in_a_webp_preview() -> None:
    clear = Image.new("RGBA", (1024, 600), (0, 0, 0, 0))
    clear.paste((200, 30, 30, 255), (100, 100, 400, 400))
    buffer = io.BytesIO()
    clear.save(buffer, "PNG")
    preview = make_preview(buffer.getvalue())
    assert (preview.mime_type, preview.width, preview.height) == ("image/webp", 512, 300)
    decoded = Image.open(io.BytesIO(preview.data))
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((0, 0))[3] == 0


def test_noise_that_will_not_compress_is_shrunk_until_it_fits() -> None:
    noise = Image.effect_noise((1024, 1024), 120).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    preview = make_preview(buffer.getvalue(), max_bytes=8 * 1024)
    assert len(preview.data) <= 8 * 1024
    assert preview.width < MAX_SIDE


def test_bytes_that_are_not_an_image_raise_a_one_line_preview_error() -> None:
    with pytest.raises(PreviewError, match=r"^the image could not be decoded \(") as caught:
        make_preview(b"<html>not an image</html>")
    assert "\n" not in str(caught.value)


def test_pillow_is_not_imported_at_start_up() -> None:
    probe = (
        "import sys, alltoken_mcp.cli, alltoken_mcp.server, alltoken_mcp.tools.media, alltoken_mcp.previews\n"
        "print('PIL' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
