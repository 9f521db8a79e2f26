"""The real stdio server against a hostile upstream: its peak memory, and its longest tool call.

Run from the repo root (the driver is imported from tests/):

    PYTHONPATH=. .venv/bin/python benchmarks/bench_hostile.py [--only memory,storms] [--budget 5]
        [--memory-budget 60] [--kill-above-mb 1024] [--scenarios TEXT,...] [--storms TEXT,...]

(--scenarios / --storms: run only those whose label contains one of the texts.)

The upstream runs in this process: the bundled simulator behind an ASGI layer (`Hostile`) that answers
the requests its rule picks with hostile behaviour (endless bodies, 429 storms, silence, a trickle) and
passes everything else to the simulator, so a job can be created against a well-behaved AllToken and then
watched while it turns hostile. The server is the installed `alltoken-mcp` entry point next to
sys.executable, spoken to in raw JSON-RPC over its pipes (`tests.rawstdio.StdioServer`), so its
pid is known and a call that kills it is noticed.

1. memory (issue 8 items 3-4; bound 300 MB). One fresh server per scenario, with
   ALLTOKEN_MAX_WAIT_SECONDS = --memory-budget (long, so the size bounds rather than the clock end the
   reading). Endless bodies (chat streams of every shape, JSON listings, an image task poll) and the
   largest bodies each cap still accepts, made as dense in JSON objects as possible. While the call
   runs its VmRSS is sampled every 20 ms; VmHWM (the kernel's peak) is read after. Reported: RSS after
   initialize, the peak, the call's duration, the bytes the upstream wrote ("sent"), whether the server
   still answers afterwards, and the call's answer. A server that passes --kill-above-mb is killed and
   reported as "> N MB" (the machine has other work to do).
2. storms (issue 8 item 5). ALLTOKEN_MAX_WAIT_SECONDS = --budget. For each upstream behaviour one server:
   every tool is called, one at a time, first on the cold server (the media tools' model listings hit
   the upstream), then, once the catalog was fetched and an image and a video job were created while the
   upstream behaved, again (now the creates and a frame upload hit it, and list_models has a copy to
   fall back on), with job_status / job_cancel / list_jobs on those jobs. Reported per call: duration,
   isError, hostile answers the upstream gave meanwhile (the server's poller included), and the first
   line of its text. The figure is the longest call, judged against the budget + the 1 s
   grace + 0.5 s of slack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import uvicorn
from procs import MemoryWatch, memory_mb, watch_memory

from alltoken_mcp.budget import GRACE_SECONDS
from alltoken_mcp.client._b64scan import MAX_REMAINDER
from alltoken_mcp.client._client import MAX_CHAT_BODY, MAX_LIST_BODY
from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, SimState
from alltoken_mcp.simulator import media as sim_media
from alltoken_mcp.simulator.app import build_app
from tests.rawstdio import ServerGone, StdioServer, stdio_server

SLACK_SECONDS = 0.5
RSS_BOUND_MB = 300.0
PIECE = 64 * 1024
"""How much an endless body writes per send."""

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
Behaviour = Callable[[Send], Awaitable[None]]
"""Writes one hostile HTTP response (it may never end: the layer stops it when the client hangs up)."""
Rule = Callable[[str, str], "Behaviour | None"]
"""(method, path) → the hostile answer for that request, or None to let the simulator answer."""


def behaving(method: str, path: str) -> Behaviour | None:
    return None


# ------------------------------------------------------------------------------------ behaviours


def _start(status: int, content_type: str, headers: list[tuple[str, str]] | None = None) -> Message:
    pairs = [("content-type", content_type), *(headers or [])]
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(name.encode(), value.encode()) for name, value in pairs],
    }


def _body(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def endless(
    pieces: Callable[[], Iterator[bytes]],
    *,
    head: bytes = b"",
    status: int = 200,
    content_type: str = "application/json",
) -> Behaviour:
    """`head`, then the pieces, forever (chunked framing: no length announced)."""

    async def respond(send: Send) -> None:
        await send(_start(status, content_type))
        if head:
            await send(_body(head))
        for piece in pieces():
            await send(_body(piece))
            # uvicorn's send only suspends when the socket buffer is full; let the hang-up be noticed.
            await anyio.lowlevel.checkpoint()

    return respond


def repeat(piece: bytes) -> Callable[[], Iterator[bytes]]:
    def pieces() -> Iterator[bytes]:
        while True:
            yield piece

    return pieces


def canned(body: bytes, *, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Behaviour:
    async def respond(send: Send) -> None:
        length = [("content-length", str(len(body))), *(headers or [])]
        await send(_start(status, "application/json", length))
        await send(_body(body, more=False))

    return respond


def rate_limited(retry_after: Callable[[], str] | None) -> Behaviour:
    """429 with the Retry-After `retry_after()` gives at the moment of the request (None: no header)."""
    body = b'{"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}}'

    async def respond(send: Send) -> None:
        headers = [("retry-after", retry_after())] if retry_after is not None else []
        await canned(body, status=429, headers=headers)(send)

    return respond


UNAVAILABLE = canned(
    b'{"error": {"message": "All providers failed", "type": "server_error", "code": "all_providers_failed"}}',
    status=503,
)


async def silent(send: Send) -> None:
    """Accept the request and never answer."""
    await anyio.sleep_forever()


def headers_only(content_type: str) -> Behaviour:
    """200 and its headers (a body is announced), then nothing."""

    async def respond(send: Send) -> None:
        await send(_start(200, content_type))
        await anyio.sleep_forever()

    return respond


def left_open(body: bytes, content_type: str) -> Behaviour:
    """The whole answer, but the body never ends (chunked framing, no last chunk)."""

    async def respond(send: Send) -> None:
        await send(_start(200, content_type))
        await send(_body(body))
        await anyio.sleep_forever()

    return respond


def trickle(body: bytes, content_type: str, interval: float = 1.0) -> Behaviour:
    """200 with the whole length announced, then the body one byte per `interval`."""

    async def respond(send: Send) -> None:
        await send(_start(200, content_type, [("content-length", str(len(body)))]))
        for index in range(len(body)):
            await send(_body(body[index : index + 1], more=index + 1 < len(body)))
            await anyio.sleep(interval)

    return respond


# ------------------------------------------------------------------------------------ the upstream


class Hostile:
    """ASGI app: the simulator, except for the requests `rule` answers itself."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.simulator = build_app(state)
        self.rule: Rule = behaving
        self.answers: Counter[str] = Counter()
        """Hostile answers given, by "METHOD path"."""
        self.bytes_sent = 0
        """Body bytes written by hostile answers."""

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        behaviour = self.rule(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if behaviour is None:
            await self.simulator(scope, receive, send)
            return
        self.answers[f"{scope['method']} {scope['path']}"] += 1
        message = await receive()
        while message.get("more_body"):  # the request body: read, ignored
            message = await receive()
        if message["type"] == "http.disconnect":
            return

        async def counted(message: Message) -> None:
            self.bytes_sent += len(message.get("body", b""))
            await send(message)

        async with anyio.create_task_group() as tg:

            async def hang_up_when_the_client_does() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(hang_up_when_the_client_does)
            await behaviour(counted)
            tg.cancel_scope.cancel()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: this process owns Ctrl+C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def hostile_upstream(config: SimConfig) -> AsyncIterator[tuple[Hostile, str]]:
    """A `Hostile` upstream on a free loopback port, and its base URL."""
    app = Hostile(SimState(config))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = _Uvicorn(
        uvicorn.Config(
            app,
            lifespan="off",
            http="h11",
            ws="none",
            log_level="critical",  # hung-up endless answers are the point, not errors
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await anyio.sleep(0.01)
        try:
            yield app, f"http://127.0.0.1:{port}/v1"
        finally:
            server.should_exit = True
    sock.close()


# ------------------------------------------------------------------------------------ the server


def stdio_server_on(
    home: Path, base_url: str, wait_seconds: float
) -> AbstractAsyncContextManager[StdioServer]:
    """An initialized `alltoken-mcp` over stdio."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALLTOKEN_")}
    env.update(
        ALLTOKEN_BASE_URL=base_url,
        ALLTOKEN_API_KEY=SIM_API_KEY,
        ALLTOKEN_MCP_HOME=str(home),
        ALLTOKEN_OUTPUT_DIR=str(home / "out"),
        ALLTOKEN_INPUT_DIRS=str(home),
        ALLTOKEN_MAX_WAIT_SECONDS=f"{wait_seconds:g}",
    )
    return stdio_server(env)


@dataclass
class Call:
    label: str
    seconds: float
    is_error: bool | None
    """None: the server exited before answering."""
    hostile_answers: int
    first_line: str
    structured: dict[str, Any] | None = None

    @property
    def summary(self) -> str:
        """The first line, or for a chat answer its size and how it ended (its first line is the text)."""
        out = self.structured
        if self.is_error is False and out is not None and isinstance(out.get("text"), str):
            warnings = " ".join(out.get("warnings") or [])
            return f"{len(out['text']):,} chars, finish_reason {out.get('finish_reason')}. {warnings}"
        return self.first_line


async def timed_call(
    server: StdioServer, upstream: Hostile, label: str, tool: str, arguments: dict[str, Any]
) -> Call:
    before = upstream.answers.total()
    started = time.monotonic()
    try:
        result = await server.request("tools/call", {"name": tool, "arguments": arguments})
    except ServerGone:
        return Call(label, time.monotonic() - started, None, upstream.answers.total() - before, "(no answer)")
    took = time.monotonic() - started
    text = "\n".join(part.get("text", "") for part in result.get("content", []))
    first = text.strip().splitlines()[0] if text.strip() else "(no text)"
    answers = upstream.answers.total() - before
    return Call(label, took, bool(result.get("isError")), answers, first, result.get("structuredContent"))


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------ 1. memory


def sse(delta: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def block(unit: bytes) -> bytes:
    """`unit` repeated to about one piece."""
    return unit * max(1, PIECE // len(unit))


def new_tool_call_each_time() -> Iterator[bytes]:
    """Tool-call fragments, each with a new index and no arguments (nothing that counts as answer)."""
    index = 0
    while True:
        events = []
        for _ in range(500):
            fragment = {"index": index, "id": f"c{index}", "function": {"name": "f"}}
            events.append(sse({"tool_calls": [fragment]}))
            index += 1
        yield b"".join(events)


MODEL_ITEM = b'{"id": "m", "object": "model"},'


def dense(head: bytes, item: bytes, tail: bytes, size: int) -> bytes:
    """`head`, then `item` repeated (comma-separated), then `tail`: `size` bytes at most. Valid JSON as
    dense in objects as it gets, for a body just under a cap."""
    count = (size - len(head) - len(tail)) // (len(item) + 1)
    return head + b",".join([item] * count) + tail


def largest_accepted_listing() -> bytes:
    return dense(b'{"data":[', b'{"id":"a"}', b"]}", MAX_LIST_BODY)


def largest_accepted_chat_json() -> bytes:
    """A non-streamed answer (the stream flag ignored) padded with empty objects to just under the cap."""
    answer = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    return dense(answer + b'"pad":[', b"{}", b"]}", MAX_CHAT_BODY)


def largest_image_task() -> bytes:
    """A completed image task whose JSON outside the base64 values is just under the scanner's cap."""
    return dense(b'{"id":"igen_x","status":"completed","data":[', b"{}", b"]}", MAX_REMAINDER)


@dataclass
class Scenario:
    label: str
    routes: dict[str, Callable[[], Behaviour]]
    """"METHOD path" (or "METHOD prefix*") → the hostile answer; other requests reach the simulator."""
    tool: str
    arguments: dict[str, Any]
    image_job: bool = False
    """Create an image job (upstream behaving) first; the call's `job_id` is its id."""


CHAT = "POST /v1/chat/completions"
IMAGE_POLL = "GET /v1/images/generations/*"
LISTINGS = ("GET /api-account/models", "GET /v1/models", "GET /v1/images/models", "GET /v1/videos/models")


def endless_listing() -> Behaviour:
    return endless(repeat(block(MODEL_ITEM)), head=b'{"data": [')


SCENARIOS = [
    Scenario(
        "chat: endless 1-char deltas",
        {CHAT: lambda: endless(repeat(block(sse({"content": "x"}))), content_type="text/event-stream")},
        "alltoken_chat",
        {"prompt": "talk forever"},
    ),
    Scenario(
        "chat: endless 64 KiB deltas",
        {CHAT: lambda: endless(repeat(sse({"content": "x" * PIECE})), content_type="text/event-stream")},
        "alltoken_chat",
        {"prompt": "talk forever"},
    ),
    Scenario(
        "chat: endless 64 KiB reasoning deltas",
        {
            CHAT: lambda: endless(
                repeat(sse({"reasoning_content": "y" * PIECE})), content_type="text/event-stream"
            )
        },
        "alltoken_chat",
        {"prompt": "think forever"},
    ),
    Scenario(
        "chat: endless tool-call fragments with a new index each",
        {CHAT: lambda: endless(new_tool_call_each_time, content_type="text/event-stream")},
        "alltoken_chat",
        {"prompt": "call tools forever"},
    ),
    Scenario(
        "chat: endless 'data: x' lines, no blank line",
        {CHAT: lambda: endless(repeat(block(b"data: x\n")), content_type="text/event-stream")},
        "alltoken_chat",
        {"prompt": "one endless event"},
    ),
    Scenario(
        "chat: one endless line",
        {
            CHAT: lambda: endless(
                repeat(b"x" * PIECE),
                head=b'data: {"choices": [{"delta": {"content": "',
                content_type="text/event-stream",
            )
        },
        "alltoken_chat",
        {"prompt": "one endless line"},
    ),
    Scenario(
        "chat: endless 500 error body",
        {CHAT: lambda: endless(repeat(b"x" * PIECE), status=500)},
        "alltoken_chat",
        {"prompt": "fail forever"},
    ),
    Scenario(
        "chat: 16 MiB JSON answer (stream ignored) padded with {}",
        {CHAT: lambda: canned(largest_accepted_chat_json())},
        "alltoken_chat",
        {"prompt": "answer in JSON"},
    ),
    Scenario(
        "video: endless 200 JSON on /v1/videos/models",
        {"GET /v1/videos/models": endless_listing},
        "alltoken_video",
        {"prompt": "waves at dusk", "wait_seconds": 0},
    ),
    Scenario(
        "list_models: endless 200 JSON on /api-account/models",
        {"GET /api-account/models": endless_listing},
        "list_models",
        {"refresh": True},
    ),
    Scenario(
        "list_models: endless 200 JSON on all 4 listings",
        dict.fromkeys(LISTINGS, endless_listing),
        "list_models",
        {"refresh": True},
    ),
    Scenario(
        "list_models: largest accepted listing (16 MiB) on /api-account/models",
        {"GET /api-account/models": lambda: canned(largest_accepted_listing())},
        "list_models",
        {"refresh": True},
    ),
    Scenario(
        "list_models: largest accepted listing (16 MiB) on all 4 listings",
        dict.fromkeys(LISTINGS, lambda: canned(largest_accepted_listing())),
        "list_models",
        {"refresh": True},
    ),
    Scenario(
        "image poll (job_status wait): endless 200 JSON",
        {IMAGE_POLL: lambda: endless(repeat(block(b"{},")), head=b'{"status":"completed","data":[')},
        "job_status",
        {"wait_seconds": 60},
        image_job=True,
    ),
    Scenario(
        "image poll (job_status wait): 16 MiB task padded with {}",
        {IMAGE_POLL: lambda: canned(largest_image_task())},
        "job_status",
        {"wait_seconds": 60},
        image_job=True,
    ),
]


@dataclass
class MemoryRow:
    scenario: Scenario
    baseline_mb: float
    peak_mb: float
    """VmHWM after the call, or the sampled RSS that got the server killed."""
    killed: bool
    call: Call
    upstream_bytes: int
    alive: bool


async def measure_memory(scenario: Scenario, wait_seconds: float, kill_above_mb: float) -> MemoryRow:
    behaviours = {route: make() for route, make in scenario.routes.items()}

    def rule(method: str, path: str) -> Behaviour | None:
        request = f"{method} {path}"
        for route, behaviour in behaviours.items():
            if request == route or (route.endswith("*") and request.startswith(route[:-1])):
                return behaviour
        return None

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        async with (
            hostile_upstream(SimConfig(speed=0.01)) as (upstream, base_url),
            stdio_server_on(home, base_url, wait_seconds) as server,
        ):
            arguments = scenario.arguments
            if scenario.image_job:
                job = await server.tool(
                    "alltoken_image", {"prompt": "a fox", "quality": "low", "wait_seconds": 0}
                )
                arguments = {**arguments, "job_id": job["job_id"]}
            baseline = memory_mb(server.pid)["VmRSS"]
            watch = MemoryWatch(peak_rss_mb=baseline)
            upstream.rule = rule  # (before the job's first poll, due 0.5 s after its create was accepted)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: watch_memory(server.pid, watch, kill_above_mb=kill_above_mb))
                call = await timed_call(server, upstream, scenario.label, scenario.tool, arguments)
                tg.cancel_scope.cancel()
            upstream.rule = behaving
            alive = False
            peak = watch.peak_rss_mb
            if call.is_error is not None:
                peak = max(peak, memory_mb(server.pid)["VmHWM"])
                with anyio.move_on_after(10):
                    answer = await server.request("tools/call", {"name": "list_jobs", "arguments": {}})
                    alive = "content" in answer
            killed = watch.killed_at_mb is not None
            return MemoryRow(scenario, baseline, peak, killed, call, upstream.bytes_sent, alive)


def print_memory(row: MemoryRow, kill_above_mb: float) -> None:
    peak = f"> {kill_above_mb:.0f} MB (killed)" if row.killed else f"{row.peak_mb:.0f} MB"
    verdict = "FAIL" if row.killed or row.peak_mb > RSS_BOUND_MB else "ok"
    outcome = {None: "no answer", True: "isError", False: "ok"}[row.call.is_error]
    print(
        f"  {row.scenario.label:68} base {row.baseline_mb:4.0f} MB  peak {peak:>20} {verdict:4}  "
        f"{row.call.seconds:6.1f} s  sent {row.upstream_bytes / 1e6:8.1f} MB  "
        f"{'alive' if row.alive else 'DEAD '}  {outcome}: {clip(row.call.summary, 150)}",
        flush=True,
    )


async def bench_memory(wait_seconds: float, kill_above_mb: float, only: Callable[[str], bool]) -> None:
    print(
        f"1. peak RSS under hostile bodies (ALLTOKEN_MAX_WAIT_SECONDS={wait_seconds:g}; "
        f"bound {RSS_BOUND_MB:.0f} MB)",
        flush=True,
    )
    rows = []
    for scenario in SCENARIOS:
        if only(scenario.label):
            rows.append(await measure_memory(scenario, wait_seconds, kill_above_mb))
            print_memory(rows[-1], kill_above_mb)
    worst = max(rows, key=lambda row: row.peak_mb)
    print(f"  highest peak: {worst.peak_mb:.0f} MB ({worst.scenario.label})", flush=True)


# ------------------------------------------------------------------------------------ 2. storms


ONE_SSE_EVENT = sse({"content": "Hello"}) + b"data: [DONE]\n\n"
ONE_JSON_BODY = b'{"data": [{"id": "gpt-5.4-nano", "object": "model"}], "object": "list"}'


def _seconds(value: float) -> Callable[[], str]:
    return lambda: f"{value:g}"


def _date_in(seconds: float) -> Callable[[], str]:
    return lambda: formatdate(time.time() + seconds, usegmt=True)


def _trickle_for(path: str) -> Behaviour:
    if path.endswith("/chat/completions"):
        return trickle(ONE_SSE_EVENT, "text/event-stream")
    return trickle(ONE_JSON_BODY, "application/json")


def _headers_only_for(path: str) -> Behaviour:
    return headers_only("text/event-stream" if path.endswith("/chat/completions") else "application/json")


def _left_open_for(path: str) -> Behaviour:
    if path.endswith("/chat/completions"):
        return left_open(ONE_SSE_EVENT, "text/event-stream")
    return left_open(ONE_JSON_BODY, "application/json")


STORMS: dict[str, Callable[[str], Behaviour]] = {
    "429 Retry-After: 1": lambda path: rate_limited(_seconds(1)),
    "429 Retry-After: 4": lambda path: rate_limited(_seconds(4)),
    "429 Retry-After: 20": lambda path: rate_limited(_seconds(20)),
    "429 Retry-After: 120": lambda path: rate_limited(_seconds(120)),
    "429 Retry-After: <date in 3 s>": lambda path: rate_limited(_date_in(3)),
    "429 Retry-After: <date in 60 s>": lambda path: rate_limited(_date_in(60)),
    "429 without Retry-After": lambda path: rate_limited(None),
    "503 all_providers_failed": lambda path: UNAVAILABLE,
    "never answers": lambda path: silent,  # the connection is accepted, the request read
    "body at 1 byte/s": _trickle_for,
    "200 headers, then silence": _headers_only_for,
    "whole answer, body left open": _left_open_for,
}

FALLBACKS = ["gpt-5.4-nano", "claude-sonnet-4-6"]
IMAGE = {"prompt": "a fox in the snow"}
VIDEO = {"prompt": "waves at dusk"}
COLD_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("alltoken_chat", "alltoken_chat", {"prompt": "hi"}),
    ("alltoken_chat (2 fallbacks)", "alltoken_chat", {"prompt": "hi", "fallback_models": FALLBACKS}),
    ("list_models refresh", "list_models", {"refresh": True}),
    ("route_health", "route_health", {}),
    ("alltoken_image (model list)", "alltoken_image", IMAGE),
    ("alltoken_video (model list)", "alltoken_video", VIDEO),
]


def warm_calls(image_job: str, video_job: str, frame: Path) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("alltoken_image (create)", "alltoken_image", IMAGE),
        ("alltoken_video (create)", "alltoken_video", VIDEO),
        ("alltoken_video (upload)", "alltoken_video", {**VIDEO, "first_frame": str(frame)}),
        ("list_models (cached)", "list_models", {}),
        ("list_models refresh (cached)", "list_models", {"refresh": True}),
        ("job_status image wait", "job_status", {"job_id": image_job, "wait_seconds": 60}),
        ("job_status video wait", "job_status", {"job_id": video_job, "wait_seconds": 60}),
        ("job_cancel video", "job_cancel", {"job_id": video_job}),
        ("job_cancel image", "job_cancel", {"job_id": image_job}),
        ("list_jobs", "list_jobs", {}),
    ]


async def run_storm(label: str, answer_for: Callable[[str], Behaviour], budget_s: float) -> list[Call]:
    def hostile(method: str, path: str) -> Behaviour | None:
        return answer_for(path)

    calls: list[Call] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        # speed 1: renders take 15 s (images) to minutes (videos), so the jobs stay active throughout.
        async with (
            hostile_upstream(SimConfig(speed=1.0)) as (upstream, base_url),
            stdio_server_on(home, base_url, budget_s) as server,
        ):
            upstream.rule = hostile
            for name, tool, arguments in COLD_CALLS:
                calls.append(await timed_call(server, upstream, name, tool, arguments))
            upstream.rule = behaving
            await server.tool("list_models", {"refresh": True})  # now the catalog is cached
            image = await server.tool("alltoken_image", {**IMAGE, "quality": "low", "wait_seconds": 0})
            video = await server.tool("alltoken_video", {**VIDEO, "wait_seconds": 0})
            upstream.rule = hostile
            frame = home / "first.png"
            frame.write_bytes(sim_media.png("first frame", 64, 36))
            for name, tool, arguments in warm_calls(image["job_id"], video["job_id"], frame):
                calls.append(await timed_call(server, upstream, name, tool, arguments))
    return calls


async def bench_storms(budget_s: float, only: Callable[[str], bool]) -> None:
    bound = budget_s + GRACE_SECONDS + SLACK_SECONDS
    print(
        f"2. tool calls under hostile upstreams (ALLTOKEN_MAX_WAIT_SECONDS={budget_s:g}; bound {bound:g} s "
        f"= budget + {GRACE_SECONDS:g} s grace + {SLACK_SECONDS:g} s slack)",
        flush=True,
    )
    results: dict[str, list[Call]] = {}
    for label, answer_for in STORMS.items():
        if not only(label):
            continue
        print(f"  {label}", flush=True)
        results[label] = await run_storm(label, answer_for, budget_s)
        for call in results[label]:
            outcome = {None: "GONE", True: "err", False: "ok"}[call.is_error]
            over = "  OVER" if call.seconds > bound else ""
            print(
                f"    {call.label:28} {call.seconds:6.2f} s {outcome:4} {call.hostile_answers:3} req  "
                f"{clip(call.first_line, 120)}{over}",
                flush=True,
            )
    print("  duration in s per tool (rows) and upstream behaviour (columns); E = isError, ! = over the bound")
    labels = [call.label for call in next(iter(results.values()))]
    print("    " + " " * 28 + "".join(f"{i + 1:>9}" for i in range(len(results))))
    for row, name in enumerate(labels):
        cells = ""
        for calls in results.values():
            call = calls[row]
            mark = ("E" if call.is_error else " ") + ("!" if call.seconds > bound else " ")
            cells += f"{call.seconds:7.2f}{mark}"
        print(f"    {name:28}{cells}")
    for number, label in enumerate(results, start=1):
        print(f"    {number}: {label}")
    every = [(label, call) for label, calls in results.items() for call in calls]
    label, longest = max(every, key=lambda pair: pair[1].seconds)
    over = [f"{c.label} under {lbl} ({c.seconds:.2f} s)" for lbl, c in every if c.seconds > bound]
    print(
        f"  longest call: {longest.seconds:.2f} s ({longest.label}, {label}); bound {bound:g} s: "
        + ("PASS" if not over else "FAIL: " + "; ".join(over)),
        flush=True,
    )


def picked(option: str) -> Callable[[str], bool]:
    """`--scenarios` / `--storms`: comma-separated substrings of the labels to run (empty: all)."""
    wanted = [part for part in option.split(",") if part]
    return lambda label: not wanted or any(part in label for part in wanted)


async def run(args: argparse.Namespace) -> None:
    parts = set(args.only.split(","))
    if "memory" in parts:
        await bench_memory(args.memory_budget, args.kill_above_mb, picked(args.scenarios))
    if "storms" in parts:
        await bench_storms(args.budget, picked(args.storms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="memory,storms", help="comma-separated parts to run")
    parser.add_argument("--budget", type=float, default=5.0, help="ALLTOKEN_MAX_WAIT_SECONDS for storms")
    parser.add_argument(
        "--memory-budget", type=float, default=60.0, help="ALLTOKEN_MAX_WAIT_SECONDS for the memory part"
    )
    parser.add_argument(
        "--kill-above-mb", type=float, default=1024.0, help="kill a server whose RSS passes this"
    )
    parser.add_argument("--scenarios", default="", help="memory scenarios whose label contains one of these")
    parser.add_argument("--storms", default="", help="storms whose label contains one of these")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
