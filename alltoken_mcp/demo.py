"""`alltoken-mcp demo`: the whole product in under 30 seconds, with no key and no credits.

It starts the bundled AllToken simulator in this process, spawns the real server as a stdio subprocess
(exactly what a host does), drives it with the MCP client and prints a transcript of each call: a chat
turn, the video catalog, route health, an image saved to disk, a video started, followed with progress
and collected, a second video cancelled, and the job list. Every step is checked; the exit status is 0
only if all of them worked. The server's stdout is the protocol pipe and its stderr goes to a temporary
log (shown only when something fails), so neither can leak into the transcript.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import anyio
import mcp_types as t
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

import alltoken_mcp
from alltoken_mcp.doctor import check_marks, safe_printer
from alltoken_mcp.formats import byte_size

DEMO_SPEED = 0.03
"""Simulated render times × 0.03: a 2-minute video takes a few seconds."""
DEMO_QUEUE_FRACTION = 0.5
"""AllToken cancels only queued videos; a longer queue phase gives the cancel step room at demo speed."""
DEMO_TIME_LIMIT_SECONDS = 60.0
DEFAULT_OUTPUT_DIR = "alltoken-demo-output"


class StepFailed(Exception):
    """A demo step did not produce what it should have; the message says what happened."""


def _structured(result: t.CallToolResult, tool: str) -> dict[str, Any]:
    if result.is_error:
        text = " ".join(c.text for c in result.content if isinstance(c, t.TextContent))
        raise StepFailed(f"{tool} returned an error: {text}")
    structured: dict[str, Any] | None = result.structured_content
    if structured is None:
        raise StepFailed(f"{tool} returned no structured result")
    return structured


def _file_lines(job: dict[str, Any]) -> list[str]:
    return [f"saved {f['path']} ({byte_size(f['bytes'])}, {f['mime_type']})" for f in job.get("files", [])]


def _expect_status(job: dict[str, Any], wanted: str) -> None:
    if job["status"] != wanted:
        error = job.get("error") or {}
        detail = f": {error.get('code')}: {error.get('message')}" if error else ""
        note = f" ({job['note']})" if job.get("note") else ""
        raise StepFailed(f"job {job['job_id']} is {job['status']}, expected {wanted}{detail}{note}")


@dataclass
class Transcript:
    """Numbered steps, ✓/✗ results and indented detail lines on one output stream."""

    write: Callable[[str], None]
    good: str
    bad: str
    total: int
    number: int = 0
    failures: list[str] = field(default_factory=list)

    def detail(self, text: str) -> None:
        self.write(f"      {text}")

    async def step(self, call: str, body: Callable[[], Awaitable[str]]) -> bool:
        self.number += 1
        self.write(f"\n[{self.number}/{self.total}] {call}")
        try:
            summary = await body()
        # The demo's top level: any failure of one step is reported and the demo goes on.
        except Exception as exc:
            self.write(
                f"  {self.bad} {type(exc).__name__ if not isinstance(exc, StepFailed) else 'failed'}: {exc}"
            )
            self.failures.append(call)
            return False
        self.write(f"  {self.good} {summary}")
        return True

    def skip(self, call: str, reason: str) -> None:
        self.number += 1
        self.write(f"\n[{self.number}/{self.total}] {call}\n  {self.bad} skipped: {reason}")
        self.failures.append(call)


@asynccontextmanager
async def _server(env: dict[str, str], errlog: IO[str]) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "alltoken_mcp"], env=env)
    async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
        yield client


def _server_env(base_url: str, api_key: str, home: Path, output_dir: Path) -> dict[str, str]:
    # Run this very copy of the package in the subprocess, installed or not.
    package_root = str(Path(alltoken_mcp.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {
        "ALLTOKEN_BASE_URL": base_url,
        "ALLTOKEN_API_KEY": api_key,
        "ALLTOKEN_MCP_HOME": str(home),
        "ALLTOKEN_OUTPUT_DIR": str(output_dir),
        "PYTHONPATH": python_path,
    }


async def _run_steps(client: Client, show: Transcript) -> None:
    async def chat() -> str:
        out = _structured(
            await client.call_tool("alltoken_chat", {"prompt": "Say hello to the demo audience"}),
            "alltoken_chat",
        )
        cost = f", cost ${out['cost_usd']}" if out.get("cost_usd") is not None else ""
        tokens = (out.get("usage") or {}).get("total_tokens")
        show.detail(f"conversation_id {out['conversation_id']} (pass it back to continue the thread)")
        return f"{out['model']} answered {out['text']!r} ({tokens} tokens{cost})"

    async def models() -> str:
        out = _structured(
            await client.call_tool("list_models", {"modality": "video", "limit": 5}), "list_models"
        )
        for entry in out["models"]:
            rule = (entry.get("video") or {}).get("durations") or {}
            durations = f"{rule.get('min')}–{rule.get('max')} s" if rule.get("min") is not None else "n/a"
            show.detail(f"{entry['id']:<26} durations {durations}")
        if not out["models"]:
            raise StepFailed("no video models listed")
        return f"{len(out['models'])} of {out['total']} video models shown"

    async def health() -> str:
        out = _structured(await client.call_tool("route_health", {}), "route_health")
        summary = out.get("summary") or {}
        if not summary:
            raise StepFailed("no gateway health summary")
        return (
            f"{summary.get('healthy_routes')}/{summary.get('total_routes')} routes healthy, "
            f"{summary.get('degraded_routes')} degraded, median latency {summary.get('median_latency_ms')} ms"
        )

    async def image() -> str:
        arguments = {"prompt": "a lighthouse at dawn, watercolor", "size": "1024x1024", "wait_seconds": 20}
        job = _structured(await client.call_tool("alltoken_image", arguments), "alltoken_image")
        _expect_status(job, "completed")
        saved = _file_lines(job)
        if not saved or not all([await anyio.Path(f["path"]).is_file() for f in job["files"]]):
            raise StepFailed("the image job completed but no file is on disk")
        for line in saved:
            show.detail(line)
        return f"image job {job['job_id']} completed with {job['model']}"

    video_job: dict[str, str] = {}

    async def start_video() -> str:
        arguments = {"prompt": "a paper boat drifting down a rainy street", "duration": 5, "wait_seconds": 0}
        job = _structured(await client.call_tool("alltoken_video", arguments), "alltoken_video")
        if job["status"] not in ("queued", "processing"):
            _expect_status(job, "queued")
        video_job["id"] = job["job_id"]
        show.detail("returned at once: renders take minutes upstream, so the host polls with job_status")
        return (
            f"video job {job['job_id']} {job['status']} ({job['model']}, AllToken task {job['upstream_id']})"
        )

    async def follow_video() -> str:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            show.detail(f"progress {progress:>4.1f}/{total or 0:.0f} s  {message or ''}")

        arguments = {"job_id": video_job["id"], "wait_seconds": 30}
        result = await client.call_tool("job_status", arguments, progress_callback=on_progress)
        job = _structured(result, "job_status")
        _expect_status(job, "completed")
        if not job["files"] or not await anyio.Path(job["files"][0]["path"]).is_file():
            raise StepFailed("the video job completed but no file is on disk")
        for line in _file_lines(job):
            show.detail(line)
        return f"video job {job['job_id']} completed"

    async def cancel_video() -> str:
        arguments = {"prompt": "a time-lapse of clouds over mountains", "duration": 5}
        started = _structured(await client.call_tool("alltoken_video", arguments), "alltoken_video")
        show.detail(f"started video job {started['job_id']} ({started['status']})")
        job = _structured(await client.call_tool("job_cancel", {"job_id": started["job_id"]}), "job_cancel")
        _expect_status(job, "cancelled")
        if job.get("note"):
            show.detail(job["note"])
        return f"video job {job['job_id']} cancelled"

    async def jobs() -> str:
        out = _structured(await client.call_tool("list_jobs", {}), "list_jobs")
        for job in out["jobs"]:
            show.detail(f"{job['job_id']}  {job['kind']:<5}  {job['status']:<9}  {job['model']}")
        statuses = sorted(job["status"] for job in out["jobs"])
        if statuses != ["cancelled", "completed", "completed"]:
            raise StepFailed(f"expected two completed jobs and one cancelled, found {statuses}")
        return f"{len(out['jobs'])} jobs, kept in the state database across restarts"

    await show.step('alltoken_chat(prompt="Say hello to the demo audience")', chat)
    await show.step('list_models(modality="video", limit=5)', models)
    await show.step("route_health()", health)
    await show.step('alltoken_image(prompt=..., size="1024x1024", wait_seconds=20)', image)
    started = await show.step("alltoken_video(prompt=..., duration=5, wait_seconds=0)", start_video)
    if started:
        await show.step(f'job_status(job_id="{video_job["id"]}", wait_seconds=30)', follow_video)
    else:
        show.skip("job_status(job_id=..., wait_seconds=30)", "no video job was started")
    await show.step("alltoken_video(prompt=..., duration=5) then job_cancel(job_id=...)", cancel_video)
    await show.step("list_jobs()", jobs)


async def _demo(output_dir: Path, out: TextIO) -> int:
    from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator

    write = safe_printer(out)
    good, bad = check_marks(out)
    show = Transcript(write, good, bad, total=8)
    began = time.monotonic()
    config = SimConfig(speed=DEMO_SPEED, queue_fraction=DEMO_QUEUE_FRACTION)
    with tempfile.TemporaryDirectory(prefix="alltoken-demo-") as home, tempfile.TemporaryFile("w+") as errlog:
        async with serve_simulator(config) as sim:
            write("alltoken-mcp demo: the real server over stdio, against a local AllToken simulator")
            write("(no key, no credits; renders run about 30x faster than the real service).")
            write(f"  simulator  {sim.base_url}")
            write(f"  server     {sys.executable} -m alltoken_mcp   (stdio subprocess, MCP client)")
            write(f"  files      {output_dir}")
            env = _server_env(sim.base_url, SIM_API_KEY, Path(home), output_dir)
            try:
                with anyio.fail_after(DEMO_TIME_LIMIT_SECONDS):
                    async with _server(env, errlog) as client:
                        await _run_steps(client, show)
            except TimeoutError:
                show.failures.append("time limit")
                write(f"\n{bad} the demo did not finish within {DEMO_TIME_LIMIT_SECONDS:.0f} s")
            # A server that cannot start surfaces here: report it the same way as a failed step.
            except Exception as exc:
                show.failures.append("server")
                write(f"\n{bad} the server failed: {type(exc).__name__}: {exc}")
            if show.failures:
                errlog.seek(0)
                log = errlog.read().strip()
                if log:
                    write("\nserver log (stderr):\n" + log)
    elapsed = time.monotonic() - began
    if show.failures:
        write(f"\n{bad} {len(show.failures)} step(s) failed in {elapsed:.1f} s.")
        return 1
    write(f"\n{good} every step worked in {elapsed:.1f} s. Generated files are in {output_dir}")
    write(
        "Next: register the server with your host (alltoken-mcp register claude-code, codex, cursor, "
        "claude-desktop or vscode) and give it your ALLTOKEN_API_KEY."
    )
    return 0


def _writable_output_dir(requested: str | None) -> Path:
    """The requested directory, else ./alltoken-demo-output, else a temporary one (read-only cwd)."""
    candidates = [Path(requested)] if requested else [Path(DEFAULT_OUTPUT_DIR)]
    if not requested:
        candidates.append(Path(tempfile.gettempdir()) / DEFAULT_OUTPUT_DIR)
    for candidate in candidates:
        path = candidate.expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".demo-probe-"):
                pass
        except OSError:
            continue
        return path
    raise StepFailed(f"cannot write to {candidates[0]}; choose a writable directory with --output-dir")


def run_demo(output_dir: str | None = None, *, out: TextIO | None = None) -> int:
    """Run the demo and print its transcript; 0 only if every step worked."""
    stream = out or sys.stdout
    try:
        directory = _writable_output_dir(output_dir)
    except StepFailed as exc:
        print(f"alltoken-mcp demo: {exc}", file=sys.stderr)
        return 1
    return anyio.run(_demo, directory, stream)
