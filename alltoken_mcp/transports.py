"""Running the server on a transport: stdio (what hosts spawn) or Streamable HTTP (shared deployments).

`--simulate` starts the bundled simulator in the same process and points the server at it, with state
and files of its own, so the server can be tried in a host with no key and no credits and without
touching real jobs. That is the only place the serving path
imports the simulator, and only when asked.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from alltoken_mcp.redact import Redactor
from alltoken_mcp.settings import Settings, SettingsError

if TYPE_CHECKING:
    from mcp.server.auth.provider import TokenVerifier

    from alltoken_mcp.draining import Drain

logger = logging.getLogger(__name__)

TOKEN_VAR = "ALLTOKEN_MCP_TOKEN"
TOKENS_FILE_VAR = "ALLTOKEN_MCP_TOKENS_FILE"
SHUTDOWN_GRACE_SECONDS = 10.0
"""`http_listener.SHUTDOWN_GRACE_SECONDS` (not imported here: uvicorn loads only when serving HTTP)."""
MAX_SHUTDOWN_GRACE_SECONDS = 600.0
DEFAULT_READ_TIMEOUT = 10.0
"""Seconds an HTTP client has to deliver a whole request, headers and body, once its connection waits for
one (see `http_listener`). MCP requests are small JSON bodies sent at once; only a stalled or hostile
client needs longer."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_host(host: str) -> str:
    """The bind address as sockets take it: an IPv6 address without the brackets URLs put around it."""
    if host.startswith("[") and host.endswith("]"):
        try:
            address = ipaddress.ip_address(host[1:-1])
        except ValueError:
            address = None
        if address is None or address.version != 6:
            raise SettingsError(f"--host {host!r}: brackets go only around an IPv6 address, e.g. [::1]")
        return host[1:-1]
    return host


def check_http_bind(settings: Settings, host: str) -> None:
    """Serving MCP to the network without a token would hand anyone the user's AllToken credits."""
    if not is_loopback(host) and token_verifier_kind(settings) is None:
        raise SettingsError(
            f"refusing to serve HTTP on non-loopback address {host!r} without {TOKEN_VAR} or "
            f"{TOKENS_FILE_VAR}; set a long random token (or a token per person) or bind 127.0.0.1"
        )


def token_verifier_kind(settings: Settings) -> str | None:
    """Which of the token settings is set (at most one is), or None."""
    if settings.introspection_url:
        return "introspection"
    if settings.tokens_file:
        return "tokens file"
    return "token" if settings.mcp_token else None


def token_verifier(settings: Settings) -> TokenVerifier | None:
    """Who may call over HTTP: a token per person, one shared token, or (None) anyone who can connect."""
    from alltoken_mcp.people import Introspection, SingleToken, TokensFile

    if settings.introspection_url is not None:
        return Introspection(settings.introspection_url)
    if settings.tokens_file is not None:
        return TokensFile(settings.tokens_file)
    if settings.mcp_token:
        return SingleToken(settings.mcp_token)
    return None


def _host_names(bind: str) -> list[str]:
    """The names a client may put in the Host header to reach this server.

    Loopback names always, and the bind address itself (also another loopback address such as
    127.0.0.2). For a wildcard bind (0.0.0.0, ::) the
    machine's own host name, its fully qualified name and the addresses they resolve to: that is what
    clients on the network use. Anything else (a DNS name pointing elsewhere) is what DNS rebinding looks
    like, and is refused.
    """
    names = ["127.0.0.1", "localhost", "::1", bind.strip("[]")]
    if bind.strip("[]") in ("0.0.0.0", "::", ""):
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.append(name)
            try:
                names.extend(str(info[4][0]) for info in socket.getaddrinfo(name, None))
            except OSError:
                continue
    unique = list(dict.fromkeys(n for n in names if n))
    return [f"[{n}]" if ":" in n else n for n in unique]


def _allowed(names: list[str], prefix: str = "") -> list[str]:
    # A bare name for default ports, `name:*` for any explicit port.
    return [f"{prefix}{n}{suffix}" for n in names for suffix in ("", ":*")]


def http_app(
    settings: Settings,
    host: str,
    allowed_hosts: Sequence[str] = (),
    *,
    stateless: bool = False,
    drain: Drain | None = None,
    listening_url: str = "http://127.0.0.1:8000",
) -> ASGIApp:
    """The Streamable HTTP ASGI app: DNS-rebinding protection always on, bearer token when configured,
    and the endpoints beside /mcp (`http_routes`).

    `allowed_hosts` adds names the guard accepts besides the bind address and this machine's own names
    (a reverse proxy that passes its public Host through). `stateless`: no MCP sessions, every request
    stands alone (for round-robin balancing). `listening_url` is where media URLs point when
    `ALLTOKEN_MCP_PUBLIC_URL` is not set."""
    from mcp.server.transport_security import TransportSecuritySettings

    from alltoken_mcp.app_state import HttpServing
    from alltoken_mcp.draining import Drain
    from alltoken_mcp.http_routes import HttpRoutes
    from alltoken_mcp.media_urls import MediaLinks
    from alltoken_mcp.metrics import Metrics
    from alltoken_mcp.server import build_server

    check_http_bind(settings, host)
    names = list(dict.fromkeys([*_host_names(host), *(check_host_name(n) for n in allowed_hosts)]))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_allowed(names),
        allowed_origins=_allowed(names, "http://") + _allowed(names, "https://"),
    )
    drain = drain or Drain()
    serving = HttpServing(
        media_links=MediaLinks.create(settings.public_url or listening_url, settings.media_secret),
        metrics=Metrics(),
        stateless=stateless,
    )
    server = build_server(settings, http=serving, drain=drain)
    app: ASGIApp = server.streamable_http_app(
        transport_security=security, host=host, stateless_http=stateless
    )
    return HttpRoutes(app, serving=serving, drain=drain, verifier=token_verifier(settings))


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def check_host_name(name: str) -> str:
    """A bare host name or address for --allowed-host (no scheme, port or path), lowercased."""
    if not _HOST_NAME.fullmatch(name):
        raise SettingsError(
            f"--allowed-host {name!r} is not a host name: give the bare name a client puts in the Host "
            "header, e.g. mcp.example.com (no scheme, port or path)"
        )
    return name.lower()


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address `host` resolves to, as asyncio's `create_server` would bind them
    (SO_REUSEADDR on POSIX, IPv6 sockets IPv6-only); uvicorn then listens on them.

    Bound here, before anything starts, so that a name that does not resolve, an address this machine
    does not have or a port already in use is one line and exit status 2 (uvicorn would find out only
    after start-up, and exit 3), and nothing can take the port in between."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"--host {host!r} does not resolve to an address ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise SettingsError(_bind_error(str(address[0]), port, exc)) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_error(address: str, port: int, exc: OSError) -> str:
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    hint = {
        errno.EADDRINUSE: "another process is listening there; stop it or choose another --port",
        errno.EADDRNOTAVAIL: "this machine has no such address; give one of its own, or 127.0.0.1",
        errno.EACCES: "ports below 1024 need privileges; choose a higher --port",
    }.get(exc.errno or 0, "check --host and --port")
    return f"cannot listen on {where}: {exc.strerror} ({hint})"


SIMULATED_UPSTREAM = "the simulator of alltoken-mcp --simulate"
"""What `--simulate` jobs record as their upstream: the in-process simulator gets a new port every run."""
SIMULATE_DIR = "simulate"


def simulated_settings(settings: Settings, base_url: str, api_key: str) -> Settings:
    """`settings` pointed at an in-process simulator, with state and files of its own under
    `<home>/simulate/`: a try-it session never sees (let alone polls, cancels or fails) the real jobs in
    the user's state database, and its made-up media never mixes with real results."""
    home = settings.home / SIMULATE_DIR
    output_dir = home / "media"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"--simulate: cannot create {output_dir} ({exc.strerror or exc})") from None
    return settings.with_overrides(
        base_url=base_url,
        api_key=api_key,
        rejected_key=None,
        upstream_name=SIMULATED_UPSTREAM,
        home=home,
        output_dir=output_dir,
    )


@asynccontextmanager
async def _maybe_simulated(settings: Settings, simulate: bool) -> AsyncIterator[Settings]:
    async with AsyncExitStack() as stack:
        if simulate:
            from alltoken_mcp.simulator import SIM_API_KEY, SimConfig, serve_simulator

            sim = await stack.enter_async_context(serve_simulator(SimConfig(speed=0.1)))
            settings = simulated_settings(settings, sim.base_url, SIM_API_KEY)
            logger.warning(
                "--simulate: using the local AllToken simulator at %s; state and files in %s",
                sim.base_url,
                settings.home,
            )
        yield settings


async def _serve_stdio(settings: Settings, simulate: bool) -> None:
    from alltoken_mcp.server import build_server
    from alltoken_mcp.stdio import serve_stdio

    async with anyio.create_task_group() as tg:
        await tg.start(_cancel_on_sigterm, tg.cancel_scope)
        async with _maybe_simulated(settings, simulate) as effective:
            await serve_stdio(build_server(effective))
        tg.cancel_scope.cancel()


async def _cancel_on_sigterm(scope: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
    """SIGTERM stops the stdio server as stdin EOF does: in-flight calls are abandoned, the lifespan's
    cleanup runs (the job poller stops and releases its leases) and the process exits 0. Without a
    handler Python would die at once, leaving leases to expire and temp files behind."""
    if sys.platform == "win32":  # no signal handlers on the Windows event loop
        task_status.started()
        return
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            logger.info("SIGTERM: shutting down")
            scope.cancel()
            return


async def _serve_http(
    settings: Settings,
    simulate: bool,
    host: str,
    sockets: Sequence[socket.socket],
    log_level: str,
    allowed_hosts: Sequence[str],
    read_timeout: float,
    stateless: bool,
    grace: float,
) -> None:
    from alltoken_mcp.draining import Drain
    from alltoken_mcp.http_listener import listening_url, serve_uvicorn

    async with _maybe_simulated(settings, simulate) as effective:
        drain = Drain()
        app = http_app(
            effective,
            host,
            allowed_hosts,
            stateless=stateless,
            drain=drain,
            listening_url=listening_url(sockets[0], ""),
        )
        redactor = Redactor.from_settings(effective)
        await serve_uvicorn(
            app,
            sockets,
            log_level=log_level,
            read_timeout=read_timeout,
            redactor=redactor,
            drain=drain,
            grace=grace,
        )


def serve(
    settings: Settings,
    *,
    simulate: bool,
    http: bool,
    host: str,
    port: int,
    log_level: str,
    allowed_hosts: Sequence[str] = (),
    read_timeout: float | None = None,
    stateless: bool = False,
    shutdown_grace: float | None = None,
) -> int:
    if not http:
        if stateless:
            raise SettingsError("--stateless is for --http (stdio has one client per process anyway)")
        anyio.run(_serve_stdio, settings, simulate)
        return 0
    # Everything is checked, and the port bound, before anything starts, so that a refusal is the only
    # thing the user sees.
    host = normalize_host(host)
    check_http_bind(settings, host)
    token_verifier(settings)  # an unreadable or malformed tokens file is refused before start-up
    for name in allowed_hosts:
        check_host_name(name)
    read_timeout = DEFAULT_READ_TIMEOUT if read_timeout is None else read_timeout
    if not (0 < read_timeout < math.inf):
        raise SettingsError(f"--read-timeout {read_timeout} must be a positive number of seconds")
    grace = SHUTDOWN_GRACE_SECONDS if shutdown_grace is None else shutdown_grace
    if not (0 < grace <= MAX_SHUTDOWN_GRACE_SECONDS):
        raise SettingsError(
            f"--shutdown-grace {grace:g} must be more than 0 and at most "
            f"{MAX_SHUTDOWN_GRACE_SECONDS:g} seconds"
        )
    sockets = bind_sockets(host, port)
    try:
        anyio.run(
            _serve_http,
            settings,
            simulate,
            host,
            sockets,
            log_level,
            allowed_hosts,
            read_timeout,
            stateless,
            grace,
        )
    finally:
        for sock in sockets:
            sock.close()
    return 0
