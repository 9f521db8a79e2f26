"""`alltoken://media/{job_id}/{index}` serves only the regular file the job recorded, byte for byte.

A real image job is completed through the simulator, then its saved file is swapped on disk the way an
attacker or a careless script would: a symlink to a file holding a key, a FIFO, an in-place edit. Each
read is refused with a clear error that leaks nothing of the foreign content, and none of them can block
or starve the server.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as t
import pytest
from mcp import Client, MCPError

from alltoken_mcp import files
from alltoken_mcp.simulator import RunningSimulator
from tests.serverkit import connect, data, settings_for

FAKE_KEY = "sk-alltoken-FAKE-0123456789abcdef0123456789abcdef"
CONCURRENT_READS = 45
"""As many reads as hung the whole server when a FIFO sat where the image was."""


async def saved_image(client: Client, tmp_path: Path) -> tuple[str, Path, dict[str, Any]]:
    """Generate one image and wait for it: (its resource URI, its path, its record)."""
    arguments = {"prompt": "a red kite", "quality": "low", "wait_seconds": 30}
    record = data(await client.call_tool("alltoken_image", arguments))
    assert record["status"] == "completed", record
    saved = record["files"][0]
    return saved["uri"], Path(saved["path"]), saved


async def read_blob(client: Client, uri: str) -> bytes:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, t.BlobResourceContents)
    return base64.b64decode(content.blob)


async def refusal(client: Client, uri: str) -> MCPError:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    return caught.value


def settings(tmp_path: Path, sim: RunningSimulator) -> Any:
    return settings_for(tmp_path, sim.base_url, ALLTOKEN_OUTPUT_DIR=str(tmp_path / "out"))


async def test_the_intact_saved_file_is_served_byte_exact(sim: RunningSimulator, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with connect(settings(tmp_path, sim)) as client:
            uri, path, saved = await saved_image(client, tmp_path)
            served = await read_blob(client, uri)
    assert served == path.read_bytes()
    assert len(served) == saved["bytes"]
    assert hashlib.sha256(served).hexdigest() == saved["sha256"]


async def test_a_file_swapped_for_a_symlink_to_a_secret_is_refused_without_leaking_it(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    secret = tmp_path / "environ"
    with anyio.fail_after(30):
        async with connect(settings(tmp_path, sim)) as client:
            uri, path, saved = await saved_image(client, tmp_path)
            # Same size as the image, so only the link itself gives the swap away before reading.
            secret.write_bytes(f"ALLTOKEN_API_KEY={FAKE_KEY}\n".encode().ljust(saved["bytes"], b"\0"))
            path.unlink()
            path.symlink_to(secret)
            error = await refusal(client, uri)
    message = error.error.message
    assert "changed on disk since it was saved" in message
    assert "symbolic link" in message
    assert FAKE_KEY not in message
    assert "ALLTOKEN_API_KEY" not in message
    assert error.error.data is None or FAKE_KEY not in str(error.error.data)


async def test_a_fifo_in_place_of_the_file_is_refused_at_once_and_cannot_hang_the_server(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    async with connect(settings(tmp_path, sim)) as client:
        with anyio.fail_after(30):
            uri, path, _ = await saved_image(client, tmp_path)
        path.unlink()
        os.mkfifo(path)
        errors: list[str] = []

        async def read_once() -> None:
            errors.append((await refusal(client, uri)).error.message)

        with anyio.fail_after(10):  # a blocking open would never return: no writer ever comes
            async with anyio.create_task_group() as tg:
                for _ in range(CONCURRENT_READS):
                    tg.start_soon(read_once)
        with anyio.fail_after(5):
            listing = data(await client.call_tool("list_jobs", {}))
    assert len(errors) == CONCURRENT_READS
    assert all("named pipe (FIFO)" in message for message in errors), errors[0]
    assert len(listing["jobs"]) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("flip", "SHA-256 mismatch"),
        ("grow", "bytes, not the"),
        ("truncate", "bytes, not the"),
    ],
)
async def test_a_file_modified_in_place_is_refused(
    sim: RunningSimulator, tmp_path: Path, change: str, reason: str
) -> None:
    with anyio.fail_after(30):
        async with connect(settings(tmp_path, sim)) as client:
            uri, path, _ = await saved_image(client, tmp_path)
            original = path.read_bytes()
            if change == "flip":  # same size, one byte different
                path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
            elif change == "grow":
                path.write_bytes(original + b"appended")
            else:
                path.write_bytes(original[: len(original) // 2])
            error = await refusal(client, uri)
    assert "changed on disk since it was saved" in error.error.message
    assert reason in error.error.message


async def test_a_deleted_file_is_a_not_found_error(sim: RunningSimulator, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with connect(settings(tmp_path, sim)) as client:
            uri, path, _ = await saved_image(client, tmp_path)
            path.unlink()
            error = await refusal(client, uri)
    assert error.error.code == -32602
    assert f"{path} no longer exists" in error.error.message


async def test_saved_file_reads_do_not_need_the_shared_worker_threads(tmp_path: Path) -> None:
    """Every token of anyio's shared thread pool is held, as if slow reads had taken them all: the
    reader still reads, because it runs on a limiter of its own. (The SDK itself borrows a shared
    thread for a moment per resource read, so this is checked on the reader rather than the server.)"""
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    shared = anyio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(shared.total_tokens))]
    for borrower in borrowers:
        await shared.acquire_on_behalf_of(borrower)
    try:
        with anyio.fail_after(5):
            served = await files.SavedFileReader().read(
                path, size=108, sha256=hashlib.sha256(path.read_bytes()).hexdigest()
            )
    finally:
        for borrower in borrowers:
            shared.release_on_behalf_of(borrower)
    assert served == path.read_bytes()


async def test_a_read_that_cannot_finish_in_time_is_abandoned_with_an_error(tmp_path: Path) -> None:
    """The reader's slots are all held by reads that never end: the next read gives up at its deadline
    instead of waiting behind them forever."""
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    reader = files.SavedFileReader(parallel=1, seconds=0.2)
    hung = object()
    await reader.limiter.acquire_on_behalf_of(hung)
    try:
        with anyio.fail_after(5), pytest.raises(files.SavedFileError, match=r"took longer than 0\.2 s"):
            await reader.read(path, size=108, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    finally:
        reader.limiter.release_on_behalf_of(hung)
