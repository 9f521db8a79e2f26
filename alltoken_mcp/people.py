"""Who is calling: bearer tokens that name a person, checked through the SDK's token verifier.

Three sources, all `TokenVerifier`s (the SDK's `BearerAuthBackend` calls them; the person then reaches
tool handlers as the SDK's auth context, `get_access_token()`):

- `ALLTOKEN_MCP_TOKEN`: one shared token, one person (`SINGLE_PERSON`).
- `ALLTOKEN_MCP_TOKENS_FILE`: a file of `name:sha256hex` lines, one per person (`#` starts a comment),
  each optionally followed by `budget=USD`, that person's own daily budget (else ALLTOKEN_DAILY_BUDGET_USD).
  The file holds only hashes, so reading it does not reveal a token; `alltoken-mcp token NAME` makes a
  token and its line. It is re-read when its modification time or size changes, looked at no more than
  once a second, on the request that finds it due (no thread): adding or removing a person takes effect
  without a restart. A file that has become unreadable or malformed keeps the last good list (and says
  why on stderr) rather than locking everyone out or letting anyone in.
- `ALLTOKEN_MCP_INTROSPECTION_URL`: a team's identity provider's OAuth token introspection endpoint
  (`Introspection`, RFC 7662): the `sub` it answers is the person.

Every comparison is of SHA-256 digests with `hmac.compare_digest`, against every entry, so the time a
refusal takes says nothing about how close a guess was or which names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from alltoken_mcp.settings import TOKENS_FILE_VAR, SettingsError, parse_budget

logger = logging.getLogger(__name__)

SINGLE_PERSON = "*"
"""The client every caller is under the one shared `ALLTOKEN_MCP_TOKEN` (not a valid person name). Its
calls carry no person: like stdio, the one user sees and owns everything ("everyone local")."""
PERSON_CLAIM = "alltoken_person"
BUDGET_CLAIM = "alltoken_daily_budget_usd"
RELOAD_INTERVAL_SECONDS = 1.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_LINE = re.compile(r"(?P<name>[^:\s]+)\s*:\s*(?P<digest>[0-9a-fA-F]{64})(?:\s+budget=(?P<budget>\S*))?")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_person_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SettingsError(
            f"person name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit"
        )
    return name


def new_token_line(name: str) -> tuple[str, str]:
    """A fresh random token for `name` and the tokens-file line that admits it."""
    token = secrets.token_urlsafe(32)
    return token, f"{check_person_name(name)}:{token_digest(token).hex()}"


def _current_claim(name: str) -> str | None:
    """A text claim of the current MCP request's access token; None without a token or the claim."""
    access = get_access_token()
    value = (access.claims or {}).get(name) if access is not None else None
    return value if isinstance(value, str) else None


def current_person() -> str | None:
    """The person the current MCP request was made by (a tokens-file name); None when no person is
    known — stdio, HTTP without tokens, or the one shared `ALLTOKEN_MCP_TOKEN` — and then everything
    belongs to "everyone local"."""
    return _current_claim(PERSON_CLAIM)


def current_budget() -> Decimal | None:
    """The current caller's own daily budget (`budget=` on their tokens-file line); None: the server's
    ALLTOKEN_DAILY_BUDGET_USD applies."""
    budget = _current_claim(BUDGET_CLAIM)
    return None if budget is None else Decimal(budget)


@dataclass(frozen=True)
class Person:
    """A tokens-file line: the SHA-256 of the person's token, and their own daily budget if it names one."""

    digest: bytes
    daily_budget_usd: Decimal | None = None


def _access(token: str, person: str | None, budget: Decimal | None = None) -> AccessToken:
    # client_id and subject also key the SDK's session ownership: a session opened with one person's
    # token refuses another's.
    client = person or SINGLE_PERSON
    claims: dict[str, str] | None = None
    if person is not None:
        claims = {PERSON_CLAIM: person}
        if budget is not None:
            claims[BUDGET_CLAIM] = str(budget)
    return AccessToken(token=token, client_id=client, scopes=[], subject=client, claims=claims)


@dataclass(frozen=True)
class SingleToken:
    """`ALLTOKEN_MCP_TOKEN`: whoever has it is `SINGLE_PERSON`."""

    token: str

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token_digest(token.strip()), token_digest(self.token)):
            return _access(token, None)
        return None


def parse_tokens(text: str, source: str) -> dict[str, Person]:
    """name → their token's digest and budget, from the file's text; a SettingsError names the first bad
    line."""
    people: dict[str, Person] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise SettingsError(
                f"{source} line {number}: expected name:sha256hex (64 hex digits), optionally followed by "
                "budget=USD; `alltoken-mcp token NAME` prints a line to add"
            )
        name = check_person_name(match["name"])
        if name in people:
            raise SettingsError(f"{source} line {number}: {name!r} is listed twice")
        budget = match["budget"]
        people[name] = Person(
            bytes.fromhex(match["digest"]),
            None if budget is None else parse_budget(budget, f"{source} line {number}: budget"),
        )
    return people


class TokensFile:
    """`ALLTOKEN_MCP_TOKENS_FILE`: name → token hash, re-read when it changes (see the module doc)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp, self._people = self._read()
        self._checked_at = clock()

    def _read(self) -> tuple[tuple[int, int], dict[str, Person]]:
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SettingsError(f"{TOKENS_FILE_VAR}={str(self.path)!r}: cannot read it ({reason})") from None
        return (stat.st_mtime_ns, stat.st_size), parse_tokens(text, f"{TOKENS_FILE_VAR} {self.path}")

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < RELOAD_INTERVAL_SECONDS:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            logger.warning("tokens file %s: %s; keeping the last good list", self.path, exc.strerror)
            return
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        try:
            self._stamp, self._people = self._read()
        except SettingsError as exc:
            logger.warning("%s; keeping the last good list", exc)
            return
        logger.info("tokens file %s reloaded: %d people", self.path, len(self._people))

    @property
    def people(self) -> list[str]:
        self._refresh()
        return sorted(self._people)

    async def verify_token(self, token: str) -> AccessToken | None:
        self._refresh()
        digest = token_digest(token.strip())
        found: str | None = None
        for name, person in self._people.items():  # every entry, whatever matched: constant time
            if hmac.compare_digest(digest, person.digest):
                found = name
        if found is None:
            return None
        return _access(token, found, self._people[found].daily_budget_usd)


INTROSPECTION_TIMEOUT_SECONDS = 5.0
INTROSPECTION_CACHE_SECONDS = 60.0
"""How long an answer about a token is reused (never past the token's own `exp`). A revoked token keeps
working for at most this long; the identity provider is asked at most once a minute per token."""
INTROSPECTION_CACHE_SIZE = 1024
MAX_INTROSPECTION_BODY = 64 * 1024


class Introspection:
    """`ALLTOKEN_MCP_INTROSPECTION_URL`: OAuth 2.1 bearer tokens checked with the identity provider's
    token introspection endpoint (RFC 7662). The token is POSTed as a form (`token=…`), with HTTP Basic
    credentials when the URL carries `user:password@`; an `active` answer names the person by `sub`
    (else `username`). Each call is bounded (5 s, 64 KiB); an endpoint that fails, is slow or answers
    nonsense lets nobody in (and is logged). Answers, active or not, are reused for up to a minute,
    keyed by the token's SHA-256, in a bounded cache."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        self._where = host + (f":{parts.port}" if parts.port else "")
        self._url = urlunsplit(parts._replace(netloc=self._where))
        self._auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        self._clock = clock
        self._cache: dict[bytes, tuple[float, str | None, int | None]] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        key = token_digest(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is None or cached[0] <= now:
            person, expires = await self._ask(token)
            until = now + INTROSPECTION_CACHE_SECONDS
            if expires is not None:
                until = min(until, expires)
            if len(self._cache) >= INTROSPECTION_CACHE_SIZE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= INTROSPECTION_CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
            cached = self._cache[key] = (until, person, expires)
        _, person, expires = cached
        if person is None or (expires is not None and expires <= now):
            return None
        access = _access(token, person)
        return access.model_copy(update={"expires_at": expires})

    async def _ask(self, token: str) -> tuple[str | None, int | None]:
        """(person, exp) when the endpoint says the token is active; (None, None) otherwise."""
        import httpx2

        try:
            with anyio.fail_after(INTROSPECTION_TIMEOUT_SECONDS):
                answer = await self._post(httpx2, token)
        except TimeoutError:
            logger.warning(
                "token introspection at %s: no answer within %g s; the request is refused",
                self._where,
                INTROSPECTION_TIMEOUT_SECONDS,
            )
            return None, None
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("token introspection at %s failed: %s; the request is refused", self._where, exc)
            return None, None
        if answer.get("active") is not True:
            return None, None
        person = answer.get("sub") or answer.get("username")
        expires = answer.get("exp")
        if not isinstance(person, str) or not person:
            logger.warning("token introspection at %s: an active token without sub or username", self._where)
            return None, None
        return person, expires if isinstance(expires, int) else None

    async def _post(self, httpx2: Any, token: str) -> dict[str, Any]:
        # A client per question: answers are cached, so this is rare, and nothing outlives the call.
        async with (
            httpx2.AsyncClient(auth=self._auth, follow_redirects=False) as http,
            http.stream(
                "POST",
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Accept": "application/json"},
            ) as response,
        ):
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_INTROSPECTION_BODY:
                    raise ValueError(f"answer over {MAX_INTROSPECTION_BODY} bytes")
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
        answer = json.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
        return answer
