"""The pieces under `register`: the in-place JSON and TOML editors keep every byte they do not own and
refuse what they cannot edit safely, and launch detection registers the install that is running."""

from __future__ import annotations

import difflib
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alltoken_mcp.register import jsonedit, tomledit
from alltoken_mcp.register.configfile import ConfigError, read_config, restore, write_config
from alltoken_mcp.register.launch import Source, current_launch, detect_launch, source_from_direct_url

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

OURS = {
    "type": "stdio",
    "command": "/opt/venv/bin/alltoken-mcp",
    "args": [],
    "env": {"ALLTOKEN_API_KEY": "k"},
}
SERVERS = ("mcpServers",)


def only_inserted(before: str, after: str) -> bool:
    """`after` is `before` with text inserted, and not a character of `before` changed or lost."""
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    return all(tag in ("equal", "insert") for tag, *_ in matcher.get_opcodes())


# --- JSON ---------------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    others=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k != "alltoken"), json_values, min_size=1
    ),
    top=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "mcpServers"), json_values, max_size=3),
    indent=st.sampled_from([None, 2, 4, "\t"]),
)
def test_adding_then_removing_our_json_entry_gives_back_the_original_bytes(
    others: dict[str, Any], top: dict[str, Any], indent: int | str | None
) -> None:
    original = json.dumps({**top, "mcpServers": others}, indent=indent, ensure_ascii=False) + "\n"
    added = jsonedit.with_member(original, SERVERS, "alltoken", OURS, "f")
    assert json.loads(added) == {**top, "mcpServers": {**others, "alltoken": OURS}}
    assert only_inserted(original, added)
    assert jsonedit.without_member(added, SERVERS, "alltoken", "f") == original


def test_a_new_json_entry_is_indented_like_its_neighbours() -> None:
    original = '{\n    "mcpServers": {\n        "other": {"command": "x", "args": ["-y", "z"]}\n    }\n}\n'
    added = jsonedit.with_member(original, SERVERS, "alltoken", {"command": "c", "args": []}, "f")
    assert added == (
        '{\n    "mcpServers": {\n        "other": {"command": "x", "args": ["-y", "z"]},\n'
        '        "alltoken": {\n            "command": "c",\n            "args": []\n        }\n    }\n}\n'
    )


def test_a_compact_json_file_stays_on_one_line_and_crlf_stays_crlf() -> None:
    compact = '{"mcpServers":{"other":{"command":"x"}}}'
    assert "\n" not in jsonedit.with_member(compact, SERVERS, "alltoken", OURS, "f")
    crlf = '{\r\n  "mcpServers": {\r\n    "other": {}\r\n  }\r\n}\r\n'
    added = jsonedit.with_member(crlf, SERVERS, "alltoken", OURS, "f")
    assert "\n" not in added.replace("\r\n", "")


def test_missing_json_containers_are_created_along_the_path() -> None:
    original = '{\n  "numStartups": 3\n}\n'
    keys = ("projects", "/repo", "mcpServers")
    added = jsonedit.with_member(original, keys, "alltoken", OURS, "f")
    assert json.loads(added) == {"numStartups": 3, "projects": {"/repo": {"mcpServers": {"alltoken": OURS}}}}
    assert added.startswith('{\n  "numStartups": 3,\n  "projects": {\n    "/repo": {')


def test_replacing_a_json_entry_touches_only_its_value() -> None:
    original = '{"mcpServers": {"a": 1, "alltoken": {"command": "old"}, "b": [1,2]}, "z": true}'
    replaced = jsonedit.with_member(original, SERVERS, "alltoken", {"command": "new"}, "f")
    assert replaced == '{"mcpServers": {"a": 1, "alltoken": {"command": "new"}, "b": [1,2]}, "z": true}'
    removed = jsonedit.without_member(original, SERVERS, "alltoken", "f")
    assert removed == '{"mcpServers": {"a": 1, "b": [1,2]}, "z": true}'
    assert jsonedit.without_member(removed, SERVERS, "a", "f") == '{"mcpServers": {"b": [1,2]}, "z": true}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"mcpServers": {', "is not valid JSON (line 1"),
        ('{"mcpServers": {}, "mcpServers": {}}', 'has the key "mcpServers" twice'),
        ('{"mcpServers": []}', '"mcpServers" is not a JSON object'),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"a": 1} // comment', "is not valid JSON"),
    ],
)
def test_json_the_editor_cannot_keep_intact_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="nothing changed") as refused:
        jsonedit.with_member(text, SERVERS, "alltoken", OURS, "cfg.json")
    assert expected in str(refused.value)
    assert str(refused.value).startswith("cfg.json")


# --- TOML ---------------------------------------------------------------------------------------------

CODEX = {
    "command": "/opt/venv/bin/alltoken-mcp",
    "args": ["--log-level", "INFO"],
    "startup_timeout_sec": 20,
    "tool_timeout_sec": 120,
    "env": {"ALLTOKEN_API_KEY": 'k"\\\n', "ALLTOKEN_MAX_WAIT_SECONDS": "45"},
}

ROOT_FRAGMENTS = [
    '# a comment\nmodel = "o3"   # trailing\n',
    'notes = """\n[mcp_servers.alltoken]\ncommand = "not a table: inside a string"\n"""\n',
    "literal = '''\n[[fake]]\n'''\n",
    "matrix = [\n  [1, 2],\n[3, 4],\n]\n",
]
TABLE_FRAGMENTS = [
    '[mcp_servers.other]\ncommand = "npx"\nargs = ["-y", "other"]\n# a note about other\n',
    '[profiles.fast]\nmodel = "gpt-5"\ninline = { a = "]", b = [1] }\n',
    '[[hooks]]\nrun = "echo \\"[x]\\""\n',
    '[mcp_servers."quoted name"]\ncommand = "q"\n\n[mcp_servers."quoted name".env]\nA = "1"\n',
    "# about the next table\n[[hooks]]\nrun = 'x'\n",
]


def _some(fragments: list[str]) -> st.SearchStrategy[list[str]]:
    return st.permutations(fragments).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: list(p[:n])))


@settings(max_examples=150, deadline=None)
@given(_some(ROOT_FRAGMENTS), _some(TABLE_FRAGMENTS))
def test_adding_then_removing_our_codex_table_gives_back_the_original_bytes(
    root: list[str], tables: list[str]
) -> None:
    original = "\n".join(root + tables)  # keys of the root table come before any table, as TOML requires
    before = tomllib.loads(original)
    added = tomledit.with_table(original, "alltoken", CODEX, "config.toml")
    assert added.startswith(original)
    after = tomllib.loads(added)
    assert after["mcp_servers"]["alltoken"] == CODEX
    del after["mcp_servers"]["alltoken"]
    assert {k: v for k, v in after.items() if v != {}} == {k: v for k, v in before.items() if v != {}}
    assert tomledit.without_table(added, "alltoken", "config.toml") == original


def test_an_existing_codex_table_is_replaced_where_it_stands_with_its_comments() -> None:
    head = '# mine\n[mcp_servers.first]\ncommand = "a"\n\n# says what alltoken is\n'
    ours = (
        '[mcp_servers.alltoken]\ncommand = "uvx"\nmatrix = [\n  [1, 2],\n]\n'
        "# why the timeout\ntool_timeout_sec = 120\n\n"
        '[mcp_servers.alltoken.env]\nALLTOKEN_API_KEY = "paste-your-alltoken-key-here"\n'
    )
    tail = '# before profiles\n[profiles.x]\nmodel = "m"\n'
    original = head + ours + "\n" + tail
    replaced = tomledit.with_table(original, "alltoken", CODEX, "config.toml")
    assert replaced == head + tomledit.render("alltoken", CODEX) + "\n" + tail
    assert tomledit.without_table(replaced, "alltoken", "config.toml") == head + "\n" + tail


def test_a_quoted_codex_header_is_recognised_as_ours() -> None:
    original = '[mcp_servers."alltoken"]\ncommand = "old"\n'
    assert tomledit.with_table(original, "alltoken", CODEX, "c") == tomledit.render("alltoken", CODEX)


def test_crlf_codex_files_get_crlf_lines() -> None:
    original = 'model = "o3"\r\n'
    added = tomledit.with_table(original, "alltoken", CODEX, "c")
    assert added.startswith(original + "\r\n[mcp_servers.alltoken]\r\n")
    assert "\n" not in added.replace("\r\n", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model = "o3', "is not valid TOML"),
        ("mcp_servers = 3", "mcp_servers is not a table"),
        ('mcp_servers.alltoken.command = "x"', "inline table or with dotted keys"),
        ('[mcp_servers]\nalltoken = { command = "x" }', "inline table or with dotted keys"),
        ('mcp_servers = { other = { command = "x" } }', "inline table or with dotted keys"),
    ],
)
def test_toml_the_editor_cannot_keep_intact_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="nothing changed") as refused:
        tomledit.with_table(text, "alltoken", CODEX, "config.toml")
    assert expected in str(refused.value)


def test_a_splice_that_would_change_anything_else_is_refused_not_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parse-again check is the last guard against a bug in the splicing itself."""
    monkeypatch.setattr(jsonedit, "_set", lambda text, keys, value: text.replace('"x"', '"y"'))
    with pytest.raises(ConfigError, match="without touching its other content"):
        jsonedit.with_member('{"mcpServers": {}, "a": "x"}', SERVERS, "alltoken", OURS, "f")
    monkeypatch.setattr(tomledit, "_append", lambda text, rendered, newline: text + "b = 2\n" + rendered)
    with pytest.raises(ConfigError, match="without touching its other content"):
        tomledit.with_table("a = 1\n", "alltoken", CODEX, "f")


# --- config files -------------------------------------------------------------------------------------


def test_a_config_changed_after_it_was_read_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text("{}")
    config = read_config(path)
    path.write_text('{"written": "by the running host"}')
    with pytest.raises(ConfigError, match="changed while it was being edited"):
        write_config(config, '{"mcpServers": {}}')
    assert path.read_text() == '{"written": "by the running host"}'
    assert list(tmp_path.iterdir()) == [path]


def test_a_replaced_config_keeps_its_mode_and_its_old_bytes_in_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("old = 1\n")
    path.chmod(0o640)
    backup = write_config(read_config(path), "new = 2\n")
    assert path.read_text() == "new = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert backup is not None
    assert backup.read_text() == "old = 1\n"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    second = write_config(read_config(path), "newer = 3\n")  # same second: a second backup, not an overwrite
    assert second is not None
    assert second != backup
    assert second.read_text() == "new = 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.toml", backup.name, second.name])


def test_a_new_config_is_private_and_restore_removes_it_again(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "mcp.json"
    config = read_config(path)
    assert write_config(config, "{}") is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restore(config)
    assert not path.exists()


# --- launch -------------------------------------------------------------------------------------------


def _no_uvx(_: str) -> str | None:
    return None


def _venv(root: Path, *, script: bool) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    if script:
        (bin_dir / "alltoken-mcp").touch()
    return bin_dir / "python"


def test_an_install_with_its_own_script_registers_that_script_by_absolute_path(tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", script=True)
    launch = detect_launch(
        executable=str(python),
        prefix=str(tmp_path / "venv"),
        source=Source("url", "/src"),
        env={},
        which=_no_uvx,
    )
    assert (launch.command, launch.args, launch.warning) == (str(python.parent / "alltoken-mcp"), (), None)


def test_an_install_without_the_script_registers_python_dash_m(tmp_path: Path) -> None:
    python = _venv(tmp_path / "lib", script=False)
    launch = detect_launch(
        executable=str(python), prefix=str(tmp_path / "lib"), source=Source("index"), env={}, which=_no_uvx
    )
    assert (launch.command, launch.args) == (str(python), ("-m", "alltoken_mcp"))


def test_running_under_uvx_registers_uvx_with_the_same_source(tmp_path: Path) -> None:
    cached = tmp_path / ".cache" / "uv" / "archive-v0" / "Xy12"
    python = _venv(cached, script=True)
    uv_dir = tmp_path / "uvbin"
    uv_dir.mkdir()
    (uv_dir / "uv").touch()
    (uv_dir / "uvx").touch()
    source = Source("url", "git+https://example.org/alltoken-mcp@v0.1.0")
    launch = detect_launch(
        executable=str(python),
        prefix=str(cached),
        source=source,
        env={"UV": str(uv_dir / "uv")},
        which=_no_uvx,
    )
    assert launch.command == str(uv_dir / "uvx")
    assert launch.args == ("--from", "git+https://example.org/alltoken-mcp@v0.1.0", "alltoken-mcp")
    assert launch.warning is None
    from_index = detect_launch(
        executable=str(python),
        prefix=str(cached),
        source=Source("index"),
        env={},
        which=lambda _: "/usr/bin/uvx",
    )
    assert (from_index.command, from_index.args) == ("/usr/bin/uvx", ("alltoken-mcp",))


def test_under_uvx_without_uvx_on_path_the_cached_script_is_registered_with_a_warning(tmp_path: Path) -> None:
    cached = tmp_path / "cache" / "uv" / "archive-v0" / "Xy12"
    python = _venv(cached, script=True)
    launch = detect_launch(
        executable=str(python), prefix=str(cached), source=Source("index"), env={}, which=_no_uvx
    )
    assert launch.command == str(cached / "bin" / "alltoken-mcp")
    assert launch.warning is not None
    assert "uv's cache" in launch.warning
    assert "uv tool install" in launch.warning


def test_a_uv_tool_install_is_not_mistaken_for_uvx(tmp_path: Path) -> None:
    tool = tmp_path / ".local" / "share" / "uv" / "tools" / "alltoken-mcp"
    python = _venv(tool, script=True)
    launch = detect_launch(
        executable=str(python),
        prefix=str(tool),
        source=Source("url", "/src"),
        env={},
        which=lambda _: "/x/uvx",
    )
    assert (launch.command, launch.warning) == (str(tool / "bin" / "alltoken-mcp"), None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Source("index")),
        (
            '{"url": "https://github.com/o/r.git", "vcs_info": {"vcs": "git", "commit_id": "ab12", '
            '"requested_revision": "main"}}',
            Source("url", "git+https://github.com/o/r.git@main"),
        ),
        (
            '{"url": "https://github.com/o/r", "vcs_info": {"vcs": "git", "commit_id": "ab"}}',
            Source("url", "git+https://github.com/o/r"),
        ),
        (
            '{"url": "file:///home/me/alltoken-mcp", "dir_info": {"editable": true}}',
            Source("url", "/home/me/alltoken-mcp"),
        ),
        (
            '{"url": "https://x.org/a-0.1.0.tar.gz", "archive_info": {}}',
            Source("url", "https://x.org/a-0.1.0.tar.gz"),
        ),
        ("not json", Source("unknown")),
        ('{"no": "url"}', Source("unknown")),
    ],
)
def test_the_install_source_is_read_from_pep_610_metadata(raw: str | None, expected: Source) -> None:
    assert source_from_direct_url(raw) == expected


def test_this_test_environment_registers_its_own_script() -> None:
    launch = current_launch()
    assert launch.command == str(Path(sys.executable).parent / "alltoken-mcp")
    assert launch.args == ()
