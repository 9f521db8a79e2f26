"""The release files are what a user installs, so they are built and installed here as a release does.

`python -m build` makes the sdist and then the wheel *from the sdist* (so the sdist is proven to build);
both must pass `twine check --strict`; the sdist must hold the sources, tests and docs and nothing of a
working tree; the wheel, installed into a fresh virtualenv by a real `pip install` (its dependencies from
the package index), must run `alltoken-mcp --version` and the end-to-end demo from a directory far from
this source tree, with a clean HOME and no PYTHONPATH.

This is the suite's slow module (about 30 s: an isolated build, a new venv, the install, the demo). It is
part of every normal run: an install that breaks is the first thing a new user meets.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from alltoken_mcp import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if os.name == "nt" else "bin"
MCP_NAME = "io.github.alltoken-ai/alltoken-mcp"
WORKING_TREE_ONLY = (".git", ".venv*", "__pycache__", ".*_cache", ".hypothesis", "dist", "build")


@dataclass(frozen=True)
class Release:
    sdist: Path
    wheel: Path


def clean_env(home: Path) -> dict[str, str]:
    """This environment without anything that could lead a child back to the source tree or to a key."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "VIRTUAL_ENV", "PYTHONUSERBASE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("ALLTOKEN_")}
    env["HOME"] = str(home)
    env.pop("XDG_DATA_HOME", None)
    return env


def run(
    argv: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


STRAYS = {
    ".env": "ALLTOKEN_API_KEY=sk-never-ship-this\n",
    "scratch-notes.txt": "half-finished thoughts\n",
    "alltoken-demo-output/demo.png": "not really a png\n",
    ".venv/pyvenv.cfg": "home = /usr/bin\n",
    ".venv/lib/site.py": "",
    "alltoken_mcp/__pycache__/cli.cpython-311.pyc": "",
}
"""What a working tree holds besides the sources: a secrets file, notes, demo output, a venv, bytecode."""


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Builds from a copy of this checkout with `STRAYS` planted in it, as a release would from a real one."""
    source = tmp_path_factory.mktemp("checkout") / "alltoken-mcp"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*WORKING_TREE_ONLY))
    for name, text in STRAYS.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    out = tmp_path_factory.mktemp("dist")
    home = tmp_path_factory.mktemp("build-home")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], timeout=300, env=clean_env(home))
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return Release(sdist=sdist, wheel=wheel)


def sdist_names(release: Release) -> set[PurePosixPath]:
    with tarfile.open(release.sdist) as archive:
        members = [PurePosixPath(m.name) for m in archive.getmembers() if m.isfile()]
    top = {name.parts[0] for name in members}
    assert top == {f"alltoken_mcp-{__version__}"}, top
    return {PurePosixPath(*name.parts[1:]) for name in members}


def source_files(*folders: str) -> set[PurePosixPath]:
    return {
        PurePosixPath(path.relative_to(ROOT).as_posix())
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_sdist_and_the_wheel_pass_twine_check_strict(release: Release) -> None:
    output = run(
        [sys.executable, "-m", "twine", "check", "--strict", str(release.sdist), str(release.wheel)],
        timeout=120,
    )
    assert output.count("PASSED") == 2, output


def test_the_sdist_holds_sources_tests_and_docs_and_nothing_of_the_working_tree(release: Release) -> None:
    names = sdist_names(release)
    wanted = source_files("alltoken_mcp", "tests", "docs", "manifests", "benchmarks", ".github") | {
        PurePosixPath(name) for name in ("README.md", "LICENSE", "pyproject.toml", "PKG-INFO")
    }
    assert wanted <= names, sorted(map(str, wanted - names))
    planted = {PurePosixPath(name) for name in STRAYS}
    assert names & planted == set()
    assert not any(name.parts[0] == ".venv" or name.suffix == ".pyc" for name in names)


def test_the_wheel_holds_the_package_its_command_and_the_metadata_registries_read(release: Release) -> None:
    assert release.wheel.name == f"alltoken_mcp-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(release.wheel) as archive:
        names = {PurePosixPath(name) for name in archive.namelist()}
        info = f"alltoken_mcp-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    package = {name for name in source_files("alltoken_mcp") if name.suffix == ".py"}
    assert package <= names, sorted(map(str, package - names))
    assert not any(name.parts[0] in {"tests", "benchmarks", "docs"} for name in names)
    assert PurePosixPath(f"{info}/licenses/LICENSE") in names
    assert re.search(r"^alltoken-mcp = alltoken_mcp\.cli:main$", entry_points, re.MULTILINE), entry_points
    headers = email.message_from_string(metadata)
    assert headers["Name"] == "alltoken-mcp"
    assert headers["Version"] == __version__
    assert headers["Requires-Python"] == ">=3.10"
    assert headers["License-Expression"] == "MIT"
    assert headers["Description-Content-Type"] == "text/markdown"
    # The MCP Registry proves ownership of the PyPI package by this line in its description.
    assert f"mcp-name: {MCP_NAME}" in metadata


def test_the_wheel_installed_into_a_fresh_venv_runs_its_version_and_the_demo(
    release: Release, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path / "home")
    run([sys.executable, "-m", "venv", str(venv)], timeout=120, env=env)
    python, command = venv / BIN / "python", venv / BIN / "alltoken-mcp"
    run([str(python), "-m", "pip", "install", "-q", str(release.wheel)], timeout=600, env=env, cwd=elsewhere)

    imported = run(
        [str(python), "-c", "import alltoken_mcp; print(alltoken_mcp.__file__)"],
        timeout=60,
        env=env,
        cwd=elsewhere,
    ).strip()
    assert Path(imported).is_relative_to(venv), f"imported from {imported}, not from the installed wheel"
    assert run([str(command), "--version"], timeout=60, env=env, cwd=elsewhere).strip() == (
        f"alltoken-mcp {__version__}"
    )

    output_dir = elsewhere / "demo-output"
    transcript = run(
        [str(command), "demo", "--output-dir", str(output_dir)], timeout=180, env=env, cwd=elsewhere
    )
    # The demo's server subprocess is the venv's interpreter, importing the installed package.
    assert f"server     {python} -m alltoken_mcp" in transcript, transcript
    assert "every step worked" in transcript, transcript
    saved = sorted(path.suffix for path in output_dir.iterdir())
    assert ".mp4" in saved, saved
    assert ".png" in saved, saved
