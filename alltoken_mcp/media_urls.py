"""Signed download URLs for saved media: `{public_url}/media/{job_id}/{index}?exp=…&sig=…`.

A host on another machine cannot open the server's paths, so over HTTP a job's answer also carries one
short-lived URL per saved file. `sig` is HMAC-SHA256, with the server's media secret, over the path and
the expiry (Unix seconds), cut to 128 bits and base64url-encoded; any replica holding the same secret
(`ALLTOKEN_MCP_MEDIA_SECRET`) and the shared output directory serves it. The URL is the only credential:
whoever has it can fetch that one file until it expires, and nothing else.

Without a configured secret each process draws its own, so only the process that signed a URL accepts
it: fine for one server, wrong for replicas behind a balancer (the README says so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

LINK_SECONDS = 900
"""How long a download URL works. Every job answer carries fresh ones, so a later `job_status` renews them."""
SIGNATURE_BYTES = 16
"""128 bits of HMAC: unforgeable, and 22 characters in the URL instead of 43."""
PATH_PREFIX = "/media/"
_PATH = re.compile(r"/media/(job_[0-9a-f]{16})/([0-9]{1,6})")


@dataclass(frozen=True)
class MediaTarget:
    """The file a signed path names."""

    job_id: str
    index: int


@dataclass(frozen=True)
class MediaLinks:
    """Signs and checks download URLs for one server."""

    public_url: str
    """The base URL clients reach this server at (no trailing slash), e.g. https://mcp.example.com."""
    secret: bytes = field(repr=False)
    seconds: int = LINK_SECONDS

    @classmethod
    def create(cls, public_url: str, secret: bytes | None) -> MediaLinks:
        if secret is None:
            logger.warning(
                "ALLTOKEN_MCP_MEDIA_SECRET is not set: media download URLs and confirmation round trips are "
                "sealed with a secret of this process only, so no other replica accepts them (set it on "
                "every replica behind a balancer)"
            )
            secret = secrets.token_bytes(32)
        return cls(public_url.rstrip("/"), secret)

    def url(self, job_id: str, index: int, *, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.seconds
        path = f"{PATH_PREFIX}{job_id}/{index}"
        return f"{self.public_url}{path}?exp={expires}&sig={self._signature(path, expires)}"

    def check(
        self, path: str, exp: str | None, sig: str | None, *, now: float | None = None
    ) -> MediaTarget | None:
        """The file `path` names if `exp` and `sig` are this server's signature for it and have not
        expired; None otherwise (the caller answers 403 and says no more)."""
        match = _PATH.fullmatch(path)
        if match is None or exp is None or sig is None or not exp.isdigit() or len(exp) > 12:
            return None
        expected = self._signature(path, int(exp))
        # Compared before the expiry, and in constant time: the answer's timing says nothing about the secret.
        if not hmac.compare_digest(expected.encode(), sig.encode("ascii", "replace")):
            return None
        if int(exp) < (now if now is not None else time.time()):
            return None
        return MediaTarget(match.group(1), int(match.group(2)))

    def _signature(self, path: str, expires: int) -> str:
        mac = hmac.new(self.secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
