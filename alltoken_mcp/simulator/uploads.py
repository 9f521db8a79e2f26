"""`POST /v1/uploads/presign`, the presigned PUT target, and one-time claims of `upload_id` (§6, §11.22).

The PUT target imitates a presigned R2/S3 URL on the simulator's own origin: no Bearer auth (an
`Authorization` header is refused, as S3 refuses two auth mechanisms), the signed Content-Type and
Content-MD5 must be sent back exactly, the body must match the declared length and MD5. Errors there are
S3-style XML, not AllToken envelopes, because that is what a client talks to in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alltoken_mcp.simulator.endpoint import Ctx, sim_state, v1
from alltoken_mcp.simulator.envelope import ApiFailure, invalid, new_hex_id, rfc3339
from alltoken_mcp.simulator.state import SimState, Upload

_MB = 1024 * 1024
_IMAGES = ("image/png", "image/jpeg", "image/webp")
PURPOSES: dict[str, tuple[tuple[str, ...], int]] = {
    "image_edit_source": (_IMAGES, 25 * _MB),
    "image_edit_mask": (_IMAGES, 25 * _MB),
    "image_variation_source": (_IMAGES, 25 * _MB),
    "video_input_image": (_IMAGES, 30 * _MB),
    "video_input_video": (("video/mp4", "video/webm", "video/quicktime"), 200 * _MB),
    "video_input_audio": (
        ("audio/wav", "audio/mpeg", "audio/mp4", "audio/aac", "audio/ogg", "audio/webm"),
        50 * _MB,
    ),
}
_MD5 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@v1
async def presign(ctx: Ctx) -> Response:
    body = await ctx.json()
    purpose = body.get("purpose")
    if purpose not in PURPOSES:
        raise ApiFailure(
            400, "invalid_purpose", f"purpose must be one of: {', '.join(PURPOSES)}", param="purpose"
        )
    allowed, maximum = PURPOSES[purpose]
    content_type = body.get("content_type")
    if content_type not in allowed:
        raise ApiFailure(
            400,
            "invalid_content_type",
            f"content_type for purpose {purpose} must be one of: {', '.join(allowed)}",
            param="content_type",
        )
    length = body.get("content_length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise invalid("content_length must be an integer >= 1 (the exact byte size)", "content_length")
    if length > maximum:
        raise ApiFailure(
            413,
            "payload_too_large",
            f"content_length {length} exceeds the {maximum}-byte maximum for purpose {purpose}",
            param="content_length",
        )
    md5 = body.get("content_md5")
    if not isinstance(md5, str) or not _MD5.match(md5):
        raise ApiFailure(
            400,
            "invalid_content_md5",
            "content_md5 must be the base64 MD5 of the file: 22 characters followed by '=='",
            param="content_md5",
        )
    sha = body.get("checksum_sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ApiFailure(
            400,
            "invalid_checksum_sha256",
            "checksum_sha256 must be 64 lowercase hex characters",
            param="checksum_sha256",
        )
    state, config = ctx.state, ctx.state.config
    now = state.now()
    upload = Upload(
        id=new_hex_id("upl_"),
        owner=ctx.owner,
        purpose=purpose,
        content_type=content_type,
        content_length=length,
        content_md5=md5,
        checksum_sha256=sha,
        token=secrets.token_hex(16),
        url_expires=now + config.scaled(config.upload_url_ttl_s),
        claim_expires=now + config.scaled(config.upload_claim_ttl_s),
    )
    state.uploads[upload.id] = upload
    state.tasks_created["uploads"] += 1
    return JSONResponse(
        {
            "upload_url": f"{ctx.origin}/_r2/uploads/{upload.id}?X-Amz-Signature={upload.token}",
            "method": "PUT",
            "required_headers": {"Content-Type": content_type, "Content-MD5": md5},
            "upload_id": upload.id,
            "expires_in": max(1, math.ceil(config.scaled(config.upload_url_ttl_s))),
            "claim_expires_at": rfc3339(state.wall(upload.claim_expires)),
            "max_content_length": maximum,
        }
    )


def _s3_error(status: int, code: str, message: str) -> Response:
    xml = f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{message}</Message>"
    xml += "</Error>"
    return Response(xml, status_code=status, media_type="application/xml")


async def put_object(request: Request) -> Response:
    """The presigned PUT: checks signature, expiry, signed headers, length and MD5."""
    state = sim_state(request)
    if "authorization" in request.headers:
        state.foreign_authorization += 1
        return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
    upload = state.uploads.get(request.path_params["upload_id"])
    signature = request.query_params.get("X-Amz-Signature", "")
    if upload is None or not hmac.compare_digest(signature, upload.token):
        return _s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")
    if state.now() > upload.url_expires:
        return _s3_error(403, "AccessDenied", "Request has expired")
    if request.headers.get("content-type") != upload.content_type:
        return _s3_error(403, "SignatureDoesNotMatch", "Content-Type differs from the signed value")
    if request.headers.get("content-md5") != upload.content_md5:
        return _s3_error(403, "SignatureDoesNotMatch", "Content-MD5 differs from the signed value")
    data = await request.body()
    if len(data) != upload.content_length:
        return _s3_error(
            400, "IncompleteBody", f"Expected {upload.content_length} bytes, received {len(data)}"
        )
    if base64.b64encode(hashlib.md5(data).digest()).decode() != upload.content_md5:
        return _s3_error(400, "BadDigest", "The Content-MD5 you specified did not match what we received")
    upload.received_sha256 = hashlib.sha256(data).hexdigest()
    return Response(status_code=200, headers={"etag": f'"{hashlib.md5(data).hexdigest()}"'})


def check_claim(state: SimState, owner: str, upload_id: Any, purpose: str, param: str) -> Upload:
    """The upload `upload_id` if `owner` may bind it for `purpose` now; raises a 400 otherwise."""
    upload = state.uploads.get(upload_id) if isinstance(upload_id, str) else None
    if upload is None or upload.owner != owner:
        raise invalid(f"upload_id {upload_id!r} is unknown; create one with POST /v1/uploads/presign", param)
    if upload.claimed_by is not None:
        raise invalid(
            f"upload_id {upload.id} was already used by {upload.claimed_by}; an upload binds once", param
        )
    if state.now() > upload.claim_expires:
        raise invalid(f"upload_id {upload.id} expired before it was used; upload the file again", param)
    if upload.received_sha256 is None:
        raise invalid(f"upload_id {upload.id} has no object yet: PUT the file to upload_url first", param)
    if upload.received_sha256 != upload.checksum_sha256:
        raise invalid(f"upload_id {upload.id}: the uploaded object does not match checksum_sha256", param)
    if upload.purpose != purpose:
        raise invalid(
            f"upload_id {upload.id} has purpose {upload.purpose}; this field needs {purpose}", param
        )
    return upload


def bind(uploads: list[Upload], task_id: str) -> None:
    """Claim every upload for `task_id` (after all validation passed, so a 400 leaves them unclaimed)."""
    for upload in uploads:
        upload.claimed_by = task_id
