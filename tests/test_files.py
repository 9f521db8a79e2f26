"""files.py: names, atomic writes, base64 and streamed downloads to disk, allowed input directories.

Everything runs on real files in tmp_path and real loopback HTTP (the simulator's storage URLs, or the
byte-exact raw server for broken bodies). Disk-full behaviour is produced for real in a child process
with RLIMIT_FSIZE, because tests may run as root, which ignores permission bits.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

from alltoken_mcp import files
from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.files import (
    WRITE_BATCH,
    DownloadError,
    FileProblem,
    InputFileError,
    OutputFileError,
    atomic_file,
    download,
    extension_for,
    file_digests,
    media_filename,
    resolve_input_file,
    sniff_mime,
    write_bytes,
)
from alltoken_mcp.settings import DownloadLimits
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from tests.rawserver import RawResponse, raw_server

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"pixels" * 50
JPEG = b"\xff\xd8\xff\xe0" + b"jfif" * 50
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"mdat" * 50


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def listing(directory: Path) -> list[str]:
    """Every entry, hidden temp files included."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[AllTokenClient]:
    async with AllTokenClient(
        base_url=sim.base_url, api_key=SIM_API_KEY, retry=RetryPolicy(max_attempts=1), timeout=10
    ) as c:
        yield c


def raw_client(base_url: str) -> AllTokenClient:
    return AllTokenClient(base_url=base_url, api_key="sk-test", retry=RetryPolicy(max_attempts=1), timeout=10)


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("prompt", "job_id", "index", "ext", "expected"),
    [
        ("Red fox in snow", "job_ab12cd", 0, "png", "red-fox-in-snow_job_ab12cd_0.png"),
        ("Crème brûlée, à la mode!", "job_1", 2, ".JPG", "creme-brulee-a-la-mode_job_1_2.jpg"),
        ("", "job_1", 0, "png", "media_job_1_0.png"),
        ("日本の猫", "job_1", 0, "png", "media_job_1_0.png"),
        ("../../etc/passwd", "job_1", 0, "png", "etc-passwd_job_1_0.png"),
        (".hidden CON:aux*?", "job/../x", 1, "mp4", "hidden-con-aux_job-x_1.mp4"),
        ("a " * 100, "job_1", 0, "", "a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a_job_1_0.bin"),
        ("x" * 100, "job_1", 0, "webp", "x" * 40 + "_job_1_0.webp"),
    ],
)
def test_media_filename_is_a_readable_safe_slug_with_job_and_index(
    prompt: str, job_id: str, index: int, ext: str, expected: str
) -> None:
    name = media_filename(prompt, job_id, index, ext)
    assert name == expected
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    assert not set(name) & set('<>:"|?*')


def test_media_filename_is_stable_and_bounded() -> None:
    long_job = "job_" + "z" * 500
    name = media_filename("the same prompt " * 20, long_job, 3, "png")
    assert name == media_filename("the same prompt " * 20, long_job, 3, "png")
    assert len(name) <= files.NAME_MAX
    assert name.endswith("_3.png")
    assert len(media_filename("p", "job_1", 0, "png").split("_")) == 4  # slug, job, id, index


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("IMAGE/JPEG; charset=binary", "jpg"),
        ("image/webp", "webp"),
        ("video/mp4", "mp4"),
        ("video/quicktime", "mov"),
        ("application/octet-stream", "bin"),
        (None, "bin"),
    ],
)
def test_extension_for_maps_media_types_and_falls_back(mime: str | None, expected: str) -> None:
    assert extension_for(mime, "bin") == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a....", "image/gif"),
        (MP4, "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "video/quicktime"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", None),
        (b"<html>", None),
        (b"", None),
    ],
)
def test_sniff_mime_recognises_magic_bytes(head: bytes, expected: str | None) -> None:
    assert sniff_mime(head) == expected


# ---------------------------------------------------------------------------------------------- atomic writes


async def test_atomic_file_commits_under_the_final_name_with_running_totals(tmp_path: Path) -> None:
    target = tmp_path / "new" / "nested" / "out.png"
    data = PNG + payload(3 * WRITE_BATCH + 123)
    async with atomic_file(target) as writer:
        for offset in range(0, len(data), 50_000):
            await writer.write(data[offset : offset + 50_000])
            assert writer.bytes == min(offset + 50_000, len(data))
        assert writer.sha256 == sha(data)
        [temp] = listing(target.parent)  # the bytes so far, under a hidden partial name
        assert temp.startswith(".out.png.")
        assert temp.endswith(".partial")
        assert not target.exists()
    saved = writer.saved
    assert saved == files.SavedFile(path=target, bytes=len(data), sha256=sha(data), mime_type="image/png")
    assert saved.path.is_absolute()
    assert target.read_bytes() == data
    assert listing(target.parent) == ["out.png"]


async def test_exception_mid_write_leaves_no_temp_and_nothing_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    seen_temp: list[int] = []
    writers: list[files.AtomicWriter] = []

    async def fail_midway() -> None:
        async with atomic_file(target) as writer:
            writers.append(writer)
            await writer.write(payload(2 * WRITE_BATCH))  # flushed: the temp holds real data
            [temp] = listing(tmp_path)
            seen_temp.append((tmp_path / temp).stat().st_size)
            raise RuntimeError("network died")

    with pytest.raises(RuntimeError, match="network died"):
        await fail_midway()
    assert seen_temp == [2 * WRITE_BATCH]
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="committed only"):
        _ = writers[0].saved


async def test_cancelled_write_removes_its_temp_file(tmp_path: Path) -> None:
    started = anyio.Event()
    with anyio.CancelScope() as scope:
        async with atomic_file(tmp_path / "out.mp4") as writer:
            await writer.write(payload(WRITE_BATCH + 1))
            started.set()
            scope.cancel()
            await anyio.sleep_forever()
    assert started.is_set()
    assert scope.cancelled_caught
    assert listing(tmp_path) == []


async def test_an_existing_identical_file_is_reused_not_duplicated(tmp_path: Path) -> None:
    first = await write_bytes(tmp_path / "out.png", PNG)
    before = first.path.stat()
    again = await write_bytes(tmp_path / "out.png", PNG)
    assert again == first
    assert again.path.stat().st_ino == before.st_ino  # kept, not replaced by a copy
    assert listing(tmp_path) == ["out.png"]


async def test_a_different_existing_file_is_never_overwritten_the_name_gets_a_suffix(tmp_path: Path) -> None:
    one = await write_bytes(tmp_path / "out.png", PNG + b"one")
    two = await write_bytes(tmp_path / "out.png", PNG + b"two")
    three = await write_bytes(tmp_path / "out.png", PNG + b"three")
    again = await write_bytes(tmp_path / "out.png", PNG + b"two")  # re-delivery finds out-1.png
    assert [s.path.name for s in (one, two, three, again)] == [
        "out.png",
        "out-1.png",
        "out-2.png",
        "out-1.png",
    ]
    assert (tmp_path / "out.png").read_bytes() == PNG + b"one"
    assert (tmp_path / "out-1.png").read_bytes() == PNG + b"two"
    assert listing(tmp_path) == ["out-1.png", "out-2.png", "out.png"]


async def test_concurrent_writers_of_one_name_each_get_their_own_file(tmp_path: Path) -> None:
    contents = [PNG + bytes([n]) * 1000 for n in range(24)]
    saved: list[files.SavedFile] = []

    async def save(data: bytes) -> None:
        saved.append(await write_bytes(tmp_path / "same.png", data))

    async with anyio.create_task_group() as tg:
        for data in contents:
            tg.start_soon(save, data)
    assert len({s.path for s in saved}) == 24
    for item in saved:
        assert sha(item.path.read_bytes()) == item.sha256
    assert sorted(s.sha256 for s in saved) == sorted(sha(d) for d in contents)
    assert not [name for name in listing(tmp_path) if name.endswith(".partial")]


async def test_bytes_win_over_a_wrong_declared_type_and_the_suffix_is_corrected(tmp_path: Path) -> None:
    saved = await write_bytes(tmp_path / "out.png", JPEG, mime_type="image/png")
    assert saved.path == tmp_path / "out.jpg"
    assert saved.mime_type == "image/jpeg"
    # MP4 and QuickTime share a container: a declared .mov stays a .mov.
    mov = await write_bytes(tmp_path / "clip.mov", MP4, mime_type="video/quicktime")
    assert (mov.path.name, mov.mime_type) == ("clip.mov", "video/quicktime")
    # Unknown bytes: the declared type, else the suffix.
    blob = await write_bytes(tmp_path / "notes.txt", b"plain text")
    assert blob.mime_type == "text/plain"
    labelled = await write_bytes(tmp_path / "x.webp", b"opaque", mime_type="image/webp")
    assert (labelled.path.name, labelled.mime_type) == ("x.webp", "image/webp")


async def test_max_bytes_stops_the_writer_and_nothing_is_left(tmp_path: Path) -> None:
    async def one_byte_too_many() -> None:
        async with atomic_file(tmp_path / "out.png", max_bytes=WRITE_BATCH) as writer:
            await writer.write(payload(WRITE_BATCH))
            await writer.write(b"x")

    with pytest.raises(FileProblem, match="size limit"):
        await one_byte_too_many()
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------- downloads


async def completed_video(sim: RunningSimulator, api: httpx2.AsyncClient) -> str:
    created = await api.post("/videos/generations", json={"model": "seedance-2.0", "prompt": "a fox"})
    assert created.status_code == 202, created.text
    task_id: str = created.json()["id"]
    sim.state.advance_to(sim.state.videos[task_id].timeline.finished + 0.01)
    return task_id


async def test_download_streams_a_simulator_video_without_sending_the_api_key(
    sim: RunningSimulator, api: httpx2.AsyncClient, client: AllTokenClient, tmp_path: Path
) -> None:
    task = await client.get_video(await completed_video(sim, api))
    assert task.video_url is not None
    async with httpx2.AsyncClient() as anonymous:
        expected = (await anonymous.get(task.video_url)).content
    assert expected[4:8] == b"ftyp"
    saved = await download(
        client, task.video_url, tmp_path / "media" / "a-fox.mp4", max_bytes=10**7, expect="video"
    )
    assert saved.path == tmp_path / "media" / "a-fox.mp4"
    assert saved.path.read_bytes() == expected
    assert (saved.bytes, saved.sha256, saved.mime_type) == (len(expected), sha(expected), "video/mp4")
    assert sim.state.counters()["foreign_authorization"] == 0
    assert listing(tmp_path / "media") == ["a-fox.mp4"]


async def test_download_of_an_expired_url_is_a_download_error_and_leaves_nothing(
    sim: RunningSimulator, api: httpx2.AsyncClient, client: AllTokenClient, tmp_path: Path
) -> None:
    task = await client.get_video(await completed_video(sim, api))
    assert task.video_url is not None
    sim.state.advance(10 * 86400)
    with pytest.raises(DownloadError, match=r"HTTP 404 \(the URL may have expired\)") as caught:
        await download(
            client,
            task.video_url + "?X-Amz-Signature=secret",
            tmp_path / "v.mp4",
            max_bytes=10**7,
            expect="video",
        )
    assert "secret" not in str(caught.value)
    assert listing(tmp_path) == []


async def test_download_refuses_a_declared_length_over_the_cap_before_writing(tmp_path: Path) -> None:
    body = PNG + payload(5120 - len(PNG))
    response = RawResponse(headers=[("Content-Type", "image/png")], pieces=[body], framing="length")
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(DownloadError, match=r"is 5\.0 KiB, over the 4\.0 KiB limit"):
            await download(
                client, f"{server.origin}/r2/a.png", tmp_path / "a.png", max_bytes=4096, expect="image"
            )
        assert "authorization" not in server.requests[0].headers
    assert listing(tmp_path) == []


async def test_download_counts_streamed_bytes_when_no_length_is_declared(tmp_path: Path) -> None:
    pieces = [PNG, *(payload(1000, seed=n) for n in range(10))]
    response = RawResponse(headers=[("Content-Type", "image/png")], pieces=pieces, framing="chunked")
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(DownloadError, match=r"sent more than the 4\.0 KiB limit"):
            await download(
                client, f"{server.origin}/a.png", tmp_path / "a.png", max_bytes=4096, expect="image"
            )
    assert listing(tmp_path) == []


async def test_download_under_the_cap_without_a_length_succeeds(tmp_path: Path) -> None:
    pieces = [PNG, *(payload(1000, seed=n) for n in range(3))]
    response = RawResponse(headers=[("Content-Type", "application/octet-stream")], pieces=pieces)
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        saved = await download(
            client, f"{server.origin}/a.bin", tmp_path / "a.png", max_bytes=4096, expect="image"
        )
    assert saved.path.read_bytes() == b"".join(pieces)
    assert saved.mime_type == "image/png"  # sniffed: the header said nothing useful


@pytest.mark.parametrize(
    "response",
    [
        # Content-Length framing, connection dropped after half the pieces.
        RawResponse(
            headers=[("Content-Type", "image/png")],
            pieces=[PNG, b"x" * 3000],
            framing="length",
            abort_after=1,
        ),
        # A Content-Length that promises more than the connection-close body delivers.
        RawResponse(
            headers=[("Content-Type", "image/png"), ("Content-Length", "9000")],
            pieces=[PNG, b"x" * 3000],
            framing="close",
        ),
        # Chunked body that breaks off before its terminating chunk.
        RawResponse(headers=[("Content-Type", "image/png")], pieces=[PNG, b"x" * 3000], abort_after=1),
    ],
    ids=["truncated-length", "wrong-length", "truncated-chunked"],
)
async def test_download_of_a_short_body_fails_and_leaves_nothing(
    tmp_path: Path, response: RawResponse
) -> None:
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(DownloadError, match="broke off") as caught:
            await download(
                client, f"{server.origin}/a.png", tmp_path / "a.png", max_bytes=10**6, expect="image"
            )
    assert "nothing was saved" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx2.HTTPError)
    assert listing(tmp_path) == []


async def test_download_non_2xx_and_unreachable_hosts_are_download_errors(tmp_path: Path) -> None:
    forbidden = RawResponse(status=403, headers=[("Content-Type", "application/xml")], pieces=[b"<Error/>"])
    async with raw_server(forbidden) as server, raw_client(server.base_url) as client:
        with pytest.raises(DownloadError, match="HTTP 403"):
            await download(
                client, f"{server.origin}/a.png", tmp_path / "a.png", max_bytes=10**6, expect="image"
            )
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now: connection refused
    async with raw_client(f"http://127.0.0.1:{port}/v1") as client:
        with pytest.raises(DownloadError, match="ConnectError"):
            await download(
                client, f"http://127.0.0.1:{port}/a.png", tmp_path / "a.png", max_bytes=10**6, expect="image"
            )
        with pytest.raises(DownloadError, match="http"):
            await download(
                client, "ftp://example.com/a.png", tmp_path / "a.png", max_bytes=10**6, expect="image"
            )
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("response", "permanent", "reason"),
    [
        (RawResponse(status=403, pieces=[b"<Error/>"]), True, "HTTP 403 (the URL may have expired)"),
        (RawResponse(status=404, pieces=[b"NoSuchKey"]), True, "HTTP 404"),
        (RawResponse(status=400, pieces=[b"bad"]), True, "HTTP 400"),
        (RawResponse(status=429, pieces=[b"slow down"]), False, "HTTP 429"),
        (RawResponse(status=503, pieces=[b"later"]), False, "HTTP 503"),
        (RawResponse(pieces=[PNG, b"x" * 3000], abort_after=1), False, "broke off"),
        (RawResponse(pieces=[PNG + payload(5000)], framing="length"), True, "over the 4.0 KiB limit"),
        (RawResponse(pieces=[PNG, payload(5000)]), True, "sent more than the 4.0 KiB limit"),
        (RawResponse(pieces=[b"<html>hello</html>"]), True, "bytes of no known media type"),
        (RawResponse(pieces=[MP4]), True, "video/mp4 bytes (Content-Type text/event-stream) instead of an"),
        (RawResponse(status=302, headers=[("Location", "file:///etc/passwd")]), True, "refused"),
        (RawResponse(status=304), True, "HTTP 304"),
    ],
    ids=[
        "403", "404", "400", "429", "503", "broken", "declared-over-cap", "streamed-over-cap", "html",
        "video-as-image", "redirect-to-file", "304",
    ],
)  # fmt: skip
async def test_download_errors_say_whether_trying_again_can_help(
    tmp_path: Path, response: RawResponse, permanent: bool, reason: str
) -> None:
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(DownloadError) as caught:
            await download(
                client, f"{server.origin}/a.png", tmp_path / "a.png", max_bytes=4096, expect="image"
            )
    assert reason in str(caught.value)
    assert caught.value.permanent is permanent
    assert listing(tmp_path) == []


async def test_a_stalled_download_is_abandoned_after_one_window_and_its_connection_closed(
    tmp_path: Path,
) -> None:
    stalled = RawResponse(headers=[("Content-Type", "image/png")], pieces=[PNG], hold=True)
    limits = DownloadLimits(min_bytes_per_second=10_000, window_seconds=0.3)  # 3 KB per window
    async with raw_server(stalled) as server, raw_client(server.base_url) as client:
        with (
            anyio.fail_after(3),
            pytest.raises(DownloadError, match=r"below the minimum rate of 9\.8 KiB/s") as caught,
        ):
            await download(
                client, f"{server.origin}/a.png", tmp_path / "a.png", max_bytes=10**6, expect="image",
                limits=limits,
            )  # fmt: skip
        with anyio.fail_after(3):
            await server.client_gone.wait()
    assert f"sent {len(PNG)} bytes in 0.3 s" in str(caught.value)
    assert not caught.value.permanent
    assert listing(tmp_path) == []


async def test_a_download_that_keeps_the_minimum_rate_is_not_cut_off(tmp_path: Path) -> None:
    # Four windows long in all (2 KiB every 0.1 s for 2 s), and every window brings its share many times
    # over: it must complete. Cut off if the window were not renewed once its share has arrived.
    pieces = [PNG, *(payload(2048, seed=n) for n in range(20))]
    response = RawResponse(headers=[("Content-Type", "image/png")], pieces=pieces, piece_interval=0.1)
    limits = DownloadLimits(min_bytes_per_second=1024, window_seconds=0.5)
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        saved = await download(
            client,
            f"{server.origin}/a.png",
            tmp_path / "a.png",
            max_bytes=10**6,
            expect="image",
            limits=limits,
        )
    assert saved.bytes == sum(map(len, pieces))


# ---------------------------------------------------------------------------------------------- inputs


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "frame.png").write_bytes(PNG)
    (allowed / "sub" / "deep.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    return allowed


def test_resolve_input_file_accepts_files_inside_the_allowed_dirs(inputs: Path) -> None:
    frame = inputs / "frame.png"
    assert resolve_input_file(str(frame), [inputs], max_bytes=10**6) == frame
    assert resolve_input_file("sub/deep.png", [inputs], max_bytes=10**6) == inputs / "sub" / "deep.png"
    assert resolve_input_file(frame.as_uri(), [inputs], max_bytes=10**6) == frame
    (inputs / "link.png").symlink_to(inputs / "sub" / "deep.png")  # a link that stays inside is fine
    assert (
        resolve_input_file(str(inputs / "link.png"), [inputs], max_bytes=10**6) == inputs / "sub" / "deep.png"
    )
    assert resolve_input_file(str(frame), [inputs], max_bytes=len(PNG)) == frame  # the cap is inclusive


def test_resolve_input_file_expands_the_home_directory(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(inputs.parent))
    assert (
        resolve_input_file("~/allowed/frame.png", [Path("~/allowed")], max_bytes=10**6)
        == inputs / "frame.png"
    )


@pytest.mark.parametrize(
    ("make_raw", "says"),
    [
        (lambda d: str(d.parent / "secret.png"), "outside the allowed input directories"),
        (lambda d: str(d / "escape.png"), "which resolves to"),
        (lambda d: str(d / "sub" / ".." / "frame.png"), "'..'"),
        (lambda d: "../secret.png", "'..'"),
        (lambda d: str(d / "missing.png"), "does not exist"),
        (lambda d: str(d / "sub"), "is a directory"),
        (lambda d: str(d / "frame.png\x00.txt"), "NUL"),
        (lambda d: "  ", "empty"),
        (lambda d: str(d / "big.png"), "over the 1.0 KiB limit"),
        (lambda d: "file://otherhost/etc/passwd", "another host"),
    ],
    ids=[
        "outside",
        "symlink-escape",
        "dotdot",
        "relative-dotdot",
        "missing",
        "directory",
        "nul",
        "blank",
        "too-big",
        "remote-uri",
    ],
)
def test_resolve_input_file_refuses_with_an_actionable_message(
    inputs: Path, make_raw: object, says: str
) -> None:
    (inputs / "escape.png").symlink_to(inputs.parent / "secret.png")
    (inputs / "big.png").write_bytes(b"x" * 1025)
    assert callable(make_raw)
    with pytest.raises(InputFileError) as caught:
        resolve_input_file(make_raw(inputs), [inputs], max_bytes=1024)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    if "outside" in says or "resolves" in says:
        assert str(inputs) in message
        assert "ALLTOKEN_INPUT_DIRS" in message


async def test_file_digests_streams_size_md5_and_sha256(tmp_path: Path) -> None:
    data = payload(3 * files.READ_CHUNK + 17)
    path = tmp_path / "frame.png"
    path.write_bytes(data)
    size, md5, sha256 = await file_digests(path)
    assert size == len(data)
    assert md5 == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert len(md5) == 24
    assert md5.endswith("==")
    assert sha256 == sha(data)
    with pytest.raises(InputFileError, match="cannot be read"):
        await file_digests(tmp_path / "gone.png")


# ---------------------------------------------------------------------------------------------- output dir


async def test_writing_under_a_regular_file_is_a_clear_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    with pytest.raises(OutputFileError) as caught:
        await write_bytes(blocker / "media" / "out.png", PNG)
    message = str(caught.value)
    assert str(blocker / "media") in message
    assert "set ALLTOKEN_OUTPUT_DIR to a writable directory" in message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOTDIR
    assert listing(tmp_path) == ["not-a-dir"]


def test_a_full_disk_message_says_to_free_space() -> None:
    error = files._output_error(OSError(errno.ENOSPC, "No space left on device"), Path("/data/media"))
    assert str(error) == (
        "Cannot write media to /data/media: No space left on device (ENOSPC). "
        "To fix it, free disk space there, or set ALLTOKEN_OUTPUT_DIR to a volume with room."
    )
    assert isinstance(error.__cause__, OSError)


CHILD = """
import anyio, errno, json, os, resource, signal, sys
from pathlib import Path
from alltoken_mcp.files import OutputFileError, {call}

async def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    try:
        await {call}(out / "big.png", {arg})
    except OutputFileError as exc:
        cause = exc.__cause__
        report = {{"message": str(exc), "errno": getattr(cause, "errno", None), "files": os.listdir(out)}}
        print(json.dumps(report))
        return
    print(json.dumps({{"message": None, "files": os.listdir(out)}}))

anyio.run(main)
"""


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        ("write_bytes", "b'\\\\x89PNG\\\\r\\\\n\\\\x1a\\\\n' + os.urandom(3 * 1024 * 1024)"),
    ],
)
async def test_hitting_the_file_size_limit_is_an_output_error_and_leaves_nothing(
    tmp_path: Path, call: str, arg: str
) -> None:
    script = CHILD.format(call=call, arg=arg, limit=1024 * 1024)
    out = tmp_path / "media"
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-c", script, str(out)], cwd=Path(__file__).parent.parent, check=False
        )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["errno"] == errno.EFBIG
    assert report["message"] == (
        f"Cannot write media to {out}: File too large (EFBIG). To fix it, raise the file-size limit, "
        "or set ALLTOKEN_OUTPUT_DIR to a filesystem that allows large files."
    )
    assert report["files"] == []


def test_a_home_directory_of_a_user_that_does_not_exist_is_one_line_not_a_crash(inputs: Path) -> None:
    with pytest.raises(InputFileError) as caught:
        resolve_input_file("~no-such-user-here/frame.png", [inputs], max_bytes=1024)
    assert "~no-such-user-here" in str(caught.value)
    assert "\n" not in str(caught.value)
