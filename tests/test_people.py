"""People on a shared HTTP server: a bearer token per person from ALLTOKEN_MCP_TOKENS_FILE, checked by the
SDK's token verifier, and everything a person makes (jobs, their files, conversations) visible to them
only. Through installed `alltoken-mcp serve --http` processes on loopback, the simulator for AllToken; and
the store's part on both backends."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import mcp_types as t
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from alltoken_mcp.people import Person, TokensFile, new_token_line, parse_tokens, token_digest
from alltoken_mcp.settings import SettingsError
from alltoken_mcp.simulator import RunningSimulator, SimConfig
from alltoken_mcp.store import Charge, Store
from tests.serverkit import data, resource_text, text_of
from tests.test_http import INITIALIZE, MCP_HEADERS, TOKEN, http_server_process, server_env
from tests.test_store import HERE, make_job

ALICE, ALICE_LINE = new_token_line("alice")
BOB, BOB_LINE = new_token_line("bob")
CAROL, CAROL_LINE = new_token_line("carol")


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(speed=0.01)


@asynccontextmanager
async def as_person(
    url: str, token: str | None, on_message: Any = None, mode: str = "legacy"
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, message_handler=on_message) as client:  # type: ignore[arg-type]  # type: ignore[arg-type]
        yield client


async def status_of(http: httpx2.AsyncClient, url: str, token: str) -> int:
    answer = await http.post(
        url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    )
    return answer.status_code


# ------------------------------------------------------------------------------------- the file


def test_a_tokens_file_line_names_a_person_and_the_sha256_of_their_token() -> None:
    people = parse_tokens(
        f"# the team\n{ALICE_LINE}\n\n  {BOB_LINE} budget=2.50  # on leave soon\n", "tokens"
    )
    assert people == {
        "alice": Person(token_digest(ALICE)),
        "bob": Person(token_digest(BOB), daily_budget_usd=Decimal("2.50")),
    }
    assert ALICE not in ALICE_LINE  # the file never holds a token


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice:abc\n", "line 1: expected name:sha256hex"),
        (f"{ALICE_LINE}\n{ALICE_LINE}\n", "line 2: 'alice' is listed twice"),
        (f"bad name:{'0' * 64}\n", "line 1: expected name:sha256hex"),
        (f"-alice:{'0' * 64}\n", "person name '-alice'"),
        (f"alice:{'0' * 64} budget=lots\n", "line 1: budget='lots' is not an amount of US dollars"),
        (f"alice:{'0' * 64} budget=0\n", "line 1: budget='0' must be more than 0"),
        (f"alice:{'0' * 64} budget=\n", "line 1: budget='' is not an amount"),
        (f"alice:{'0' * 64} quota=5\n", "line 1: expected name:sha256hex"),
    ],
)
def test_a_malformed_tokens_file_is_one_line_naming_the_line(text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        parse_tokens(text, "tokens")


async def test_the_file_is_reread_when_it_changes_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(ALICE_LINE + "\n")
    now = [100.0]
    tokens = TokensFile(path, clock=lambda: now[0])
    assert (await tokens.verify_token(ALICE)) is not None
    assert (await tokens.verify_token(f" {ALICE}\n")) is not None  # pasted with blanks around it
    assert await tokens.verify_token(BOB) is None
    path.write_text(BOB_LINE + "\n")
    now[0] += 0.5
    assert await tokens.verify_token(BOB) is None  # not looked at again within the second
    now[0] += 0.6
    bob = await tokens.verify_token(BOB)
    assert bob is not None
    assert bob.client_id == "bob"
    assert await tokens.verify_token(ALICE) is None
    path.write_text("garbage\n")
    now[0] += 1.1
    assert await tokens.verify_token(BOB) is not None  # a broken edit keeps the last good list
    path.unlink()
    now[0] += 1.1
    assert await tokens.verify_token(BOB) is not None


# ------------------------------------------------------------------------------------- the store


async def test_the_store_lists_a_persons_jobs_only_and_everyone_s_without_a_person(store: Store) -> None:
    alices = make_job(person="alice", created_at=1.0)
    bobs = make_job(person="bob", created_at=2.0)
    local = make_job(created_at=3.0)
    for job in (alices, bobs, local):
        await store.insert_job(job)
    assert [j.job_id for j in await store.list_jobs(person="alice")] == [alices.job_id]
    assert [j.job_id for j in await store.list_jobs(person="bob", kind="image")] == [bobs.job_id]
    assert [j.job_id for j in await store.list_jobs()] == [local.job_id, bobs.job_id, alices.job_id]
    fetched = await store.get_job(alices.job_id)
    assert fetched is not None
    assert fetched.person == "alice"
    assert fetched.visible_to("alice")
    assert fetched.visible_to(None)
    assert not fetched.visible_to("bob")


async def test_a_conversation_keeps_the_person_who_started_it(store: Store) -> None:
    hers = await store.save_turn(
        None, system=None, model="m", messages=[{"role": "user", "content": "hi"}], person="alice"
    )
    local = await store.save_turn(None, system=None, model="m", messages=[{"role": "user", "content": "hi"}])
    conversation = await store.get_conversation(hers)
    unowned = await store.get_conversation(local)
    assert conversation is not None
    assert conversation.person == "alice"
    assert not conversation.visible_to("bob")
    assert conversation.visible_to("alice")
    assert unowned is not None
    assert unowned.person is None


# ------------------------------------------------------------------------------------- over HTTP


async def test_two_people_never_see_each_others_jobs_files_or_conversations(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))
    with anyio.fail_after(90):
        async with http_server_process(env) as server:
            async with as_person(server.url, ALICE) as alice:
                image = data(await alice.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30}))
                chat = data(await alice.call_tool("alltoken_chat", {"prompt": "remember 42"}))
                mine = data(await alice.call_tool("list_jobs", {}))
                own_media = await alice.read_resource(f"alltoken://media/{image['job_id']}/0")
                own_chat = data(
                    await alice.call_tool(
                        "alltoken_chat", {"prompt": "and now?", "conversation_id": chat["conversation_id"]}
                    )
                )
                own_conversation = await alice.read_resource(
                    f"alltoken://conversations/{chat['conversation_id']}"
                )
            job_id, conversation_id = image["job_id"], chat["conversation_id"]
            async with as_person(server.url, BOB) as bob:
                listed = data(await bob.call_tool("list_jobs", {}))
                status = await bob.call_tool("job_status", {"job_id": job_id})
                unknown = await bob.call_tool("job_status", {"job_id": "job_00000000000000ff"})
                cancel = await bob.call_tool("job_cancel", {"job_id": job_id})
                cancel_unknown = await bob.call_tool("job_cancel", {"job_id": "job_00000000000000ff"})
                continued = await bob.call_tool(
                    "alltoken_chat", {"prompt": "what number?", "conversation_id": conversation_id}
                )
                refusals = []
                for uri in (
                    f"alltoken://jobs/{job_id}",
                    f"alltoken://media/{job_id}/0",
                    f"alltoken://conversations/{conversation_id}",
                ):
                    with pytest.raises(MCPError) as refused:
                        await bob.read_resource(uri)
                    refusals.append(str(refused.value))
                jobs_resource = await bob.read_resource("alltoken://jobs")
    assert image["status"] == "completed"
    assert own_media.contents
    assert own_chat["conversation_id"] == chat["conversation_id"]  # her own conversation goes on
    assert "and now?" in own_conversation.contents[0].text  # type: ignore[union-attr]
    assert [j["job_id"] for j in mine["jobs"]] == [job_id]
    assert listed["jobs"] == []
    # The same answer as for an id nobody has: nothing tells Bob the job exists.
    assert status.is_error
    assert unknown.is_error
    assert text_of(status).replace(job_id, "X") == text_of(unknown).replace("job_00000000000000ff", "X")
    assert cancel.is_error
    assert text_of(cancel).replace(job_id, "X") == text_of(cancel_unknown).replace(
        "job_00000000000000ff", "X"
    )
    assert continued.is_error
    assert f"No conversation {conversation_id!r}" in text_of(continued)
    assert all("No job" in r or "No conversation" in r for r in refusals), refusals
    assert job_id not in jobs_resource.contents[0].text  # type: ignore[union-attr]


async def test_a_wrong_token_is_401_and_a_changed_tokens_file_takes_effect_without_a_restart(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(tmp_path, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))
    with anyio.fail_after(60):
        async with http_server_process(env) as server, httpx2.AsyncClient(timeout=10) as http:
            before = {
                name: await status_of(http, server.url, token)
                for name, token in (
                    ("alice", ALICE),
                    ("bob", BOB),
                    ("carol", CAROL),
                    ("wrong", ALICE[:-1] + "x"),
                )
            }
            tokens.write_text(f"{ALICE_LINE}\n{CAROL_LINE}\n")
            stamp = tokens.stat()
            os.utime(tokens, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
            # The server re-reads the file on the first request a second after its last look; there is
            # no event to wait on in another process, so ask until it lets Carol in (fail_after bounds it).
            while await status_of(http, server.url, CAROL) != 200:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            after = {
                name: await status_of(http, server.url, token)
                for name, token in (("alice", ALICE), ("bob", BOB), ("carol", CAROL))
            }
    assert before == {"alice": 200, "bob": 200, "carol": 401, "wrong": 401}
    assert after == {"alice": 200, "bob": 401, "carol": 200}


async def test_the_one_shared_token_is_one_person_who_sees_the_local_jobs(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """ALLTOKEN_MCP_TOKEN keeps its meaning: whoever has it sees every job, also those made over stdio."""
    with anyio.fail_after(90):
        async with (
            http_server_process(server_env(tmp_path, sim.base_url)) as local,
            as_person(local.url, None) as client,
        ):
            made = data(await client.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30}))
        env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKEN=TOKEN)
        async with http_server_process(env) as shared, as_person(shared.url, TOKEN) as client:
            listed = data(await client.call_tool("list_jobs", {}))
            status = data(await client.call_tool("job_status", {"job_id": made["job_id"]}))
    assert [j["job_id"] for j in listed["jobs"]] == [made["job_id"]]
    assert status["status"] == "completed"


async def test_both_a_shared_token_and_a_tokens_file_is_refused_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(ALICE_LINE + "\n")
    env = server_env(tmp_path, ALLTOKEN_MCP_TOKEN=TOKEN, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))
    from tests.test_http import ENTRY_POINT

    result = await anyio.run_process([ENTRY_POINT, "serve", "--http", "--port", "1"], env=env, check=False)
    assert result.returncode == 2
    assert b"not both" in result.stderr


async def test_the_spend_ledger_sums_a_persons_charges_only_and_everyone_s_without_a_person(
    store: Store,
) -> None:
    for person, dollars in (("alice", "0.5"), ("bob", "2"), (None, "4")):
        await store.record_charge(Charge("chat", "m", Decimal(dollars), 10.0, HERE, person=person))
    assert (await store.spend(HERE, since=0, person="alice")).known_usd == Decimal("0.5")
    assert (await store.spend(HERE, since=0, person="bob")).charges == 1
    assert (await store.spend(HERE, since=0)).known_usd == Decimal("6.5")


async def test_the_daily_budget_is_each_persons_own(sim: RunningSimulator, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(
        tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens), ALLTOKEN_DAILY_BUDGET_USD="0.000001"
    )
    with anyio.fail_after(60):
        async with http_server_process(env) as server:
            async with as_person(server.url, ALICE) as alice:
                first = await alice.call_tool("alltoken_chat", {"prompt": "one"})
                second = await alice.call_tool("alltoken_chat", {"prompt": "two"})
            async with as_person(server.url, BOB) as bob:
                bobs = await bob.call_tool("alltoken_chat", {"prompt": "one"})
    assert not first.is_error
    assert second.is_error
    assert "Daily budget reached" in text_of(second)
    assert not bobs.is_error, text_of(bobs)


async def test_a_budget_on_a_persons_line_is_their_own_daily_budget_in_place_of_the_servers(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE} budget=0.000001\n{BOB_LINE}\n{CAROL_LINE} budget=100\n")
    env = server_env(
        tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens), ALLTOKEN_DAILY_BUDGET_USD="0.000002"
    )
    with anyio.fail_after(60):
        async with http_server_process(env) as server:
            async with as_person(server.url, ALICE) as alice:
                first = await alice.call_tool("alltoken_chat", {"prompt": "one"})
                second = await alice.call_tool("alltoken_chat", {"prompt": "two"})
                alices = json.loads(await resource_text(alice, "alltoken://usage"))
            async with as_person(server.url, CAROL) as carol:
                carols = [await carol.call_tool("alltoken_chat", {"prompt": f"turn {i}"}) for i in range(3)]
            async with as_person(server.url, BOB) as bob:
                bobs = [await bob.call_tool("alltoken_chat", {"prompt": f"turn {i}"}) for i in range(2)]
                bob_usage = json.loads(await resource_text(bob, "alltoken://usage"))
    assert not first.is_error
    assert "of your daily budget of $0.000001" in text_of(second)
    assert "raise the budget= on your line" in text_of(second)
    assert alices["daily_budget_usd"] == "0.000001"
    assert not any(c.is_error for c in carols)  # her line's $100, not the server's budget
    assert not bobs[0].is_error
    assert "of ALLTOKEN_DAILY_BUDGET_USD=$0.000002" in text_of(bobs[1])  # no line budget: the server's
    assert bob_usage["daily_budget_usd"] == "0.000002"


async def test_each_person_s_spend_report_counts_their_own_calls_only(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """alltoken://usage and route_health's spend are the caller's: Alice's chat and image job (the job's
    charge is recorded by the poller, as hers), Bob's one chat."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))

    async def spend_of(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
        usage = await client.read_resource("alltoken://usage")
        health = data(await client.call_tool("route_health", {}))
        return json.loads(usage.contents[0].text), health["spend"]  # type: ignore[union-attr]

    with anyio.fail_after(90):
        async with http_server_process(env) as server:
            async with as_person(server.url, ALICE) as alice:
                await alice.call_tool("alltoken_chat", {"prompt": "one"})
                image = data(await alice.call_tool("alltoken_image", {"prompt": "a fox", "wait_seconds": 30}))
                # The job's charge is recorded after its billing record is read, a moment after the job
                # is reported complete: ask until it is there (fail_after bounds it).
                with anyio.fail_after(20):
                    while (alices := await spend_of(alice))[0]["month"]["charges"] < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
            async with as_person(server.url, BOB) as bob:
                await bob.call_tool("alltoken_chat", {"prompt": "one"})
                bobs = await spend_of(bob)
    assert image["status"] == "completed"
    for usage, health in (alices, bobs):
        assert health["today"] == usage["today"]
        assert health["month"] == usage["month"]
    assert (alices[0]["today"]["charges"], alices[0]["month"]["charges"]) == (2, 2)
    assert (bobs[0]["today"]["charges"], bobs[0]["month"]["charges"]) == (1, 1)


async def test_a_subscription_to_another_persons_job_is_accepted_and_hears_nothing(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))
    heard: dict[str, list[str]] = {"alice": [], "bob": []}
    alice_told = anyio.Event()

    def listener(name: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, t.ResourceUpdatedNotification):
                heard[name].append(str(message.params.uri))
                if name == "alice":
                    alice_told.set()

        return on_message

    with anyio.fail_after(60):
        async with (
            http_server_process(env) as server,
            as_person(server.url, ALICE, listener("alice")) as alice,
            as_person(server.url, BOB, listener("bob")) as bob,
        ):
            job = data(await alice.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
            uri = f"alltoken://jobs/{job['job_id']}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # resources/subscribe is deprecated in the 2026 era only
                await bob.subscribe_resource(uri)
                await alice.subscribe_resource(uri)
            while True:
                await alice_told.wait()
                alice_told = anyio.Event()
                status = data(await alice.call_tool("job_status", {"job_id": job["job_id"]}))
                if status["status"] == "completed":
                    break
            await bob.call_tool("list_jobs", {})
    assert uri in heard["alice"]
    assert heard["bob"] == []


async def test_a_listen_stream_for_another_persons_job_hears_nothing(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The 2026-07-28 era: `subscriptions/listen` gets only the URIs the caller may follow."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE_LINE}\n{BOB_LINE}\n")
    env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_TOKENS_FILE=str(tokens))
    bob_heard: list[str] = []

    async def bob_listens(bob: Client, uri: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with bob.listen(resource_subscriptions=[uri]) as subscription:
            task_status.started()
            async for event in subscription:
                bob_heard.append(str(event))

    with anyio.fail_after(60):
        async with (
            http_server_process(env) as server,
            as_person(server.url, ALICE, mode="auto") as alice,
            as_person(server.url, BOB, mode="auto") as bob,
            anyio.create_task_group() as tg,
        ):
            job = data(await alice.call_tool("alltoken_video", {"prompt": "x", "resolution": "480p"}))
            uri = f"alltoken://jobs/{job['job_id']}"
            await tg.start(bob_listens, bob, uri)
            alice_told = 0
            async with alice.listen(resource_subscriptions=[uri]) as subscription:
                async for event in subscription:
                    assert uri in str(event)
                    alice_told += 1
                    status = data(await alice.call_tool("job_status", {"job_id": job["job_id"]}))
                    if status["status"] == "completed":
                        break
            await bob.call_tool("list_jobs", {})
            tg.cancel_scope.cancel()
    assert alice_told >= 1
    assert bob_heard == []


async def test_the_token_command_prints_a_token_once_and_the_line_that_admits_it(tmp_path: Path) -> None:
    from tests.rawstdio import ENTRY_POINT

    with anyio.fail_after(30):
        made = await anyio.run_process([ENTRY_POINT, "token", "dana", "--budget", "$7.5"], check=False)
        bad_name = await anyio.run_process([ENTRY_POINT, "token", "da/na"], check=False)
        bad_budget = await anyio.run_process([ENTRY_POINT, "token", "dana", "--budget", "-1"], check=False)
    assert made.returncode == 0, made.stderr
    token_line, file_line = (line.strip() for line in made.stdout.decode().splitlines()[1::2])
    assert parse_tokens(file_line, "printed") == {
        "dana": Person(token_digest(token_line), daily_budget_usd=Decimal("7.5"))
    }
    assert token_line not in file_line
    for refused, says in (
        (bad_name, "person name 'da/na'"),
        (bad_budget, "--budget='-1' must be more than 0"),
    ):
        assert refused.returncode == 2
        assert refused.stdout == b""
        [line] = refused.stderr.decode().splitlines()
        assert says in line
