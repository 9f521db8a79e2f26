"""Command-line entry point: `alltoken-mcp [serve|simulate|demo|doctor|token|register|unregister]`.

No subcommand serves MCP over stdio — that is what hosts spawn. Each command imports what it needs
inside its own function so that the serving path never imports the simulator and start-up stays fast.
Only this module turns `SettingsError` into one line on stderr and exit status 2. Nothing is written to
stdout here before the MCP transport owns it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

from alltoken_mcp import __version__
from alltoken_mcp.register.arguments import add_register_commands
from alltoken_mcp.settings import Settings, SettingsError, load_settings

EXIT_USAGE = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Serve options exist both before and after `serve`. The subcommand's copies default to
    SUPPRESS so that `alltoken-mcp --simulate serve` keeps the flag given before the subcommand."""
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run an in-process AllToken simulator and point the server at it (no key, no credits)",
    )
    parser.add_argument("--base-url", help="override ALLTOKEN_BASE_URL")
    parser.add_argument("--home", help="override ALLTOKEN_MCP_HOME (state directory)")
    parser.add_argument("--output-dir", help="override ALLTOKEN_OUTPUT_DIR (where media files are written)")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP instead of stdio")
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="with --http: also accept requests for this host name (e.g. a reverse proxy's public "
        "name); repeatable. The bind address and this machine's names are always accepted.",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="with --http: no MCP sessions, every request stands alone (for round-robin load balancing; "
        "server-to-client requests such as ALLTOKEN_CONFIRM's question need a session-era client or sticky "
        "sessions)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="SECONDS",
        help="with --http: on SIGTERM, how long the shutdown may take; MCP calls in flight get all but 3 s "
        "of it to finish, then are answered 'shutting down, call again' (default 10)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        help="with --http: seconds a client has to send a complete request (headers and body) before "
        "its connection is closed (default 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alltoken-mcp",
        description="MCP server for AllToken: chat, images and videos from your agent. "
        "With no command, serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"alltoken-mcp {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="stderr log level (default WARNING)",
    )
    parser.set_defaults(
        simulate=False,
        http=False,
        host="127.0.0.1",
        port=8000,
        allowed_host=None,
        read_timeout=None,
        stateless=False,
        shutdown_grace=None,
    )
    _add_serve_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve MCP (stdio by default, --http for Streamable HTTP)",
        argument_default=argparse.SUPPRESS,
    )
    _add_serve_options(serve)
    serve.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="stderr log level")

    simulate = commands.add_parser("simulate", help="run the local AllToken simulator")
    simulate.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    simulate.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    simulate.add_argument(
        "--speed", type=float, default=1.0, help="time multiplier: 0.1 renders ten times faster (default 1)"
    )

    demo = commands.add_parser("demo", help="run an end-to-end demo against the simulator (no key needed)")
    demo.add_argument(
        "--output-dir",
        default=argparse.SUPPRESS,
        help="where the demo's image and video go (default ./alltoken-demo-output)",
    )
    doctor = commands.add_parser("doctor", help="check the installation, key, connectivity and state")
    doctor.add_argument("--base-url", help="override ALLTOKEN_BASE_URL")
    doctor.add_argument("--home", help="override ALLTOKEN_MCP_HOME")
    token = commands.add_parser(
        "token",
        help="make a bearer token for one person of a team server (prints it once, and the line for "
        "ALLTOKEN_MCP_TOKENS_FILE)",
    )
    token.add_argument("name", help="the person's name (letters, digits, . _ @ -)")
    token.add_argument(
        "--budget",
        metavar="USD",
        help="their own daily budget in US dollars, written on their line (else ALLTOKEN_DAILY_BUDGET_USD)",
    )
    add_register_commands(commands)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx2 logs every request at INFO; that is noise for a long-running server.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        key: getattr(args, key)
        for key in ("base_url", "home", "output_dir")
        if getattr(args, key, None) is not None
    }
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    # Start-up allocates hundreds of thousands of long-lived objects (the MCP and pydantic models);
    # cyclic GC passes over them are wasted work before `initialize`. The server's lifespan freezes
    # what exists by then and turns the collector back on.
    gc.disable()
    from alltoken_mcp.redact import Redactor, install_log_redaction
    from alltoken_mcp.transports import serve

    settings = _settings_from(args)
    # Before anything can log: an upstream error quoting the key must not reach stderr.
    install_log_redaction(Redactor.from_settings(settings))
    if args.http and not (1 <= args.port <= 65535):
        raise SettingsError(f"--port {args.port} is not a TCP port (1-65535)")
    return serve(
        settings,
        simulate=args.simulate,
        http=args.http,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        allowed_hosts=args.allowed_host or [],
        read_timeout=args.read_timeout,
        stateless=args.stateless,
        shutdown_grace=args.shutdown_grace,
    )


def _simulate(args: argparse.Namespace) -> int:
    from alltoken_mcp.simulator import SimConfig, run_simulator

    if not (args.speed > 0):
        raise SettingsError(f"--speed {args.speed} must be a positive number")
    if not (0 <= args.port <= 65535):
        raise SettingsError(f"--port {args.port} is not a TCP port (0-65535)")
    run_simulator(SimConfig(speed=args.speed), host=args.host, port=args.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from alltoken_mcp.demo import run_demo

    return run_demo(output_dir=args.output_dir)


def _doctor(args: argparse.Namespace) -> int:
    from alltoken_mcp.doctor import run_doctor

    return run_doctor(base_url=args.base_url, home=args.home)


def _token(args: argparse.Namespace) -> int:
    from alltoken_mcp.people import new_token_line
    from alltoken_mcp.settings import parse_budget

    token, line = new_token_line(args.name)
    if args.budget is not None:
        line += f" budget={parse_budget(args.budget, '--budget')}"
    # `alltoken-mcp token` is a terminal command, not the server: its output is for the operator
    print(f"token for {args.name} (shown once; give it to them, it is not stored):\n  {token}")  # stdout-ok
    added = "line to add to ALLTOKEN_MCP_TOKENS_FILE (it holds only the token's SHA-256)"
    print(f"{added}:\n  {line}")  # stdout-ok
    return 0


def _register(args: argparse.Namespace) -> int:
    from alltoken_mcp.register.command import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    handlers = {
        None: _serve,
        "serve": _serve,
        "simulate": _simulate,
        "demo": _demo,
        "doctor": _doctor,
        "token": _token,
        "register": _register,
        "unregister": _register,
    }
    try:
        return handlers[args.command](args)
    except SettingsError as exc:
        print(f"alltoken-mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # Errors raised inside the server's (or the demo's) task groups arrive wrapped in groups.
        if _find(exc, BrokenPipeError) is not None:
            # `alltoken-mcp demo | head`: the reader left. Point stdout at devnull so the interpreter's
            # final flush does not raise again, and exit quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        from alltoken_mcp.store import StoreError

        store_error = _find(exc, StoreError)
        if store_error is None:
            raise
        print(f"alltoken-mcp: {store_error}", file=sys.stderr)
        return EXIT_USAGE


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` itself or the first `kind` inside it, looking through (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):  # an exception group (a builtin only from 3.11)
        found = _find(inner, kind)
        if found is not None:
            return found
    return None
