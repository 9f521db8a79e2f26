"""The media tools through the real MCP server (in memory, both protocol eras) against the simulator over
loopback: images saved before completion, video renders started, waited on with progress and cancelled in
every state, argument checks for every field, path escapes, an unwritable output directory, resources
and resource-update subscriptions."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import time
import warnings
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mcp_types as t
import pytest
from mcp import Client

from alltoken_mcp.server import build_server
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.serverkit import ERAS, connect, data, error_text, settings_for, text_of

T = TypeVar("T")

SLOW = SimConfig(speed=1.0)
"""Real-time renders: a job stays queued/processing for as long as a test needs it to."""


def only_file(record: dict[str, Any]) -> dict[str, Any]:
    assert len(record["files"]) == 1, record
    return record["files"][0]


def assert_saved(entry: dict[str, Any]) -> bytes:
    """The file exists under its final name, whole: size and sha256 match the record."""
    body = Path(entry["path"]).read_bytes()
    assert Path(entry["path"]).is_absolute()
    assert len(body) == entry["bytes"]
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    return body


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("mode", ERAS)
async def test_images_are_saved_before_the_job_completes(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        result = await client.call_tool(
            "alltoken_image", {"prompt": "A red fox in snow", "n": 2, "size": "1024x1024", "quality": "low"}
        )
        record = data(result)
        assert record["status"] == "completed"
        assert record["kind"] == "image"
        assert record["upstream_id"].startswith("igen_")
        assert [f["uri"] for f in record["files"]] == [
            f"alltoken://media/{record['job_id']}/0",
            f"alltoken://media/{record['job_id']}/1",
        ]
        for entry in record["files"]:
            body = assert_saved(entry)
            assert body.startswith(b"\x89PNG")
            assert entry["mime_type"] == "image/png"
            assert Path(entry["path"]).parent == tmp_path / "media"
            assert "red-fox-in-snow" in Path(entry["path"]).name
        links = [c for c in result.content if isinstance(c, t.ResourceLink)]
        assert [str(link.uri) for link in links] == [f["uri"] for f in record["files"]]
        assert all(entry["path"] in text_of(result) for entry in record["files"])
        # The file as a blob resource, byte for byte.
        blob = await client.read_resource(record["files"][1]["uri"])
        content = blob.contents[0]
        assert isinstance(content, t.BlobResourceContents)
        assert base64.b64decode(content.blob) == await anyio.Path(record["files"][1]["path"]).read_bytes()
    # The one-time delivery was used once; no fallback download was needed.
    assert sim.state.counters()["b64_deliveries"] == 1


async def test_a_short_wait_returns_the_running_job_and_the_poller_finishes_it(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started = data(
            await client.call_tool("alltoken_image", {"prompt": "a lighthouse", "wait_seconds": 0})
        )
        assert started["status"] in ("queued", "processing")
        assert started["files"] == []
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        finished = data(
            await client.call_tool(
                "job_status", {"job_id": started["job_id"], "wait_seconds": 20}, progress_callback=on_progress
            )
        )
    assert finished["status"] == "completed"
    assert_saved(only_file(finished))
    assert progress, "waiting must report progress"
    assert all(total == 20 for _, total, _ in progress)
    assert progress[-1][2] is not None
    assert "completed" in progress[-1][2]


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    """The result of `call` and the seconds it took."""
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def test_a_wait_beyond_the_cap_is_cut_to_it_and_the_answer_says_so(tmp_path: Path) -> None:
    async with serve_slow() as sim:
        settings = settings_for(tmp_path, sim.base_url, ALLTOKEN_MAX_WAIT_SECONDS="1")
        async with connect(settings) as client:
            with anyio.fail_after(8):
                image, image_took = await timed(
                    client.call_tool("alltoken_image", {"prompt": "slow", "wait_seconds": 3000})
                )
                record = data(image)
                assert record["status"] in ("queued", "processing")
                again, again_took = await timed(
                    client.call_tool("job_status", {"job_id": record["job_id"], "wait_seconds": 60})
                )
                within = await client.call_tool(
                    "job_status", {"job_id": record["job_id"], "wait_seconds": 0.2}
                )
    # Each call ends when the 1 s budget does: not before it (it waited), and not much after (the slack is
    # ten times the ~0.05 s a call takes beyond its wait here) — a cap removed or raised fails this.
    assert 0.9 <= image_took <= 1.5
    assert 0.9 <= again_took <= 1.5

    def waited(warnings: list[str], asked: int) -> float:
        """The wait a capped-wait warning reports (the submit may have used some of the 1 s budget)."""
        (warning,) = warnings
        found = re.fullmatch(
            rf"Waited ([\d.]+) s, not the {asked} s asked: the most this server allows in one call "
            r"\(ALLTOKEN_MAX_WAIT_SECONDS = 1 s\)\.",
            warning,
        )
        assert found is not None, warning
        return float(found.group(1))

    assert 0.5 <= waited(record["warnings"], 3000) <= 1
    assert f"Warning: {record['warnings'][0]}" in text_of(image)
    assert data(again)["status"] in ("queued", "processing")
    assert 0.5 <= waited(data(again)["warnings"], 60) <= 1
    # A wait within the cap is not a capped wait.
    assert data(within)["warnings"] == []
    # The next step never suggests more than the server allows.
    for result in (image, again, within):
        assert f'job_status(job_id="{record["job_id"]}", wait_seconds=1) later' in text_of(result)


@pytest.mark.parametrize("mode", ERAS)
async def test_every_input_schema_refuses_unknown_keys_and_publishes_the_wait_cap(
    tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, ALLTOKEN_MAX_WAIT_SECONDS="12.5"), mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert all(tool.input_schema["additionalProperties"] is False for tool in tools.values())
    assert tools["alltoken_chat"].input_schema["$defs"]["ChatMessage"]["additionalProperties"] is False
    waits = {
        name: tool.input_schema["properties"]["wait_seconds"]
        for name, tool in tools.items()
        if "wait_seconds" in tool.input_schema["properties"]
    }
    assert set(waits) == {"alltoken_image", "alltoken_video", "job_status"}
    assert waits["alltoken_image"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 12.5}
    assert (waits["alltoken_video"]["maximum"], waits["job_status"]["maximum"]) == (12.5, 12.5)
    # The descriptions quote the same cap, and suggest no longer wait.
    assert "job_status(job_id, wait_seconds=12.5)" in (tools["alltoken_video"].description or "")
    assert "at most 12.5 s" in (tools["job_status"].description or "")
    assert "default and maximum: 12.5 s" in (tools["alltoken_image"].description or "")
    assert "wait_seconds=30" not in " ".join(tool.description or "" for tool in tools.values())


def serve_slow() -> Any:
    from alltoken_mcp.simulator import serve_simulator

    return serve_simulator(SLOW)


async def test_a_missing_key_is_explained_and_creates_no_job(tmp_path: Path, sim: RunningSimulator) -> None:
    async with connect(settings_for(tmp_path, sim.base_url, api_key=None)) as client:
        message = error_text(await client.call_tool("alltoken_image", {"prompt": "x"}))
        assert "ALLTOKEN_API_KEY" in message
        message = error_text(await client.call_tool("alltoken_video", {"prompt": "x"}))
        assert "ALLTOKEN_API_KEY" in message
        assert data(await client.call_tool("list_jobs", {}))["jobs"] == []


async def test_a_refused_submit_is_an_actionable_error_and_a_failed_job(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path="/v1/images/generations/async", status=402, code="insufficient_balance")
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(await client.call_tool("alltoken_image", {"prompt": "x"}))
        assert "Top up" in message
        jobs = data(await client.call_tool("list_jobs", {}))["jobs"]
    assert [job["status"] for job in jobs] == ["failed"]
    assert jobs[0]["job_id"] in message
    assert jobs[0]["error"]["code"] == "insufficient_balance"


async def test_an_unwritable_output_dir_keeps_the_job_recoverable(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        # The output directory turns into a file after start-up (a full or broken disk looks the same).
        shutil.rmtree(settings.output_dir, ignore_errors=True)
        settings.output_dir.write_text("not a directory")
        stuck = data(await client.call_tool("alltoken_image", {"prompt": "a kite", "wait_seconds": 3}))
        assert stuck["status"] == "processing"
        assert "could not save" in stuck["note"]
        assert str(settings.output_dir) in stuck["note"]
        # Fix the disk: the poller recovers the paid result from its r2_url.
        settings.output_dir.unlink()
        done = data(await client.call_tool("job_status", {"job_id": stuck["job_id"], "wait_seconds": 20}))
    assert done["status"] == "completed"
    assert_saved(only_file(done))
    counters = sim.state.counters()
    assert counters["b64_deliveries"] == 1  # the bytes were delivered once; the retry used the r2_url


# ------------------------------------------------------------------------------------------ videos


@pytest.mark.parametrize("mode", ERAS)
async def test_a_video_starts_at_once_and_completes_with_its_files(
    sim: RunningSimulator, tmp_path: Path, mode: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url), mode) as client:
        started = data(
            await client.call_tool(
                "alltoken_video",
                {"prompt": "waves at dusk", "duration": 5, "resolution": "480p", "return_last_frame": True},
            )
        )
        assert started["status"] == "queued"
        assert started["upstream_id"].startswith("vgen_")
        seen: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            seen.append(message or "")

        done = data(
            await client.call_tool(
                "job_status", {"job_id": started["job_id"], "wait_seconds": 30}, progress_callback=on_progress
            )
        )
    assert done["status"] == "completed"
    assert done["video_url"]
    video, frame = done["files"]
    assert video["role"] == "video"
    assert video["mime_type"] == "video/mp4"
    assert assert_saved(video)[4:8] == b"ftyp"
    assert frame["role"] == "last_frame"
    assert assert_saved(frame).startswith(b"\x89PNG")
    assert any("processing" in m for m in seen)
    assert "completed" in seen[-1]
    body = sim.state.videos[started["upstream_id"]].body
    assert body["duration"] == 5
    assert body["resolution"] == "480p"


async def test_a_local_first_frame_is_uploaded_and_sent_as_an_upload_id(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        image = data(await client.call_tool("alltoken_image", {"prompt": "a cat", "size": "1024x1024"}))
        frame_path = only_file(image)["path"]  # the output dir is always an allowed input dir
        started = data(
            await client.call_tool(
                "alltoken_video",
                {"prompt": "the cat walks", "first_frame": frame_path, "model": "seedance-1.5-pro"},
            )
        )
    content = sim.state.videos[started["upstream_id"]].body["content"]
    assert content == [{"type": "image", "upload_id": content[0]["upload_id"], "role": "first_frame"}]
    assert content[0]["upload_id"] in sim.state.uploads


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/etc/passwd", "allowed"),
        ("../../../../etc/hostname", "without '..'"),
        ("http://example.com/a.png", "https"),
        ("data:image/png;base64,AAAA", "2026-08-06"),
    ],
)
async def test_frames_outside_the_allowed_places_are_refused_before_anything_is_sent(
    sim: RunningSimulator, tmp_path: Path, raw: str, expected: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(await client.call_tool("alltoken_video", {"prompt": "x", "first_frame": raw}))
    assert expected in message
    counters = sim.state.counters()
    assert counters["tasks"]["videos"] == 0
    assert counters["tasks"]["uploads"] == 0


async def test_a_symlink_escaping_the_input_dir_is_refused(sim: RunningSimulator, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "inside.png").symlink_to(outside)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(
            await client.call_tool(
                "alltoken_video", {"prompt": "x", "first_frame": str(tmp_path / "inside.png")}
            )
        )
    assert "allowed" in message
    assert sim.state.counters()["tasks"]["uploads"] == 0


# Every argument the schema bounds, and every one checked against the model's capabilities.
BAD_ARGUMENTS = [
    ("alltoken_image", {"prompt": ""}, "prompt"),
    ("alltoken_image", {"prompt": "x", "n": 11}, "n"),
    ("alltoken_image", {"prompt": "x", "size": "1000x1000"}, "multiples of 16"),
    ("alltoken_image", {"prompt": "x", "size": "huge"}, "size"),
    ("alltoken_image", {"prompt": "x", "quality": "ultra"}, "quality"),
    ("alltoken_image", {"prompt": "x", "output_format": "gif"}, "output_format"),
    ("alltoken_image", {"prompt": "x", "background": "clear"}, "background"),
    ("alltoken_image", {"prompt": "x", "background": "transparent", "output_format": "jpeg"}, "alpha"),
    ("alltoken_image", {"prompt": "x", "moderation": "none"}, "moderation"),
    ("alltoken_image", {"prompt": "x", "seed": -5}, "seed"),
    ("alltoken_image", {"prompt": "x", "model": "gpt-image-3"}, "gpt-image-2"),
    ("alltoken_image", {"prompt": "x", "wait_seconds": -1}, "wait_seconds"),
    ("alltoken_video", {"prompt": "x", "duration": 3}, "4–12"),
    ("alltoken_video", {"prompt": "x", "duration": -1, "model": "seedance-1.0-pro"}, "duration"),
    ("alltoken_video", {"prompt": "x", "ratio": "2:1"}, "16:9"),
    ("alltoken_video", {"prompt": "x", "resolution": "4k"}, "1080p"),
    ("alltoken_video", {"prompt": "x", "resolution": "1080p", "model": "seedance-2.5"}, "720p"),
    ("alltoken_video", {"prompt": "x", "camera_fixed": True, "model": "seedance-2.0"}, "camera_fixed"),
    ("alltoken_video", {"prompt": "x", "model": "seedance-9"}, "seedance-1.5-pro"),
    ("alltoken_video", {"prompt": "x", "last_frame": "https://example.com/a.png"}, "first"),
    ("alltoken_video", {"prompt": "x", "seed": "abc"}, "seed"),
    ("alltoken_video", {"prompt": "x", "generate_audio": "loud"}, "generate_audio"),
    ("job_status", {"job_id": "x", "wait_seconds": -5}, "wait_seconds must be between 0 and 45 (got -5)"),
    ("alltoken_video", {"prompt": "x", "length": 12}, "length is not an argument (did you mean duration?)"),
    ("alltoken_image", {"prompt": "x", "count": 2}, "count is not an argument (did you mean n?)"),
    ("job_status", {"job_id": "job_0000000000000000"}, "No job"),
    ("job_status", {"job_id": "../../etc/passwd"}, "No job"),
    ("job_status", {"job_id": "job_'; DROP TABLE jobs; --"}, "No job"),
    ("job_cancel", {"job_id": "nope"}, "No job"),
    ("list_jobs", {"kind": "audio"}, "kind"),
    ("list_jobs", {"status": "done"}, "status"),
    ("list_jobs", {"limit": 0}, "limit"),
]


@pytest.mark.parametrize(("tool", "arguments", "expected"), BAD_ARGUMENTS)
async def test_bad_arguments_get_a_specific_message_and_cost_nothing(
    sim: RunningSimulator, tmp_path: Path, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        message = error_text(await client.call_tool(tool, arguments))
    assert expected in message
    tasks = sim.state.counters()["tasks"]
    assert tasks["images"] == 0
    assert tasks["videos"] == 0


async def test_an_unknown_job_error_lists_recent_job_ids(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "x"}))
        message = error_text(await client.call_tool("job_status", {"job_id": "job_ffffffffffffffff"}))
    assert job["job_id"] in message


# ------------------------------------------------------------------------------------------ cancel


@pytest.mark.parametrize("sim_config", [SLOW])
async def test_cancelling_a_queued_video_cancels_it_upstream(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started = await client.call_tool("alltoken_video", {"prompt": "x"})
        job = data(started)
        # Queued: a cancel can still stop it, so the answer offers one.
        assert f'or job_cancel(job_id="{job["job_id"]}")' in text_of(started)
        cancelled = data(await client.call_tool("job_cancel", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled"
        assert sim.state.videos[job["upstream_id"]].cancelled_at is not None
        again = await client.call_tool("job_cancel", {"job_id": job["job_id"]})
    assert data(again)["status"] == "cancelled"
    assert "already cancelled" in text_of(again)


@pytest.mark.parametrize("sim_config", [SLOW])
async def test_a_refused_cancel_of_a_running_video_is_reported_truthfully(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "x"}))
        task = sim.state.videos[job["upstream_id"]]
        sim.state.advance_to(task.timeline.started + 0.001)
        result = await client.call_tool("job_cancel", {"job_id": job["job_id"]})
        record = data(result)
        assert record["status"] in ("queued", "processing")
        assert record["upstream_status"] == "processing"
        assert record["note"].startswith(
            "AllToken refused to cancel: the video is already rendering (processing), so it will finish and "
            f'be charged. This server still saves it when it is done: collect it with job_status(job_id="'
            f'{job["job_id"]}").'
        )
        assert task.cancelled_at is None
        # The answer says how to collect it and no longer offers to cancel it again, now or later.
        assert f'job_status(job_id="{job["job_id"]}", wait_seconds=45) later to collect it.' in text_of(
            result
        )
        assert "job_cancel(" not in text_of(result)
        status = await client.call_tool("job_status", {"job_id": job["job_id"]})
        assert data(status)["status"] in ("queued", "processing")
        assert "job_cancel(" not in text_of(status)
        # The render goes on and is still collected.
        sim.state.advance_to(task.timeline.finished + 0.001)
        done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 20}))
    assert done["status"] == "completed"
    assert_saved(done["files"][0])


async def test_cancelling_a_finished_job_changes_nothing(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_image", {"prompt": "x"}))
        assert job["status"] == "completed"
        result = await client.call_tool("job_cancel", {"job_id": job["job_id"]})
    assert data(result)["status"] == "completed"
    assert "Nothing to cancel" in text_of(result)
    assert_saved(only_file(data(result)))


@pytest.mark.parametrize("sim_config", [SLOW])
async def test_a_cancelled_image_discards_its_late_result(sim: RunningSimulator, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        job = data(await client.call_tool("alltoken_image", {"prompt": "x", "wait_seconds": 0}))
        cancelled = data(await client.call_tool("job_cancel", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled"
        assert "cannot cancel image" in cancelled["note"]
        task = sim.state.images[job["upstream_id"]]
        sim.state.advance_to(task.timeline.finished + 1)
        later = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 1}))
    assert later["status"] == "cancelled"
    assert later["files"] == []
    assert not settings.output_dir.exists() or list(settings.output_dir.iterdir()) == []


# ------------------------------------------------------------------------------ listing, resources


async def test_list_jobs_filters_and_the_jobs_resources(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        image = data(await client.call_tool("alltoken_image", {"prompt": "x"}))
        video = data(await client.call_tool("alltoken_video", {"prompt": "y"}))
        everything = data(await client.call_tool("list_jobs", {}))["jobs"]
        assert [j["job_id"] for j in everything] == [video["job_id"], image["job_id"]]
        only_images = data(await client.call_tool("list_jobs", {"kind": "image"}))["jobs"]
        assert [j["job_id"] for j in only_images] == [image["job_id"]]
        completed = data(await client.call_tool("list_jobs", {"status": "completed"}))["jobs"]
        assert [j["job_id"] for j in completed] == [image["job_id"]]
        assert len(data(await client.call_tool("list_jobs", {"limit": 1}))["jobs"]) == 1

        listing = await client.read_resource("alltoken://jobs")
        assert image["job_id"] in listing.contents[0].text  # type: ignore[union-attr]
        one = await client.read_resource(f"alltoken://jobs/{image['job_id']}")
        assert '"status": "completed"' in one.contents[0].text  # type: ignore[union-attr]
        for uri in (
            "alltoken://jobs/job_0000000000000000",
            f"alltoken://media/{image['job_id']}/7",
            f"alltoken://media/{image['job_id']}/x",
            f"alltoken://media/{video['job_id']}/0",
        ):
            with pytest.raises(Exception, match=r"No job|file index|saved file|no saved files"):
                await client.read_resource(uri)


async def test_jobs_survive_a_server_restart(sim: RunningSimulator, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
    async with connect(settings, "legacy") as client:
        done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 30}))
    assert done["status"] == "completed"
    assert_saved(done["files"][0])
    assert sim.state.counters()["tasks"]["videos"] == 1


async def test_legacy_subscribers_are_told_when_a_job_changes(sim: RunningSimulator, tmp_path: Path) -> None:
    updates: list[str] = []
    got_completed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, t.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            got_completed.set()

    server = build_server(settings_for(tmp_path, sim.base_url))
    async with Client(server, mode="legacy", message_handler=on_message) as client:  # type: ignore[arg-type]
        job = data(await client.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
        uri = f"alltoken://jobs/{job['job_id']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is deprecated in the 2026 era only
            await client.subscribe_resource(uri)
        with anyio.fail_after(20):
            while True:
                await got_completed.wait()
                got_completed = anyio.Event()
                state = data(await client.call_tool("job_status", {"job_id": job["job_id"]}))
                if state["status"] == "completed":
                    break
    assert uri in updates


async def test_listeners_are_told_when_a_job_changes(sim: RunningSimulator, tmp_path: Path) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
        assert job["status"] in ("queued", "processing")  # so there are changes left to be told of
        uri = f"alltoken://jobs/{job['job_id']}"
        told, state = 0, job
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            with anyio.fail_after(20):
                async for event in subscription:
                    assert uri in str(event)
                    told += 1
                    state = data(await client.call_tool("job_status", {"job_id": job["job_id"]}))
                    if state["status"] == "completed":
                        break
    # The loop also ends when the subscription does: only a completed job proves the listener was told.
    assert state["status"] == "completed", f"the subscription ended after {told} update(s)"
    assert told >= 1


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0, r2_mode=False)])
async def test_an_image_delivered_elsewhere_fails_saying_it_cannot_be_recovered(
    sim: RunningSimulator, api: Any, tmp_path: Path
) -> None:
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        job = data(await client.call_tool("alltoken_image", {"prompt": "x", "wait_seconds": 0}))
        task = sim.state.images[job["upstream_id"]]
        sim.state.advance_to(task.timeline.finished + 0.01)
        # Someone else (another tool, a curl) claims the one-time delivery first; no r2_url exists.
        taken = await api.get(f"/images/generations/{job['upstream_id']}")
        assert taken.json()["data"][0]["b64_json"]
        failed = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 10}))
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "image_already_retrieved"
    assert "Nothing can recover it" in failed["error"]["message"]
    assert failed["files"] == []


@pytest.mark.parametrize("sim_config", [SLOW])
async def test_a_cancel_during_the_submit_is_sent_once_the_task_exists(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    sim.state.add_fault(path="/v1/videos/generations", method="POST", latency_ms=400)
    async with connect(settings_for(tmp_path, sim.base_url)) as client:
        started: dict[str, Any] = {}

        async def start() -> None:
            started.update(data(await client.call_tool("alltoken_video", {"prompt": "x"})))

        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            with anyio.fail_after(5):
                # The job row appears in another task of the server; polling its listing is the only view.
                while not (jobs := data(await client.call_tool("list_jobs", {}))["jobs"]):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert jobs[0]["upstream_id"] is None  # the create is still on its way
            requested = data(await client.call_tool("job_cancel", {"job_id": jobs[0]["job_id"]}))
            assert requested["cancel_requested"] is True
            assert "as soon as AllToken confirms" in requested["note"]
        assert started["status"] == "cancelled"
        final = data(await client.call_tool("job_status", {"job_id": started["job_id"]}))
    assert final["status"] == "cancelled"
    assert sim.state.videos[final["upstream_id"]].cancelled_at is not None


@pytest.mark.parametrize("sim_config", [SLOW])
async def test_a_video_whose_link_expired_while_no_server_ran_says_so(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url)
    async with connect(settings) as client:
        job = data(await client.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
    # The host is closed for longer than AllToken keeps the finished video's link.
    task = sim.state.videos[job["upstream_id"]]
    sim.state.advance_to(task.timeline.finished + sim.state.config.video_url_ttl_s + 1)
    async with connect(settings) as client:
        expired = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 10}))
    assert expired["status"] == "expired"
    assert expired["error"]["code"] == "video_expired"
    assert "start a new render" in expired["error"]["message"]
    assert expired["files"] == []
