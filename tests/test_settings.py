"""Every configuration variable's bad values: a one-line `SettingsError` naming the variable, and through
the installed `alltoken-mcp` entry point (a real subprocess) exit status 2 with that one line on stderr,
nothing on stdout and no traceback. The boundaries that are accepted are checked beside the ones that
are refused, so that a guard moved by one step fails here too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alltoken_mcp.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_CHAT_MODEL,
    DEFAULT_IMAGE_MODEL,
    DEFAULT_MAX_WAIT_SECONDS,
    DEFAULT_VIDEO_MODEL,
    KEY_NOT_SET,
    MAX_ALLOWED_WAIT_SECONDS,
    Settings,
    SettingsError,
    default_home,
    key_fingerprint,
    key_problem,
    load_settings,
    missing_v1_hint,
    shown_url,
)

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")
MODEL_VARS = ("ALLTOKEN_DEFAULT_CHAT_MODEL", "ALLTOKEN_DEFAULT_IMAGE_MODEL", "ALLTOKEN_DEFAULT_VIDEO_MODEL")


def settings(tmp_path: Path, **env: str) -> Settings:
    """Settings from exactly these variables, with a state directory under `tmp_path` unless given."""
    return load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path / "home"), **env})


def refusal(tmp_path: Path, **env: str) -> str:
    with pytest.raises(SettingsError) as caught:
        settings(tmp_path, **env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def a_file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return str(path)


# ------------------------------------------------------------------------------------------ base URL


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("api.alltoken.ai/v1", "is not an http(s) URL; expected e.g. https://api.alltoken.ai/v1"),
        ("ftp://api.alltoken.ai/v1", "is not an http(s) URL"),
        ("https://", "is not an http(s) URL"),
        ("https:///v1", "is not an http(s) URL"),
        ("https://:443/v1", "names no host"),
        ("https://api.alltoken.ai/v1?key=sk-1", "must not carry a query or fragment"),
        ("https://api.alltoken.ai/v1?", "must not carry a query or fragment"),
        ("https://api.alltoken.ai/v1#models", "must not carry a query or fragment"),
        ("https://api.alltoken.ai:99999/v1", "has an invalid port"),
        ("https://api.alltoken.ai:port/v1", "has an invalid port"),
        ("https://api.alltoken.ai:0/v1", "has an invalid port"),
        ("https://api.all token.ai/v1", "contains whitespace or control characters"),
        ("https://api.alltoken.ai/v1\x00", "contains whitespace or control characters"),
    ],
)
def test_a_base_url_that_cannot_be_used_is_refused_naming_the_variable(
    tmp_path: Path, value: str, says: str
) -> None:
    message = refusal(tmp_path, ALLTOKEN_BASE_URL=value)
    assert message.startswith("ALLTOKEN_BASE_URL=")
    assert says in message


@pytest.mark.parametrize(
    ("value", "used"),
    [
        ("http://127.0.0.1:8787/v1", "http://127.0.0.1:8787/v1"),
        ("  https://api.alltoken.ai/v1/  ", "https://api.alltoken.ai/v1"),
        ("HTTPS://api.alltoken.ai/v1", "HTTPS://api.alltoken.ai/v1"),
        ("https://[::1]:8443/v1", "https://[::1]:8443/v1"),
        ("   ", DEFAULT_BASE_URL),  # blank is unset
    ],
)
def test_a_usable_base_url_is_kept_without_its_trailing_slash(tmp_path: Path, value: str, used: str) -> None:
    assert settings(tmp_path, ALLTOKEN_BASE_URL=value).base_url == used


def test_the_base_url_override_is_checked_like_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"must not carry a query or fragment"):
        load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path)}, base_url="https://x.example/v1#a")


# ------------------------------------------------------------------------------------------ max wait


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("abc", "is not a number of seconds"),
        ("45s", "is not a number of seconds"),
        ("0", "must be more than 0 and at most 600 seconds"),
        ("-0", "must be more than 0"),
        ("-5", "must be more than 0"),
        ("600.001", "at most 600 seconds"),
        ("1e9", "at most 600 seconds"),
        ("inf", "at most 600 seconds"),
        ("-inf", "must be more than 0"),
        ("nan", "must be more than 0 and at most 600 seconds"),
    ],
)
def test_a_max_wait_outside_its_range_is_refused(tmp_path: Path, value: str, says: str) -> None:
    message = refusal(tmp_path, ALLTOKEN_MAX_WAIT_SECONDS=value)
    assert message.startswith(f"ALLTOKEN_MAX_WAIT_SECONDS={value!r} ")
    assert says in message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("600", MAX_ALLOWED_WAIT_SECONDS), ("0.001", 0.001), (" 12.5 ", 12.5), ("", DEFAULT_MAX_WAIT_SECONDS)],
)
def test_a_max_wait_inside_its_range_is_used(tmp_path: Path, value: str, seconds: float) -> None:
    assert settings(tmp_path, ALLTOKEN_MAX_WAIT_SECONDS=value).max_wait_seconds == seconds


def test_the_max_wait_override_wins_over_the_variable_and_is_checked_too(tmp_path: Path) -> None:
    env = {"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_MAX_WAIT_SECONDS": "30"}
    assert load_settings(env=env, max_wait_seconds=5).max_wait_seconds == 5
    with pytest.raises(SettingsError, match=r"^--max-wait-seconds='601' must be more than 0"):
        load_settings(env=env, max_wait_seconds=601)


# ---------------------------------------------------------------------------------- directories


@pytest.mark.parametrize("name", ["ALLTOKEN_MCP_HOME", "ALLTOKEN_OUTPUT_DIR"])
def test_a_state_or_output_dir_that_is_a_file_is_refused(tmp_path: Path, name: str) -> None:
    blocker = a_file(tmp_path)
    message = refusal(tmp_path, **{name: blocker})
    assert message.startswith(f"{name}={blocker!r} is not a writable directory (")


@pytest.mark.parametrize("name", ["ALLTOKEN_MCP_HOME", "ALLTOKEN_OUTPUT_DIR"])
def test_a_state_or_output_dir_under_a_file_is_refused(tmp_path: Path, name: str) -> None:
    inside = str(Path(a_file(tmp_path)) / "state")
    assert refusal(tmp_path, **{name: inside}).startswith(f"{name}={inside!r} is not a writable directory")


def test_directories_are_created_made_absolute_and_left_without_the_write_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = settings(tmp_path, ALLTOKEN_MCP_HOME="rel/home", ALLTOKEN_OUTPUT_DIR="rel/out")
    assert made.home == tmp_path / "rel" / "home"
    assert made.output_dir == tmp_path / "rel" / "out"
    assert made.database_path == tmp_path / "rel" / "home" / "state.sqlite3"
    assert list(made.home.iterdir()) == []
    assert list(made.output_dir.iterdir()) == []


def test_the_output_dir_defaults_to_media_under_the_state_dir(tmp_path: Path) -> None:
    made = settings(tmp_path)
    assert made.output_dir == tmp_path / "home" / "media"
    assert made.output_dir.is_dir()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{missing}", "ALLTOKEN_INPUT_DIRS entry '{missing}' is not an existing directory"),
        ("{file}", "ALLTOKEN_INPUT_DIRS entry '{file}' is not an existing directory"),
        ("{ok}{sep}{missing}", "ALLTOKEN_INPUT_DIRS entry '{missing}' is not an existing directory"),
        ("{sep}{sep}", "ALLTOKEN_INPUT_DIRS='{sep}{sep}' names no directory"),
    ],
)
def test_an_input_dir_that_does_not_exist_is_refused(tmp_path: Path, value: str, says: str) -> None:
    names = {
        "missing": str(tmp_path / "nowhere"),
        "file": a_file(tmp_path),
        "ok": str(tmp_path),
        "sep": os.pathsep,
    }
    message = refusal(tmp_path, ALLTOKEN_INPUT_DIRS=value.format(**names))
    assert message == says.format(**names)


def test_input_dirs_are_resolved_and_blank_entries_skipped(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    value = f"{tmp_path / 'a'}{os.pathsep} {os.pathsep}{tmp_path / 'b' / '..' / 'b'}"
    assert settings(tmp_path, ALLTOKEN_INPUT_DIRS=value).input_dirs == (tmp_path / "a", tmp_path / "b")


def test_without_input_dirs_the_working_directory_is_the_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert settings(tmp_path).input_dirs == (tmp_path.resolve(),)


# --------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", MODEL_VARS)
@pytest.mark.parametrize("value", ["gpt image 2", "a\tb", "x" * 201, "model\x00id"])
def test_a_default_model_that_is_not_a_model_id_is_refused(tmp_path: Path, name: str, value: str) -> None:
    message = refusal(tmp_path, **{name: value})
    assert message.startswith(f"{name}=")
    assert "is not a model id (no spaces, at most 200 characters)" in message


@pytest.mark.parametrize("name", MODEL_VARS)
def test_a_default_model_id_of_200_characters_is_used_stripped(tmp_path: Path, name: str) -> None:
    made = settings(tmp_path, **{name: " " + "m" * 200 + " "})
    field = name.removeprefix("ALLTOKEN_").lower()
    assert getattr(made, field) == "m" * 200


def test_unset_default_models_are_the_documented_ones(tmp_path: Path) -> None:
    made = settings(tmp_path, ALLTOKEN_DEFAULT_CHAT_MODEL="  ")
    assert (made.default_chat_model, made.default_image_model, made.default_video_model) == (
        DEFAULT_CHAT_MODEL,
        DEFAULT_IMAGE_MODEL,
        DEFAULT_VIDEO_MODEL,
    )


# ------------------------------------------------------------------------------------ MCP token


@pytest.mark.parametrize("value", ["two words", "line\nbreak", "tab\there", "tök€n-ünicode", "nul\x00"])
def test_an_mcp_token_a_client_could_not_send_is_refused(tmp_path: Path, value: str) -> None:
    message = refusal(tmp_path, ALLTOKEN_MCP_TOKEN=value)
    assert message.startswith("ALLTOKEN_MCP_TOKEN ")
    assert "visible ASCII" in message
    assert value not in message  # a secret is never echoed


def test_an_mcp_token_with_surrounding_whitespace_is_used_without_it(tmp_path: Path) -> None:
    # A token read from a file keeps its line break; the Authorization header never carries one.
    assert settings(tmp_path, ALLTOKEN_MCP_TOKEN="  s3cret-Token_1\n").mcp_token == "s3cret-Token_1"
    assert settings(tmp_path, ALLTOKEN_MCP_TOKEN=" ").mcp_token is None


# ------------------------------------------------------------------------ through the entry point


def run_server(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed script as a host starts it (stdio serve), with only these AllToken variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    return subprocess.run(
        [ENTRY_POINT],
        env={**clean, "ALLTOKEN_MCP_HOME": str(tmp_path / "home"), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ALLTOKEN_BASE_URL", "https://api.alltoken.ai/v1?x=1", "must not carry a query or fragment"),
        ("ALLTOKEN_BASE_URL", "api.alltoken.ai", "is not an http(s) URL"),
        ("ALLTOKEN_MAX_WAIT_SECONDS", "601", "must be more than 0 and at most 600 seconds"),
        ("ALLTOKEN_MAX_WAIT_SECONDS", "soon", "is not a number of seconds"),
        ("ALLTOKEN_MCP_HOME", "{file}", "is not a writable directory"),
        ("ALLTOKEN_OUTPUT_DIR", "{file}", "is not a writable directory"),
        ("ALLTOKEN_DEFAULT_VIDEO_MODEL", "seedance 1.5", "is not a model id"),
        ("ALLTOKEN_INPUT_DIRS", "{file}", "is not an existing directory"),
        ("ALLTOKEN_MCP_TOKEN", "two words", "visible ASCII"),
        ("ALLTOKEN_PREVIEWS", "sometimes", "must be on or off"),
    ],
)
def test_the_server_exits_2_with_one_line_naming_the_bad_variable(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    done = run_server(tmp_path, **{name: value.format(file=a_file(tmp_path))})
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # stdout belongs to the MCP protocol
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"alltoken-mcp: configuration error: {name}")
    assert says in line


def test_a_key_that_is_not_a_key_does_not_stop_the_server(tmp_path: Path) -> None:
    """Not a start-up error (a host shows only "Failed to connect" for a server that exits): the server
    starts, and runs until its stdin ends."""
    done = run_server(tmp_path, ALLTOKEN_API_KEY="${ALLTOKEN_API_KEY}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "configuration error" not in done.stderr


# ------------------------------------------------------------------ overrides, defaults and the key


def test_the_flag_overrides_win_over_the_environment(tmp_path: Path) -> None:
    env = {
        "ALLTOKEN_MCP_HOME": str(tmp_path / "env-home"),
        "ALLTOKEN_OUTPUT_DIR": str(tmp_path / "env-out"),
        "ALLTOKEN_API_KEY": "sk-from-the-environment-1",
    }
    made = load_settings(
        env=env,
        home=str(tmp_path / "flag-home"),
        output_dir=str(tmp_path / "flag-out"),
        api_key="sk-flag-key-22",
    )
    assert made.home == tmp_path / "flag-home"
    assert made.output_dir == tmp_path / "flag-out"
    assert made.api_key == "sk-flag-key-22"


def test_without_an_env_mapping_the_process_environment_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLTOKEN_MCP_HOME", str(tmp_path / "from-os-environ"))
    monkeypatch.setenv("ALLTOKEN_MAX_WAIT_SECONDS", "7")
    made = load_settings()
    assert made.home == tmp_path / "from-os-environ"
    assert made.max_wait_seconds == 7


@pytest.mark.parametrize(
    ("platform", "env", "home"),
    [
        ("linux", {"XDG_DATA_HOME": "{tmp}/xdg"}, "{tmp}/xdg/alltoken-mcp"),
        ("linux", {}, "{user}/.local/share/alltoken-mcp"),
        ("darwin", {"XDG_DATA_HOME": "{tmp}/xdg"}, "{user}/Library/Application Support/alltoken-mcp"),
        ("win32", {"LOCALAPPDATA": "{tmp}/local", "APPDATA": "{tmp}/roaming"}, "{tmp}/local/alltoken-mcp"),
        ("win32", {"APPDATA": "{tmp}/roaming"}, "{tmp}/roaming/alltoken-mcp"),
        ("win32", {}, "{user}/AppData/Local/alltoken-mcp"),
    ],
)
def test_the_default_state_dir_is_the_platforms_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, env: dict[str, str], home: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setattr(sys, "platform", platform)
    names = {"tmp": str(tmp_path), "user": str(tmp_path / "user")}
    expected = Path(home.format(**names))
    assert default_home({k: v.format(**names) for k, v in env.items()}) == expected
    made = load_settings(env={k: v.format(**names) for k, v in env.items()})
    assert made.home == expected
    assert made.database_path == expected / "state.sqlite3"


def test_a_server_without_a_key_has_the_not_set_problem_and_no_rejected_value(tmp_path: Path) -> None:
    made = settings(tmp_path)
    assert made.api_key is None
    assert made.rejected_key is None
    assert made.key_problem is KEY_NOT_SET
    assert key_problem(None) is KEY_NOT_SET
    assert made.upstream.key_fingerprint is None


@pytest.mark.parametrize(
    "value", ['"sk-live-abcdef123456', "sk-live-abcdef123456'", "`sk-live-abcdef123456`"]
)
def test_a_quote_at_either_end_of_the_key_is_refused(value: str) -> None:
    problem = key_problem(value)
    assert problem is not None
    assert "is wrapped in quotes" in problem.found


def test_a_control_character_inside_the_key_is_refused(tmp_path: Path) -> None:
    problem = key_problem("sk-live-abc\x07def123")
    assert problem is not None
    assert "contains whitespace or control characters inside it" in problem.found
    assert settings(tmp_path, ALLTOKEN_API_KEY="sk-live-abc\x07def123").api_key is None


def test_a_shell_reference_names_its_variable_in_the_fix() -> None:
    problem = key_problem("$MY_ALLTOKEN_KEY")
    assert problem is not None
    assert problem.fix == (
        "put the key itself in the config, or reference the variable the way your host expands it "
        "(${MY_ALLTOKEN_KEY} in Claude Code's .mcp.json, env_vars in Codex's config.toml)"
    )
    windows = key_problem("%MY_ALLTOKEN_KEY%")
    assert windows is not None
    assert windows.fix == "set MY_ALLTOKEN_KEY before starting the host, or put the key itself in the config"


def test_a_placeholder_is_quoted_back_cut_to_40_characters_without_control_characters() -> None:
    long = key_problem("<" + "y" * 60 + ">")
    assert long is not None
    assert f"'<{'y' * 38}…'" in long.found  # 39 characters and the ellipsis
    exact = key_problem("<" + "y" * 38 + ">")  # 40 characters: shown whole
    assert exact is not None
    assert f"'<{'y' * 38}>'" in exact.found
    control = key_problem("<your\x1bkey>")
    assert control is not None
    assert "'<your?key>'" in control.found


def test_a_key_fingerprint_is_12_hex_digits_that_tell_keys_apart() -> None:
    first, second = key_fingerprint("sk-live-one"), key_fingerprint("sk-live-two")
    assert len(first) == 12
    assert int(first, 16) >= 0
    assert first != second
    assert first == key_fingerprint("sk-live-one")


@pytest.mark.parametrize(
    ("base_url", "hint"),
    [
        ("https://gw.example/v1", None),
        ("https://gw.example/v1/", None),
        ("https://gw.example/api/v1//", None),
        ("https://gw.example", "ALLTOKEN_BASE_URL=https://gw.example/v1"),
        ("https://gw.example/", "ALLTOKEN_BASE_URL=https://gw.example/v1"),
        ("https://gw.example/api/", "ALLTOKEN_BASE_URL=https://gw.example/api/v1"),
    ],
)
def test_a_base_url_without_v1_gets_the_corrected_url(base_url: str, hint: str | None) -> None:
    found = missing_v1_hint(base_url)
    if hint is None:
        assert found is None
    else:
        assert (
            found
            == f"ALLTOKEN_BASE_URL is {base_url}, without /v1: AllToken's API is under /v1, so set {hint}"
        )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql://u:hunter2-secret@db/x", "is not a postgresql:// URL; expected e.g. postgresql://"),
        ("db.example:5432/x", "is not a postgresql:// URL"),
        ("host=db password=hunter2-secret", "is not a postgresql:// URL"),
        ("postgresql://u:hunter2-secret@db/x y", "contains whitespace or control characters"),
        ("postgresql://u:hunter2-secret@db:99999/x", "has an invalid port (1-65535)"),
        ("postgresql://u:hunter2-secret@db:0/x", "has an invalid port (1-65535)"),
        ("postgresql://u:hunter2-secret@db:port/x", "has an invalid port (1-65535)"),
        ("postgresql://u:hunter2-secret@db/x#main", "must not carry a fragment"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_refused_without_showing_its_password(
    tmp_path: Path, value: str, says: str
) -> None:
    message = refusal(tmp_path, ALLTOKEN_MCP_DATABASE_URL=value)
    assert message.startswith("ALLTOKEN_MCP_DATABASE_URL=")
    assert says in message
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://alltoken:pw@db.example:5432/alltoken",
        "postgres://db/alltoken?sslmode=require",
        "postgresql:///x",
    ],
)
def test_a_postgresql_url_selects_the_shared_store_and_unset_keeps_the_file(
    tmp_path: Path, value: str
) -> None:
    assert settings(tmp_path, ALLTOKEN_MCP_DATABASE_URL=f" {value} ").database_url == value
    file_store = settings(tmp_path, ALLTOKEN_MCP_DATABASE_URL="")
    assert file_store.database_url is None
    assert file_store.database_location == str(file_store.database_path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alltoken:s3cret-pw@db:5432/a", "postgresql://alltoken:***@db:5432/a"),
        (
            "postgresql://alltoken@db/a?password=s3cret-pw&sslmode=require",
            "postgresql://alltoken@db/a?password=***&sslmode=require",
        ),
        ("postgresql:///a?PassWord=s3cret-pw", "postgresql:///a?PassWord=***"),
        ("postgresql://db/a", "postgresql://db/a"),
    ],
)
def test_a_database_url_is_shown_without_its_password(tmp_path: Path, url: str, shown: str) -> None:
    assert shown_url(url) == shown
    configured = settings(tmp_path, ALLTOKEN_MCP_DATABASE_URL=url)
    assert configured.database_location == shown
    assert "s3cret" not in repr(configured)


# ------------------------------------------------------------------------------------ previews, output dir


def test_previews_are_on_unless_alltoken_previews_turns_them_off(tmp_path: Path) -> None:
    assert load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path)}).previews is True
    for value in ("off", "OFF", "false", "0", "no", " off "):
        assert (
            load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_PREVIEWS": value}).previews
            is False
        )
    for value in ("on", "true", "1", "yes"):
        assert (
            load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_PREVIEWS": value}).previews
            is True
        )


def test_a_previews_value_that_is_not_a_switch_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_PREVIEWS": "sometimes"})
    assert str(caught.value) == "ALLTOKEN_PREVIEWS='sometimes' must be on or off"


def test_the_settings_say_whether_the_output_directory_was_chosen(tmp_path: Path) -> None:
    default = load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path)})
    assert default.output_dir == (tmp_path / "media").resolve()
    assert default.output_dir_configured is False
    chosen = load_settings(
        env={"ALLTOKEN_MCP_HOME": str(tmp_path), "ALLTOKEN_OUTPUT_DIR": str(tmp_path / "out")}
    )
    assert chosen.output_dir_configured is True
    flag = load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path)}, output_dir=str(tmp_path / "cli"))
    assert flag.output_dir_configured is True


@pytest.mark.parametrize(
    "name", ["ALLTOKEN_MCP_HOME", "ALLTOKEN_OUTPUT_DIR", "ALLTOKEN_INPUT_DIRS", "ALLTOKEN_MCP_TOKENS_FILE"]
)
def test_a_directory_under_the_home_of_a_user_that_does_not_exist_is_refused_in_one_line(
    tmp_path: Path, name: str
) -> None:
    says = refusal(tmp_path, **{name: "~no-such-user-here/state"})
    assert name in says
    assert "home directory that does not exist" in says
