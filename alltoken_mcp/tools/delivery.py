"""Where a media job's files go, settled before anything is paid for: `save_to` checked (by
`destinations.plan_delivery`) against the client's roots, the input directories and the output
directory; and the one input round that asks a 2026-07-28 client for its roots beside spend's
confirmation.

The client's roots are asked here, on the MCP side; `destinations` only ever sees plain root URIs.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import anyio
import mcp_types as t
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import is_version_at_least
from pydantic import ValidationError

from alltoken_mcp import destinations
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.store import Delivery, JobKind
from alltoken_mcp.tools.spend import INPUT_REQUIRED_VERSION

logger = logging.getLogger(__name__)

ROOTS_SECONDS = 5.0
"""How long a 2025-era client has to answer `roots/list` before it is served as one without roots."""
ROOTS_KEY = "roots"
"""The key of the roots request in an `InputRequiredResult` (beside spend's confirmation, if asked)."""


class AskForRoots:
    """The client's roots are needed and, in the 2026-07-28 era, must be asked for in an input round."""


PlannedDelivery: TypeAlias = tuple[Delivery | None, list[str]]
"""The checked `Delivery` (None: the server's defaults) and its warnings."""


async def delivery_or_ask(
    ctx: Context[AppState],
    save_to: str | None,
    *,
    kind: JobKind,
    count: int,
    extension: str,
    overwrite: bool,
    preview: bool,
) -> PlannedDelivery | AskForRoots:
    """Where the job's files go (see `destinations`), checked before anything is paid for or the user is
    asked to confirm it; `AskForRoots` when the client must first be asked for its roots."""
    roots = await _client_roots(ctx, save_to)
    if isinstance(roots, AskForRoots):
        return roots
    dirs = destinations.root_dirs(str(root.uri) for root in roots.roots) if roots is not None else ()
    places = destinations.Places.for_call(app_state(ctx).settings, dirs)
    try:
        return await anyio.to_thread.run_sync(
            lambda: destinations.plan_delivery(
                save_to,
                kind=kind,
                count=count,
                extension=extension,
                overwrite=overwrite,
                preview=preview,
                places=places,
            )
        )
    except destinations.DestinationError as exc:
        raise ToolError(f"{exc} Nothing was sent.") from exc


def input_required(
    delivery: PlannedDelivery | AskForRoots, question: t.InputRequiredResult | None
) -> t.InputRequiredResult | None:
    """One input round for everything the call still needs: the roots and spend's confirmation are asked
    together (a call has one input channel), the confirmation's request state kept as it is."""
    if not isinstance(delivery, AskForRoots):
        return question
    requests: dict[str, t.InputRequest] = dict(question.input_requests or {}) if question else {}
    requests[ROOTS_KEY] = t.ListRootsRequest()
    return t.InputRequiredResult(
        input_requests=requests, request_state=question.request_state if question else None
    )


def planned(delivery: PlannedDelivery | AskForRoots) -> PlannedDelivery:
    """The planned delivery, once `input_required` has said nothing is left to ask."""
    assert not isinstance(delivery, AskForRoots)
    return delivery


async def _client_roots(
    ctx: Context[AppState], save_to: str | None
) -> t.ListRootsResult | AskForRoots | None:
    """The client's roots, when it declares them and they matter: `save_to` is checked against them, and
    without ALLTOKEN_OUTPUT_DIR the first one holds new files. In the 2026-07-28 era they come back in the
    call's `input_responses` after an `InputRequiredResult` round (`AskForRoots`: ask); before it,
    `roots/list` goes out mid-call, and a client that fails or does not answer it in `ROOTS_SECONDS` is
    treated as one without roots (logged), rather than failing the call."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return None
    if save_to is None and app_state(ctx).settings.output_dir_configured:
        return None
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        answer = (ctx.input_responses or {}).get(ROOTS_KEY)
        if answer is None:
            return AskForRoots()
        try:
            return t.ListRootsResult.model_validate(answer.model_dump(mode="json", by_alias=True))
        except ValidationError:
            logger.warning("the client answered the roots request with something else; using no roots")
            return None
    if not ctx.session.can_send_request:
        return None
    try:
        with anyio.fail_after(ROOTS_SECONDS):
            roots: t.ListRootsResult = await ctx.session.send_request(
                t.ListRootsRequest(),
                t.ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        return roots
    except (MCPError, TimeoutError) as exc:
        logger.warning(
            "the client declares roots but roots/list failed (%s); using the input directories", exc
        )
        return None
