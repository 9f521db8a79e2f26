"""The spend settings, ALLTOKEN_DAILY_BUDGET_USD and ALLTOKEN_CONFIRM: what is accepted, and every bad value
refused in one line — through the installed entry point with exit status 2 and nothing on stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from alltoken_mcp.settings import SettingsError, load_settings

ENTRY_POINT = str(Path(sys.executable).parent / "alltoken-mcp")


def _load(tmp_path: Path, **env: str) -> tuple[Decimal | None, str]:
    settings = load_settings(env={"ALLTOKEN_MCP_HOME": str(tmp_path / "home"), **env})
    return settings.daily_budget_usd, settings.confirm


def test_no_budget_and_no_confirmation_unless_set(tmp_path: Path) -> None:
    assert _load(tmp_path) == (None, "never")
    assert _load(tmp_path, ALLTOKEN_DAILY_BUDGET_USD=" ", ALLTOKEN_CONFIRM="") == (None, "never")


@pytest.mark.parametrize(
    ("value", "budget"),
    [("5", Decimal(5)), ("2.50", Decimal("2.50")), (" $0.01 ", Decimal("0.01")), ("1e3", Decimal(1000))],
)
def test_a_budget_is_an_amount_of_dollars(tmp_path: Path, value: str, budget: Decimal) -> None:
    assert _load(tmp_path, ALLTOKEN_DAILY_BUDGET_USD=value)[0] == budget


@pytest.mark.parametrize(("value", "mode"), [("video", "video"), (" Media ", "media"), ("NEVER", "never")])
def test_the_confirmation_modes_are_accepted_in_any_case(tmp_path: Path, value: str, mode: str) -> None:
    assert _load(tmp_path, ALLTOKEN_CONFIRM=value)[1] == mode


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ALLTOKEN_DAILY_BUDGET_USD", "five", "is not an amount of US dollars; expected e.g. 5 or 2.50"),
        ("ALLTOKEN_DAILY_BUDGET_USD", "5 USD", "is not an amount of US dollars"),
        ("ALLTOKEN_DAILY_BUDGET_USD", "nan", "is not an amount of US dollars"),
        ("ALLTOKEN_DAILY_BUDGET_USD", "inf", "is not an amount of US dollars"),
        ("ALLTOKEN_DAILY_BUDGET_USD", "0", "must be more than 0"),
        ("ALLTOKEN_DAILY_BUDGET_USD", "-3", "must be more than 0"),
        ("ALLTOKEN_CONFIRM", "always", "must be never, video (ask before each video render) or media"),
        ("ALLTOKEN_CONFIRM", "images", "must be never, video"),
    ],
)
def test_a_bad_spend_setting_stops_the_server_with_one_line_and_exit_2(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(tmp_path, **{name: value})
    assert str(caught.value).startswith(f"{name}={value!r}")
    assert says in str(caught.value)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALLTOKEN_")}
    done = subprocess.run(
        [ENTRY_POINT],
        env={**clean, "ALLTOKEN_MCP_HOME": str(tmp_path / "home"), name: value},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"alltoken-mcp: configuration error: {name}")
    assert says in line
