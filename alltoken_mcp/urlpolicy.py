"""Where a result download may go: the rules as pure functions (no I/O), used by `AllTokenClient.download`.

Result URLs (an image's `r2_url`, a video's `video_url` and `last_frame_url`) arrive inside AllToken's
answers: they are upstream data, not configuration. A confused or hostile upstream could point them at
this machine's other services or at a cloud metadata endpoint (server-side request forgery), so a
download fetches only:

* the configured base URL's own origin, over http too — the same scheme, host and port (another port on
  the same host is another service). That is where the simulator and a self-hosted gateway serve files;
* any other **https** URL whose host resolves only to public addresses.

Everything else is refused: other schemes (`file:`, `ftp:`, `data:` …), plain http to anyone but the base
origin, and hosts that are or resolve to loopback, link-local (169.254/16, fe80::/10), private (10/8,
172.16/12, 192.168/16, fc00::/7), shared (100.64/10), unspecified, multicast or reserved addresses.
IPv6 forms that embed an IPv4 address (mapped, 6to4, NAT64) are judged by that address. The client
applies these checks to every redirect hop and to the address it actually connected to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import httpx2

MAX_REDIRECTS = 5
"""Redirect hops a download follows before giving up (each one checked like the first URL)."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(ValueError):
    """A URL a download must not fetch. `str(exc)` says which and why in one line (never a query string)."""


@dataclass(frozen=True)
class Origin:
    """Scheme, host (lowercase, IDNA-encoded, IPv6 without brackets) and port (defaults filled in)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx2.URL) -> Origin:
        scheme = url.scheme.lower()
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme, 0)
        return cls(scheme, url.raw_host.decode("ascii").lower(), port)


def where(url: httpx2.URL) -> str:
    """Scheme, host, port and path for messages: no query (presigned signatures) and no userinfo."""
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{host}{port}{url.raw_path.split(b'?')[0].decode('ascii')}"


def check_url(url: httpx2.URL, trusted: Origin) -> bool:
    """Refuse (`RefusedURL`) a URL no download may fetch, judging only what the URL itself says.

    Returns True when `url` is on the `trusted` origin (its addresses are not checked: that is the
    configured upstream), False when the caller must still check the addresses its host resolves to
    (`check_addresses`) — an IP literal is checked here already.
    """
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"{scheme}: URL" if scheme else "URL without a scheme"
        raise RefusedURL(f"refused to download a {shown}; only https URLs are fetched")
    if not url.raw_host:
        raise RefusedURL(f"refused to download {where(url)}: the URL names no host")
    if not 0 < Origin.of(url).port < 65536:
        raise RefusedURL(f"refused to download {where(url)}: the port is out of range")
    if Origin.of(url) == trusted:
        return True
    if scheme != "https":
        raise RefusedURL(
            f"refused to download {where(url)}: plain http is allowed only to the configured AllToken "
            f"origin ({trusted.scheme}://{trusted.host}:{trusted.port}); other hosts must use https"
        )
    literal = _ip_literal(url.raw_host.decode("ascii"))
    if literal is not None:
        check_addresses(url, [str(literal)])
    return False


def check_addresses(url: httpx2.URL, addresses: Iterable[str]) -> None:
    """Refuse `url` when any address its host resolved (or connected) to is not public.

    Every address must pass, not just one: the connection may use any of them.
    """
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            raise RefusedURL(
                f"refused to download {where(url)}: its host is at {address}, {problem}; "
                "downloads only reach public addresses"
            )


def address_problem(address: str) -> str | None:
    """Why a download must not connect to `address` (an IP address as text), or None if it is public."""
    ip = _ip_literal(address)
    if ip is None:
        return "not an IP address"
    ip = _embedded_ipv4(ip) or ip
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "a site-local address"),
        (not ip.is_global, "not a public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def redirect_target(url: httpx2.URL, location: str) -> httpx2.URL:
    """The absolute URL a `Location` header points to (relative locations resolve against `url`)."""
    try:
        return url.join(location.strip())
    except (httpx2.InvalidURL, ValueError) as exc:
        raise RefusedURL(
            f"refused to follow a redirect from {where(url)}: invalid Location ({exc})"
        ) from None


def _ip_literal(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form reaches in the end (mapped ::ffff:a.b.c.d, 6to4, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
