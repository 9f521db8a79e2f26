"""One member of a JSON config inserted, replaced or cut out in place; every other byte stays as it was.

Host configs are often written by hand, and a parse-and-dump round trip would reflow every other server.
So the file is parsed once to check it, then only the text of the one member changes, indented like its
neighbours. The result is parsed again and must equal the original document with exactly that change;
anything else is refused rather than written.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alltoken_mcp.register.configfile import ConfigError

Keys = tuple[str, ...]
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()
_DEFAULT_UNIT = "  "


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def load(text: str, where: str) -> dict[str, Any]:
    """The document in `text` (an empty file is an empty document); a one-line refusal otherwise."""
    if not text.strip(_WHITESPACE):
        return {}
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{where} has the key {json.dumps(exc.key)} twice in one object; fix it by hand (nothing changed)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix it or move it aside (nothing changed)"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to edit safely (nothing changed)") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where} does not hold a JSON object; fix it or move it aside (nothing changed)")
    return document


def lookup(document: dict[str, Any], keys: Keys, name: str, where: str) -> Any:
    """The member `name` of the object at `keys`, or None when it (or the object) does not exist."""
    container = _container(document, keys, where, create=False)
    return None if container is None else container.get(name)


def with_member(text: str, keys: Keys, name: str, value: Any, where: str) -> str:
    """`text` with member `name` of the object at `keys` set to `value` (objects on the way are created)."""
    document = load(text, where)
    expected = copy.deepcopy(document)
    container = _container(expected, keys, where, create=True)
    assert container is not None
    container[name] = value
    if not document:  # nothing to keep: an empty file, or just `{}`
        return json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    return _verified(_set(text, (*keys, name), value), expected, where)


def without_member(text: str, keys: Keys, name: str, where: str) -> str:
    """`text` without member `name` of the object at `keys` (unchanged when there is none)."""
    document = load(text, where)
    expected = copy.deepcopy(document)
    container = _container(expected, keys, where, create=False)
    if container is None or name not in container:
        return text
    del container[name]
    obj = _root(text)
    for key in keys:
        member = obj.find(key)
        assert member is not None
        obj = _object_at(text, member.value_start)
    return _verified(_remove(text, obj, obj.index(name)), expected, where)


def _container(document: dict[str, Any], keys: Keys, where: str, *, create: bool) -> dict[str, Any] | None:
    current = document
    for key in keys:
        inner = current.get(key)
        if inner is None and create:
            inner = current[key] = {}
        if inner is None:
            return None
        if not isinstance(inner, dict):
            raise ConfigError(
                f"{where}: {json.dumps(key)} is not a JSON object; fix it by hand (nothing changed)"
            )
        current = inner
    return current


def _verified(new_text: str, expected: dict[str, Any], where: str) -> str:
    try:
        result = json.loads(new_text)
    except json.JSONDecodeError:
        result = None
    if result != expected:
        raise ConfigError(
            f"could not change {where} without touching its other content; edit it by hand (nothing changed)"
        )
    return new_text


@dataclass(frozen=True)
class _Member:
    key: str
    key_start: int
    value_start: int
    value_end: int


@dataclass(frozen=True)
class _Object:
    open: int
    close: int
    members: list[_Member]

    def find(self, key: str) -> _Member | None:
        return next((member for member in self.members if member.key == key), None)

    def index(self, key: str) -> int:
        return next(i for i, member in enumerate(self.members) if member.key == key)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _root(text: str) -> _Object:
    return _object_at(text, _skip(text, 0))


def _object_at(text: str, start: int) -> _Object:
    """The members of the object whose `{` is at `start` (the text is already known to be valid JSON)."""
    assert text[start] == "{"
    members: list[_Member] = []
    i = _skip(text, start + 1)
    while text[i] != "}":
        key_start = i
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, _skip(text, i) + 1)  # past the colon
        _, value_end = _DECODER.raw_decode(text, i)
        members.append(_Member(key, key_start, i, value_end))
        i = _skip(text, value_end)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return _Object(start, i, members)


@dataclass(frozen=True)
class _Style:
    """How to write new text so that it looks like the text around it."""

    compact: bool
    newline: str
    unit: str

    def dump(self, value: Any, indent: str) -> str:
        if self.compact:
            return json.dumps(value, ensure_ascii=False)
        return json.dumps(value, indent=self.unit, ensure_ascii=False).replace("\n", self.newline + indent)


def _style(text: str, obj: _Object) -> _Style:
    span = text[obj.open : obj.close + 1]
    compact = "\n" not in span if obj.members else "\n" not in text.strip(_WHITESPACE)
    unit = re.search(r"\n([ \t]+)\S", text)
    return _Style(compact, "\r\n" if "\r\n" in text else "\n", unit.group(1) if unit else _DEFAULT_UNIT)


def _line_indent(text: str, position: int) -> str:
    line_start = text.rfind("\n", 0, position) + 1
    match = re.match(r"[ \t]*", text[line_start:position])
    assert match is not None
    return match.group(0)


def _set(text: str, keys: Keys, value: Any) -> str:
    obj = _root(text)
    for depth, key in enumerate(keys):
        member = obj.find(key)
        if member is None:
            nested = value
            for inner in reversed(keys[depth + 1 :]):
                nested = {inner: nested}
            return _insert(text, obj, key, nested)
        if depth == len(keys) - 1:
            style = _style(text, obj)
            new_value = style.dump(value, _line_indent(text, member.key_start))
            return text[: member.value_start] + new_value + text[member.value_end :]
        obj = _object_at(text, member.value_start)
    raise AssertionError("unreachable: keys is never empty")


def _insert(text: str, obj: _Object, key: str, value: Any) -> str:
    style = _style(text, obj)
    close_indent = _line_indent(text, obj.open)
    if obj.members:
        first = obj.members[0]
        on_own_line = not text[text.rfind("\n", 0, first.key_start) + 1 : first.key_start].strip()
        indent = _line_indent(text, first.key_start) if on_own_line else close_indent + style.unit
    else:
        indent = close_indent + style.unit
    member = f"{json.dumps(key, ensure_ascii=False)}: {style.dump(value, indent)}"
    if obj.members:
        end = obj.members[-1].value_end
        separator = ", " if style.compact else f",{style.newline}{indent}"
        return text[:end] + separator + member + text[end:]
    inner = member if style.compact else f"{style.newline}{indent}{member}{style.newline}{close_indent}"
    return text[: obj.open + 1] + inner + text[obj.close :]


def _remove(text: str, obj: _Object, index: int) -> str:
    members = obj.members
    if len(members) == 1:
        return text[: obj.open + 1] + text[obj.close :]
    if index < len(members) - 1:
        return text[: members[index].key_start] + text[members[index + 1].key_start :]
    return text[: members[index - 1].value_end] + text[members[index].value_end :]
