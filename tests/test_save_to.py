"""`save_to` through the real server (in memory, both protocol eras; clients with and without MCP roots)
against the simulator over loopback: files land where the caller asked, only inside the client's roots,
the input directories or the output directory; a refused destination sends nothing upstream; existing
files are replaced only with `overwrite`; the record lists the final paths; the default output directory
moves into the client's first root; a video is delivered to its `save_to` by a later server."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as t
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from alltoken_mcp.destinations import DestinationError, Places, plan_delivery
from alltoken_mcp.server import build_server
from alltoken_mcp.settings import Settings
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig
from tests.rawstdio import ENTRY_POINT
from tests.serverkit import ERAS, data, error_text, settings_for

CREATE_IMAGE = "POST /v1/images/generations/async"
CREATE_VIDEO = "POST /v1/videos/generations"


@asynccontextmanager
async def connect_with_roots(
    settings: Settings, roots: list[Path] | None, mode: str = "auto"
) -> AsyncIterator[Client]:
    """A fresh server and an in-memory client that declares `roots` (None: no roots capability)."""
    callback = None
    if roots is not None:
        listed = t.ListRootsResult(roots=[t.Root(uri=root.as_uri(), name=root.name) for root in roots])

        async def callback(context: Any) -> t.ListRootsResult:
            return listed

    server = build_server(settings)
    async with Client(server, mode=mode, list_roots_callback=callback) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The client's root: a project directory apart from the server's home and input directory."""
    path = tmp_path / "project"
    path.mkdir()
    return path


def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def creates(sim: RunningSimulator, route: str = CREATE_IMAGE) -> int:
    return int(sim.state.counters()["requests"].get(route, 0))


def saved(entry: dict[str, Any]) -> Path:
    path = Path(entry["path"])
    body = path.read_bytes()
    assert len(body) == entry["bytes"]
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    return path


# ------------------------------------------------------------------------------------ inside, outside


@pytest.mark.parametrize("mode", ERAS)
async def test_an_image_is_saved_where_save_to_names_inside_the_clients_root(
    sim: RunningSimulator, tmp_path: Path, project: Path, mode: str
) -> None:
    async with connect_with_roots(settings_for(home(tmp_path), sim.base_url), [project], mode) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": "art/fox.png"}))
    assert record["status"] == "completed"
    [entry] = record["files"]
    assert saved(entry) == project / "art" / "fox.png"  # relative paths start at the first root
    assert entry["mime_type"] == "image/png"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_destination_outside_every_allowed_place_is_refused_and_nothing_is_sent(
    sim: RunningSimulator, tmp_path: Path, project: Path, mode: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (project / "escape").symlink_to(outside, target_is_directory=True)
    async with connect_with_roots(settings_for(home(tmp_path), sim.base_url), [project], mode) as client:
        for save_to in (
            str(outside / "fox.png"),
            "escape/fox.png",
            "art/../../elsewhere/fox.png",
            "/etc/x.png",
        ):
            message = error_text(
                await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": save_to})
            )
            assert "\n" not in message
            if ".." in save_to:
                assert "contains '..'" in message
            else:
                assert "is outside the allowed places" in message
                assert f"the client's roots ({project})" in message  # names every allowed place
                assert f"the input directories ({home(tmp_path)}" in message
                assert "the output directory" in message
            assert "Nothing was sent" in message
        video = error_text(
            await client.call_tool("alltoken_video", {"prompt": "fox", "save_to": str(outside / "clip.mp4")})
        )
        assert "is outside the allowed places" in video
    assert creates(sim) == 0
    assert creates(sim, CREATE_VIDEO) == 0
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", ERAS)
async def test_without_roots_the_input_directories_and_output_directory_are_the_allowed_places(
    sim: RunningSimulator, tmp_path: Path, project: Path, mode: str
) -> None:
    settings = settings_for(home(tmp_path), sim.base_url)
    async with connect_with_roots(settings, None, mode) as client:
        refused = error_text(
            await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": str(project / "fox.png")})
        )
        assert "the client's roots" not in refused
        assert creates(sim) == 0
        in_input = data(await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": "pics/"}))
        in_output = data(
            await client.call_tool(
                "alltoken_image", {"prompt": "fox", "save_to": str(settings.output_dir / "a.png")}
            )
        )
    assert saved(in_input["files"][0]).parent == home(tmp_path) / "pics"  # relative: the first input dir
    assert saved(in_output["files"][0]) == settings.output_dir / "a.png"


# ------------------------------------------------------------------------------------ names and overwrite


async def test_an_existing_file_is_not_replaced_without_overwrite(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    target = project / "fox.png"
    target.write_bytes(b"the user's own picture")
    async with connect_with_roots(settings_for(home(tmp_path), sim.base_url), [project]) as client:
        message = error_text(
            await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": "fox.png"})
        )
        assert f"{target} already exists; pass overwrite=true" in message
        assert creates(sim) == 0
        assert target.read_bytes() == b"the user's own picture"
        record = data(
            await client.call_tool(
                "alltoken_image", {"prompt": "fox", "save_to": "fox.png", "overwrite": True}
            )
        )
    assert saved(record["files"][0]) == target
    assert target.read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(project)) == ["fox.png"]  # replaced in place, no temp left


async def test_several_images_to_one_file_name_are_numbered_and_the_record_lists_them(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    async with connect_with_roots(settings_for(home(tmp_path), sim.base_url), [project]) as client:
        record = data(
            await client.call_tool("alltoken_image", {"prompt": "fox", "n": 3, "save_to": "fox.png"})
        )
        (project / "set-2.png").write_bytes(b"taken")
        taken = error_text(
            await client.call_tool("alltoken_image", {"prompt": "fox", "n": 2, "save_to": "set.png"})
        )
    assert [saved(f).name for f in record["files"]] == ["fox-1.png", "fox-2.png", "fox-3.png"]
    assert "set-2.png already exists" in taken


async def test_the_extension_follows_the_bytes_and_a_directory_gets_generated_names(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    async with connect_with_roots(settings_for(home(tmp_path), sim.base_url), [project]) as client:
        # The simulator always sends PNG, whatever was asked: the file is named for what it holds.
        jpeg = data(
            await client.call_tool(
                "alltoken_image", {"prompt": "fox", "output_format": "jpeg", "save_to": "fox.jpg"}
            )
        )
        plain = data(await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": "cover"}))
        into = data(await client.call_tool("alltoken_image", {"prompt": "red fox", "save_to": "renders/"}))
    assert saved(jpeg["files"][0]) == project / "fox.png"
    assert saved(plain["files"][0]).parent == project / "cover"  # no extension: a directory
    path = saved(into["files"][0])
    assert path.parent == project / "renders"
    assert path.name == f"red-fox_{into['job_id']}_0.png"


# ------------------------------------------------------------------------------------ default output dir


@pytest.mark.parametrize("mode", ERAS)
async def test_without_an_output_dir_setting_files_go_into_the_clients_first_root(
    sim: RunningSimulator, tmp_path: Path, project: Path, mode: str
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    settings = settings_for(home(tmp_path), sim.base_url)
    async with connect_with_roots(settings, [project, other], mode) as client:
        in_root = data(await client.call_tool("alltoken_image", {"prompt": "fox"}))
    async with connect_with_roots(settings, None, mode) as client:
        no_roots = data(await client.call_tool("alltoken_image", {"prompt": "fox"}))
    configured = settings_for(home(tmp_path), sim.base_url, ALLTOKEN_OUTPUT_DIR=str(tmp_path / "out"))
    async with connect_with_roots(configured, [project], mode) as client:
        chosen = data(await client.call_tool("alltoken_image", {"prompt": "fox"}))
    assert saved(in_root["files"][0]).parent == project / "alltoken-media"
    assert saved(no_roots["files"][0]).parent == settings.output_dir
    assert saved(chosen["files"][0]).parent == tmp_path / "out"


async def test_an_unwritable_first_root_falls_back_to_the_output_dir_with_a_warning(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    (project / "alltoken-media").write_bytes(b"a file where the folder would go")
    settings = settings_for(home(tmp_path), sim.base_url)
    async with connect_with_roots(settings, [project]) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "fox"}))
    assert saved(record["files"][0]).parent == settings.output_dir
    [warning] = record["warnings"]
    assert f"cannot write to {project / 'alltoken-media'}" in warning
    assert f"The files go to {settings.output_dir} instead." in warning


# ------------------------------------------------------------------------------------ videos, later


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_a_video_is_delivered_to_save_to_by_the_next_server_without_the_clients_roots(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    settings = settings_for(home(tmp_path), sim.base_url)
    async with connect_with_roots(settings, [project]) as client:
        job = data(
            await client.call_tool(
                "alltoken_video",
                {
                    "prompt": "waves",
                    "resolution": "480p",
                    "return_last_frame": True,
                    "save_to": "clips/sea.mp4",
                },
            )
        )
    assert job["status"] == "queued"
    assert not (project / "clips" / "sea.mp4").exists()
    task = sim.state.videos[job["upstream_id"]]
    sim.state.advance_to(task.timeline.finished + 0.01)
    # Another server, whose client declares no roots: the destination was checked and stored at the call.
    async with connect_with_roots(settings, None, "legacy") as client:
        done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 30}))
    assert done["status"] == "completed"
    assert [saved(f) for f in done["files"]] == [
        project / "clips" / "sea.mp4",
        project / "clips" / "sea-last-frame.png",
    ]
    assert [f["role"] for f in done["files"]] == ["video", "last_frame"]
    assert not [n for n in os.listdir(project / "clips") if n.endswith(".partial")]


async def test_a_client_whose_roots_list_fails_is_served_as_one_without_roots(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    async def broken(context: Any) -> t.ErrorData:
        return t.ErrorData(code=-32603, message="roots are broken here")

    settings = settings_for(home(tmp_path), sim.base_url)
    server = build_server(settings)
    async with Client(server, mode="legacy", list_roots_callback=broken) as client:  # type: ignore[arg-type]
        record = data(await client.call_tool("alltoken_image", {"prompt": "fox"}))
        refused = error_text(
            await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": str(project / "fox.png")})
        )
    assert saved(record["files"][0]).parent == settings.output_dir
    assert "is outside the allowed places" in refused


@pytest.mark.parametrize("sim_config", [SimConfig(speed=1.0)])
async def test_a_stdio_server_process_delivers_the_video_another_process_was_asked_to_save(
    sim: RunningSimulator, tmp_path: Path, project: Path
) -> None:
    """Two real `alltoken-mcp` processes on one state directory: the first (whose client declares roots)
    takes the call and exits; the second (no roots) finishes the render and writes it to `save_to`."""
    env = {
        **os.environ,
        "ALLTOKEN_BASE_URL": sim.base_url,
        "ALLTOKEN_API_KEY": SIM_API_KEY,
        "ALLTOKEN_MCP_HOME": str(home(tmp_path)),
    }
    params = StdioServerParameters(command=ENTRY_POINT, args=[], env=env, cwd=str(tmp_path))
    listed = t.ListRootsResult(roots=[t.Root(uri=project.as_uri())])

    async def roots(context: Any) -> t.ListRootsResult:
        return listed

    with tempfile.TemporaryFile("w+") as errlog, anyio.fail_after(60):
        async with Client(stdio_client(params, errlog=errlog), list_roots_callback=roots) as client:  # type: ignore[arg-type]
            job = data(
                await client.call_tool(
                    "alltoken_video", {"prompt": "waves", "resolution": "480p", "save_to": "clips/"}
                )
            )
        assert job["status"] == "queued"
        sim.state.advance_to(sim.state.videos[job["upstream_id"]].timeline.finished + 0.01)
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            done = data(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 30}))
    assert done["status"] == "completed"
    assert saved(done["files"][0]) == project / "clips" / f"waves_{job['job_id']}_0.mp4"


@pytest.mark.parametrize("mode", ERAS)
async def test_roots_and_a_render_confirmation_are_asked_once_each_and_the_image_lands_in_the_root(
    sim: RunningSimulator, tmp_path: Path, project: Path, mode: str
) -> None:
    """ALLTOKEN_CONFIRM's question and the roots share the call's one input channel (2026-07-28: one
    InputRequiredResult round carrying both); neither is asked twice, and the render is sent once."""
    asked: list[str] = []

    async def roots(context: Any) -> t.ListRootsResult:
        asked.append("roots")
        return t.ListRootsResult(roots=[t.Root(uri=project.as_uri())])

    async def confirm(context: Any, params: t.ElicitRequestParams) -> t.ElicitResult:
        asked.append("confirm")
        return t.ElicitResult(action="accept", content={})

    settings = settings_for(home(tmp_path), sim.base_url, ALLTOKEN_CONFIRM="media")
    server = build_server(settings)
    async with Client(
        server,  # type: ignore[arg-type]
        mode=mode,
        list_roots_callback=roots,
        elicitation_callback=confirm,
    ) as client:
        record = data(await client.call_tool("alltoken_image", {"prompt": "fox", "save_to": "fox.png"}))
    assert sorted(asked) == ["confirm", "roots"]
    assert saved(record["files"][0]) == project / "fox.png"
    assert creates(sim) == 1


def test_save_to_under_the_home_of_a_user_that_does_not_exist_is_one_line_not_a_crash(tmp_path: Path) -> None:
    places = Places(roots=(), input_dirs=(tmp_path,), server_output_dir=tmp_path, output_dir=tmp_path)
    with pytest.raises(DestinationError) as caught:
        plan_delivery(
            "~no-such-user-here/fox.png",
            kind="image",
            count=1,
            extension=".png",
            overwrite=False,
            preview=True,
            places=places,
        )
    assert "~no-such-user-here" in str(caught.value)
    assert "\n" not in str(caught.value)
