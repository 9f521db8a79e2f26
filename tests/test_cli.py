"""The command line's own failure paths: what a person sees when the state database is broken or the
reader of a command's output goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "alltoken-mcp")


def run(args: list[str], home: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALLTOKEN_MCP_HOME": str(home), "ALLTOKEN_BASE_URL": "http://127.0.0.1:9/v1"}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_a_corrupt_state_database_stops_the_server_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").write_bytes(b"not a database" * 500)
    done = run([], tmp_path, input="")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "state database" in lines[0]
    assert "move it aside" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_BASE_URL": "http://127.0.0.1:9/v1"}
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read what doctor prints
    try:
        done = subprocess.run(
            [SCRIPT, "doctor"], env=env, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(writer)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr
