"""Mutation testing of the guards: does every check have a test that fails when the check is broken?

    python benchmarks/mutation.py settings|store|arguments [--keep]

Runs mutmut (the `dev` extra) over one target — its modules, against only the test files that exercise
them, so a run stays within minutes on two cores — in a scratch copy of the project, and prints how many
mutants were killed and which survived (with their diffs). The working tree is never modified. Survivors
are read by hand: an equivalent mutant (same behaviour) or a changed log or message text may survive; a
removed or loosened guard may not — it needs a test.

Tests that drive the installed `alltoken-mcp` script in a subprocess run the unmutated package, so they
cannot kill mutants; the in-process tests of each target are what count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "settings": (["alltoken_mcp/settings.py"], ["tests/test_settings.py", "tests/test_keys.py"]),
    "store": (
        ["alltoken_mcp/store/sqlite.py", "alltoken_mcp/store/records.py"],
        ["tests/test_store.py", "tests/test_store_guards.py", "tests/test_store_failures.py"],
    ),
    "arguments": (
        ["alltoken_mcp/tools/arguments.py", "alltoken_mcp/tools/media_args.py"],
        ["tests/test_argument_errors.py", "tests/test_media_args.py", "tests/test_media_arg_guards.py"],
    ),
}
"""Target → (modules mutated, test files run against them)."""


def mutmut_config(modules: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["alltoken_mcp"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # -x: a mutant is killed by its first failing test; -p no:cacheprovider: no .pytest_cache writes.
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
    )


def scratch_copy(into: Path, modules: list[str], tests: list[str]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(ROOT / "alltoken_mcp", into / "alltoken_mcp", ignore=ignore)
    shutil.copytree(ROOT / "tests", into / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    (into / "pyproject.toml").write_text(pyproject + mutmut_config(modules, tests))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (and print it)")
    args = parser.parse_args()
    modules, tests = TARGETS[args.target]
    scratch = Path(tempfile.mkdtemp(prefix=f"alltoken-mutation-{args.target}-"))
    try:
        scratch_copy(scratch, modules, tests)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        mutmut = [sys.executable, "-m", "mutmut"]
        subprocess.run([*mutmut, "run", "--max-children", "1"], cwd=scratch, env=env, check=False)
        listing = subprocess.run(
            [*mutmut, "results", "--all", "true"], cwd=scratch, env=env, capture_output=True, text=True
        ).stdout
        statuses: dict[str, list[str]] = {}
        for line in listing.splitlines():
            found = re.fullmatch(r"\s*(\S+): (.+)", line)
            if found:
                statuses.setdefault(found.group(2), []).append(found.group(1))
        print(f"\n{args.target}: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items())))
        for name in statuses.get("survived", []):
            shown = subprocess.run(
                [*mutmut, "show", name], cwd=scratch, env=env, capture_output=True, text=True
            )
            print(shown.stdout or f"# {name}: survived (mutmut show failed: {shown.stderr.strip()[-300:]})")
    finally:
        if args.keep:
            print(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
