"""Property-based fuzzing of every tool's arguments through the real server (issue 8, "Tests and figures").

Hypothesis draws argument dicts from each tool's published input schema plus hostile variations
(tests/fuzzkit.py) and every call must end — within its time limit — in a success or an isError result
whose text is one specific line: never a traceback, pydantic's multi-line dump or the SDK's bare "Error
executing tool NAME". Nothing may reach stdout. The in-memory run covers a few thousand calls; a sample
is replayed over raw stdio against the installed entry point, where stdout is the protocol itself.
Runs are derandomized (no example database), so CI sees the same cases every time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import example, given

from tests.fuzzkit import (
    REGRESSIONS,
    FuzzTarget,
    Tally,
    calls,
    fuzz_settings,
    fuzz_target,
    judge_answer,
    stdio_answers,
    stdio_safe,
    tool_call_requests,
)
from tests.rawstdio import ENTRY_POINT

IN_MEMORY_CALLS = 2000
STDIO_CALLS = 300


def test_every_tool_answers_any_arguments_with_a_result_or_one_specific_error_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(fuzz_target(tmp_path)) as target,
    ):

        @fuzz_settings(IN_MEMORY_CALLS)
        @given(calls(target.tools, target.hints))
        def one_call(call: tuple[str, dict[str, Any]]) -> None:
            name, args = call
            tally.add(name, args, portal.call(target.call, name, args))

        for regression in REGRESSIONS:
            one_call = example(regression)(one_call)
        one_call()
        assert portal.call(target.alive), "the server stopped answering"

    assert tally.calls == IN_MEMORY_CALLS + len(REGRESSIONS)
    assert tally.failures == [], "\n".join(tally.failures)
    # Every tool was reached, and the generating tools past validation too: not all rejections.
    assert {tool.name for tool in target.tools} == set(tally.by_tool)
    assert tally.counts["success"] >= IN_MEMORY_CALLS // 10, tally.by_tool
    for name in ("alltoken_chat", "alltoken_image", "alltoken_video", "list_models", "route_health"):
        assert tally.by_tool[name]["success"] > 0, tally.by_tool
    assert capfd.readouterr().out == ""


def _draw_stdio_cases(target: FuzzTarget, count: int) -> list[tuple[str, dict[str, Any]]]:
    drawn: list[tuple[str, dict[str, Any]]] = []

    @fuzz_settings(count * 2)
    @given(calls(target.tools, target.hints))
    def draw(call: tuple[str, dict[str, Any]]) -> None:
        # Lone surrogates and nesting past ~200 levels are dropped unanswered by the SDK's stdio
        # transport (issue 8 item 14, owned elsewhere); everything else must be answered.
        if len(drawn) < count and stdio_safe(call[1]):
            drawn.append(call)

    draw()
    return drawn


async def test_a_sample_of_fuzzed_calls_over_stdio_is_answered_and_stdout_carries_only_json_rpc(
    tmp_path: Path,
) -> None:
    async with fuzz_target(tmp_path) as target:
        # Real records for the drawn job and conversation ids to point at (the stdio server shares
        # the in-memory one's state directory and simulator).
        await target.call("alltoken_image", {"prompt": "a lighthouse", "wait_seconds": 0})
        await target.call("alltoken_chat", {"prompt": "hello"})
        cases = await anyio.to_thread.run_sync(_draw_stdio_cases, target, STDIO_CALLS)
        with anyio.fail_after(120):
            run = await stdio_answers(
                [ENTRY_POINT], {**os.environ, **target.env}, tool_call_requests(target, cases)
            )

    assert len(cases) == STDIO_CALLS
    assert run.pollution == []
    assert run.exit_code == 0
    tally = Tally()
    for number, (name, args) in enumerate(cases, start=1):
        tally.add(name, args, judge_answer(run.answers.get(number)))
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.counts["success"] > 0
