"""Refuse a release whose tag is not `v` + the package version, or whose registry entry lags behind.

    python .github/scripts/check_release_tag.py v0.1.0     # the release workflow passes $GITHUB_REF_NAME

The package version is read where the build reads it (`__version__` in alltoken_mcp/__init__.py, see
[tool.hatch.version]); manifests/server.json must carry the same version twice (the server and its PyPI
package), because the MCP Registry entry is published for exactly this release. Prints one line per
problem and exits 1; prints the version and exits 0 when everything agrees. Imports nothing from the
package, so it runs before anything is installed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def package_version() -> str:
    text = (ROOT / "alltoken_mcp" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise SystemExit('check_release_tag: no __version__ = "..." line in alltoken_mcp/__init__.py')
    return match.group(1)


def problems(tag: str) -> list[str]:
    version = package_version()
    found: list[str] = []
    if tag != f"v{version}":
        found.append(f"tag {tag!r} does not match the package version {version}: tag v{version}, or bump it")
    registry = json.loads((ROOT / "manifests" / "server.json").read_text(encoding="utf-8"))
    for where, value in (
        ("version", registry["version"]),
        ("packages[0].version", registry["packages"][0]["version"]),
    ):
        if value != version:
            found.append(f"manifests/server.json {where} is {value}, not the package version {version}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_release_tag.py TAG   (e.g. v0.1.0)", file=sys.stderr)
        return 2
    found = problems(argv[1])
    for problem in found:
        print(f"release refused: {problem}", file=sys.stderr)
    if not found:
        print(f"release {argv[1]}: tag, package and server.json agree on {package_version()}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
