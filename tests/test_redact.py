"""Issue 8 item 10: secrets echoed by the upstream never leave the server or reach its state database.

The simulator is configured with a key that has URL-special characters, and its faults answer with
error messages quoting that key (as is, URL-encoded, as `Bearer <key>`) and the HTTP bearer token
ALLTOKEN_MCP_TOKEN. Chat, image and video calls fail with those messages, a poll is refused with one, a
chat answer echoes the key. Neither secret may appear in a tool result (text or structuredContent),
job_status / list_jobs, a resource (body or error), the SQLite file, or the stderr log of a stdio server.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import mcp_types as t
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from alltoken_mcp.redact import REDACTED, RedactingFilter, Redactor
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from tests.rawstdio import ENTRY_POINT
from tests.serverkit import connect, error_text, settings_for, text_of

KEY = "sk-live/Secret+Key=0123456789abcdef"
TOKEN = "mcp-bearer-token-5f3c9a1e77d04b2a"
FORMS = (KEY, quote(KEY, safe=""), quote_plus(KEY, safe=""), TOKEN)
ECHO = f"bad key {KEY} (Authorization: Bearer {KEY}; url ?key={quote(KEY, safe='')}; token {TOKEN})"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01, api_keys=(KEY,))


def assert_clean(value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for form in FORMS:
        assert form not in text, f"{form!r} leaked in {text[:500]!r}"


def database_text(home: Path) -> str:
    with sqlite3.connect(home / "state.sqlite3") as db:
        return "\n".join(db.iterdump())


def echoing_faults(sim: RunningSimulator) -> None:
    """Every create answers an error quoting the secrets."""
    sim.state.add_fault(path="/v1/chat/completions", status=400, code="invalid_request", message=ECHO)
    sim.state.add_fault(path="/v1/images/generations/async", status=402, message=ECHO)
    sim.state.add_fault(path="/v1/videos/generations", method="POST", status=400, message=ECHO)


# ---------------------------------------------------------------------------------- the Redactor


def test_each_secret_and_its_encoded_forms_become_the_marker() -> None:
    redactor = Redactor.for_secrets([("K", KEY), ("T", TOKEN)])
    cleaned = redactor.redact(ECHO)
    assert_clean(cleaned)
    assert cleaned.count(REDACTED) == 4
    assert cleaned.startswith(f"bad key {REDACTED} (Authorization: Bearer {REDACTED}; url ?key={REDACTED};")


def test_secrets_shorter_than_eight_characters_are_left_alone_and_reported() -> None:
    redactor = Redactor.for_secrets([("ALLTOKEN_MCP_TOKEN", "test"), ("ALLTOKEN_API_KEY", None)])
    assert redactor.redact("a test of the latest attestation") == "a test of the latest attestation"
    assert redactor.skipped == ("ALLTOKEN_MCP_TOKEN",)


def test_the_log_filter_cleans_the_message_its_arguments_and_the_traceback() -> None:
    log_filter = RedactingFilter(Redactor.for_secrets([("K", KEY)]))
    try:
        raise RuntimeError(f"upstream said {KEY}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", (KEY,), sys.exc_info())
    assert log_filter.filter(record)
    line = logging.Formatter().format(record)
    assert_clean(line)
    assert f"failed for {REDACTED}" in line
    assert f"RuntimeError: upstream said {REDACTED}" in line


# ---------------------------------------------------------------------------- through the server


async def test_upstream_errors_quoting_the_key_reach_no_result_resource_or_stored_row(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url, api_key=KEY, ALLTOKEN_MCP_TOKEN=TOKEN)
    echoing_faults(sim)
    async with connect(settings) as client:
        chat = await client.call_tool("alltoken_chat", {"prompt": "hi", "model": "deepseek-v3.2"})
        image = await client.call_tool("alltoken_image", {"prompt": "a cat", "wait_seconds": 0})
        video = await client.call_tool("alltoken_video", {"prompt": "a dog"})
        jobs = await client.call_tool("list_jobs", {})
        failed = [job["job_id"] for job in jobs.structured_content["jobs"]]  # type: ignore[index]
        statuses = [await client.call_tool("job_status", {"job_id": job_id}) for job_id in failed]
        resources = [await client.read_resource("alltoken://jobs")]
        resources += [await client.read_resource(f"alltoken://jobs/{job_id}") for job_id in failed]

    for result in (chat, image, video):
        assert REDACTED in error_text(result)
        assert_clean(result.model_dump(mode="json"))
    assert len(failed) == 2  # the image and the video job, both recorded as failed
    for status in statuses:
        assert status.structured_content is not None
        assert REDACTED in status.structured_content["error"]["message"]
        assert_clean(status.model_dump(mode="json"))
    assert_clean(jobs.model_dump(mode="json"))
    for resource in resources:
        assert REDACTED in json.dumps(resource.model_dump(mode="json"))
        assert_clean(resource.model_dump(mode="json"))
    stored = database_text(tmp_path)
    assert stored.count(REDACTED) >= 2
    assert_clean(stored)


async def test_a_refused_poll_quoting_the_key_is_noted_without_it(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url, api_key=KEY, ALLTOKEN_MCP_TOKEN=TOKEN)
    async with connect(settings) as client:
        started = await client.call_tool("alltoken_video", {"prompt": "a slow river"})
        assert started.structured_content is not None
        job_id = started.structured_content["job_id"]
        sim.state.add_fault(
            path="/v1/videos/generations/{task_id}", method="GET", status=403, message=ECHO, count=None
        )
        with anyio.fail_after(15):
            while True:
                status = await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 0})
                record = status.structured_content or {}
                if record.get("note") or record.get("error"):
                    break
                await anyio.sleep(0.05)
    assert REDACTED in text_of(status)
    assert_clean(status.model_dump(mode="json"))
    assert_clean(database_text(tmp_path))


async def test_a_chat_answer_echoing_the_key_is_shown_and_stored_redacted(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url, api_key=KEY)
    async with connect(settings) as client:
        result = await client.call_tool("alltoken_chat", {"prompt": f"repeat {KEY}", "system": f"key {KEY}"})
        assert result.structured_content is not None
        uri = f"alltoken://conversations/{result.structured_content['conversation_id']}"
        conversation = await client.read_resource(uri)
    # The simulator echoes the prompt: the answer really carried the key.
    assert result.structured_content["text"] == f"Echo: repeat {REDACTED}"
    assert_clean(result.model_dump(mode="json"))
    assert_clean(conversation.model_dump(mode="json"))
    stored = database_text(tmp_path)
    assert f"Echo: repeat {REDACTED}" in stored
    assert_clean(stored)


async def test_resource_errors_and_catalog_warnings_quoting_the_key_are_redacted(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sim.base_url, api_key=KEY, ALLTOKEN_MCP_TOKEN=TOKEN)
    for path in ("/api-account/models", "/v1/models", "/v1/images/models", "/v1/videos/models"):
        sim.state.add_fault(path=path, status=401, code="invalid_api_key", message=ECHO)
    async with connect(settings) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource("alltoken://models")
        sim.state.faults.clear()
        sim.state.add_fault(path="/v1/models", status=400, message=ECHO, count=None)
        partial = await client.read_resource("alltoken://models")
    assert REDACTED in refused.value.error.message
    assert_clean(refused.value.error.model_dump(mode="json"))
    body = partial.contents[0]
    assert isinstance(body, t.TextResourceContents)
    assert REDACTED in body.text
    assert_clean(body.text)
    assert_clean(database_text(tmp_path))


# ---------------------------------------------------------------------------------- the stderr log


@pytest.fixture
def errlog() -> Iterator[Any]:
    with tempfile.TemporaryFile("w+") as handle:
        yield handle


async def test_the_stdio_servers_log_carries_no_secret(
    sim: RunningSimulator, tmp_path: Path, errlog: Any
) -> None:
    env = {
        **os.environ,
        "ALLTOKEN_BASE_URL": sim.base_url,
        "ALLTOKEN_MCP_HOME": str(tmp_path),
        "ALLTOKEN_API_KEY": KEY,
        "ALLTOKEN_MCP_TOKEN": TOKEN,
    }
    echoing_faults(sim)
    params = StdioServerParameters(command=ENTRY_POINT, args=["--log-level", "DEBUG"], env=env)
    with anyio.fail_after(30):
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            results = [
                await client.call_tool("alltoken_chat", {"prompt": "hi"}),
                await client.call_tool("alltoken_image", {"prompt": "a cat", "wait_seconds": 0}),
                await client.call_tool("alltoken_video", {"prompt": "a dog"}),
                await client.call_tool("list_jobs", {}),
            ]
    errlog.seek(0)
    log = errlog.read()
    # The SDK logs each failed call with its message: the secrets were there to be removed.
    assert "Tool 'alltoken_chat' failed" in log
    assert REDACTED in log
    assert_clean(log)
    for result in results:
        assert_clean(result.model_dump(mode="json"))
    assert_clean(database_text(tmp_path))
