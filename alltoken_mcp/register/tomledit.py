"""Codex's config.toml: one `[mcp_servers.NAME]` table (with its sub-tables) added, replaced or cut out.

Python reads TOML (tomllib) but cannot write it, and a parse-and-dump round trip would lose the user's
comments, ordering and layout. So only whole lines change: the lines of NAME's tables are found by
scanning the text (table headers outside strings and multi-line values), then replaced by freshly
rendered ones, cut out, or a new block is appended; every other byte stays. The result is parsed again
and must equal the original document with exactly that change. A server written in another form (an
inline table, dotted keys) fails that check and is refused, never half-edited.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal

from alltoken_mcp.register.configfile import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, packaged for 3.10
    import tomli as tomllib

SERVERS = "mcp_servers"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

LineKind = Literal["header", "content", "comment", "empty"]


def load(text: str, where: str) -> dict[str, Any]:
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid TOML ({exc}); fix it or move it aside (nothing changed)"
        ) from None
    return document


def lookup(document: dict[str, Any], name: str, where: str) -> Any:
    servers = document.get(SERVERS, {})
    if not isinstance(servers, dict):
        raise ConfigError(f"{where}: {SERVERS} is not a table; fix it by hand (nothing changed)")
    return servers.get(name)


def with_table(text: str, name: str, table: dict[str, Any], where: str) -> str:
    """`text` with `[mcp_servers.NAME]` (and a sub-table for each dict value in `table`) set to `table`."""
    document = load(text, where)
    lookup(document, name, where)
    expected = copy.deepcopy(document)
    expected.setdefault(SERVERS, {})[name] = table
    newline = "\r\n" if "\r\n" in text else "\n"
    rendered = render(name, table, newline)
    lines = _scan(text)
    blocks = _blocks(lines, name)
    if not blocks:
        return _verified(_append(text, rendered, newline), expected, where)
    first, *others = blocks
    edits = [(lines[first[0]].start, lines[first[1]].end, rendered)]
    edits += [(*_removal(lines, block), "") for block in others]
    return _verified(_apply(text, edits), expected, where)


def without_table(text: str, name: str, where: str) -> str:
    """`text` without NAME's tables (unchanged when there are none)."""
    document = load(text, where)
    if lookup(document, name, where) is None:
        return text
    expected = copy.deepcopy(document)
    del expected[SERVERS][name]
    lines = _scan(text)
    edits = [(*_removal(lines, block), "") for block in _blocks(lines, name)]
    return _verified(_apply(text, edits), expected, where)


def render(name: str, table: dict[str, Any], newline: str = "\n") -> str:
    head = (SERVERS, name)
    out = [f"[{_dotted(head)}]"]
    out += [f"{_key(key)} = {_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
    for key, sub in table.items():
        if isinstance(sub, dict):
            out += ["", f"[{_dotted((*head, key))}]"]
            out += [f"{_key(k)} = {_value(v)}" for k, v in sub.items()]
    return newline.join(out) + newline


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _dotted(keys: tuple[str, ...]) -> str:
    return ".".join(_key(key) for key in keys)


def _string(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _normalised(document: dict[str, Any]) -> dict[str, Any]:
    # A file whose only servers were ours has no `mcp_servers` table left once they are gone.
    return {k: v for k, v in document.items() if not (k == SERVERS and v == {})}


def _verified(new_text: str, expected: dict[str, Any], where: str) -> str:
    try:
        result: dict[str, Any] | None = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        result = None
    if result is None or _normalised(result) != _normalised(expected):
        raise ConfigError(
            f"could not change {where} without touching its other content (is the server written as an "
            "inline table or with dotted keys?); edit it by hand (nothing changed)"
        )
    return new_text


def _append(text: str, rendered: str, newline: str) -> str:
    if not text.strip():
        return rendered
    if not text.endswith("\n"):
        text += newline
    if not text.endswith(newline * 2):
        text += newline
    return text + rendered


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


@dataclass(frozen=True)
class _Line:
    start: int
    end: int
    kind: LineKind
    header: tuple[str, ...] | None = None


def _blocks(lines: list[_Line], name: str) -> list[tuple[int, int]]:
    """(header line, last line with content) of each table whose header starts `mcp_servers.NAME`."""
    blocks = []
    for index, line in enumerate(lines):
        if line.kind != "header" or line.header is None or line.header[:2] != (SERVERS, name):
            continue
        last = index
        for later in range(index + 1, len(lines)):
            if lines[later].kind == "header":
                break
            if lines[later].kind == "content":
                last = later
        blocks.append((index, last))
    return blocks


def _removal(lines: list[_Line], block: tuple[int, int]) -> tuple[int, int]:
    """The span to cut for a block: its lines, and the empty line that separated it from what precedes."""
    first, last = block
    start = lines[first].start
    if first > 0 and lines[first - 1].kind == "empty":
        start = lines[first - 1].start
    return start, lines[last].end


def _scan(text: str) -> list[_Line]:
    """Classify every line; header lines only count outside multi-line strings, arrays and inline tables."""
    lines: list[_Line] = []
    open_string: str | None = None
    depth = 0
    position = 0
    while position < len(text):
        newline = text.find("\n", position)
        end = len(text) if newline < 0 else newline + 1
        line = text[position:end]
        continued = open_string is not None or depth > 0
        if not continued and line.lstrip(" \t").startswith("["):
            lines.append(_Line(position, end, "header", _header(line)))
        else:
            open_string, depth, code = _scan_line(line, open_string, depth)
            kind: LineKind = "content" if continued or code else ("comment" if line.strip() else "empty")
            lines.append(_Line(position, end, kind))
        position = end
    return lines


def _scan_line(line: str, open_string: str | None, depth: int) -> tuple[str | None, int, bool]:
    """Follow strings and brackets through one line: (open multi-line string, bracket depth, has code)."""
    i, size, code = 0, len(line), False
    while i < size:
        if open_string is not None:
            i, open_string = _close_multiline(line, i, open_string)
            continue
        char = line[i]
        if char == "#":
            break
        if not char.isspace():
            code = True
        if line.startswith('"""', i) or line.startswith("'''", i):
            open_string, i = line[i : i + 3], i + 3
        elif char == '"':
            i = _end_of_basic(line, i + 1)
        elif char == "'":
            close = line.find("'", i + 1)
            i = size if close < 0 else close + 1
        else:
            depth += char in "[{"
            depth -= char in "]}"
            i += 1
    return open_string, depth, code


def _close_multiline(line: str, i: int, delimiter: str) -> tuple[int, str | None]:
    size = len(line)
    while i < size:
        if delimiter == '"""' and line[i] == "\\":
            i += 2
            continue
        if line.startswith(delimiter, i):
            i += 3
            # Up to two more quotes right before the delimiter belong to the string's content.
            while i < size and line[i] == delimiter[0]:
                i += 1
            return i, None
        i += 1
    return size, delimiter


def _end_of_basic(line: str, i: int) -> int:
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == '"':
            return i + 1
        else:
            i += 1
    return len(line)


def _header(line: str) -> tuple[str, ...] | None:
    """The dotted key of a `[table]` or `[[array]]` header line; None if it cannot be read."""
    text = line.strip()
    brackets = 2 if text.startswith("[[") else 1
    i, keys = brackets, []
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        key, i = _key_part(text, i)
        if key is None:
            return None
        keys.append(key)
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        break
    rest = text[i:]
    if not rest.startswith("]" * brackets):
        return None
    rest = rest[brackets:].strip()
    return tuple(keys) if not rest or rest.startswith("#") else None


def _key_part(text: str, i: int) -> tuple[str | None, int]:
    if i >= len(text):
        return None, i
    if text[i] == '"':
        end = _end_of_basic(text, i + 1)
        try:
            return json.loads(text[i:end]), end
        except ValueError:
            return None, end
    if text[i] == "'":
        end = text.find("'", i + 1)
        return (None, i) if end < 0 else (text[i + 1 : end], end + 1)
    bare = _BARE_KEY.match(text, i)
    return (None, i) if bare is None else (bare.group(0), bare.end())
