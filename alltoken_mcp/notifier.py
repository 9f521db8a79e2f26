"""`ResourceNotifier`: sends `notifications/resources/updated` to every subscriber, in both protocol eras."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated


@dataclass
class ResourceNotifier:
    """Sends `notifications/resources/updated` for a URI to every subscriber, in both protocol eras.

    2026-07-28 clients listen through the SDK's subscription bus; 2025-era clients call
    `resources/subscribe`, which MCPServer does not serve, so their sessions are tracked here.
    Sessions are held strongly (the request context's session object is not kept alive by anything
    else, so a weak reference would vanish at once); a closed connection is dropped at the first
    failed send.
    """

    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    _legacy: dict[str, set[ServerSession]] = field(default_factory=dict)

    def subscribe(self, uri: str, session: ServerSession) -> None:
        self._legacy.setdefault(uri, set()).add(session)

    def unsubscribe(self, uri: str, session: ServerSession) -> None:
        sessions = self._legacy.get(uri)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._legacy[uri]

    async def updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self._legacy.get(uri, ())):
            try:
                await session.send_resource_updated(uri)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.unsubscribe(uri, session)
