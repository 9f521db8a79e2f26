"""OAuth bearer tokens checked against an identity provider's introspection endpoint (RFC 7662), played by
a scripted HTTP server on loopback: who the token is, what is cached, and that every failure of the
endpoint lets nobody in, within a bound."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import anyio
import httpx2
import pytest

from alltoken_mcp import people
from alltoken_mcp.people import Introspection
from alltoken_mcp.simulator import RunningSimulator
from tests.rawserver import RawResponse, raw_server
from tests.serverkit import data, text_of
from tests.test_http import http_server_process, server_env
from tests.test_people import as_person, status_of


def answer(body: object, status: int = 200) -> RawResponse:
    return RawResponse(
        status=status,
        headers=[("Content-Type", "application/json")],
        pieces=[json.dumps(body).encode()],
        framing="length",
    )


async def test_an_active_token_is_its_subject_asked_once_with_the_clients_credentials() -> None:
    exp = int(time.time()) + 3600
    async with raw_server(
        answer({"active": True, "sub": "alice", "exp": exp}), answer({"active": False})
    ) as idp:
        verifier = Introspection(f"http://mcp:s%40cret@127.0.0.1:{idp.port}/introspect")
        first = await verifier.verify_token("tok-alice")
        again = await verifier.verify_token("tok-alice")
        other = await verifier.verify_token("tok-revoked")
    assert first is not None
    assert first.client_id == "alice"
    assert first.claims == {"alltoken_person": "alice"}
    assert first.expires_at == exp
    assert again == first
    assert other is None
    assert len(idp.requests) == 2  # the second look at alice's token came from the cache
    request = idp.requests[0]
    assert (request.method, request.path) == ("POST", "/introspect")
    assert parse_qs(request.body.decode())["token"] == ["tok-alice"]
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"mcp:s@cret").decode()


@pytest.mark.parametrize(
    "response",
    [
        answer({"error": "server_error"}, status=500),
        answer(["not", "an", "object"]),
        answer({"active": True}),  # no sub, no username: nobody to be
        answer({"active": "yes", "sub": "alice"}),
        RawResponse(status=200, pieces=[b"x" * (people.MAX_INTROSPECTION_BODY + 1)], framing="length"),
        # What would let someone in, were it not refused for how it came:
        answer({"active": True, "sub": "alice"}, status=500),  # an error status, whatever the body says
        answer({"active": True, "sub": "alice", "pad": "x" * people.MAX_INTROSPECTION_BODY}),  # too long
        answer({"active": True, "sub": 42}),  # a subject that is not a name
        answer({"active": True, "sub": ""}),
    ],
)
async def test_an_endpoint_that_fails_or_answers_nonsense_lets_nobody_in(response: RawResponse) -> None:
    async with raw_server(response) as idp:
        assert await Introspection(f"{idp.origin}/introspect").verify_token("tok") is None


async def test_a_silent_endpoint_is_given_up_on_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(people, "INTROSPECTION_TIMEOUT_SECONDS", 0.3)
    async with raw_server(RawResponse(status=200, hold=True, framing="chunked")) as idp:
        with anyio.fail_after(5):
            assert await Introspection(f"{idp.origin}/introspect").verify_token("tok") is None


async def test_a_token_is_refused_from_its_exp_on_and_the_answer_is_not_reused_past_it() -> None:
    now = [1000.0]
    stale = {"active": True, "username": "bob", "exp": 1010}  # an endpoint slow to notice the expiry
    async with raw_server(answer(stale), answer(stale)) as idp:
        verifier = Introspection(f"{idp.origin}/introspect", clock=lambda: now[0])
        before = await verifier.verify_token("tok")
        now[0] = 1010.0
        after = await verifier.verify_token("tok")
    assert before is not None
    assert before.client_id == "bob"
    assert after is None
    assert len(idp.requests) == 2  # the first answer was cached only until exp


async def test_a_server_on_introspection_knows_people_by_their_subject(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    script = (
        answer({"active": True, "sub": "alice"}),
        answer({"active": True, "sub": "bob"}),
        answer({"active": False}),
    )
    async with raw_server(*script) as idp:
        env = server_env(tmp_path, sim.base_url, ALLTOKEN_MCP_INTROSPECTION_URL=f"{idp.origin}/introspect")
        with anyio.fail_after(60):
            async with http_server_process(env) as server:
                async with as_person(server.url, "oauth-alice") as alice:
                    chat = data(await alice.call_tool("alltoken_chat", {"prompt": "remember 42"}))
                async with as_person(server.url, "oauth-bob") as bob:
                    continued = await bob.call_tool(
                        "alltoken_chat",
                        {"prompt": "what number?", "conversation_id": chat["conversation_id"]},
                    )
                async with httpx2.AsyncClient(timeout=10) as http:
                    refused = await status_of(http, server.url, "oauth-revoked")
    assert continued.is_error
    assert "No conversation" in text_of(continued)
    assert refused == 401
    assert [parse_qs(r.body.decode())["token"] for r in idp.requests] == [
        ["oauth-alice"],
        ["oauth-bob"],
        ["oauth-revoked"],
    ]  # each token asked about once, however many requests it made


async def test_a_redirect_from_the_endpoint_is_not_followed_with_the_token() -> None:
    """A redirect would POST the token (and the client's credentials) to wherever it points."""
    async with raw_server(answer({"active": True, "sub": "mallory"})) as elsewhere:
        moved = RawResponse(
            status=307, headers=[("Location", f"{elsewhere.origin}/introspect")], framing="length"
        )
        async with raw_server(moved) as idp:
            verified = await Introspection(f"http://mcp:pw@127.0.0.1:{idp.port}/introspect").verify_token(
                "tok"
            )
    assert verified is None
    assert elsewhere.requests == []


async def test_an_expiry_that_is_not_a_number_is_ignored_and_the_answer_kept_a_minute() -> None:
    now = [1000.0]
    async with raw_server(answer({"active": True, "sub": "alice", "exp": "tomorrow"})) as idp:
        verifier = Introspection(f"{idp.origin}/introspect", clock=lambda: now[0])
        first = await verifier.verify_token("tok")
        now[0] += people.INTROSPECTION_CACHE_SECONDS - 1
        again = await verifier.verify_token("tok")
    assert first is not None
    assert first.client_id == "alice"
    assert first.expires_at is None
    assert again == first
    assert len(idp.requests) == 1


async def test_the_cache_of_answers_is_bounded_and_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every distinct token a client makes up is one entry: unbounded, a flood of made-up tokens would
    grow the server's memory without end."""
    monkeypatch.setattr(people, "INTROSPECTION_CACHE_SIZE", 2)
    script = [answer({"active": True, "sub": name}) for name in ("a", "b", "c", "a")]
    async with raw_server(*script) as idp:
        verifier = Introspection(f"{idp.origin}/introspect")
        asked = [await verifier.verify_token(f"tok-{name}") for name in ("a", "b", "c")]
        cached = await verifier.verify_token("tok-c")  # the newest is still cached
        dropped = await verifier.verify_token("tok-a")  # the oldest was dropped: asked again
    assert [a.client_id for a in asked if a is not None] == ["a", "b", "c"]
    assert cached is not None
    assert dropped is not None
    assert [parse_qs(r.body.decode())["token"] for r in idp.requests] == [
        ["tok-a"],
        ["tok-b"],
        ["tok-c"],
        ["tok-a"],
    ]
