"""Keeping the server's secrets out of everything it emits or stores.

An upstream error message may quote the API key back (a proxy echoing the request, a gateway bug), and a
caller may paste it into a prompt. `Redactor` replaces each configured secret — `ALLTOKEN_API_KEY` and
`ALLTOKEN_MCP_TOKEN` — and its encoded forms with `[redacted]`. It is applied at three choke points
rather than at every call site: the MCP output middleware (every result and protocol error),
a logging filter on the CLI's handlers, and the store's free-text columns.

A secret shorter than `MIN_SECRET_LENGTH` is not redacted: replacing a 4-character token everywhere
would mangle ordinary text (and a secret that short is guessable anyway); `skipped` names it so the
server can warn at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from alltoken_mcp.settings import API_KEY_VAR, MCP_TOKEN_VAR, Settings

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in text we may see: as is, URL-encoded (query strings, form bodies) and
    JSON-escaped (an upstream body quoted inside a message). `Bearer <key>` contains the key itself."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), json.dumps(secret)[1:-1]}


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in strings (`redact`) and in JSON-like values (`scrub`). Immutable and cheap:
    strings without a secret cost one substring search per variant and are returned unchanged."""

    needles: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    """Names of the secrets left out for being shorter than MIN_SECRET_LENGTH."""

    @classmethod
    def for_secrets(cls, secrets: Iterable[tuple[str, str | None]]) -> Redactor:
        """From (name, value) pairs; unset values are ignored, short ones are recorded in `skipped`."""
        needles: set[str] = set()
        skipped: list[str] = []
        for name, value in secrets:
            if not value:
                continue
            if len(value) < MIN_SECRET_LENGTH:
                skipped.append(name)
                continue
            needles |= _variants(value)
        # Longest first, so a variant that contains another is replaced whole.
        return cls(tuple(sorted(needles, key=lambda n: (-len(n), n))), tuple(skipped))

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls.for_secrets([(API_KEY_VAR, settings.api_key), (MCP_TOKEN_VAR, settings.mcp_token)])

    def redact(self, text: str) -> str:
        for needle in self.needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    def scrub(self, value: Any, *, keep: frozenset[str] = frozenset()) -> Any:
        """`value` with every string (keys included) redacted, recursing into dicts and lists. Values
        under a key in `keep` are left alone (base64 blobs: not text, and large)."""
        if not self.needles:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {
                self.redact(k) if isinstance(k, str) else k: v if k in keep else self.scrub(v, keep=keep)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.scrub(item, keep=keep) for item in value]
        return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, exception and stack text with the secrets redacted.

    Attached to handlers (not loggers), so it sees records from every logger that reaches them, the
    SDK's and httpx2's included. The record is changed in place: every handler after this one writes
    the redacted text too.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self._redactor.redact
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is formatted (and cleaned) once.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor, loggers: Iterable[logging.Logger] = ()) -> None:
    """Add a `RedactingFilter` to every handler of the root logger and of `loggers` (those that do not
    propagate, such as uvicorn's). Adding it twice to a handler is a no-op."""
    if not redactor.needles:
        return
    log_filter = RedactingFilter(redactor)
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(log_filter)
