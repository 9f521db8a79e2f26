"""`AllTokenClient.download` and `files.download` against hostile answers over real loopback sockets: redirect
hops each checked, a bounded redirect count, and the DNS-rebinding gap closed by checking the address the
connection really reached (over real TLS, with a resolver that lies about the host)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509  # installed with mcp (pyjwt[crypto])
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alltoken_mcp.client import AllTokenClient, RetryPolicy
from alltoken_mcp.files import DownloadError, download
from alltoken_mcp.urlpolicy import MAX_REDIRECTS
from tests.rawserver import RawResponse, raw_server

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"mdat" * 50
PUBLIC = "93.184.216.34"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass
class TLSFiles:
    ca_path: Path
    server: ssl.SSLContext


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    """A test CA and a certificate for localhost/127.0.0.1 signed by it (strict-verification clean)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("alltoken-mcp test CA"))
        .issuer_name(_name("alltoken-mcp test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return TLSFiles(ca_path, server)


@pytest.fixture
def trusting(tls: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> TLSFiles:
    """Clients built now trust the test CA (httpx2 honours SSL_CERT_FILE) and use no proxy."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_path))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return tls


def written(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".mp4", ".partial"))


async def lying_resolver(host: str, port: int) -> list[str]:
    """DNS that says every host is public (the first answer of a rebinding attack)."""
    return [PUBLIC]


@pytest.fixture
async def remote_client() -> AsyncIterator[AllTokenClient]:
    """A client configured for a remote AllToken: nothing on this machine is its own origin."""
    async with AllTokenClient(
        base_url="https://api.alltoken.example/v1",
        api_key="sk-test",
        retry=RetryPolicy(max_attempts=1),
        timeout=10,
        resolver=lying_resolver,
    ) as client:
        yield client


async def test_a_host_that_connects_inside_after_a_public_dns_answer_is_refused(
    trusting: TLSFiles, remote_client: AllTokenClient, tmp_path: Path
) -> None:
    video = RawResponse(headers=[("Content-Type", "video/mp4")], pieces=[MP4], framing="length")
    async with raw_server(video, tls=trusting.server) as server:
        with pytest.raises(DownloadError) as caught:
            await download(
                remote_client,
                f"https://localhost:{server.port}/v.mp4?X-Amz-Signature=secret",
                tmp_path / "v.mp4",
                max_bytes=10**6,
                expect="video",
            )
    message = str(caught.value)
    assert "a loopback address" in message
    assert PUBLIC not in message  # the address judged is the one connected to, not the one resolved
    assert "secret" not in message
    assert caught.value.permanent
    assert written(tmp_path) == []  # neither the file nor its temp


async def test_the_same_server_is_fetched_when_nothing_is_refused(trusting: TLSFiles, tmp_path: Path) -> None:
    # Control for the test above: TLS and the certificate work, so only the peer check refused it.
    video = RawResponse(headers=[("Content-Type", "video/mp4")], pieces=[MP4], framing="length")
    async with raw_server(video, tls=trusting.server) as server:
        base_url = f"https://localhost:{server.port}/v1"
        async with AllTokenClient(
            base_url=base_url, api_key="k", retry=RetryPolicy(max_attempts=1)
        ) as client:
            saved = await download(
                client, f"{base_url[:-3]}/v.mp4", tmp_path / "v.mp4", max_bytes=10**6, expect="video"
            )
    assert saved.path.read_bytes() == MP4


async def test_redirects_are_followed_at_most_five_times(tmp_path: Path) -> None:
    hops = [
        RawResponse(status=302, headers=[("Location", f"/hop{n + 1}")], framing="length")
        for n in range(MAX_REDIRECTS + 1)
    ]
    async with (
        raw_server(*hops) as server,
        AllTokenClient(base_url=server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1)) as client,
    ):
        with pytest.raises(DownloadError, match=f"more than {MAX_REDIRECTS} redirects") as caught:
            await download(
                client, f"{server.origin}/hop0", tmp_path / "v.mp4", max_bytes=10**6, expect="video"
            )
    assert caught.value.permanent
    assert [r.path for r in server.requests] == [f"/hop{n}" for n in range(MAX_REDIRECTS + 1)]


async def test_a_redirect_within_the_origin_is_followed_without_the_api_key(tmp_path: Path) -> None:
    async with (
        raw_server(
            RawResponse(status=307, headers=[("Location", "/real.mp4")], framing="length"),
            RawResponse(headers=[("Content-Type", "video/mp4")], pieces=[MP4], framing="length"),
        ) as server,
        AllTokenClient(
            base_url=server.base_url, api_key="sk-secret", retry=RetryPolicy(max_attempts=1)
        ) as client,
    ):
        saved = await download(
            client, f"{server.origin}/v.mp4", tmp_path / "v.mp4", max_bytes=10**6, expect="video"
        )
    assert saved.path.read_bytes() == MP4
    assert [r.path for r in server.requests] == ["/v.mp4", "/real.mp4"]
    assert all("authorization" not in r.headers for r in server.requests)
