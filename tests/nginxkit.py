"""A throwaway nginx in front of replicas, configured from a documented file in docs/.

`with running_nginx(STATELESS_CONF, ports) as nginx:` starts nginx on a free loopback port with the
documented stateless configuration (round robin over `127.0.0.1:<port>` for each replica port; STICKY_CONF
for the sticky one, sessions kept on one replica by client address) and stops it at the end; `nginx.url`
is its base URL and `nginx.upstreams()` lists, from nginx's own access log, which replica served each
request. The configuration is the documentation's file with only what cannot be the same on loopback
changed: the replica addresses, and a plain-HTTP `listen` in place of the TLS lines (Debian bookworm's
nginx 1.22 does not know `http2 on`, which came in 1.25.1). Every other directive, the proxy settings,
`proxy_next_upstream` and the sticky file's `hash` above all, is the documented one, so what CI tests is
what users copy.

Everything nginx writes (pid, logs, temporary files) is in a temporary directory given as its prefix
(`-p`, `-e`), never /var/log/nginx or /run. As root its workers run as `nobody`, as pgkit runs postgres.
The binary is `ALLTOKEN_TEST_NGINX` when set (.ci/run sets it after installing Debian's package), else
`nginx` on PATH or /usr/sbin/nginx; without one the test skips with `NO_NGINX`.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NGINX_VAR = "ALLTOKEN_TEST_NGINX"
NO_NGINX = (
    f"no nginx for the replica test: install it (Debian: apt-get install nginx) or set {NGINX_VAR} to the "
    "nginx binary; .ci/run does"
)
DOCS = Path(__file__).resolve().parents[1] / "docs"
STATELESS_CONF = DOCS / "nginx-stateless.conf"
STICKY_CONF = DOCS / "nginx-sticky.conf"
START_SECONDS = 10.0
STOP_SECONDS = 10.0
UPSTREAM_LOG = "upstream.log"


class NginxError(RuntimeError):
    """nginx could not be started, or the documented configuration no longer has the expected shape."""


def nginx_binary() -> Path | None:
    """The nginx to run: `ALLTOKEN_TEST_NGINX` (which must exist), else PATH, else /usr/sbin/nginx."""
    chosen = os.environ.get(NGINX_VAR)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise NginxError(f"{NGINX_VAR}={chosen} is not an executable")
        return Path(chosen)
    found = shutil.which("nginx")
    if found is not None:
        return Path(found)
    debian = Path("/usr/sbin/nginx")
    return debian if os.access(debian, os.X_OK) else None


def _substitute(
    text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str], what: str, conf: Path
) -> str:
    changed, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise NginxError(f"{conf.name} no longer has {what}; update tests/nginxkit.py to the new file")
    return changed


def site_config(conf: Path, ports: Sequence[int], listen_port: int, documented: str | None = None) -> str:
    """The documented configuration in `conf` (`upstream` and `server` blocks for `http { }`) with each
    upstream's replicas on 127.0.0.1:`ports` and plain HTTP on 127.0.0.1:`listen_port`."""
    text = conf.read_text() if documented is None else documented

    def our_replicas(upstream: re.Match[str]) -> str:
        # Every upstream lists the same replicas; each keeps its own parameters (max_fails=…).
        parameters = re.match(r"\s*server\s+\S+?((?:\s.*)?);", upstream.group(0))
        assert parameters is not None
        return "".join(f"    server 127.0.0.1:{port}{parameters.group(1)};\n" for port in ports)

    text = _substitute(
        text,
        r"(?:^\s*server\s+10\.0\.0\.\d+:8000(?:\s.*)?;\s*\n)+",
        our_replicas,
        "upstream replicas listed as `server 10.0.0.x:8000 …;`",
        conf,
    )
    text = _substitute(
        text, r"^(\s*)listen\s+443\s+ssl;", rf"\1listen 127.0.0.1:{listen_port};", "listen 443", conf
    )
    text = _substitute(text, r"^\s*http2\s+on;.*\n", "", "http2 on", conf)
    return _substitute(text, r"^\s*ssl_certificate(?:_key)?\s+.*\n", "", "the TLS certificate lines", conf)


def _worker_user() -> str:
    """The `user` directive: only a master running as root changes its workers' user."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"


def main_config(root: Path, site: str) -> str:
    """nginx.conf for a prefix of its own: the foreground master, every file under `root`, `site` in
    `http { }`, and an access log that names the replica (upstream address) each request went to."""
    return (
        f"{_worker_user()}"
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {root}/nginx.pid;\n"
        f"error_log {root}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    log_format upstreams '$request_method $uri $status $upstream_addr';\n"
        f"    access_log {root}/{UPSTREAM_LOG} upstreams;\n"
        f"    client_body_temp_path {root}/client_body;\n"
        f"    proxy_temp_path {root}/proxy;\n"
        f"    fastcgi_temp_path {root}/fastcgi;\n"
        f"    uwsgi_temp_path {root}/uwsgi;\n"
        f"    scgi_temp_path {root}/scgi;\n"
        f"{site}\n"
        "}\n"
    )


@dataclass
class RunningNginx:
    url: str
    """Its base URL, e.g. http://127.0.0.1:41234 (the MCP endpoint is url + "/mcp")."""
    root: Path

    def upstreams(self) -> list[str]:
        """For each request logged so far, the replica address(es) nginx sent it to ("-" for none;
        "a, b" when it tried `a` and then `b`)."""
        return [upstream for _, upstream in self.log()]

    def log(self) -> list[tuple[str, str]]:
        """For each request logged so far, what it was ("POST /mcp 200": method, path, status) and its
        upstreams as above."""
        path = self.root / UPSTREAM_LOG
        lines = path.read_text().splitlines() if path.exists() else []
        fields = [line.split(" ", 3) for line in lines if line.count(" ") >= 3]
        return [(" ".join(request), upstream) for *request, upstream in fields]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_nginx(
    conf: Path,
    ports: Sequence[int],
    binary: Path | None = None,
    listen: int | None = None,
    edit: Callable[[str], str] | None = None,
) -> Iterator[RunningNginx]:
    """Run nginx with the documented configuration `conf` over the replicas on 127.0.0.1:`ports`,
    listening on 127.0.0.1:`listen` (a free port by default; the replicas' ALLTOKEN_MCP_PUBLIC_URL may
    need it before nginx starts). `edit` changes the rendered configuration (a test's deliberate
    departure from the documented one)."""
    binary = binary or nginx_binary()
    if binary is None:
        raise NginxError(NO_NGINX)
    root = Path(tempfile.mkdtemp(prefix="alltoken-nginx-"))
    root.chmod(0o755)  # as root, the workers (nobody) create and use the temporary paths in here
    listen = listen or _free_port()
    site = site_config(conf, ports, listen)
    site = edit(site) if edit is not None else site
    (root / "nginx.conf").write_text(main_config(root, site))
    command = [str(binary), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        # The master listens before it forks its worker, so the first accepted connection means ready.
        deadline = time.monotonic() + START_SECONDS
        while not _accepting(listen):
            if process.poll() is not None or time.monotonic() > deadline:
                raise NginxError(f"nginx did not start: {_log(root)}")
            time.sleep(0.01)
        yield RunningNginx(f"http://127.0.0.1:{listen}", root)
    except BaseException:
        sys.stderr.write(f"nginx error log:\n{_log(root)}\n")
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown: open calls are the test's to finish
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _log(root: Path) -> str:
    path = root / "error.log"
    return path.read_text().strip() if path.exists() else "(no error log)"
