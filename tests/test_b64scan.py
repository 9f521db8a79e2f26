"""Streaming b64_json extraction: the scanner alone under every way of cutting the body, then
`AllTokenClient.get_image(b64_sink=...)` against the simulator and a byte-exact scripted server."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.client._b64scan import PIECE_CHARS, B64JsonScanner, B64Piece, B64ScanError, decode_piece
from alltoken_mcp.errors import GoneError, TransportError
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator, SimConfig
from tests.rawserver import RawResponse, raw_server

IMAGE_A = bytes(range(256)) * 3 + b"\xfb\xff\xfe"  # every byte value; its base64 has '+' and '/'
IMAGE_B = b"\x89PNG\r\n\x1a\n" + bytes(range(250, 0, -3))
IMAGE_C = b"\xff\xd8\xff tiny"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrapped(text: str, width: int, newline: str) -> str:
    return newline.join(text[i : i + width] for i in range(0, len(text), width))


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# A completed task with three images written the ways encoders write them, and "b64_json" in places
# that are not an image: a prompt, an error message, a nested object, the top level.
ESCAPED_B = b64(IMAGE_B).replace("/", "\\/").replace("+", "\\u002B")
BODY = (
    '{"id":"igen_1","status":"completed","b64_json":"QUFB",'
    + '"revised":{"data":[{"b64_json":"QUFB"}]},"previews":[{"b64_json":"QUFB"}],'
    + '"prompt":'
    + json_text('draw {"b64_json": "QUFB"} and \\ "quotes"')
    + ',"data":[{"mime_type":"image/png","b64_json":"'
    + wrapped(b64(IMAGE_A), 76, "\\r\\n").replace("/", "\\/")
    + '","r2_url":"https:\\/\\/r2.example\\/a.png","meta":{"b64_json":"QUFB"}},'
    + ' { "b64\\u005fjson" : "'
    + ESCAPED_B
    + '" , "error":{"message":"no \\"b64_json\\" here"}},'
    + '{"b64_json":null,"r2_url":"https://r2.example/n.png"},'
    + '{"b64_json":""},'
    + '{"b64_json":"data:image\\/jpeg;base64,'
    + b64(IMAGE_C).rstrip("=")
    + '","nested":[[{"b64_json":"QUFB"}]]}'
    + '],"usage":{"total_tokens":12},"flag":true,"n":-1.5e3}'
).encode()
IMAGES = {0: IMAGE_A, 1: IMAGE_B, 4: IMAGE_C}


def expected_remainder() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(BODY)
    for item in parsed["data"]:
        item["b64_json"] = None
    return parsed


def scan(chunks: Iterable[bytes], piece_chars: int = 8) -> tuple[dict[int, bytes], bytes, list[B64Piece]]:
    """Feed `chunks`; the decoded bytes per data index, the remainder JSON and every piece handed out."""
    scanner = B64JsonScanner(piece_chars=piece_chars)
    images: dict[int, bytes] = {}
    pieces: list[B64Piece] = []
    for chunk in chunks:
        for piece in scanner.feed(chunk):
            pieces.append(piece)
            images[piece.index] = images.get(piece.index, b"") + decode_piece(piece)
    return images, scanner.finish(), pieces


def split_every(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


# ------------------------------------------------------------------------------------------ scanner


@pytest.mark.parametrize("piece_chars", [4, 8, 1024])
def test_every_split_size_yields_the_same_images_and_remainder(piece_chars: int) -> None:
    expected = expected_remainder()
    for size in range(1, len(BODY) + 1):
        images, remainder, pieces = scan(split_every(BODY, size), piece_chars)
        assert images == IMAGES, f"chunks of {size}"
        assert json.loads(remainder) == expected, f"chunks of {size}"
        assert all(len(p.text) % 4 == 0 for p in pieces)


def test_every_two_way_cut_yields_the_same_images_and_remainder() -> None:
    expected = expected_remainder()
    for cut in range(len(BODY) + 1):
        images, remainder, _ = scan([BODY[:cut], BODY[cut:]])
        assert images == IMAGES, f"cut at {cut}"
        assert json.loads(remainder) == expected, f"cut at {cut}"


def test_the_remainder_keeps_every_other_byte_as_sent() -> None:
    _, remainder, _ = scan([BODY])
    assert remainder.count(b'"b64_json":null') == 4  # items 0, 3 and 4, and 2 as sent
    assert b'"b64\\u005fjson" : null' in remainder
    assert b'"r2_url":"https:\\/\\/r2.example\\/a.png"' in remainder
    assert remainder.count(b'"b64_json":"QUFB"') == 5  # the decoys, untouched


def test_random_splits_of_a_large_wrapped_image_decode_exactly_in_bounded_pieces() -> None:
    image = random.Random(7).randbytes(3 * 1024 * 1024 + 5)
    text = wrapped(b64(image), 76, "\\n").replace("/", "\\/")
    body = f'{{"id":"igen_2","status":"completed","data":[{{"b64_json":"{text}","mime_type":"image/png"}}]}}'
    raw = body.encode()
    rng = random.Random(11)
    for _ in range(8):
        cuts = sorted(rng.sample(range(1, len(raw)), 60))
        chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        images, remainder, pieces = scan(chunks, PIECE_CHARS)
        assert hashlib.sha256(images[0]).digest() == hashlib.sha256(image).digest()
        assert json.loads(remainder)["data"] == [{"b64_json": None, "mime_type": "image/png"}]
        longest_chunk = max(map(len, chunks))
        assert max(len(p.text) for p in pieces) < PIECE_CHARS + longest_chunk


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"igen_3","status":"processing","next_poll_after_ms":20}',
        b'{"id":"igen_3","status":"completed","data":[{"b64_json":null,"r2_url":"https://r/x.png"}]}',
        b'{"id":"igen_3","status":"completed","data":[{"url":"https://r/x.png"}],"b64_json":"QUFB"}',
        b'{"data":{"b64_json":"QUFB"}}',
        b'{"images":[{"b64_json":"QUFB"}],"data":[{}]}',
        b'{"data":[[{"b64_json":"QUFB"}]]}',
        b'{"result":{"data":[{"b64_json":"QUFB"}]}}',
        b'[{"data":[{"b64_json":"QUFB"}]}]',
        b'{"data":[{"x":{"b64_json":"QUFB"}},{"b64_json_":"QUFB","B64_json":"QUFB"}]}',
        b'{"error":{"message":"{\\"data\\":[{\\"b64_json\\":\\"QUFB\\"}]}"}}',
        b'{"a":[],"b":{},"c":[{}],"d":"\\\\","data":[]}',
    ],
)
def test_values_that_are_not_a_data_items_b64_json_string_pass_through_untouched(body: bytes) -> None:
    for size in (1, 2, 3, len(body)):
        images, remainder, _ = scan(split_every(body, size))
        assert images == {}
        assert remainder == body


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("QUJD!AAA", "not valid base64 at character 4 ('!')"),
        ("QUJDR", "5 characters cannot be a complete encoding"),
        ("QUE=QUJD", "padding"),  # found by the decoder, or between pieces by the scanner
        ("QU\\bJD", "contains the escape '\\\\b'"),
        ("QU\\u00e9JD", "contains '\\\\u00e9', not a base64 character"),
        ("QU\\\\JD", "escaped '\\\\' or '\"'"),
        ('QU\\"JD', "escaped '\\\\' or '\"'"),
        ("data:image/png,QUJD", "data: URL but not a base64 one"),
        ("data:image/png;base64", "data: URL without base64 data"),
    ],
)
def test_a_value_that_is_not_base64_is_an_error_naming_the_image(value: str, problem: str) -> None:
    body = f'{{"data":[{{"b64_json":"QUJD"}},{{"b64_json":"{value}"}}]}}'.encode()
    for size in (1, 3, len(body)):
        with pytest.raises(B64ScanError) as caught:
            scan(split_every(body, size), piece_chars=4)
        assert "data[1].b64_json" in str(caught.value)
        assert problem in str(caught.value)


def test_a_second_b64_json_in_one_item_is_an_error() -> None:
    with pytest.raises(B64ScanError, match=r"data\[0\] has a second b64_json member"):
        scan([b'{"data":[{"b64_json":"QUJD","b64\\u005fjson":"QUJD"}]}'])


def test_every_truncation_of_the_body_is_an_error() -> None:
    for cut in range(len(BODY)):
        with pytest.raises(B64ScanError, match="the body ended early"):
            scan([BODY[:cut]])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html><body>Bad gateway</body></html>", "unexpected '<' at byte 0"),
        (b"Internal Server Error", "text after the JSON at byte 9"),
        (b'{"data":[]} {"data":[]}', "text after the JSON at byte 12"),
        (b'{"data":[1,]}', "unexpected ']' at byte 11"),
        (b'{"data" [1]}', "unexpected value at byte 8"),
        (b'{"a":1 "b":2}', "unexpected value at byte 7"),
        (b"", "the body is empty|before any JSON value"),
    ],
)
def test_a_body_that_is_not_json_is_an_error_saying_where(body: bytes, problem: str) -> None:
    with pytest.raises(B64ScanError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        scan([body])


def test_a_remainder_over_its_limit_is_refused() -> None:
    scanner = B64JsonScanner(max_remainder=1000)
    scanner.feed(b'{"data":[{"b64_json":"' + b"QUJD" * 1000 + b'"}],"x":"')  # base64 does not count
    with pytest.raises(B64ScanError, match="outside the b64_json values"):
        scanner.feed(b"y" * 1000)


# ------------------------------------------------------------------------------------------ get_image


class CollectingSink:
    def __init__(self, fail_after: int | None = None) -> None:
        self.images: dict[int, bytearray] = {}
        self.writes = 0
        self.fail_after = fail_after

    async def write(self, index: int, data: bytes) -> None:
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise OSError(28, "No space left on device")
        self.images.setdefault(index, bytearray()).extend(data)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[AllTokenClient]:
    policy = RetryPolicy(sleep=Sleeps(), random=lambda: 0.5)
    async with AllTokenClient(base_url=sim.base_url, api_key=SIM_API_KEY, retry=policy, timeout=10) as c:
        yield c


async def finished_image(
    sim: RunningSimulator, client: AllTokenClient, prompt: str, n: int = 1, key: str = "first"
) -> str:
    body = {"model": "gpt-image-2", "prompt": prompt, "quality": "low", "n": n}
    task = await client.create_image(
        body, idempotency_key=f"{key}-{hashlib.sha256(prompt.encode()).hexdigest()}"
    )
    sim.state.advance_to(sim.state.images[task.id].timeline.finished + 0.01)
    return task.id


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, image_payload_bytes=3 * 1024 * 1024)])
async def test_get_image_with_a_sink_receives_exactly_the_simulators_pngs(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    task_id = await finished_image(sim, client, "two large posters", n=2)
    sink = CollectingSink()
    task = await client.get_image(task_id, b64_sink=sink)

    rendered = sim.state.images[task_id].images
    assert rendered is not None
    assert len(rendered[0]) >= 3 * 1024 * 1024
    assert {i: bytes(b) for i, b in sink.images.items()} == {0: rendered[0], 1: rendered[1]}
    assert sink.writes >= 2 * 4  # 4 MB of base64 per image arrives in ~1 MB pieces, not at once
    assert sim.state.b64_deliveries == 1
    assert task.status == "completed"
    assert [d.b64_json for d in task.data] == [None, None]
    assert [d.mime_type for d in task.data] == ["image/png", "image/png"]
    assert task.usage is not None
    assert task.usage["total_tokens"] > 0
    assert task.data[1].r2_url is not None
    async with client.download(task.data[1].r2_url) as response:
        assert b"".join([part async for part in response.aiter_bytes()]) == rendered[1]


TIMES = {"id", "data", "created", "created_at", "completed_at", "expires_at"}


async def test_get_image_with_a_sink_decodes_what_a_plain_get_would_return(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    # Delivery is one-time, so the plain read is of a second task with the same prompt (same PNG).
    plain = await client.get_image(await finished_image(sim, client, "a lighthouse"))
    sink = CollectingSink()
    second = await finished_image(sim, client, "a lighthouse", key="second")
    streamed = await client.get_image(second, b64_sink=sink)
    assert plain.data[0].b64_json is not None
    assert bytes(sink.images[0]) == base64.b64decode(plain.data[0].b64_json)
    assert streamed.model_dump(exclude=TIMES) == (plain.model_dump(exclude=TIMES))
    assert sim.state.b64_deliveries == 2


async def test_get_image_with_a_sink_on_a_running_task_writes_nothing_and_keeps_retry_after(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    task = await client.create_image({"model": "gpt-image-2", "prompt": "slow"}, idempotency_key="slow-1")
    sink = CollectingSink()
    polled = await client.get_image(task.id, b64_sink=sink)
    assert polled.status in ("queued", "processing")
    assert polled.retry_after is not None
    assert polled.next_poll_after_ms is not None
    assert sink.writes == 0
    assert sim.state.b64_deliveries == 0


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, r2_mode=False)])
async def test_get_image_with_a_sink_raises_the_mapped_error_for_an_error_status(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    task_id = await finished_image(sim, client, "once only")
    await client.get_image(task_id, b64_sink=CollectingSink())
    sink = CollectingSink()
    with pytest.raises(GoneError) as caught:
        await client.get_image(task_id, b64_sink=sink)
    assert caught.value.code == "image_already_retrieved"
    assert sink.writes == 0


@pytest.mark.parametrize("sim_config", [SimConfig(speed=0.01, image_payload_bytes=2 * 1024 * 1024)])
async def test_a_failing_sink_stops_the_delivery_and_releases_the_connection(
    sim: RunningSimulator, client: AllTokenClient
) -> None:
    task_id = await finished_image(sim, client, "a disk that fills up")
    with pytest.raises(OSError, match="No space left"):
        await client.get_image(task_id, b64_sink=CollectingSink(fail_after=1))
    # R2 mode: the result is still reachable, and the client's connection pool still works.
    again = await client.get_image(task_id, b64_sink=CollectingSink())
    assert again.data[0].r2_url is not None
    assert sim.state.b64_deliveries == 1


def raw_client(base_url: str) -> AllTokenClient:
    policy = RetryPolicy(max_attempts=3, sleep=Sleeps(), random=lambda: 0.5)
    return AllTokenClient(base_url=base_url, api_key="sk-raw", retry=policy, timeout=10.0)


JSON_HEADERS = [("Content-Type", "application/json"), ("Retry-After", "3")]


async def test_get_image_with_a_sink_reads_a_body_cut_into_tiny_wire_pieces() -> None:
    response = RawResponse(headers=JSON_HEADERS, pieces=split_every(BODY, 7), framing="chunked")
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        sink = CollectingSink()
        task = await client.get_image("igen_1", b64_sink=sink)
    assert {i: bytes(b) for i, b in sink.images.items()} == IMAGES
    assert task.retry_after == 3
    assert [d.b64_json for d in task.data] == [None] * 5
    assert task.data[0].r2_url == "https://r2.example/a.png"
    assert task.data[2].r2_url == "https://r2.example/n.png"


async def test_an_html_page_with_200_is_a_transport_error_quoting_it() -> None:
    page = b"<html><body>Service temporarily unavailable</body></html>"
    response = RawResponse(headers=[("Content-Type", "text/html")], pieces=[page], framing="length")
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(TransportError) as caught:
            await client.get_image("igen_1", b64_sink=CollectingSink())
    message = str(caught.value)
    assert "GET 127.0.0.1" in message
    assert "/v1/images/generations/igen_1" in message
    assert "text/html" in message
    assert "unexpected '<' at byte 0" in message
    assert "Service temporarily unavailable" in message


async def test_a_connection_dropped_mid_image_is_a_transport_error_and_is_not_retried() -> None:
    pieces = split_every(BODY, 200)
    response = RawResponse(headers=JSON_HEADERS, pieces=pieces, framing="length", abort_after=3)
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        sink = CollectingSink()
        with pytest.raises(TransportError, match="broke off after 600 bytes"):
            await client.get_image("igen_1", b64_sink=sink)
    assert len(server.requests) == 1


async def test_a_body_closed_cleanly_mid_json_is_a_transport_error() -> None:
    response = RawResponse(headers=JSON_HEADERS, pieces=[BODY[:-40]], framing="close")
    async with raw_server(response) as server, raw_client(server.base_url) as client:
        with pytest.raises(TransportError, match="ended early"):
            await client.get_image("igen_1", b64_sink=CollectingSink())
