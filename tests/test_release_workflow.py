"""The release workflow publishes only a tag that names the package version, through trusted publishing.

`.github/scripts/check_release_tag.py` is the gate the workflow runs first; it is run here as the
workflow runs it, on this checkout and on a copy whose registry entry lags behind. The workflow file
itself cannot run here (it needs GitHub), so its load-bearing lines are checked as text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from alltoken_mcp import __version__

ROOT = Path(__file__).resolve().parent.parent
CHECK = Path(".github/scripts/check_release_tag.py")
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def check_tag(tag: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / CHECK), tag], capture_output=True, text=True, timeout=30, cwd=root
    )


def test_a_tag_naming_the_package_version_passes_the_release_gate() -> None:
    result = check_tag(f"v{__version__}")
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


def test_a_tag_naming_another_version_is_refused_in_one_line() -> None:
    for tag in ("v99.0.0", __version__, f"v{__version__}rc1"):
        result = check_tag(tag)
        assert result.returncode == 1, tag
        [line] = result.stderr.splitlines()
        assert f"v{__version__}" in line, line
        assert repr(tag) in line, line


def test_a_server_json_that_lags_behind_the_package_is_refused(tmp_path: Path) -> None:
    for relative in (CHECK, Path("alltoken_mcp/__init__.py"), Path("manifests/server.json")):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    registry = json.loads((tmp_path / "manifests/server.json").read_text())
    registry["packages"][0]["version"] = "0.0.1"
    (tmp_path / "manifests/server.json").write_text(json.dumps(registry))
    result = check_tag(f"v{__version__}", root=tmp_path)
    assert result.returncode == 1
    assert "manifests/server.json packages[0].version is 0.0.1" in result.stderr


def test_the_release_workflow_gates_on_the_tag_and_publishes_with_trusted_publishing() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert 'tags: ["v*"]' in text
    gate = text.index(f'python {CHECK.as_posix()} "$GITHUB_REF_NAME"')
    assert gate < text.index("python -m build") < text.index("twine check --strict")
    publish = text[text.index("  publish:") :]
    assert "needs: [build, smoke]" in publish
    assert "name: pypi" in publish
    assert "id-token: write" in publish
    assert "uses: pypa/gh-action-pypi-publish@release/v1" in publish
    # Only the publishing job may mint the OIDC token PyPI trusts.
    assert text.count("id-token: write") == 1
    assert "password:" not in text
