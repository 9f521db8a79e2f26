"""`alltoken-mcp demo`, the README's first command, run as a user runs it: the installed script in a
subprocess, in a fresh working directory, with no AllToken variables set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio

from alltoken_mcp.simulator import SIM_API_KEY
from tests.rawstdio import ENTRY_POINT


async def run_demo(cwd: Path, *args: str, **alltoken: str) -> tuple[int, str, str]:
    """Run the demo with no AllToken variables but `alltoken` (ALLTOKEN_* names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env.update(alltoken)
    env["PYTHONIOENCODING"] = "utf-8"
    with anyio.fail_after(60):
        result = await anyio.run_process([ENTRY_POINT, *args, "demo"], cwd=cwd, env=env, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_the_demo_runs_every_step_in_under_30_seconds_saves_the_files_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    code, transcript, stderr = await run_demo(tmp_path)
    assert code == 0, transcript + stderr
    output = tmp_path / "alltoken-demo-output"
    lines = transcript.splitlines()

    assert f"  files      {output}" in lines
    assert "  ✓ deepseek-v4-pro answered 'Echo: Say hello to the demo audience'" in transcript
    assert re.search(r"✓ 5 of \d+ video models shown", transcript)
    assert re.search(r"✓ \d+/\d+ routes healthy", transcript)
    [image_line] = [line for line in lines if line.strip().startswith("saved") and ".png" in line]
    assert f"saved {output}/" in image_line
    assert "image/png" in image_line
    assert re.search(r"✓ video job job_[0-9a-f]{16} queued", transcript)
    progress = [line for line in lines if line.strip().startswith("progress")]
    assert len(progress) >= 2
    assert progress[-1].endswith(": completed")
    assert any(".mp4" in line and "video/mp4" in line for line in lines)
    assert re.search(r"✓ video job job_[0-9a-f]{16} cancelled", transcript)
    assert "✓ 3 jobs" in transcript
    assert "✗" not in transcript
    assert [line for line in lines if line.startswith("[")][-1].startswith("[8/8]")

    seconds = float(re.search(r"✓ every step worked in ([0-9.]+) s", transcript).group(1))  # type: ignore[union-attr]
    assert seconds < 30

    saved = sorted(p.suffix for p in output.iterdir())
    assert saved == [".mp4", ".png"]
    assert all(p.stat().st_size > 0 for p in output.iterdir())

    # The server's stdout is the JSON-RPC pipe and its stderr a private log: neither reaches the user.
    assert '"jsonrpc"' not in transcript
    assert not [line for line in transcript.splitlines() if line.lstrip().startswith("{")]
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", transcript)
    assert SIM_API_KEY not in transcript
    assert SIM_API_KEY not in stderr
    assert "Traceback" not in stderr


async def test_the_demo_never_touches_the_users_state_or_key(tmp_path: Path) -> None:
    real_home = tmp_path / "real-home"
    code, transcript, stderr = await run_demo(
        tmp_path,
        ALLTOKEN_MCP_HOME=str(real_home),
        ALLTOKEN_OUTPUT_DIR=str(real_home / "media"),
        ALLTOKEN_API_KEY="sk-the-users-real-key-0123456789",
        ALLTOKEN_BASE_URL="http://127.0.0.1:9/v1",
    )
    assert code == 0, transcript + stderr
    assert not real_home.exists()  # its state database (and the user's jobs) is never opened
    assert len(list((tmp_path / "alltoken-demo-output").iterdir())) == 2


async def test_the_output_dir_flag_is_where_the_files_go(tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere"
    code, transcript, stderr = await run_demo(tmp_path, "--output-dir", str(chosen))
    assert code == 0, transcript + stderr
    assert f"Generated files are in {chosen}" in transcript
    assert len(list(chosen.iterdir())) == 2
    assert not (tmp_path / "alltoken-demo-output").exists()


async def test_an_unusable_output_dir_fails_with_a_message_and_status_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, transcript, stderr = await run_demo(tmp_path, "--output-dir", str(blocker / "out"))
    assert code == 1
    assert transcript == ""
    assert "choose a writable directory with --output-dir" in stderr
