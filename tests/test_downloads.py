"""Result downloads through the real server (in memory) against a hostile AllToken (tests/hostile.py): a
simulator behind a front that points `video_url`/`r2_url` wherever a test says and serves hostile files.

What must hold: a result URL reaching inside the network is refused on every hop and the job fails saying
so; bytes that are not the claimed type are never saved; a slow download is abandoned within its window;
cancelling stops a download and removes its partial file; downloads cannot starve polling; permanent
failures fail at once, transient ones are retried a bounded number of times.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from alltoken_mcp.jobs import MAX_PARALLEL_DOWNLOADS
from alltoken_mcp.settings import DownloadLimits, Settings
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.hostile import MP4_HEAD, Front, HostileFile, hostile_front
from tests.rawserver import RawServer, raw_server
from tests.serverkit import connect, data, settings_for

FAST_RETRIES = DownloadLimits(retry_delay_seconds=0.05)
TEXT = b"this is not a video\n"  # 20 bytes
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.001)  # renders finish before the first poll


@pytest.fixture
async def front(sim: RunningSimulator) -> AsyncIterator[Front]:
    async with hostile_front(sim) as running:
        yield running


@pytest.fixture
async def internal() -> AsyncIterator[RawServer]:
    """Another service on this machine (no script: it would answer 599 to anything that reached it)."""
    async with raw_server() as server:
        yield server


def settings(tmp_path: Path, front: Front, limits: DownloadLimits = FAST_RETRIES) -> Settings:
    return settings_for(tmp_path, front.base_url).with_overrides(downloads=limits)


def saved_names(settings: Settings) -> list[str]:
    """Everything in the output directory, unfinished (hidden) temp files included."""
    out = settings.output_dir
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


async def until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.01)


async def finished_video(client: Client, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    started = data(await client.call_tool("alltoken_video", {"prompt": "waves", **(arguments or {})}))
    with anyio.fail_after(30):
        return data(await client.call_tool("job_status", {"job_id": started["job_id"], "wait_seconds": 25}))


def assert_failed_download(record: dict[str, Any], *fragments: str) -> str:
    assert record["status"] == "failed", record
    assert record["error"]["code"] == "download_failed"
    message: str = record["error"]["message"]
    for fragment in fragments:
        assert fragment in message, message
    assert record["files"] == []
    return message


# ------------------------------------------------------------------------------------------ SSRF


@pytest.mark.parametrize(
    ("video_url", "reason"),
    [
        ("http://127.0.0.1:{internal}/secret.mp4", "plain http is allowed only to the configured"),
        ("https://127.0.0.1:{internal}/secret.mp4", "127.0.0.1, a loopback address"),
        ("https://localhost:{internal}/secret.mp4", "a loopback address"),  # after DNS resolution
        ("https://169.254.169.254/latest/meta-data/iam/", "169.254.169.254, a link-local address"),
        ("https://[::ffff:10.0.0.1]/v.mp4", "a private address"),
        ("file:///etc/passwd", "file: URL"),
        ("{origin}/files/to-internal", "plain http is allowed only to the configured"),
        ("{origin}/files/to-internal-https", "a loopback address"),
        ("{origin}/files/to-file", "file: URL"),
        ("{origin}/files/hop1", "a loopback address"),  # two allowed hops, then inside
    ],
)
async def test_a_video_url_reaching_inside_the_network_is_refused_and_the_job_fails(
    tmp_path: Path, front: Front, internal: RawServer, video_url: str, reason: str
) -> None:
    inside = f"127.0.0.1:{internal.port}"
    front.files["to-internal"] = HostileFile(status=302, location=f"http://{inside}/secret.mp4")
    front.files["to-internal-https"] = HostileFile(status=307, location=f"https://localhost:{internal.port}/")
    front.files["to-file"] = HostileFile(status=301, location="file:///etc/passwd")
    front.files["hop1"] = HostileFile(status=302, location="/files/hop2")
    front.files["hop2"] = HostileFile(status=308, location=f"https://{inside}/secret.mp4")
    front.video_url = video_url.replace("{internal}", str(internal.port))
    config = settings(tmp_path, front)
    async with connect(config) as client:
        record = await finished_video(client)
    message = assert_failed_download(record, "refused", reason, "AllToken charges for it")
    assert "Trying again cannot help" in message  # permanent: one attempt, no retries
    assert record["upstream_id"] in message
    assert internal.requests == []  # refused before any connection to the inside service
    assert saved_names(config) == []
    assert sum(front.hits.values()) <= 2  # each redirect hop of the chain was requested once


async def test_an_image_recovery_url_reaching_inside_is_refused(
    tmp_path: Path, front: Front, internal: RawServer
) -> None:
    front.image_url = f"http://127.0.0.1:{internal.port}/{{task}}.png"
    config = settings(tmp_path, front)
    async with connect(config) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "a kite", "wait_seconds": 20}))
    assert_failed_download(record, "image 0 could not be downloaded from its recovery URL", "plain http")
    assert internal.requests == []
    assert saved_names(config) == []


async def test_results_on_the_base_urls_own_origin_are_downloaded(tmp_path: Path, front: Front) -> None:
    config = settings(tmp_path, front)  # the front's own URLs: http to a loopback address, but trusted
    async with connect(config) as client:
        record = await finished_video(client, {"return_last_frame": True})
    assert record["status"] == "completed"
    assert [f["role"] for f in record["files"]] == ["video", "last_frame"]


# ------------------------------------------------------------------------------------ wrong bytes


async def test_a_text_body_claimed_as_a_video_fails_the_job_and_is_never_saved(
    tmp_path: Path, front: Front
) -> None:
    front.files["v.mp4"] = HostileFile(content_type="video/mp4", body=TEXT)
    front.video_url = "{origin}/files/v.mp4"
    config = settings(tmp_path, front)
    async with connect(config) as client:
        record = await finished_video(client)
    assert_failed_download(record, "bytes of no known media type", "instead of a video (MP4 or MOV)")
    assert front.hits["v.mp4"] == 1
    assert saved_names(config) == []


async def test_a_text_body_claimed_as_an_image_fails_the_job_and_is_never_saved(
    tmp_path: Path, front: Front
) -> None:
    front.files["i.png"] = HostileFile(content_type="image/png", body=TEXT)
    front.image_url = "{origin}/files/i.png"
    config = settings(tmp_path, front)
    async with connect(config) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "a kite", "wait_seconds": 20}))
    assert_failed_download(record, "instead of an image (PNG, JPEG, WebP or GIF)")
    assert saved_names(config) == []


async def test_a_bad_last_frame_does_not_cost_the_video(tmp_path: Path, front: Front) -> None:
    front.files["frame.png"] = HostileFile(content_type="image/png", body=MP4_HEAD)
    front.last_frame_url = "{origin}/files/frame.png"
    config = settings(tmp_path, front)
    async with connect(config) as client:
        record = await finished_video(client, {"return_last_frame": True})
    assert record["status"] == "completed"
    assert [f["role"] for f in record["files"]] == ["video"]
    assert "last frame could not be" in record["note"]
    assert "video/mp4 bytes" in record["note"]
    assert saved_names(config) == [Path(record["files"][0]["path"]).name]


# ------------------------------------------------------------------------------- time and cancel


async def test_a_trickling_video_is_abandoned_within_its_window_and_retried_a_bounded_number_of_times(
    tmp_path: Path, front: Front
) -> None:
    front.files["slow.mp4"] = HostileFile(body=MP4_HEAD, trickle_seconds=0.05)  # 20 bytes/s
    front.video_url = "{origin}/files/slow.mp4"
    limits = DownloadLimits(
        min_bytes_per_second=1024, window_seconds=0.5, max_attempts=3, retry_delay_seconds=0.05
    )
    config = settings(tmp_path, front, limits)
    async with connect(config) as client:
        started = time.monotonic()
        record = await finished_video(client)
        elapsed = time.monotonic() - started
    assert_failed_download(record, "below the minimum rate of 1.0 KiB/s", "Gave up after 3 attempts")
    assert front.hits["slow.mp4"] == 3
    assert elapsed < 3 * 0.5 + 5  # three windows plus the render and the short retry delays
    assert saved_names(config) == []


async def test_cancelling_a_running_download_stops_it_and_removes_the_partial_file(
    tmp_path: Path, front: Front
) -> None:
    front.files["slow.mp4"] = HostileFile(body=MP4_HEAD + b"\x00" * 5000, trickle_seconds=0.05)
    front.video_url = "{origin}/files/slow.mp4"
    hung_up = front.hung_up["slow.mp4"] = anyio.Event()
    config = settings(tmp_path, front, DownloadLimits(min_bytes_per_second=1, window_seconds=60))
    async with connect(config) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "waves"}))
        await until(lambda: any(n.endswith(".partial") for n in saved_names(config)), "the download to start")
        cancelled = data(await client.call_tool("job_cancel", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled"
        assert "download was stopped" in cancelled["note"]
        with anyio.fail_after(5):
            await hung_up.wait()  # the connection was closed: the download really stopped
        await until(lambda: saved_names(config) == [], "the partial file to go")
        later = data(await client.call_tool("job_status", {"job_id": job["job_id"]}))
    assert later["status"] == "cancelled"
    assert later["files"] == []
    assert front.hits["slow.mp4"] == 1


async def test_cancelling_during_the_last_frame_also_removes_the_saved_video(
    tmp_path: Path, front: Front
) -> None:
    front.files["frame.png"] = HostileFile(content_type="image/png", body=PNG_HEAD, trickle_seconds=0.05)
    front.last_frame_url = "{origin}/files/frame.png"
    config = settings(tmp_path, front, DownloadLimits(min_bytes_per_second=1, window_seconds=60))
    async with connect(config) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "waves", "return_last_frame": True}))
        await until(lambda: front.streaming == 1, "the last frame download to start")
        assert any(n.endswith(".mp4") for n in saved_names(config))  # the video is already saved
        cancelled = data(await client.call_tool("job_cancel", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled"
        await until(lambda: saved_names(config) == [], "the video and the partial frame to go")


async def test_sixteen_trickling_downloads_do_not_delay_a_new_image_job(tmp_path: Path, front: Front) -> None:
    front.files["slow.mp4"] = HostileFile(body=MP4_HEAD, trickle_seconds=0.2)
    front.video_url = "{origin}/files/slow.mp4"
    config = settings(tmp_path, front, DownloadLimits(min_bytes_per_second=1, window_seconds=60))
    async with connect(config) as client:
        for n in range(16):
            await client.call_tool("alltoken_video", {"prompt": f"waves {n}"})
        await until(lambda: front.streaming == MAX_PARALLEL_DOWNLOADS, "the download slots to fill")
        with anyio.fail_after(15):
            record = data(await client.call_tool("alltoken_image", {"prompt": "a kite", "wait_seconds": 10}))
        assert record["status"] == "completed"
        assert front.most_streaming == MAX_PARALLEL_DOWNLOADS  # the others wait for a download slot
        videos = data(await client.call_tool("list_jobs", {"kind": "video"}))["jobs"]
        assert {v["status"] for v in videos} == {"processing"}


# ---------------------------------------------------------------------------- permanent, transient


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_a_refused_download_fails_at_once_saying_the_render_was_paid(
    tmp_path: Path, front: Front, status: int
) -> None:
    front.files["v.mp4"] = HostileFile(status=status, content_type="application/xml", body=b"<Error/>")
    front.video_url = "{origin}/files/v.mp4"
    async with connect(settings(tmp_path, front)) as client:
        record = await finished_video(client)
    message = assert_failed_download(
        record, f"HTTP {status} (the URL may have expired)", "AllToken charges for it", "Trying again cannot"
    )
    assert "video_url, valid until" in message
    assert front.hits["v.mp4"] == 1


async def test_an_endless_video_is_cut_at_the_size_cap_once_and_never_fetched_again(
    tmp_path: Path, front: Front
) -> None:
    front.files["v.mp4"] = HostileFile(body=MP4_HEAD, endless=True)
    front.video_url = "{origin}/files/v.mp4"
    config = settings(tmp_path, front, DownloadLimits(max_video_bytes=1024 * 1024, retry_delay_seconds=0.05))
    async with connect(config) as client:
        record = await finished_video(client)
    assert_failed_download(record, "sent more than the 1.0 MiB limit", "Trying again cannot help")
    assert front.hits["v.mp4"] == 1
    assert saved_names(config) == []


async def test_server_errors_are_retried_a_bounded_number_of_times_then_fail(
    tmp_path: Path, front: Front
) -> None:
    front.files["v.mp4"] = HostileFile(failures=1000)
    front.video_url = "{origin}/files/v.mp4"
    limits = DownloadLimits(max_attempts=4, retry_delay_seconds=0.05)
    async with connect(settings(tmp_path, front, limits)) as client:
        record = await finished_video(client)
    assert_failed_download(record, "HTTP 503", "Gave up after 4 attempts")
    assert front.hits["v.mp4"] == 4


async def test_a_transient_failure_is_retried_and_the_video_completes(tmp_path: Path, front: Front) -> None:
    front.files["v.mp4"] = HostileFile(failures=2)
    front.video_url = "{origin}/files/v.mp4"
    async with connect(settings(tmp_path, front)) as client:
        record = await finished_video(client)
    assert record["status"] == "completed"
    assert record["files"][0]["bytes"] == len(HostileFile().body)
    assert front.hits["v.mp4"] == 3
