"""`Catalog`: the one cached copy of AllToken's model listings, and the questions asked of it.

Every reader — `list_models`, the media tools' argument checks, chat's search rules, close-match hints —
asks the same `Catalog`, so one fetch serves them all. The merged listing is kept in memory and in the
store's cache table: a restarted server answers from disk without a network round trip while the copy is
fresh. A failed refresh serves the stale copy with a warning; only when there is no copy at all does the
error reach the caller. One refresh runs at a time, so a burst of calls on a cold cache costs one fetch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, Field, ValidationError

from alltoken_mcp import formats
from alltoken_mcp.catalog.listing import Modality, ModelEntry, find_model, merge_listings
from alltoken_mcp.catalog.rules import VideoRules, video_rules
from alltoken_mcp.client import AllTokenClient, ModelInfo
from alltoken_mcp.errors import AllTokenError, AuthenticationError
from alltoken_mcp.store import Store, StoreError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3
"""Bumped when the stored shape changes; an entry of another format is ignored and fetched afresh."""

SOURCE_PATHS = {
    "catalog": "/api-account/models",
    "models": "/models",
    "images": "/images/models",
    "videos": "/videos/models",
}
_KIND_SOURCE = {"image": "images", "video": "videos"}


@dataclass(frozen=True)
class CatalogTTL:
    """How long a fetched catalog is served before it is fetched again."""

    complete: float = 6 * 3600.0
    partial: float = 120.0
    """A listing that missed a source, or lacks a model a caller names, is re-fetched once it is this
    old, rather than hiding, say, video constraints or a new model for hours."""


class CatalogSnapshot(BaseModel):
    """What the cache stores: the merged listing and when it was fetched."""

    format: int = CACHE_FORMAT
    fetched_at: float
    complete: bool
    models: list[ModelEntry]
    warnings: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class CatalogView:
    """A snapshot as one caller gets it: `stale` when a refresh failed and an older copy is served, and
    the warnings to show (the snapshot's own plus why it is stale)."""

    snapshot: CatalogSnapshot
    stale: bool
    warnings: list[str]

    @property
    def models(self) -> list[ModelEntry]:
        return self.snapshot.models


class _FetchFailed(Exception):
    """Every listing failed; the errors by source (see SOURCE_PATHS)."""

    def __init__(self, errors: dict[str, AllTokenError]) -> None:
        super().__init__("no listing could be read")
        self.errors = errors

    def error(self, prefer: str | None) -> AllTokenError:
        """The error to show: the preferred source's, else one that tells the user what to fix (a bad
        key) rather than a network blip."""
        if prefer is not None and prefer in self.errors:
            return self.errors[prefer]
        auth = [e for e in self.errors.values() if isinstance(e, AuthenticationError)]
        return auth[0] if auth else next(iter(self.errors.values()))


class Catalog:
    """The merged catalog for one server: memory first, then the store, then AllToken."""

    def __init__(self, store: Store, client: AllTokenClient, *, ttl: CatalogTTL | None = None) -> None:
        self._store = store
        self._client = client
        self._ttl = ttl or CatalogTTL()
        self._lock = anyio.Lock()
        self._snapshot: CatalogSnapshot | None = None
        self._loaded = False
        self._fetches_done = 0
        self._failure: tuple[int, _FetchFailed] | None = None
        """The last fetch's failure, with the number it had among the finished fetches (None: it worked)."""
        self._cache_key = f"catalog:{client.base_url}:{'key' if client.has_api_key else 'public'}"

    # -- questions -----------------------------------------------------------------------------------

    async def snapshot(self, *, refresh: bool = False) -> CatalogView:
        """The catalog; `refresh` fetches it now. Raises the fetch error only when no copy exists."""
        return await self._get(max_age=0.0 if refresh else None, prefer=None)

    async def models(self, kind: Modality | None = None, *, expecting: str | None = None) -> list[ModelEntry]:
        """The models of `kind`. With `expecting`, a copy that lacks that id is re-fetched first once
        it is `ttl.partial` old, so a model AllToken just added is not refused for hours."""
        prefer = _KIND_SOURCE.get(kind or "")
        view = await self._get(max_age=None, prefer=prefer)
        chosen = [m for m in view.models if m.is_kind(kind)]
        if expecting is not None and chosen and find_model(chosen, expecting) is None:
            view = await self._get(max_age=self._ttl.partial, prefer=prefer)
            chosen = [m for m in view.models if m.is_kind(kind)]
        return chosen

    async def video_rules(self, model_id: str) -> VideoRules:
        """What `model_id` accepts: its catalog entry's rules, or (a model the catalog lacks) what its
        family's documented rules say."""
        entry = find_model(await self.models("video", expecting=model_id), model_id)
        return video_rules_of(entry, model_id)

    async def known_ids(self) -> list[str]:
        """Model ids for suggestions; empty when the catalog cannot be had (never raises)."""
        try:
            view = await self.snapshot()
        except AllTokenError:
            return []
        return [m.id for m in view.models]

    # -- the cache -----------------------------------------------------------------------------------

    def _fresh(self, snapshot: CatalogSnapshot, max_age: float | None) -> bool:
        ttl = self._ttl.complete if snapshot.complete else self._ttl.partial
        if max_age is not None:
            ttl = min(ttl, max_age)
        return 0 <= time.time() - snapshot.fetched_at < ttl

    async def _get(self, *, max_age: float | None, prefer: str | None) -> CatalogView:
        arrived_after = self._fetches_done
        async with self._lock:
            if not self._loaded:
                self._snapshot = await self._load()
                self._loaded = True
            current = self._snapshot
            if current is not None and self._fresh(current, max_age):
                return CatalogView(current, False, list(current.warnings))
            failed = None if max_age == 0 else self._failure
            if failed is not None and failed[0] > arrived_after:
                # This call queued behind a fetch that failed meanwhile: share its outcome instead of
                # failing again in turn (N queued callers would otherwise wait N fetches).
                return self._stale_or_raise(current, failed[1], prefer)
            try:
                fetched = await self._fetch()
            except _FetchFailed as failure:
                self._fetches_done += 1
                self._failure = (self._fetches_done, failure)
                if current is not None:
                    logger.warning("catalog refresh failed, serving an older copy: %s", failure.error(prefer))
                return self._stale_or_raise(current, failure, prefer)
            self._fetches_done += 1
            self._failure = None
            self._snapshot = fetched
            try:
                await self._store.cache_put(self._cache_key, fetched.model_dump(mode="json"))
            except StoreError as exc:  # only a restart's first listing needs the disk copy
                logger.warning("catalog kept in memory only: %s", exc)
            return CatalogView(fetched, False, list(fetched.warnings))

    @staticmethod
    def _stale_or_raise(
        current: CatalogSnapshot | None, failure: _FetchFailed, prefer: str | None
    ) -> CatalogView:
        exc = failure.error(prefer)
        if current is None:
            raise exc
        age = formats.age(current.fetched_at)
        warning = f"Could not refresh the catalog ({exc}); showing the copy fetched {age} ago."
        return CatalogView(current, True, [*current.warnings, warning])

    async def _load(self) -> CatalogSnapshot | None:
        try:
            raw = await self._store.cache_get(self._cache_key)
        except StoreError as exc:
            logger.warning("catalog cache unreadable, fetching afresh: %s", exc)
            return None
        if raw is None:
            return None
        try:
            snapshot = CatalogSnapshot.model_validate(raw)
        except ValidationError:
            logger.info("ignoring a catalog cache entry in an older format")
            return None
        return snapshot if snapshot.format == CACHE_FORMAT else None

    async def _fetch(self) -> CatalogSnapshot:
        client = self._client
        results: dict[str, Any] = {}
        errors: dict[str, AllTokenError] = {}

        async def one(name: str, call: Callable[[], Awaitable[Sequence[ModelInfo]]]) -> None:
            try:
                results[name] = await call()
            except AllTokenError as exc:
                errors[name] = exc

        sources: dict[str, Callable[[], Awaitable[Sequence[ModelInfo]]]] = {"catalog": client.catalog}
        if client.has_api_key:
            sources.update(
                models=client.list_models, images=client.list_image_models, videos=client.list_video_models
            )
        async with anyio.create_task_group() as tg:
            for name, call in sources.items():
                tg.start_soon(one, name, call)

        if not results:
            raise _FetchFailed(errors)
        warnings: list[str] = []
        if client.key_problem is not None:
            warnings.append(
                f"{client.key_problem} Until then this is AllToken's public catalog, which may differ from "
                "what a key can call."
            )
        for name, exc in errors.items():
            warnings.append(f"{SOURCE_PATHS[name]} could not be read ({exc}); the listing may be incomplete.")
        entries = merge_listings(
            results.get("models", []),
            results.get("images", []),
            results.get("videos", []),
            results.get("catalog", []),
        )
        return CatalogSnapshot(fetched_at=time.time(), complete=not errors, models=entries, warnings=warnings)


def video_rules_of(entry: ModelEntry | None, model_id: str) -> VideoRules:
    """The rules of a catalog entry; for an id the catalog lacks, what its family's rules say."""
    if entry is not None and entry.video is not None:
        return entry.video
    return video_rules(model_id, None)
