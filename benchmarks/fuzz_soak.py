"""Fuzz soak: many more fuzzed tool calls than CI runs, with the outcome table issue 8 asks for.

Run: .venv/bin/python benchmarks/fuzz_soak.py [--calls 10000] [--stdio 1000] [--seed 0]

The same generator and judgement as tests/test_fuzz.py (tests/fuzzkit.py): the REGRESSIONS first, then
argument dicts drawn by hypothesis from each tool's input schema plus hostile variations, sent to the
real server in memory (`Client(build_server(settings))`) in front of a fast simulator; then a sample is
replayed over raw stdio to the installed `alltoken-mcp`. Each call ends as one of: success, specific
error (one line, not a traceback, pydantic dump or bare "Error executing tool"), non-specific reply,
crash (protocol error or exception), hang (no answer within 30 s). Stdout pollution is counted twice:
bytes written to this process's fd 1 while the in-memory server ran, and stdout lines of the stdio
server that are not JSON-RPC. Exit status 1 if anything but successes and specific errors was seen.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from hypothesis import example, given, seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fuzzkit

from tests.fuzzkit import (
    OUTCOMES,
    REGRESSIONS,
    FuzzTarget,
    Outcome,
    Tally,
    calls,
    fuzz_settings,
    fuzz_target,
    judge_answer,
    stdio_answers,
    stdio_safe,
    tool_call_requests,
)

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")


@contextmanager
def stdout_captured() -> Iterator[Path]:
    """Point fd 1 at a file for the duration (whatever the server writes there is pollution)."""
    with tempfile.NamedTemporaryFile(prefix="fuzz-stdout-", delete=False) as sink:
        path = Path(sink.name)
    sys.stdout.flush()
    saved = os.dup(1)
    target = os.open(path, os.O_WRONLY)
    os.dup2(target, 1)
    try:
        yield path
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)


def in_memory(home: Path, count: int, stdio: int, seed_value: int) -> tuple[Tally, float, list[Any], Any]:
    tally = Tally()
    stdio_cases: list[tuple[str, dict[str, Any]]] = []
    slowest = [0.0, ""]
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(fuzz_target(home)) as target,
    ):

        @seed(seed_value)
        @fuzz_settings(count, derandomize=False)
        @given(calls(target.tools, target.hints))
        def one_call(call: tuple[str, dict[str, Any]]) -> None:
            name, args = call
            started = time.monotonic()
            tally.add(name, args, portal.call(target.call, name, args))
            elapsed = time.monotonic() - started
            if elapsed > slowest[0]:
                slowest[:] = [elapsed, name]
            # Every k-th stdio-safe case is kept for the stdio replay, concrete ids included.
            if len(stdio_cases) < stdio and stdio_safe(args) and tally.calls % max(1, count // stdio) == 0:
                stdio_cases.append((name, target.concrete(args)))

        for regression in REGRESSIONS:
            one_call = example(regression)(one_call)
        started = time.monotonic()
        one_call()
        elapsed = time.monotonic() - started
        alive = portal.call(target.alive)
        replay = portal.call(_replay, target, stdio_cases) if stdio_cases else None
    if not alive:
        tally.add("(after the run)", {}, Outcome("crash", "the server stopped answering"))
    return tally, elapsed, [slowest, stdio_cases], replay


async def _replay(target: FuzzTarget, cases: list[tuple[str, dict[str, Any]]]) -> Any:
    with anyio.fail_after(600):
        return await stdio_answers(
            [ENTRY_POINT], {**os.environ, **target.env}, tool_call_requests(target, cases)
        )


def table(title: str, tally: Tally, pollution: int, seconds: float | None) -> str:
    header = ["tool", "calls", *OUTCOMES]
    rows = [
        [name, str(sum(c.values())), *(str(c[k]) for k in OUTCOMES)]
        for name, c in sorted(tally.by_tool.items())
    ]
    rows.append(["TOTAL", str(tally.calls), *(str(tally.counts[k]) for k in OUTCOMES)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"## {title}", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"stdout pollution: {pollution}")
    if seconds is not None:
        lines.append(f"wall time: {seconds:.1f} s ({tally.calls / seconds:.0f} calls/s)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="in-memory fuzzed calls (default 10000)")
    parser.add_argument("--stdio", type=int, default=1000, help="of which replayed over stdio (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home, stdout_captured() as captured:
        tally, seconds, (slowest, cases), replay = in_memory(Path(home), args.calls, args.stdio, args.seed)
    polluted = captured.read_bytes()
    captured.unlink()

    print(table(f"in memory, seed {args.seed}", tally, len(polluted), seconds))
    print(f"slowest call: {slowest[1]} {slowest[0]:.2f} s")
    stdio_tally = Tally()
    if replay is not None:
        for number, (name, call_args) in enumerate(cases, start=1):
            stdio_tally.add(name, call_args, judge_answer(replay.answers.get(number)))
        print()
        print(table("stdio replay of a sample", stdio_tally, len(replay.pollution), None))
        print(f"stdio server exit status: {replay.exit_code}")
    failures = tally.failures + stdio_tally.failures
    for failure in failures:
        print(f"FAIL {failure[:600]}")
    bad = failures or polluted or (replay is not None and (replay.pollution or replay.exit_code != 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
