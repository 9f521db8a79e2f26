"""Settings read from the environment: the switches and facts this server's file delivery depends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from alltoken_mcp.settings import SettingsError, load_settings


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
