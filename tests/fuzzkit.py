"""Property-based fuzzing of the MCP tools' arguments, shared by tests/test_fuzz.py (a few thousand calls)
and benchmarks/fuzz_soak.py (as many as asked).

`calls(tools)` is a hypothesis strategy of `(tool name, arguments)` built from each tool's published
input schema: values that fit the schema (with realistic hints for the arguments whose meaning the schema
cannot express: model ids, sizes, job ids, frame paths) mixed with hostile ones — wrong types, strings
one past the limit or huge, lone surrogates, NUL and control characters, deep nesting, NaN and
infinities, negative and enormous numbers, empty lists, unknown keys, missing required keys, path
traversal for file arguments and internal-host URLs for frame arguments.

`FuzzTarget` is the real server (in memory, `Client(build_server(settings))`) in front of a fast simulator,
with a few hostile files in its input directory, and `judge` sorts each reply into the outcomes the issue
counts: success, specific error, non-specific reply, crash, hang.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types as t
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError

from alltoken_mcp.server import build_server
from alltoken_mcp.settings import load_settings
from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator
from tests.serverkit import text_of

CALL_TIMEOUT_S = 30.0
"""No call may take longer, whatever its arguments (the server's own wait cap is far below it)."""

KNOWN_JOB = "<a job id this server created>"
KNOWN_CONVERSATION = "<a conversation id this server created>"
"""Stand-ins drawn by the strategies and replaced at call time, so status/cancel/continue calls reach
real records and not only the unknown-id paths."""

Kind = Literal["success", "specific_error", "non_specific", "crash", "hang"]
OUTCOMES: tuple[Kind, ...] = ("success", "specific_error", "non_specific", "crash", "hang")

# What a specific error is not: a traceback, pydantic's multi-line dump, the SDK's bare wrapper.
_GENERIC = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r"validation errors? for "),
    re.compile(r"errors\.pydantic\.dev"),
    re.compile(r"^Error executing tool [\w.-]+:?\s*$"),
    re.compile(r"^\s*$"),
)
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    detail: str = ""

    @property
    def acceptable(self) -> bool:
        return self.kind in ("success", "specific_error")


def judge(result: t.CallToolResult) -> Outcome:
    text = text_of(result)
    if not result.is_error:
        if result.structured_content is None:
            return Outcome("non_specific", f"success without structuredContent: {text[:200]!r}")
        return Outcome("success")
    if "\n" in text or len(text) > MAX_ERROR_CHARS:
        return Outcome("non_specific", f"error text is not one short line: {text[:300]!r}")
    for pattern in _GENERIC:
        if pattern.search(text):
            return Outcome("non_specific", f"generic error text: {text[:300]!r}")
    return Outcome("specific_error", text)


def fuzz_settings(examples: int, *, derandomize: bool = True) -> settings:
    """Hypothesis settings for a fuzz run: no example database (CI sees the same cases every run when
    derandomized), no deadline, no health checks (the server is slow next to a pure function), and no
    shrinking: a failing call is reported as drawn, and replaying shrunk calls against a server whose
    state has moved on would not reproduce it anyway."""
    return settings(
        max_examples=examples,
        derandomize=derandomize,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


# ------------------------------------------------------------------------------------------ values

SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00\ud800", "x" * 10 + "\udc80"])
CONTROL = st.sampled_from(["\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\u202eevil", "\r\n\t", "\ufeff"])
TRAVERSAL = st.sampled_from(
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "~/.ssh/id_rsa",
        "file:///etc/passwd",
        "file://otherhost/etc/passwd",
        "..\\..\\windows\\win.ini",
        "C:\\Windows\\win.ini",
        "/dev/zero",
        "/dev/stdin",
        "/",
        ".",
        "%2e%2e/%2e%2e/etc/passwd",
        "good.png/../../../etc/passwd",
        "line one\nline two.png",
        "x" * 4096,
        "/" + "deep/" * 800 + "a.png",
    ]
)
INTERNAL_URLS = st.sampled_from(
    [
        "http://127.0.0.1:9/a.png",
        "http://localhost/a.png",
        "https://127.0.0.1/a.png",
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/iam",
        "https://[::1]/a.png",
        "https://10.0.0.1/a.png",
        "https://0.0.0.0/a.png",
        "gopher://127.0.0.1:25/x",
        "ftp://127.0.0.1/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://user:pass@example.com/a.png",
        "https://example.com/a.png",
        "https:///nohost.png",
        "https://" + "a" * 300 + ".com/a.png",
    ]
)


def _nested(depth: int, leaf: Any = 0) -> Any:
    value: Any = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# The SDK client refuses to serialize nesting past ~255 levels, so deeper values cannot reach an in-memory
# server at all; over stdio past ~200 is issue 8 item 14.
DEEP = st.sampled_from([_nested(50), _nested(199), _nested(240)])
NUMBERS = st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), -0.0, -1, -1.5, -(2**63) - 1, 2**63, 2**64, 10**30, 1e308]
)
HUGE = st.sampled_from(["A" * 100_000, "é" * 300_000, "🙂" * 50_000])


def hostile() -> st.SearchStrategy[Any]:
    """A value of any type that a well-behaved caller would not send."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        NUMBERS,
        st.text(max_size=20),
        SURROGATES,
        CONTROL,
        HUGE,
        st.just(""),
        st.just([]),
        st.just({}),
        DEEP,
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    )


@dataclass(frozen=True)
class Hints:
    """Realistic values for arguments whose meaning the schema does not carry."""

    model_ids: Sequence[str]
    frame_files: Sequence[str]

    def for_argument(self, name: str) -> st.SearchStrategy[Any] | None:
        frames = st.one_of(st.sampled_from(list(self.frame_files)), TRAVERSAL, INTERNAL_URLS)
        options: dict[str, st.SearchStrategy[Any]] = {
            "model": st.sampled_from([*self.model_ids, "no-such-model", "gpt-image", "DEEPSEEK-V4-PRO"]),
            "fallback_models": st.lists(st.sampled_from(list(self.model_ids)), max_size=3),
            "size": st.sampled_from(["auto", "1024x1024", "1536x1024", "17x17", "0x0", "4000x4000", "axb"]),
            "ratio": st.sampled_from(["16:9", "9:16", "1:1", "adaptive", "7:3", "0:0"]),
            "resolution": st.sampled_from(["480p", "720p", "1080p", "4k"]),
            "duration": st.sampled_from([-1, 0, 4, 5, 10, 12, 15, 99]),
            "job_id": st.sampled_from(
                [KNOWN_JOB, KNOWN_JOB, KNOWN_JOB, "job_0000000000000000", "job_", "../job"]
            ),
            "conversation_id": st.sampled_from([KNOWN_CONVERSATION, "conv_0000000000000000", "conv_../x"]),
            "first_frame": frames,
            "last_frame": frames,
            "wait_seconds": st.sampled_from([0, 0, 0.1, 1]),
            "prompt": st.text(min_size=1, max_size=40),
            "json_schema": st.sampled_from(
                [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"name": "x", "schema": {"type": "object"}, "strict": True},
                    {"type": "array"},
                    {},
                ]
            ),
        }
        return options.get(name)


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(defs[ref.removeprefix("#/$defs/")], defs)
    return schema


def from_schema(
    schema: Mapping[str, Any], defs: Mapping[str, Any], *, edges: bool = True
) -> st.SearchStrategy[Any]:
    """Values that fit `schema` (lists and strings kept short); with `edges`, also the values at and just
    past its limits."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return st.one_of([from_schema(branch, defs, edges=edges) for branch in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        inside = st.integers(min_value=low, max_value=high)
        limits = [v + d for v in (low, high) if v is not None for d in (0, -1 if v == low else 1)]
        return st.one_of(inside, st.sampled_from(limits)) if edges and limits else inside
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        limits = [v + d for v in (low, high) if v is not None for d in (0, -1e-9 if v == low else 1e-9)]
        inside = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
        return st.one_of(inside, st.sampled_from(limits)) if edges and limits else inside
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        inside = st.text(min_size=low, max_size=min(high or 40, 40))
        limits = ["x" * high, "x" * (high + 1)] if high is not None else []
        if low:
            limits.append("")
        return st.one_of(inside, st.sampled_from(limits)) if edges and limits else inside
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, edges=edges)
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        inside = st.lists(items, min_size=low, max_size=min(high or 3, 3))
        if high is None or not edges:
            return inside
        # One past the limit, with the smallest valid-looking items (a 500-item list of 1 MB strings is
        # a memory test for the fuzzer, not for the server).
        return st.one_of(inside, st.just([_smallest(schema.get("items", {}), defs)] * (high + 1)))
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            return st.dictionaries(
                st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8))
            )
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs, edges=edges) for k, v in properties.items() if k in required},
            optional={
                k: from_schema(v, defs, edges=edges) for k, v in properties.items() if k not in required
            },
        )
    return hostile()


def _smallest(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    schema = _resolve(schema, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "object":
        return {k: _smallest(v, defs) for k, v in schema.get("properties", {}).items()}
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": True}.get(schema.get("type", ""))


def arguments(tool: t.Tool, hints: Hints) -> st.SearchStrategy[dict[str, Any]]:
    """Argument dicts for `tool`. A third are plausible (each argument from its schema or a hint), so the
    paths past validation are reached too; the rest mix in hostile values and the schema's edges, and
    sometimes drop a required argument or add unknown keys. Optional arguments are often left out."""
    schema = tool.input_schema
    defs = schema.get("$defs", {})
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))

    def argument(name: str, spec: Mapping[str, Any], *, hostile_too: bool) -> st.SearchStrategy[Any]:
        hint = hints.for_argument(name)
        choices = [from_schema(spec, defs, edges=hostile_too)] + ([hint, hint] if hint is not None else [])
        return st.one_of(*choices, hostile()) if hostile_too else st.one_of(*choices)

    def fields(*, hostile_too: bool) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {k: argument(k, v, hostile_too=hostile_too) for k, v in properties.items() if k in required},
            optional={
                k: argument(k, v, hostile_too=hostile_too) for k, v in properties.items() if k not in required
            },
        )

    unknown = st.dictionaries(
        st.one_of(st.text(max_size=12), SURROGATES, st.sampled_from(["__proto__", "", "$ref", "prompt "])),
        hostile(),
        max_size=2,
    )

    def vary(args: dict[str, Any], extra: dict[str, Any], drop: bool) -> dict[str, Any]:
        varied = {**extra, **args}
        if drop and required:
            varied.pop(sorted(required)[0], None)
        return varied

    rarely = st.sampled_from([False] * 9 + [True])  # hypothesis favours the first element
    hostile_args = st.builds(
        vary, fields(hostile_too=True), st.one_of(st.just({}), st.just({}), unknown), rarely
    )
    return st.one_of(fields(hostile_too=False), hostile_args, hostile_args)


def calls(tools: Sequence[t.Tool], hints: Hints) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.one_of([st.tuples(st.just(tool.name), arguments(tool, hints)) for tool in tools])


REGRESSIONS: list[tuple[str, dict[str, Any]]] = [
    # Found by benchmarks/fuzz_soak.py: a frame path was echoed raw (a newline broke the line, 4 kB).
    ("alltoken_video", {"prompt": "p", "first_frame": "line one\nline two.png"}),
    ("alltoken_video", {"prompt": "p", "first_frame": "x" * 4096}),
    (
        "alltoken_video",
        {"prompt": "p", "first_frame": "good.png", "last_frame": "/" + "deep/" * 800 + "a.png"},
    ),
    # pydantic reports NaN against a bound ("less than or equal to 2") and dumps everything in lines.
    ("job_status", {"job_id": KNOWN_JOB, "wait_seconds": float("nan")}),
    ("alltoken_chat", {"prompt": 5, "temperature": float("inf"), "messages": [{"role": "tool"}]}),
    ("list_jobs", {"limit": "\ud800"}),
    # Issue 9: unknown arguments were dropped and the call paid at the defaults.
    ("alltoken_video", {"prompt": "p", "length": 12, "aspect_ratio": "9:16"}),
    ("alltoken_chat", {"prompt": "p", "model_id": "gpt-5.4", "\n": 1, "x" * 500: 2}),
]
"""Calls every fuzz run makes first (hypothesis explicit examples): past failures stay covered."""


def stdio_safe(args: Any, depth: int = 0) -> bool:
    """False for arguments the SDK's stdio transport drops without an answer (lone surrogates, nesting
    past ~200 levels: issue 8 item 14, handled elsewhere), so a raw stdio replay does not wait forever."""
    if depth > 150:
        return False
    if isinstance(args, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in args)
    if isinstance(args, dict):
        return all(stdio_safe(k, depth + 1) and stdio_safe(v, depth + 1) for k, v in args.items())
    if isinstance(args, list):
        return all(stdio_safe(v, depth + 1) for v in args)
    return True


# ------------------------------------------------------------------------------------------ target


@dataclass
class Tally:
    """Outcome counts per kind (and per tool), with the first few unacceptable calls kept for the report."""

    counts: Counter[Kind] = field(default_factory=Counter)
    by_tool: dict[str, Counter[Kind]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, args: Mapping[str, Any], outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        self.by_tool.setdefault(name, Counter())[outcome.kind] += 1
        if not outcome.acceptable and len(self.failures) < 20:
            self.failures.append(f"{name}({_short(args)}) → {outcome.kind}: {outcome.detail}")

    @property
    def calls(self) -> int:
        return sum(self.counts.values())


def _short(value: Any) -> str:
    text = repr(value)
    return (
        text
        if len(text) <= 300
        else f"{text[:300]}… ({len(text)} chars, crc {zlib.crc32(text.encode('utf-8', 'replace')):x})"
    )


PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def hostile_inputs(directory: Path) -> list[str]:
    """Files a frame argument may name: a real PNG, a text file posing as one, an over-size sparse file,
    a FIFO (a reader that opens it blocks), a symlink out of the directory, a directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "good.png").write_bytes(PNG_1X1)
    (directory / "fake.png").write_text("not an image")
    with open(directory / "huge.png", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    if not (directory / "pipe.png").exists():
        os.mkfifo(directory / "pipe.png")
    if not (directory / "escape.png").is_symlink():
        (directory / "escape.png").symlink_to("/etc/passwd")
    (directory / "folder.png").mkdir(exist_ok=True)
    names = ["good.png", "fake.png", "huge.png", "pipe.png", "escape.png", "folder.png", "missing.png"]
    return [*names, *(str(directory / n) for n in names)]


@dataclass
class FuzzTarget:
    client: Client
    tools: list[t.Tool]
    hints: Hints
    env: dict[str, str]
    """The server's environment, for starting another server process on the same simulator and state."""
    job_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)

    def concrete(self, args: dict[str, Any]) -> dict[str, Any]:
        """`args` with the KNOWN_* stand-ins replaced by the latest real id (or an unknown one)."""
        known = {
            KNOWN_JOB: (self.job_ids, "job_ffffffffffffffff"),
            KNOWN_CONVERSATION: (self.conversation_ids, "conv_ffffffffffffffff"),
        }
        out: dict[str, Any] = {}
        for key, value in args.items():
            if isinstance(value, str) and value in known:
                ids, unknown = known[value]
                value = ids[-1] if ids else unknown
            out[key] = value
        return out

    async def call(self, name: str, args: dict[str, Any]) -> Outcome:
        try:
            with anyio.fail_after(CALL_TIMEOUT_S):
                result = await self.client.call_tool(name, self.concrete(args))
        except TimeoutError:
            return Outcome("hang", f"no answer within {CALL_TIMEOUT_S:g} s")
        except MCPError as exc:
            return Outcome("crash", f"protocol error {exc.error.code}: {exc.error.message[:200]}")
        except Exception as exc:  # the fuzzer reports every way a call can fail
            return Outcome("crash", f"{type(exc).__name__}: {str(exc)[:200]}")
        outcome = judge(result)
        structured = result.structured_content or {}
        if outcome.kind == "success" and isinstance(structured.get("job_id"), str):
            self.job_ids.append(structured["job_id"])
        if outcome.kind == "success" and isinstance(structured.get("conversation_id"), str):
            self.conversation_ids.append(structured["conversation_id"])
        return outcome

    async def alive(self) -> bool:
        result = await self.client.call_tool("list_jobs", {"limit": 1})
        return not result.is_error


async def _model_ids(client: Client) -> list[str]:
    result = await client.call_tool("list_models", {"limit": 500})
    return [m["id"] for m in (result.structured_content or {}).get("models", [])]


@asynccontextmanager
async def fuzz_target(
    home: Path, *, speed: float = 0.001, max_wait: float = 0.1
) -> AsyncIterator[FuzzTarget]:
    """The real server in memory, on a simulator `speed` times real time. `max_wait` is the server's
    ALLTOKEN_MAX_WAIT_SECONDS: short, so media calls that wait return their job still running and a few
    thousand calls fit in CI time (the first poll of a new job is half a second away)."""
    inputs = home / "inputs"
    frames = hostile_inputs(inputs)
    async with serve_simulator(SimConfig(speed=speed)) as sim:
        env = {
            "ALLTOKEN_BASE_URL": sim.base_url,
            "ALLTOKEN_API_KEY": SIM_API_KEY,
            "ALLTOKEN_MCP_HOME": str(home),
            "ALLTOKEN_INPUT_DIRS": str(inputs),
            "ALLTOKEN_MAX_WAIT_SECONDS": str(max_wait),
        }
        async with Client(build_server(load_settings(env))) as client:
            tools = list((await client.list_tools()).tools)
            yield FuzzTarget(client, tools, Hints(await _model_ids(client), frames), env)


# ------------------------------------------------------------------------------------------ stdio


def tool_call_requests(
    target: FuzzTarget, cases: Sequence[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """`initialize`, `initialized`, then one `tools/call` per case with id 1, 2, …"""
    requests: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    requests += [
        {
            "jsonrpc": "2.0",
            "id": number,
            "method": "tools/call",
            "params": {"name": name, "arguments": target.concrete(args)},
        }
        for number, (name, args) in enumerate(cases, start=1)
    ]
    return requests


@dataclass
class StdioRun:
    lines: list[bytes]
    """Every line the server wrote to stdout."""
    answers: dict[Any, dict[str, Any]]
    exit_code: int

    @property
    def pollution(self) -> list[bytes]:
        """Lines on stdout that are not JSON-RPC messages."""
        return [line for line in self.lines if not _is_json_rpc(line)]


def _is_json_rpc(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("jsonrpc") == "2.0"


async def stdio_answers(
    command: Sequence[str], env: Mapping[str, str], requests: list[dict[str, Any]]
) -> StdioRun:
    """Send every request at once to a fresh server process and collect stdout until each request is
    answered (stdin stays open until then: EOF drops calls still in flight), then close stdin."""
    wanted = {r["id"] for r in requests if "id" in r}
    lines: list[bytes] = []
    answers: dict[Any, dict[str, Any]] = {}
    async with await anyio.open_process(list(command), env=dict(env)) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.append(line)
                if _is_json_rpc(line):
                    message = json.loads(line)
                    if "id" in message and ("result" in message or "error" in message):
                        answers[message["id"]] = message
            if wanted <= set(answers):
                break
        await process.stdin.aclose()
        rest = b"".join([chunk async for chunk in process.stdout])
        exit_code = await process.wait()
    lines += [line for line in (buffer + rest).split(b"\n") if line]
    return StdioRun(lines, answers, exit_code)


def judge_answer(answer: dict[str, Any] | None) -> Outcome:
    if answer is None:
        return Outcome("hang", "no answer on stdout")
    if "result" not in answer:
        return Outcome("crash", f"protocol error {answer.get('error')}")
    return judge(t.CallToolResult.model_validate(answer["result"]))
