"""The README is part of the product: its Quickstart must be the two commands CI runs, and its tool
reference must name every tool and every argument the server really exposes, with the numeric ranges its
schemas publish."""

from __future__ import annotations

import re
from pathlib import Path

from tests.serverkit import connect, settings_for

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```(?:sh|bash|shell)\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the Quickstart needs a fenced shell block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_one_line_commands_demo_then_tests() -> None:
    demo, suite = quickstart_commands()
    assert demo.endswith("alltoken-mcp demo")
    assert "pytest" in suite
    assert "pip install" in demo
    assert "pip install" in suite


def test_readme_opens_with_the_quickstart_before_any_other_section() -> None:
    headings = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    assert headings[0] == "## Quickstart"


async def test_every_tool_and_argument_is_documented(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    reference = text.split("## Tools", 1)[1].split("## Configuration", 1)[0]
    async with connect(settings_for(tmp_path)) as client:
        tools = (await client.list_tools()).tools
    assert len(tools) == 8
    for tool in tools:
        assert f"`{tool.name}`" in reference, f"{tool.name} is missing from the README"
        for argument in tool.input_schema.get("properties", {}):
            assert f"`{argument}`" in reference, f"{tool.name}({argument}) is missing from the README"


def _documented(reference: str, tool: str, argument: str) -> str:
    """The README text for one argument: its row in the tool's own table, or its parenthesis in the
    tool's row of a shared table."""
    shared = re.search(rf"^\| `{tool}` \|.*$", reference, re.MULTILINE)
    if shared is not None:
        found = re.search(rf"`{argument}` \(([^)]*)\)", shared.group(0))
        assert found is not None, f"{tool}({argument}) has no (type, default; limits) in its row"
        return found.group(1)
    section = reference.split(f"### `{tool}`", 1)[1].split("\n### ", 1)[0]
    row = re.search(rf"^\| `{argument}` \|.*$", section, re.MULTILINE)
    assert row is not None, f"{tool}({argument}) has no row in its table"
    return row.group(0)


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


async def test_every_numeric_range_in_the_tool_reference_is_the_one_the_schema_publishes(
    tmp_path: Path,
) -> None:
    reference = README.read_text(encoding="utf-8").split("## Tools", 1)[1].split("## Configuration", 1)[0]
    async with connect(settings_for(tmp_path)) as client:
        tools = (await client.list_tools()).tools
    checked = 0
    for tool in tools:
        for argument, spec in tool.input_schema.get("properties", {}).items():
            number = next(
                (b for b in spec.get("anyOf", [spec]) if b.get("type") in ("integer", "number")), {}
            )
            if "minimum" not in number or "maximum" not in number:
                continue
            low, high = _plain(number["minimum"]), _plain(number["maximum"])
            if argument == "wait_seconds":  # the configured cap, not a number the README could repeat
                expected = [f"{low}–`ALLTOKEN_MAX_WAIT_SECONDS`"]
            else:
                expected = [f"{low:,}–{high:,}", f"{low:,} to {high:,}"]
            text = _documented(reference, tool.name, argument)
            assert any(e in text for e in expected), f"{tool.name}({argument}): README says {text!r}"
            checked += 1
    assert checked >= 9


def test_every_setting_is_in_the_configuration_table(tmp_path: Path) -> None:
    from alltoken_mcp.settings import load_settings

    read: list[str] = []

    class Recorder(dict[str, str]):
        def get(self, key: str, default: object = None) -> str | None:  # type: ignore[override]
            read.append(key)
            return super().get(key)

    load_settings(env=Recorder(ALLTOKEN_MCP_HOME=str(tmp_path)))
    table = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert read, "load_settings read nothing?"
    for name in set(read):
        if name.startswith("ALLTOKEN_"):
            assert f"`{name}`" in table, f"{name} is missing from the configuration table"
