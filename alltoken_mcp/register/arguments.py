"""The `register` and `unregister` subcommands' arguments. cli.py builds them at every start, so this
module needs nothing but argparse and the host names."""

from __future__ import annotations

import argparse

from alltoken_mcp.register.hosts import HOST_IDS

DEFAULT_NAME = "alltoken"


def add_register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hosts = ", ".join(HOST_IDS)
    register = commands.add_parser(
        "register",
        help=f"add this install of alltoken-mcp to a host's MCP servers ({hosts})",
        description="Register this install of alltoken-mcp (its absolute command) with a host. Uses the "
        "host's own CLI when it is on PATH, otherwise edits its config file in place, keeping every other "
        "entry and a backup of the old file.",
    )
    _common(register)
    key = register.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        metavar="KEY",
        help="write this key into the host's config (default: $ALLTOKEN_API_KEY; project scopes reference "
        "the variable instead)",
    )
    key.add_argument(
        "--key-from-env",
        action="store_true",
        help="write a reference to ALLTOKEN_API_KEY, not the key: the host passes it from its own "
        "environment (not possible for Claude Desktop)",
    )
    key.add_argument(
        "--simulate",
        dest="register_simulate",
        action="store_true",
        help="register the server in simulator mode: no key, no credits",
    )
    register.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another setting for the server, e.g. ALLTOKEN_BASE_URL=https://...; repeatable",
    )
    register.add_argument(
        "--force", action="store_true", help="replace a different existing entry with the same name"
    )

    unregister = commands.add_parser(
        "unregister",
        help="remove alltoken-mcp's entry from a host's MCP servers",
        description="Remove the entry named --name (default alltoken) and nothing else.",
    )
    _common(unregister)
    unregister.add_argument(
        "--force", action="store_true", help="remove the entry even if it does not run alltoken-mcp"
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="HOST", choices=HOST_IDS, help=", ".join(HOST_IDS))
    parser.add_argument(
        "--scope",
        choices=("user", "project", "local"),
        help="user: every project (default); project: this directory's shared config (.mcp.json, "
        ".cursor/mcp.json, .vscode/mcp.json); local: Claude Code's private per-project entry",
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"server name (default {DEFAULT_NAME})")
    parser.add_argument("--dry-run", action="store_true", help="show the change and write nothing")
