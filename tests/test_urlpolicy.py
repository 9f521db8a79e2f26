"""urlpolicy: which result URLs a download may fetch — pure functions, no network."""

from __future__ import annotations

import httpx2
import pytest

from alltoken_mcp.urlpolicy import (
    Origin,
    RefusedURL,
    address_problem,
    check_addresses,
    check_url,
    redirect_target,
    where,
)

SIMULATOR = Origin.of(httpx2.URL("http://127.0.0.1:8787/v1"))
PRODUCTION = Origin.of(httpx2.URL("https://api.alltoken.ai/v1"))


def test_an_origin_fills_in_default_ports_and_normalises_the_host() -> None:
    assert Origin.of(httpx2.URL("https://API.AllToken.ai/v1")) == Origin("https", "api.alltoken.ai", 443)
    assert Origin.of(httpx2.URL("http://[::1]:80/x")) == Origin("http", "::1", 80)
    assert Origin.of(httpx2.URL("https://bücher.example/")).host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787/_cdn/videos/vgen_1.mp4",
        "http://127.0.0.1:8787/_r2/images/igen_1/0.png?X-Amz-Signature=abc",
        "HTTP://127.0.0.1:8787/x",
    ],
)
def test_the_base_urls_own_origin_is_trusted_over_http_whatever_its_address(url: str) -> None:
    assert check_url(httpx2.URL(url), SIMULATOR) is True


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8788/x.mp4", "plain http is allowed only to the configured AllToken origin"),
        ("https://127.0.0.1:8787/x.mp4", "a loopback address"),  # same host and port, other scheme
        ("https://127.0.0.1:8788/x.mp4", "a loopback address"),
        ("http://localhost:8787/x.mp4", "plain http"),  # the same machine by another name is not the origin
        ("http://cdn.example.com/x.mp4", "plain http"),
        ("https://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("https://10.0.0.5/x.png", "a private address"),
        ("https://172.16.3.4/x.png", "a private address"),
        ("https://192.168.1.1/x.png", "a private address"),
        ("https://100.64.0.1/x.png", "not a public address"),
        ("https://0.0.0.0/x.png", "an unspecified address"),
        ("https://224.0.0.1/x.png", "a multicast address"),
        ("https://240.0.0.1/x.png", "a reserved address"),
        ("https://[::1]/x.png", "a loopback address"),
        ("https://[::]/x.png", "an unspecified address"),
        ("https://[fe80::1]/x.png", "a link-local address"),
        ("https://[fd00::1]/x.png", "a private address"),
        ("https://[::ffff:127.0.0.1]/x.png", "a loopback address"),  # IPv4-mapped
        ("https://[::ffff:169.254.169.254]/x.png", "a link-local address"),
        ("https://[2002:7f00:1::]/x.png", "a loopback address"),  # 6to4 of 127.0.0.1
        ("https://[64:ff9b::a00:1]/x.png", "a private address"),  # NAT64 of 10.0.0.1
        ("file:///etc/passwd", "file: URL"),
        ("ftp://example.com/x.mp4", "ftp: URL"),
        ("data:text/plain,hello", "data: URL"),
        ("gopher://example.com/", "gopher: URL"),
        ("/relative/path.mp4", "URL without a scheme"),
        ("https:///nohost.png", "names no host"),
        ("https://example.com:99999/x.png", "port is out of range"),
    ],
)
def test_forbidden_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(RefusedURL, match="refused") as caught:
        check_url(httpx2.URL(url), SIMULATOR)
    assert reason in str(caught.value)


def test_a_public_https_url_needs_its_resolved_addresses_checked() -> None:
    assert check_url(httpx2.URL("https://cdn.example.com/v.mp4?sig=1"), PRODUCTION) is False
    assert check_url(httpx2.URL("https://93.184.216.34/v.mp4"), PRODUCTION) is False


def test_another_port_on_the_base_host_is_another_service() -> None:
    with pytest.raises(RefusedURL, match="plain http"):
        check_url(httpx2.URL("http://127.0.0.1:6379/"), SIMULATOR)
    production_http = httpx2.URL("http://api.alltoken.ai/v1/files/x.mp4")
    with pytest.raises(RefusedURL, match="plain http"):
        check_url(production_http, PRODUCTION)


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"], None),
        (["93.184.216.34", "127.0.0.1"], "127.0.0.1"),  # one bad address is enough: any may be used
        (["10.1.2.3"], "10.1.2.3"),
        (["fe80::1%eth0"], "fe80::1%eth0"),  # a zone id does not hide a link-local address
    ],
)
def test_every_resolved_address_must_be_public(addresses: list[str], refused: str | None) -> None:
    url = httpx2.URL("https://cdn.example.com/v.mp4?X-Amz-Signature=secret")
    if refused is None:
        check_addresses(url, addresses)
        return
    with pytest.raises(RefusedURL) as caught:
        check_addresses(url, addresses)
    assert f"at {refused}," in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_have_no_problem(address: str) -> None:
    assert address_problem(address) is None


def test_a_non_address_is_never_taken_for_a_public_one() -> None:
    assert address_problem("cdn.example.com") == "not an IP address"


def test_redirect_targets_resolve_relative_locations_and_keep_foreign_schemes_for_the_check() -> None:
    base = httpx2.URL("http://127.0.0.1:8787/_cdn/videos/a.mp4")
    assert redirect_target(base, "/b.mp4") == httpx2.URL("http://127.0.0.1:8787/b.mp4")
    assert redirect_target(base, "//evil.example/x") == httpx2.URL("http://evil.example/x")
    with pytest.raises(RefusedURL, match="file: URL"):
        check_url(redirect_target(base, "file:///etc/passwd"), SIMULATOR)


def test_messages_never_show_the_query_string_or_userinfo() -> None:
    url = httpx2.URL("https://user:pw@[::1]:8443/a/b.mp4?X-Amz-Signature=secret")
    assert where(url) == "https://[::1]:8443/a/b.mp4"
    with pytest.raises(RefusedURL) as caught:
        check_url(url, SIMULATOR)
    assert "secret" not in str(caught.value)
    assert "pw" not in str(caught.value)
