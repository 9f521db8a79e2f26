"""A hostile AllToken for download tests: a front on its own loopback origin (the base URL the server under
test uses) that passes every API call through to a real simulator, lies about where results are, and
serves the hostile files it points at.

* `video_url` / `last_frame_url` / `image_url` replace the URLs in completed task answers (`{origin}` is
  the front's own origin, `{task}` the task id); with `image_url` the one-time base64 is withheld, so
  the image must be fetched from that URL.
* `files[name]` says how `GET /files/<name>` answers: a status (and `Location`), a body, a trickle of
  single bytes, an endless body, or failures before success. `hits[name]` counts the requests,
  `streaming` is how many file bodies are being sent right now (`most_streaming` its peak), and
  `hung_up[name]` is set when a client closes a file connection early.

Forwarded requests carry the front's `Host`, so the simulator's own result URLs point at the front too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from anyio.abc import SocketStream

from alltoken_mcp.simulator import RunningSimulator
from tests.rawserver import RecordedRequest, _read_request

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
_VIDEO_TASK = re.compile(r"/v1/videos/generations/(vgen_\w+)")
_IMAGE_TASK = re.compile(r"/v1/images/generations/(igen_\w+)")
_FORWARDED_HEADERS = ("content-type", "retry-after", "x-gateway-request-id")


@dataclass
class HostileFile:
    status: int = 200
    content_type: str = "video/mp4"
    body: bytes = MP4_HEAD + b"\x00" * 1000
    location: str | None = None  # with a 3xx status; `{origin}` is substituted
    trickle_seconds: float | None = None  # after `body`, one more byte this often, forever
    endless: bool = False  # after `body`, 64 KiB pieces until the client goes away
    failures: int = 0  # the first this many requests answer 503


@dataclass
class Front:
    port: int
    sim: RunningSimulator
    video_url: str | None = None
    last_frame_url: str | None = None
    image_url: str | None = None
    files: dict[str, HostileFile] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    hung_up: dict[str, anyio.Event] = field(default_factory=dict)
    streaming: int = 0
    most_streaming: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def url(self, template: str, task: str = "") -> str:
        return template.format(origin=self.origin, task=task)


async def _send(stream: SocketStream, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    head = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}"]
    await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


async def _serve_file(front: Front, stream: SocketStream, name: str) -> bool:
    """Answer GET /files/<name>; True if the connection may be reused."""
    spec = front.files.get(name)
    front.hits[name] += 1
    if spec is None:
        await _send(stream, 404, [("Content-Type", "text/plain")], b"NoSuchKey")
        return True
    if front.hits[name] <= spec.failures:
        await _send(stream, 503, [("Content-Type", "text/plain")], b"try later")
        return True
    headers = [("Content-Type", spec.content_type)]
    if spec.location is not None:
        headers.append(("Location", front.url(spec.location)))
    if spec.trickle_seconds is None and not spec.endless:
        await _send(stream, spec.status, headers, spec.body)
        return True
    head = [f"HTTP/1.1 {spec.status} Status", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    front.streaming += 1
    front.most_streaming = max(front.most_streaming, front.streaming)
    try:
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + spec.body)
        while True:
            if spec.trickle_seconds is not None:
                await anyio.sleep(spec.trickle_seconds)
                await stream.send(b"\x00")
            else:
                await stream.send(b"\x00" * 65536)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        front.hung_up.setdefault(name, anyio.Event()).set()
    finally:
        front.streaming -= 1
    return False


def _rewrite(front: Front, request: RecordedRequest, body: bytes) -> bytes:
    """Lie about where a completed task's files are."""
    video = _VIDEO_TASK.fullmatch(request.path)
    image = _IMAGE_TASK.fullmatch(request.path)
    if request.method != "GET" or not (video or image):
        return body
    try:
        task: dict[str, Any] = json.loads(body)
    except ValueError:
        return body
    if task.get("status") != "completed":
        return body
    if video and front.video_url is not None:
        task["video_url"] = front.url(front.video_url, video.group(1))
    if video and front.last_frame_url is not None:
        task["last_frame_url"] = front.url(front.last_frame_url, video.group(1))
    if image and front.image_url is not None:
        for item in task.get("data", []):
            item.pop("b64_json", None)
            item["r2_url"] = front.url(front.image_url, image.group(1))
    return json.dumps(task).encode()


async def _forward(
    front: Front, http: httpx2.AsyncClient, stream: SocketStream, request: RecordedRequest
) -> None:
    headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length", "connection")}
    headers["host"] = f"127.0.0.1:{front.port}"
    answer = await http.request(request.method, request.path, headers=headers, content=request.body)
    kept = [(k, answer.headers[k]) for k in _FORWARDED_HEADERS if k in answer.headers]
    await _send(stream, answer.status_code, kept, _rewrite(front, request, answer.content))


@asynccontextmanager
async def hostile_front(sim: RunningSimulator) -> AsyncIterator[Front]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    front = Front(port=listener.extra(anyio.abc.SocketAttribute.local_port), sim=sim)

    async def handle(stream: SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while True:
                request = await _read_request(stream, buffer)
                if request is None:
                    return
                try:
                    if request.path.startswith("/files/"):
                        if not await _serve_file(front, stream, request.path.removeprefix("/files/")):
                            return
                    else:
                        await _forward(front, http, stream, request)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    async with (
        httpx2.AsyncClient(base_url=sim.origin, timeout=30) as http,
        listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, handle)
        try:
            yield front
        finally:
            tg.cancel_scope.cancel()
