"""The schemas every tool publishes, made compact: a model reads `tools/list` on every turn.

pydantic's schemas are written for documentation generators: a `title` on every property (the field
name again, capitalised), optional arguments as `anyOf: [T, {"type": "null"}]` with `default: null`,
and nested models behind `$defs`/`$ref`. `compact_tool` rewrites a registered tool's published schemas
in place, without changing what they accept where it matters:

- input: titles dropped, `$defs` inlined, and an optional `T | None = None` published as `T` alone,
  with no default. Omitting the argument is how a caller says "none"; the server still validates
  against the pydantic model, so an explicit `null` is accepted as before. Every client handles a plain
  `T`; not every client handles a type list. Bounds that guard the server rather than describe a choice
  (string lengths, `minItems: 1`, the edges of a 32/64-bit integer) are not published: no model writes
  a 32,000-character ratio, and the server still enforces them, naming the bound in its one-line error
  (`arguments.invalid_arguments` words it from the full schema, kept by the server).
- output: the same, and descriptions and defaults dropped too (hosts validate results against output
  schemas; they do not show them to the model, which reads the tool's description); a nullable
  field becomes a type list (`["string", "null"]`), because clients validate results against it. The
  shape is published two objects deep — a record and its parts (a job's files, a model entry); an
  object inside those is published as an object (a video model's rules: `list_models` describes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver.tools import Tool

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MACHINE_INTEGER = 2**31 - 1
OUTPUT_DEPTH = 2
"""Objects in an output schema whose properties are published: the result and the objects in it."""
_SUBSCHEMAS = ("items", "not", "additionalProperties")


def compact_tool(tool: Tool) -> None:
    """Publish `tool`'s input and output schemas compactly (see the module docstring)."""
    tool.parameters = compact_input_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_output_schema(tool.fn_metadata.output_schema)


def compact_input_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    return _compact(_inline(schema), output=False)


def compact_output_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    return _shallow(_compact(_inline(schema), output=True), OUTPUT_DEPTH)


def _shallow(node: dict[str, Any], depth: int) -> dict[str, Any]:
    """`node` with the objects nested more than `depth` objects deep published as bare objects."""
    if "properties" in node or "additionalProperties" in node:
        if depth == 0:
            return {
                k: v for k, v in node.items() if k not in ("properties", "required", "additionalProperties")
            }
        depth -= 1
    out = dict(node)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _shallow(sub, depth) for name, sub in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _shallow(out["additionalProperties"], depth)
    if isinstance(out.get("items"), dict):
        out["items"] = _shallow(out["items"], depth)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_shallow(sub, depth) if isinstance(sub, dict) else sub for sub in out[key]]
    return out


def _inline(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with every `$ref` into its `$defs` replaced by the definition (the models here are not
    recursive; a recursive reference is left as it is, with its definition kept)."""
    defs: Mapping[str, Any] = schema.get("$defs", {})
    kept: dict[str, Any] = {}

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen or name not in defs:
                kept[name] = defs.get(name, {})
                return dict(node)
            resolved = walk(defs[name], (*seen, name))
            extra = {k: walk(v, seen) for k, v in node.items() if k not in ("$ref", "$defs")}
            return {**resolved, **extra}
        return {k: walk(v, seen) for k, v in node.items() if k != "$defs"}

    inlined: dict[str, Any] = walk(schema, ())
    if kept:
        inlined["$defs"] = {name: walk(body, (name,)) for name, body in kept.items()}
    return inlined


def _compact(node: dict[str, Any], *, output: bool) -> dict[str, Any]:
    node = _without_null_branch(node, output=output)
    dropped = {"title", "description", "default"} if output else {"title"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in dropped or (not output and _guards_only(key, value)):
            continue
        if key == "additionalProperties" and value is True:
            continue  # what JSON Schema assumes anyway
        if (key == "properties" and isinstance(value, dict)) or (key == "$defs" and isinstance(value, dict)):
            out[key] = {name: _compact(sub, output=output) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_compact(sub, output=output) if isinstance(sub, dict) else sub for sub in value]
        elif key in _SUBSCHEMAS and isinstance(value, dict):
            out[key] = _compact(value, output=output)
        else:
            out[key] = value
    return out


def _guards_only(key: str, value: Any) -> bool:
    """An input bound that guards the server rather than tells a caller what to choose."""
    if key in ("maxLength", "minLength"):
        return key == "maxLength" or value == 1
    if key == "minItems":
        return bool(value == 1)
    if key in ("minimum", "maximum") and isinstance(value, int | float):
        return abs(value) >= _MACHINE_INTEGER
    return False


def _without_null_branch(node: dict[str, Any], *, output: bool) -> dict[str, Any]:
    """`anyOf: [T, null]` → T merged with the node's own keywords (input), or T accepting null too
    (output). Anything else is returned as it is."""
    branches = node.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or {"type": "null"} not in branches:
        return node
    (kept,) = [b for b in branches if b != {"type": "null"}]
    if not isinstance(kept, dict):
        return node
    merged = {**kept, **{k: v for k, v in node.items() if k != "anyOf"}}
    if not output:
        if merged.get("default", 0) is None:
            del merged["default"]
        return merged
    kind = kept.get("type")
    if "$ref" in kept or not kind:
        return node if "$ref" in kept else merged  # untyped (any value): null is already allowed
    merged["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged
