"""Who is calling: bearer tokens that name a person, checked through the SDK's token verifier.

Two sources, both `TokenVerifier`s (the SDK's `BearerAuthBackend` calls them; the person then reaches
tool handlers as the SDK's auth context, `get_access_token()`):

- `ALLTOKEN_MCP_TOKEN`: one shared token, one person (`SINGLE_PERSON`).
- `ALLTOKEN_MCP_TOKENS_FILE`: a file of `name:sha256hex` lines, one per person (`#` starts a comment).
  The file holds only hashes, so reading it does not reveal a token; `alltoken-mcp token NAME` makes a
  token and its line. It is re-read when its modification time or size changes, looked at no more than
  once a second, on the request that finds it due (no thread): adding or removing a person takes effect
  without a restart. A file that has become unreadable or malformed keeps the last good list (and says
  why on stderr) rather than locking everyone out or letting anyone in.

Every comparison is of SHA-256 digests with `hmac.compare_digest`, against every entry, so the time a
refusal takes says nothing about how close a guess was or which names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from alltoken_mcp.settings import TOKENS_FILE_VAR, SettingsError

logger = logging.getLogger(__name__)

SINGLE_PERSON = "*"
"""The client every caller is under the one shared `ALLTOKEN_MCP_TOKEN` (not a valid person name). Its
calls carry no person: like stdio, the one user sees and owns everything ("everyone local")."""
PERSON_CLAIM = "alltoken_person"
RELOAD_INTERVAL_SECONDS = 1.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_LINE = re.compile(r"(?P<name>[^:\s]+)\s*:\s*(?P<digest>[0-9a-fA-F]{64})")


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


def current_person() -> str | None:
    """The person the current MCP request was made by (a tokens-file name); None when no person is
    known — stdio, HTTP without tokens, or the one shared `ALLTOKEN_MCP_TOKEN` — and then everything
    belongs to "everyone local"."""
    access = get_access_token()
    person = (access.claims or {}).get(PERSON_CLAIM) if access is not None else None
    return person if isinstance(person, str) else None


def _access(token: str, person: str | None) -> AccessToken:
    # client_id and subject also key the SDK's session ownership: a session opened with one person's
    # token refuses another's.
    client = person or SINGLE_PERSON
    claims = {PERSON_CLAIM: person} if person is not None else None
    return AccessToken(token=token, client_id=client, scopes=[], subject=client, claims=claims)


@dataclass(frozen=True)
class SingleToken:
    """`ALLTOKEN_MCP_TOKEN`: whoever has it is `SINGLE_PERSON`."""

    token: str

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token_digest(token.strip()), token_digest(self.token)):
            return _access(token, None)
        return None


def parse_tokens(text: str, source: str) -> dict[str, bytes]:
    """name → SHA-256 digest from the file's text; a SettingsError names the first bad line."""
    people: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise SettingsError(
                f"{source} line {number}: expected name:sha256hex (64 hex digits); "
                "`alltoken-mcp token NAME` prints a line to add"
            )
        name = check_person_name(match["name"])
        if name in people:
            raise SettingsError(f"{source} line {number}: {name!r} is listed twice")
        people[name] = bytes.fromhex(match["digest"])
    return people


class TokensFile:
    """`ALLTOKEN_MCP_TOKENS_FILE`: name → token hash, re-read when it changes (see the module doc)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp, self._people = self._read()
        self._checked_at = clock()

    def _read(self) -> tuple[tuple[int, int], dict[str, bytes]]:
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
        for name, expected in self._people.items():  # every entry, whatever matched: constant time
            if hmac.compare_digest(digest, expected):
                found = name
        return _access(token, found) if found is not None else None
