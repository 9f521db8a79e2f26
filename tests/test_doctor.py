"""`alltoken-mcp doctor` as a user runs it: the installed script in a subprocess, against the simulator
on loopback, with real state directories and real (or deliberately broken) SQLite files."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from alltoken_mcp.settings import key_fingerprint
from alltoken_mcp.simulator import SIM_API_KEY, RunningSimulator
from alltoken_mcp.store import SCHEMA_VERSION, Job, SqliteStore, Store
from tests import pgkit
from tests.rawstdio import ENTRY_POINT

DEAD_BASE_URL = "http://127.0.0.1:9/v1"
WRONG_KEY = "sk-wrong-doctor-key-zq9x7"


async def doctor(*args: str, **env: str) -> tuple[int, list[str]]:
    """Run the doctor with only the given AllToken variables (none inherited from the developer)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    base["PYTHONIOENCODING"] = "utf-8"
    with anyio.fail_after(30):
        result = await anyio.run_process([ENTRY_POINT, "doctor", *args], env={**base, **env}, check=False)
    lines = result.stdout.decode().splitlines()
    return result.returncode, lines


def line(lines: list[str], label: str) -> str:
    """The one report line for a check, found by its label after the ✓/✗ (or OK/FAIL) mark."""
    [found] = [text for text in lines if re.sub(r"^(✓|✗|OK|FAIL) +", "", text).startswith(f"{label}:")]
    return found


def healthy_env(sim: RunningSimulator, home: Path) -> dict[str, str]:
    return {
        "ALLTOKEN_BASE_URL": sim.base_url,
        "ALLTOKEN_API_KEY": SIM_API_KEY,
        "ALLTOKEN_MCP_HOME": str(home),
    }


async def store_with_active_job(
    where: Path | str, job_id: str = "job_00000000000000a1", **upstream: str
) -> None:
    """An active job in the SQLite file `where`, or in the PostgreSQL database at the URL `where`."""
    if isinstance(where, Path):
        store: Store = await SqliteStore.open(where)
    else:
        store = await pgkit.Database("postgresql", Path("unused"), where).open()
    try:
        now = time.time()
        await store.insert_job(
            Job(
                job_id=job_id,
                kind="video",
                status="processing",
                model="seedance-1.5-pro",
                prompt="a lighthouse",
                request={},
                idempotency_key="idem-doctor",
                submit_state="accepted",
                created_at=now,
                updated_at=now,
                upstream_id=f"task_{job_id}",
                **upstream,  # type: ignore[arg-type]
            )
        )
    finally:
        await store.close()


async def test_a_healthy_setup_passes_every_check_and_counts_pending_jobs(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    await store_with_active_job(tmp_path / "state.sqlite3")
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "All checks passed."
    assert all(text.startswith("✓ ") for text in lines[:-1]), lines
    labels = [text[2:].split(":")[0] for text in lines[:-1]]
    for label in ("Python", "packages", "API key", "AllToken reachable", "key accepted", "state dir"):
        assert label in labels
    for label in ("database", "pending jobs", "output dir"):
        assert label in labels
    assert "mcp 2." in line(lines, "packages")
    assert "models available" in line(lines, "key accepted")
    assert f"schema version {SCHEMA_VERSION}" in line(lines, "database")
    assert line(lines, "pending jobs").startswith("✓ pending jobs: 1 queued or processing")
    assert SIM_API_KEY not in "\n".join(lines)


async def test_pending_jobs_of_another_key_are_counted_as_not_continued_here(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    database = tmp_path / "state.sqlite3"
    await store_with_active_job(database, "job_00000000000000a1")  # from before upstreams: this one's
    mine = {"upstream_url": sim.base_url, "upstream_key": key_fingerprint(SIM_API_KEY)}
    await store_with_active_job(database, "job_00000000000000a2", **mine)
    theirs = {"upstream_url": sim.base_url, "upstream_key": key_fingerprint(WRONG_KEY)}
    await store_with_active_job(database, "job_00000000000000a3", **theirs)
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 0, "\n".join(lines)
    assert line(lines, "pending jobs") == (
        "✓ pending jobs: 3 queued or processing; a running server finishes them (1 of them belongs to "
        "another base URL or API key: only a server configured for that one continues them; list_jobs shows "
        "where)"
    )


async def test_a_fresh_home_is_fine_the_database_will_be_created(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    code, lines = await doctor(**healthy_env(sim, tmp_path / "new-home"))
    assert code == 0, "\n".join(lines)
    assert "will be created" in line(lines, "database")
    assert (tmp_path / "new-home").is_dir()


async def test_a_wrong_key_is_reported_as_rejected_and_never_printed(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    code, lines = await doctor(**{**healthy_env(sim, tmp_path), "ALLTOKEN_API_KEY": WRONG_KEY})
    assert code == 1
    rejected = line(lines, "key accepted")
    assert rejected.startswith("✗ key accepted: key rejected: AllToken 401")
    assert "fix:" in rejected
    assert line(lines, "AllToken reachable").startswith("✓")
    output = "\n".join(lines)
    assert "zq9x7" not in output
    assert "doctor-key" not in output


async def test_a_missing_key_fails_with_where_to_set_it_and_points_to_the_demo(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    env = healthy_env(sim, tmp_path)
    del env["ALLTOKEN_API_KEY"]
    code, lines = await doctor(**env)
    assert code == 1
    key = line(lines, "API key")
    assert key.startswith("✗ API key: ALLTOKEN_API_KEY is not set — fix: set ALLTOKEN_API_KEY in this MCP ")
    assert "the `env` block of the host config" in key
    assert key.endswith("; to try everything without a key first: alltoken-mcp demo")
    assert line(lines, "key accepted") == (
        "✗ key accepted: not tried: no usable key — fix: fix ALLTOKEN_API_KEY first (above)"
    )


@pytest.mark.parametrize(
    ("value", "found", "fix"),
    [
        (
            "${ALLTOKEN_API_KEY}",
            "ALLTOKEN_API_KEY is the literal text ${ALLTOKEN_API_KEY}: Claude Code passes that when "
            "ALLTOKEN_API_KEY is not set in the shell it was started from",
            "export ALLTOKEN_API_KEY before starting claude, or put the key itself in the config",
        ),
        (
            "%ALLTOKEN_API_KEY%",
            "ALLTOKEN_API_KEY is the literal text %ALLTOKEN_API_KEY%: a Windows variable reference",
            "set ALLTOKEN_API_KEY before starting the host, or put the key itself in the config",
        ),
        (
            "paste-your-key-here",
            "ALLTOKEN_API_KEY is the placeholder text 'paste-your-key-here', not a key",
            "replace it with your key from https://alltoken.ai → Settings → API Keys",
        ),
        (
            f'"{SIM_API_KEY}"',
            "ALLTOKEN_API_KEY is wrapped in quotes, which became part of the value",
            'remove the quotes around the key in the config: in JSON "ALLTOKEN_API_KEY": "sk-…"',
        ),
        ("   ", "ALLTOKEN_API_KEY is set but empty", "set ALLTOKEN_API_KEY in this MCP server's environment"),
    ],
)
async def test_a_value_that_is_not_a_key_is_named_with_its_fix_and_never_sent(
    sim: RunningSimulator, tmp_path: Path, value: str, found: str, fix: str
) -> None:
    code, lines = await doctor(**{**healthy_env(sim, tmp_path), "ALLTOKEN_API_KEY": value})
    assert code == 1
    key = line(lines, "API key")
    assert key.startswith(f"✗ API key: {found}")
    assert f" — fix: {fix}" in key
    assert key.endswith("alltoken-mcp demo")
    assert line(lines, "key accepted").startswith("✗ key accepted: not tried")
    assert not [r for r in sim.state.requests if r.startswith("GET /v1/")]  # no key was tried
    assert SIM_API_KEY not in "\n".join(lines)


async def test_a_base_url_without_v1_gets_the_fix_naming_v1(sim: RunningSimulator, tmp_path: Path) -> None:
    code, lines = await doctor(**{**healthy_env(sim, tmp_path), "ALLTOKEN_BASE_URL": sim.origin})
    assert code == 1
    assert line(lines, "AllToken reachable").startswith("✓")
    models = line(lines, "key accepted")
    assert models.startswith(f"✗ key accepted: GET {sim.origin}/models failed: AllToken 404")
    assert models.endswith(
        f"— fix: ALLTOKEN_BASE_URL is {sim.origin}, without /v1: AllToken's API is under /v1, so set "
        f"ALLTOKEN_BASE_URL={sim.origin}/v1"
    )


async def test_a_good_key_is_shown_only_as_its_fingerprint(sim: RunningSimulator, tmp_path: Path) -> None:
    code, lines = await doctor(**{**healthy_env(sim, tmp_path), "ALLTOKEN_API_KEY": f"  {SIM_API_KEY}\n"})
    assert code == 0, "\n".join(lines)
    assert (
        line(lines, "API key")
        == f"✓ API key: ALLTOKEN_API_KEY is set (fingerprint {key_fingerprint(SIM_API_KEY)})"
    )


async def test_an_unreachable_url_fails_with_the_fix(tmp_path: Path) -> None:
    code, lines = await doctor(
        ALLTOKEN_BASE_URL=DEAD_BASE_URL, ALLTOKEN_API_KEY=SIM_API_KEY, ALLTOKEN_MCP_HOME=str(tmp_path)
    )
    assert code == 1
    unreachable = line(lines, "AllToken reachable")
    assert unreachable.startswith("✗ AllToken reachable: no answer from http://127.0.0.1:9")
    assert "check ALLTOKEN_BASE_URL" in unreachable
    # The local checks still ran.
    assert line(lines, "state dir").startswith("✓")


async def test_a_lost_answer_is_reported_after_one_attempt_not_retried(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A diagnosis says what happened instead of retrying it away (and keeping the user waiting through
    the backoff): every answer of the health endpoint is cut off, and it is asked exactly once."""
    sim.state.add_fault(path="/api-account/health/summary", drop="before_body", count=None)
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 1
    unreachable = line(lines, "AllToken reachable")
    assert unreachable.startswith(f"✗ AllToken reachable: no answer from {sim.origin}")
    assert "after 1 attempt" in unreachable
    requests = sim.state.counters()["requests"]
    assert requests["GET /api-account/health/summary"] == 1
    assert "GET /v1/models" not in requests  # the key is tried only once AllToken has been reached


async def test_the_base_url_flag_overrides_the_environment(sim: RunningSimulator, tmp_path: Path) -> None:
    env = {**healthy_env(sim, tmp_path), "ALLTOKEN_BASE_URL": DEAD_BASE_URL}
    code, lines = await doctor("--base-url", sim.base_url, **env)
    assert code == 0, "\n".join(lines)


async def test_a_state_dir_that_cannot_be_written_fails_but_the_other_checks_run(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    # chmod does not stop root (tests may run as root); a path below a regular file fails for everyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {**healthy_env(sim, blocker / "state"), "ALLTOKEN_OUTPUT_DIR": str(tmp_path / "out")}
    code, lines = await doctor(**env)
    assert code == 1
    state = line(lines, "state dir")
    assert state.startswith(f"✗ state dir: {blocker / 'state'} is not writable")
    assert "set ALLTOKEN_MCP_HOME" in state
    assert line(lines, "key accepted").startswith("✓")
    assert line(lines, "output dir").startswith("✓")
    assert lines[-1] == "1 check failed."


async def test_an_output_dir_that_is_a_file_fails(sim: RunningSimulator, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, lines = await doctor(**{**healthy_env(sim, tmp_path / "home"), "ALLTOKEN_OUTPUT_DIR": str(blocker)})
    assert code == 1
    assert "set ALLTOKEN_OUTPUT_DIR" in line(lines, "output dir")


async def test_a_corrupt_database_fails_with_how_to_recover(sim: RunningSimulator, tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").write_bytes(b"this is not sqlite " * 512)
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 1
    database = line(lines, "database")
    assert database.startswith("✗ database:")
    assert "not a database" in database
    assert f"move {tmp_path / 'state.sqlite3'} aside" in database


async def test_a_database_from_a_newer_release_fails(sim: RunningSimulator, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 1
    assert "newer than this alltoken-mcp understands" in line(lines, "database")


async def test_the_doctor_leaves_the_database_untouched(sim: RunningSimulator, tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 0")
        db.execute("CREATE TABLE unrelated (x)")
    before = path.read_bytes()
    code, lines = await doctor(**healthy_env(sim, tmp_path))
    assert code == 0, "\n".join(lines)
    assert "upgraded on next start" in line(lines, "database")
    assert path.read_bytes() == before


async def test_a_terminal_without_unicode_gets_plain_words(sim: RunningSimulator, tmp_path: Path) -> None:
    encoding = "ascii"
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    env = {**base, **healthy_env(sim, tmp_path), "PYTHONIOENCODING": encoding, "ALLTOKEN_API_KEY": ""}
    with anyio.fail_after(30):
        result = await anyio.run_process([ENTRY_POINT, "doctor"], env=env, check=False)
    lines = result.stdout.decode(encoding).splitlines()
    assert result.returncode == 1
    assert line(lines, "Python").startswith("OK")
    assert line(lines, "API key").startswith("FAIL")
    assert "Settings ? API Keys" in line(lines, "API key")
    assert result.stderr == b""


# -------------------------------------------------------------------------- a team's PostgreSQL store


def with_password(url: str, password: str) -> str:
    """The URL with a password in it (the throwaway server trusts loopback, so any password works)."""
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}"


async def test_a_postgresql_store_is_checked_read_only_with_its_pending_jobs_and_never_its_password(
    sim: RunningSimulator, tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    url = with_password(postgres_url, "pg-sekrit-4711")
    env = {**healthy_env(sim, tmp_path), "ALLTOKEN_MCP_DATABASE_URL": url}
    code, lines = await doctor(**env)
    assert code == 0, "\n".join(lines)
    assert "is reachable and empty; the first server creates the schema" in line(lines, "database")
    with psycopg.connect(postgres_url) as db:  # the doctor created nothing
        assert db.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)

    await store_with_active_job(tmp_path / "state.sqlite3", "job_00000000000000b0")  # not the store in use
    mine = {"upstream_url": sim.base_url, "upstream_key": key_fingerprint(SIM_API_KEY)}
    theirs = {"upstream_url": sim.base_url, "upstream_key": key_fingerprint(WRONG_KEY)}
    await store_with_active_job(url, "job_00000000000000b1", **mine)
    await store_with_active_job(url, "job_00000000000000b2", **theirs)
    code, lines = await doctor(**env)
    assert code == 0, "\n".join(lines)
    assert f"is reachable (schema version {SCHEMA_VERSION})" in line(lines, "database")
    assert line(lines, "pending jobs").startswith("✓ pending jobs: 2 queued or processing; a running server")
    assert "(1 of them belongs to another base URL or API key" in line(lines, "pending jobs")
    assert "pg-sekrit-4711" not in "\n".join(lines)

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    code, lines = await doctor(**env)
    assert code == 1
    assert "newer than this alltoken-mcp understands" in line(lines, "database")
    assert "point ALLTOKEN_MCP_DATABASE_URL elsewhere" in line(lines, "database")


async def test_an_unreachable_postgresql_store_fails_in_one_line_without_its_password(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://team:pg-sekrit-4711@127.0.0.1:{port}/jobs"
    code, lines = await doctor(**{**healthy_env(sim, tmp_path), "ALLTOKEN_MCP_DATABASE_URL": url})
    assert code == 1
    database = line(lines, "database")
    assert database.startswith("✗ database:")
    assert "check ALLTOKEN_MCP_DATABASE_URL and that the PostgreSQL server is up" in database
    assert "pg-sekrit-4711" not in "\n".join(lines)
    assert "Traceback" not in "\n".join(lines)
