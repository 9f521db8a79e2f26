"""The import contracts in pyproject.toml (`[tool.importlinter]`) hold for the package, and `lint-imports` —
the step .ci/run runs — fails when one of them is broken: each case copies the package, adds one import
that breaks one contract, and expects that contract to be reported broken and the run to exit non-zero."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="import-linter 2.17 needs Python 3.11; the 3.11 run checks this"
)


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, not the installed package
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def copy_of_package(into: Path) -> Path:
    shutil.copytree(
        ROOT / "alltoken_mcp", into / "alltoken_mcp", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def test_the_package_keeps_every_import_contract(tmp_path: Path) -> None:
    result = lint(copy_of_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "added", "broken"),
    [
        (
            "simulator/catalog.py",
            "from alltoken_mcp import store",
            "The simulator imports nothing of the product BROKEN",
        ),
        (
            "server.py",
            "import alltoken_mcp.simulator",
            "the --simulate start-up import the simulator BROKEN",
        ),
        (
            "tools/catalog.py",
            "import alltoken_mcp.demo",  # the demo runs a simulator: reached through it
            "Only the command line imports the commands that start a simulator BROKEN",
        ),
        (
            "catalog/service.py",
            "import alltoken_mcp.tools.error_text",
            "The state and domain layers import nothing of the MCP layer BROKEN",
        ),
        (
            "tools/media.py",
            "from alltoken_mcp import server",  # the server<->tools cycle
            "Layers: server, tools, app state, jobs and catalog, their parts, the basics BROKEN",
        ),
    ],
    ids=[
        "simulator imports the store",
        "server imports the simulator",
        "a tool imports the demo",
        "catalog imports tools",
        "tools import the server",
    ],
)
def test_lint_imports_fails_when_a_contract_is_broken(
    tmp_path: Path, module: str, added: str, broken: str
) -> None:
    tree = copy_of_package(tmp_path)
    path = tree / "alltoken_mcp" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{added}\n", encoding="utf-8")
    result = lint(tree)
    assert result.returncode != 0
    assert broken in " ".join(result.stdout.split()), result.stdout
