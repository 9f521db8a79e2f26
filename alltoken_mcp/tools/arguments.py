"""Tool arguments as this server accepts them, and the one line a caller gets when its arguments do not fit.

The SDK builds each tool's argument model and input schema from the tool function's signature
(`Tool.from_function`), and that model ignores keys it does not know: a misspelt `length` or `model_id`
would be dropped and the call made — and paid — at the defaults. `make_strict` rebuilds the model with
unknown keys forbidden, so the published schema says `additionalProperties: false` and the server itself
refuses them for clients that ignore schemas. It also publishes the server's wait cap as the `maximum` of
`wait_seconds`: a longer wait is accepted and cut to the cap (the answer says so), so the model keeps no
bound of its own there.

`invalid_arguments` replaces pydantic's multi-line dump (input values, error types, a documentation URL
per error) with one line per problem, worded from the published schema: "temperature must be between 0
and 2 (got 3)", "length is not an argument (did you mean duration?)".
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mcp.server.mcpserver.tools import Tool
from pydantic import ConfigDict, ValidationError
from pydantic_core import ErrorDetails

WAIT_ARGUMENT = "wait_seconds"
"""Every tool's wait argument: bounded by the call budget, ALLTOKEN_MAX_WAIT_SECONDS."""

MAX_ARGUMENT_PROBLEMS = 5
MAX_SHOWN_CHARS = 40
"""How much of a rejected string value is quoted back: enough to recognise it, never a page."""

# Names other APIs use for what these tools call something else; difflib cannot see the likeness.
_SYNONYMS = {
    "length": "duration",
    "seconds": "duration",
    "aspect": "ratio",
    "count": "n",
    "num_images": "n",
    "number": "n",
    "timeout": WAIT_ARGUMENT,
    "wait": WAIT_ARGUMENT,
}


# ------------------------------------------------------------------------------- the strict model


def make_strict(tool: Tool, *, max_wait_seconds: float) -> None:
    """Forbid unknown arguments in `tool` (validation and published schema alike) and publish the wait cap.

    `FuncMetadata` reads its argument model live, so swapping it here changes what the next call accepts.
    The strict model's validator is built by its first call rather than here, and its schema is the loose
    one with `additionalProperties: false`, which is all `extra="forbid"` changes: start-up pays for
    neither a second validator nor a second schema per tool.
    """
    loose = tool.fn_metadata.arg_model

    class StrictArguments(loose):  # type: ignore[valid-type,misc]  # a class built at runtime
        model_config = ConfigDict(extra="forbid", title=loose.__name__, defer_build=True)

    tool.fn_metadata.arg_model = StrictArguments
    tool.parameters = with_wait_cap(forbid_extra(tool.parameters), max_wait_seconds)


def forbid_extra(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` (an object's, keys sorted as pydantic sorts them) refusing properties it does not list."""
    return dict(sorted({**schema, "additionalProperties": False}.items()))


def with_wait_cap(schema: dict[str, Any], max_wait_seconds: float) -> dict[str, Any]:
    """`schema` with the server's wait cap as the `maximum` of its wait argument, if it has one."""
    wait = schema.get("properties", {}).get(WAIT_ARGUMENT)
    if wait is not None:
        for branch in wait.get("anyOf", [wait]):
            if branch.get("type") in ("number", "integer"):
                branch["maximum"] = max_wait_seconds
    return schema


# ------------------------------------------------------------------------------- the message


def invalid_arguments(tool: str, schema: Mapping[str, Any], exc: ValidationError) -> str:
    """One line: each argument that does not fit `schema` (the tool's published input schema) and what it
    must be, the closest valid name for an unknown one, and the valid names. Values are quoted short."""
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    shown = errors[:MAX_ARGUMENT_PROBLEMS]
    problems = [_problem(schema, error) for error in shown]
    if len(errors) > MAX_ARGUMENT_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_ARGUMENT_PROBLEMS} more")
    text = f"Invalid arguments for {tool}: {'; '.join(problems)}."
    parents = dict.fromkeys(tuple(e["loc"][:-1]) for e in shown if e["type"] == "extra_forbidden")
    for parent in parents:
        names = ", ".join(_field_names(schema, parent)) or "none"
        text += f" Valid arguments: {names}." if not parent else f" Fields of {_location(parent)}: {names}."
    return text + " Nothing was sent; fix them and retry."


def _problem(schema: Mapping[str, Any], error: ErrorDetails) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    where = _location(loc)
    spec = _schema_at(schema, loc) or {}
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        name = str(loc[-1])
        what = "an argument" if len(loc) == 1 else "a field here"
        closest = closest_name(name, _field_names(schema, loc[:-1]))
        return f"{where} is not {what}" + (f" (did you mean {closest}?)" if closest else "")
    if kind == "string_unicode":
        return f"{where} is not valid Unicode text (it contains a lone surrogate)"
    if kind == "string_too_short" and value == "":
        return f"{where} must not be empty"
    if kind in ("string_too_short", "string_too_long") and isinstance(value, str):
        return f"{where} must be {_limits(spec, 'minLength', 'maxLength')} characters (got {len(value):,})"
    if kind in ("too_short", "too_long") and isinstance(value, Sequence | Mapping):
        return f"{where} must have {_limits(spec, 'minItems', 'maxItems')} items (got {len(value):,})"
    if kind == "literal_error" or kind == "enum":
        choices = ", ".join(str(choice) for choice in spec.get("enum", ())) or error.get("ctx", {}).get(
            "expected", "one of the listed values"
        )
        return f"{where} must be one of {choices} (got {shown_value(value)})"
    expected = _expected(kind, spec, value)
    if expected is not None:
        return f"{where} must be {expected} (got {shown_value(value)})"
    return f"{where}: {' '.join(str(error['msg']).split())}"


_NUMBER_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "finite_number",
    "multiple_of",
    "int_type",
    "int_parsing",
    "int_parsing_size",
    "int_from_float",
    "float_type",
    "float_parsing",
}
_TYPE_NAMES = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _expected(kind: str, spec: Mapping[str, Any], value: Any) -> str | None:
    """What the argument must be, for type and bound errors: "between 0 and 2", "a whole number …"."""
    if kind in _TYPE_NAMES:
        return _TYPE_NAMES[kind]
    if kind not in _NUMBER_ERRORS:
        return None
    bounds = _bounds(spec)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and _finite(value):
        return bounds or "in range"
    noun = "a whole number" if spec.get("type") == "integer" or kind.startswith("int") else "a number"
    if kind == "finite_number" or not _finite(value):
        noun = "a finite number"
    return f"{noun} {bounds}".strip()


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _bounds(spec: Mapping[str, Any]) -> str:
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"at least {_number(low)}")
    if spec.get("exclusiveMinimum") is not None:
        parts.append(f"more than {_number(spec['exclusiveMinimum'])}")
    if high is not None:
        parts.append(f"at most {_number(high)}")
    if spec.get("exclusiveMaximum") is not None:
        parts.append(f"less than {_number(spec['exclusiveMaximum'])}")
    return " and ".join(parts)


def _limits(spec: Mapping[str, Any], low_key: str, high_key: str) -> str:
    low, high = spec.get(low_key), spec.get(high_key)
    if low and high is not None:
        return f"{low:,}–{high:,}"
    if high is not None:
        return f"at most {high:,}"
    return f"at least {low or 0:,}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def shown_value(value: Any) -> str:
    """A rejected value as the caller can recognise it, on one short line: strings quoted, escaped and cut,
    containers described, never dumped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else "a number too large to show"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) <= MAX_SHOWN_CHARS:
            return repr(value)
        return f"{value[:MAX_SHOWN_CHARS]!r}… ({len(value):,} characters)"
    if isinstance(value, list | tuple):
        return f"a list of {len(value):,} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _location(loc: Sequence[int | str]) -> str:
    """`messages.0.role`; a caller-chosen key is shortened and escaped so the line stays one line."""
    parts = [part if isinstance(part, int) else _name(part) for part in loc]
    return ".".join(str(part) for part in parts) or "arguments"


def _name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", name):
        return name
    return shown_value(name)


# ------------------------------------------------------------------------------- names


def closest_name(name: str, valid: Sequence[str]) -> str | None:
    """The valid argument a caller most likely meant by `name`: the same name spelt differently
    (`Prompt`, `wait-seconds`), a near miss (`modle`), a valid name inside it (`model_id`,
    `aspect_ratio`), or another API's word for it (`length`)."""
    if not valid:
        return None
    squashed = {_squash(v): v for v in valid}
    key = _squash(name)
    if key in squashed:
        return squashed[key]
    near = difflib.get_close_matches(key, list(squashed), n=1, cutoff=0.6)
    if near:
        return squashed[near[0]]
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())
    inside = [v for v in valid if v in words]
    if inside:
        return max(inside, key=len)
    synonym = _SYNONYMS.get("_".join(w for w in words if w))
    return synonym if synonym in valid else None


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _field_names(schema: Mapping[str, Any], loc: Sequence[int | str]) -> list[str]:
    node = _schema_at(schema, loc) if loc else schema
    return list((node or {}).get("properties", {}))


def _schema_at(schema: Mapping[str, Any], loc: Sequence[int | str]) -> Mapping[str, Any] | None:
    """The published schema of the value at `loc` (`$ref`s followed, the null branch of an optional
    dropped), or None where the schema says nothing (free-form objects)."""
    defs = schema.get("$defs", {})
    node: Mapping[str, Any] | None = schema
    for part in loc:
        node = _resolve(node, defs)
        if node is None:
            return None
        node = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
    return _resolve(node, defs)


def _resolve(node: Mapping[str, Any] | None, defs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if node is None:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _resolve(defs.get(ref.rsplit("/", 1)[-1]), defs)
    branches = [b for b in node.get("anyOf", ()) if b.get("type") != "null"]
    if len(branches) == 1:
        return _resolve(branches[0], defs)
    return node
