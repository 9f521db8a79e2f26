"""`list_models` and `route_health`, the `alltoken://models…` and `alltoken://health` resources, and the
catalog cache behind them.

The catalog merges four listings: `/v1/models` (what the key can call), `/v1/images/models`,
`/v1/videos/models` (video constraints) and the public `/api-account/models` (prices, tags, limits).
It is kept in memory and in the store's cache table with a TTL, so a restarted server answers from disk
without a network round trip while the copy is fresh. A failed refresh serves the stale copy with a
warning; only when there is no copy at all does the error reach the caller.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import BaseModel, Field, ValidationError

from alltoken_mcp.client import AllTokenClient, CatalogModel, HealthSummary, ModelInfo, RouteHealth
from alltoken_mcp.errors import AllTokenError, AuthenticationError
from alltoken_mcp.server import AppState, app_state
from alltoken_mcp.store import Store, StoreError
from alltoken_mcp.tools.common import JSON_MIME, add_state_resource, to_json, tool_result
from alltoken_mcp.tools.errors import close_matches, describe, tool_error

logger = logging.getLogger(__name__)

CATALOG_TTL_SECONDS = 6 * 3600.0
# A listing that missed a source is re-fetched soon rather than hiding, say, video constraints for hours.
PARTIAL_TTL_SECONDS = 120.0
CACHE_FORMAT = 1

# alltoken-api.md §2.6: families whose models really search with `enable_search`.
SEARCH_FAMILIES = ("deepseek", "qwen")

Modality = Literal["text", "vision", "image", "video"]
Capability = Literal[
    "search",
    "thinking",
    "image_input",
    "tools",
    "structured_output",
    "first_last_frame",
    "audio",
    "auto_duration",
]
RouteStatus = Literal["healthy", "degraded", "incident"]


# ------------------------------------------------------------------------------------------ models


class DurationRule(BaseModel):
    """Allowed video durations in seconds: a range (min..max by step) or a list of values."""

    min: int | None = None
    max: int | None = None
    step: int | None = None
    values: list[int] | None = None
    default: int | None = None
    supports_auto: bool = Field(False, description="duration -1 lets the model choose")


class VideoConstraints(BaseModel):
    durations: DurationRule | None = Field(None, description="null: the duration is decided upstream")
    resolutions: list[str] | None = None
    default_resolution: str | None = None
    ratios: list[str] | None = None
    default_ratio: str | None = None
    input_types: list[str] = Field(default_factory=list)
    frames: dict[str, int | None] | None = None
    features: list[str] = Field(default_factory=list, description="optional features this model honours")
    prompt_max_length: int | None = None


class ModelEntry(BaseModel):
    id: str
    name: str | None = None
    modality: str = Field(description="text | vision | image | video | audio | unknown")
    family: str | None = None
    description: str | None = None
    input_modalities: list[str] = Field(default_factory=list)
    output_modalities: list[str] = Field(default_factory=list)
    context_length: int | None = None
    max_completion_tokens: int | None = None
    pricing: dict[str, Any] | None = Field(None, description="as AllToken publishes it (USD)")
    supports: list[str] = Field(default_factory=list)
    video: VideoConstraints | None = None


class CatalogSnapshot(BaseModel):
    """What the cache stores: the merged listing and when it was fetched."""

    format: int = CACHE_FORMAT
    fetched_at: float
    complete: bool
    models: list[ModelEntry]
    warnings: list[str] = Field(default_factory=list)


class ListModelsOutput(BaseModel):
    models: list[ModelEntry]
    total: int = Field(description="models matching the filters, before `limit`")
    fetched_at: str = Field(description="when the catalog was fetched from AllToken (UTC)")
    stale: bool = Field(description="true when a refresh failed and an older copy is shown")
    warnings: list[str] = Field(default_factory=list)


class HealthSummaryOut(BaseModel):
    total_routes: int | None = None
    healthy_routes: int | None = None
    degraded_routes: int | None = None
    incident_routes: int | None = None
    median_latency_ms: float | None = None
    overall_availability: float | None = Field(None, description="percent")


class RouteRow(BaseModel):
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    availability: float | None = Field(None, description="percent")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_tps: float | None = None
    incidents: list[dict[str, Any]] = Field(default_factory=list)


class RouteHealthOutput(BaseModel):
    summary: HealthSummaryOut | None = Field(None, description="gateway-wide; null if it could not be read")
    routes: list[RouteRow]
    total: int = Field(description="routes matching the filters, before `limit`")
    warnings: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------ merging


def _modality(info: ModelInfo) -> str:
    if info.modality:
        return info.modality
    outputs = info.output_modalities or []
    for kind in ("image", "video", "audio"):
        if kind in outputs or info.object == kind:
            return kind
    if info.capabilities is not None:
        return "video"
    if "image" in (info.input_modalities or []):
        return "vision"
    return "text" if info.owned_by in (None, "chat") or "text" in outputs else "unknown"


def _video_constraints(info: ModelInfo) -> VideoConstraints | None:
    caps = info.capabilities
    if caps is None:
        return None
    duration = caps.duration
    rule = None
    if duration is not None:
        rule = DurationRule(
            min=duration.min,
            max=duration.max,
            step=duration.step,
            values=duration.values,
            default=duration.default,
            supports_auto=bool(duration.supports_auto),
        )
    features = caps.features.model_dump(exclude_none=True) if caps.features else {}
    return VideoConstraints(
        durations=rule,
        resolutions=caps.resolutions.values if caps.resolutions else None,
        default_resolution=caps.resolutions.default if caps.resolutions else None,
        ratios=caps.ratios.values if caps.ratios else None,
        default_ratio=caps.ratios.default if caps.ratios else None,
        input_types=list(caps.input_types or []),
        frames=caps.frames.model_dump() if caps.frames else None,
        features=sorted(name for name, on in features.items() if on is True),
        prompt_max_length=caps.prompt.max_length if caps.prompt else None,
    )


def _supports(entry: ModelEntry, params: set[str], tags: set[str]) -> list[str]:
    found: set[str] = set()
    if entry.modality in ("text", "vision"):
        family = (entry.family or "").lower()
        if "web_search" in tags or family in SEARCH_FAMILIES or entry.id.startswith(SEARCH_FAMILIES):
            found.add("search")
        if "reasoning" in tags or "thinking" in params:
            found.add("thinking")
        if entry.modality == "vision" or "image" in entry.input_modalities:
            found.add("image_input")
        if "tools" in params:
            found.add("tools")
        if "response_format" in params:
            found.add("structured_output")
    if entry.video is not None:
        kinds = set(entry.video.input_types)
        if kinds & {"image_first_frame", "image_first_last_frame", "image_reference"}:
            found.add("image_input")
        if "image_first_last_frame" in kinds:
            found.add("first_last_frame")
        if "generate_audio" in entry.video.features:
            found.add("audio")
        if entry.video.durations is not None and entry.video.durations.supports_auto:
            found.add("auto_duration")
    return sorted(found)


def merge_listings(
    v1: Sequence[ModelInfo],
    images: Sequence[ModelInfo],
    videos: Sequence[ModelInfo],
    public: Sequence[CatalogModel],
) -> list[ModelEntry]:
    """One entry per model id. Later listings fill what earlier ones lack; video constraints come from
    `/videos/models` and prices, limits and tags from the public catalog."""
    infos: dict[str, ModelInfo] = {}
    for listing in (v1, images, videos, public):
        for info in listing:
            known = infos.get(info.id)
            if known is None:
                infos[info.id] = info
                continue
            updates = {
                k: v
                for k, v in info.model_dump(exclude_unset=True).items()
                if getattr(known, k, None) in (None, [])
            }
            if info.capabilities is not None:
                updates["capabilities"] = info.capabilities
            infos[info.id] = known.model_copy(update=updates)
    public_by_id = {p.id: p for p in public}

    entries: list[ModelEntry] = []
    for model_id, info in infos.items():
        rich = public_by_id.get(model_id)
        entry = ModelEntry(
            id=model_id,
            name=info.display_name,
            modality=_modality(info),
            family=info.family or info.brand,
            description=info.description,
            input_modalities=list(info.input_modalities or []),
            output_modalities=list(info.output_modalities or []),
            context_length=rich.context_length if rich else None,
            max_completion_tokens=rich.max_completion_tokens if rich else None,
            pricing=rich.pricing if rich else None,
            video=_video_constraints(info),
        )
        params = set(rich.supported_parameters or []) if rich else set()
        tags = set(rich.tags or []) if rich else set()
        entry.supports = _supports(entry, params, tags)
        entries.append(entry)
    order = {"text": 0, "vision": 0, "image": 1, "video": 2}
    entries.sort(key=lambda e: (order.get(e.modality, 3), e.id))
    return entries


# ------------------------------------------------------------------------------------------- cache

T = TypeVar("T")


def _stale_warning(snapshot: CatalogSnapshot, exc: AllTokenError) -> str:
    return f"Could not refresh the catalog ({exc}); showing the copy fetched {_age(snapshot.fetched_at)} ago."


class CatalogCache:
    """The merged catalog for one state database: memory first, then the store, then AllToken.

    One refresh runs at a time (the lock), so a burst of calls on a cold cache costs one fetch.
    """

    def __init__(self, store: Store, client: AllTokenClient) -> None:
        self._store = store
        self._client = client
        self._lock = anyio.Lock()
        self._snapshot: CatalogSnapshot | None = None
        self._loaded = False
        self._fetches_done = 0
        self._failure: tuple[int, AllTokenError] | None = None
        """The last fetch's error, with the number it had among the finished fetches (None: it worked)."""
        self.cache_key = f"catalog:{client.base_url}:{'key' if client.has_api_key else 'public'}"

    @staticmethod
    def _fresh(snapshot: CatalogSnapshot) -> bool:
        ttl = CATALOG_TTL_SECONDS if snapshot.complete else PARTIAL_TTL_SECONDS
        return 0 <= time.time() - snapshot.fetched_at < ttl

    async def get(self, *, refresh: bool = False) -> tuple[CatalogSnapshot, bool, list[str]]:
        """(snapshot, stale, warnings). Raises the fetch error only when no copy exists at all."""
        arrived_after = self._fetches_done
        async with self._lock:
            if not self._loaded:
                self._snapshot = await self._load()
                self._loaded = True
            current = self._snapshot
            if current is not None and not refresh and self._fresh(current):
                return current, False, list(current.warnings)
            failed = None if refresh else self._failure
            if failed is not None and failed[0] > arrived_after:
                # This call queued behind a fetch that failed meanwhile: share its outcome instead of
                # failing again in turn (N queued callers would otherwise wait N fetches).
                exc = failed[1]
                if current is None:
                    raise exc
                return current, True, [*current.warnings, _stale_warning(current, exc)]
            try:
                fetched = await self._fetch()
            except AllTokenError as exc:
                self._fetches_done += 1
                self._failure = (self._fetches_done, exc)
                if current is None:
                    raise
                logger.warning("catalog refresh failed, serving an older copy: %s", exc)
                return current, True, [*current.warnings, _stale_warning(current, exc)]
            self._fetches_done += 1
            self._failure = None
            self._snapshot = fetched
            try:
                await self._store.cache_put(self.cache_key, fetched.model_dump(mode="json"))
            except StoreError as exc:  # only a restart's first listing needs the disk copy
                logger.warning("catalog kept in memory only: %s", exc)
            return fetched, False, list(fetched.warnings)

    async def known_ids(self) -> list[str]:
        """Model ids for suggestions; empty when the catalog cannot be had (never raises)."""
        try:
            snapshot, _, _ = await self.get()
        except AllTokenError:
            return []
        return [m.id for m in snapshot.models]

    async def _load(self) -> CatalogSnapshot | None:
        try:
            raw = await self._store.cache_get(self.cache_key)
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
            # Prefer the error that tells the user what to fix (a bad key) over a network blip.
            raise next((e for e in errors.values() if isinstance(e, AuthenticationError)), None) or next(
                iter(errors.values())
            )
        warnings: list[str] = []
        if client.key_problem is not None:
            warnings.append(
                f"{client.key_problem} Until then this is AllToken's public catalog, which may differ from "
                "what a key can call."
            )
        for name, exc in errors.items():
            path = {"catalog": "/api-account/models", "models": "/models", "images": "/images/models"}.get(
                name, "/videos/models"
            )
            warnings.append(f"{path} could not be read ({exc}); the listing may be incomplete.")
        entries = merge_listings(
            results.get("models", []),
            results.get("images", []),
            results.get("videos", []),
            results.get("catalog", []),
        )
        return CatalogSnapshot(fetched_at=time.time(), complete=not errors, models=entries, warnings=warnings)


_caches: weakref.WeakKeyDictionary[Store, CatalogCache] = weakref.WeakKeyDictionary()


def catalog_cache(state: AppState) -> CatalogCache:
    """The cache for this server's store and client (one per lifespan)."""
    cache = _caches.get(state.store)
    if cache is None or cache._client is not state.client:
        cache = _caches[state.store] = CatalogCache(state.store, state.client)
    return cache


def _age(epoch: float) -> str:
    seconds = max(0, int(time.time() - epoch))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------- filters


def filter_models(
    models: Sequence[ModelEntry],
    *,
    modality: Modality | None = None,
    search: str | None = None,
    supports: Sequence[str] = (),
) -> list[ModelEntry]:
    wanted = set(supports)
    needle = (search or "").strip().lower()
    chosen: list[ModelEntry] = []
    for m in models:
        if modality == "text" and m.modality not in ("text", "vision"):
            continue
        if modality in ("vision", "image", "video") and m.modality != modality:
            continue
        if needle and not any(needle in (v or "").lower() for v in (m.id, m.name, m.family)):
            continue
        if not wanted <= set(m.supports):
            continue
        chosen.append(m)
    return chosen


def _price(pricing: dict[str, Any] | None) -> str:
    if not pricing:
        return "price n/a"
    if "input" in pricing and "output" in pricing:
        return f"${pricing['input']} in / ${pricing['output']} out per {pricing.get('unit', '1M tokens')}"
    for key, unit in (("per_image", "image"), ("per_second", "second")):
        tiers = pricing.get(key)
        if isinstance(tiers, dict) and tiers:
            return f"per {unit}: " + ", ".join(f"{k} ${v}" for k, v in tiers.items())
    return ", ".join(f"{k}={v}" for k, v in pricing.items() if k != "currency")


def _line(m: ModelEntry) -> str:
    parts = [m.id, m.modality, _price(m.pricing)]
    if m.video is not None and m.video.durations is not None:
        d = m.video.durations
        span = f"{d.min}-{d.max}s" if d.values is None else "/".join(map(str, d.values)) + "s"
        parts.append(span + (" or auto" if d.supports_auto else ""))
    if m.video is not None and m.video.resolutions:
        parts.append("/".join(m.video.resolutions))
    if m.supports:
        parts.append("supports " + ",".join(m.supports))
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------- health


async def read_health(
    client: AllTokenClient, model: str | None = None
) -> tuple[HealthSummary | None, list[RouteHealth], list[str]]:
    """Summary and routes fetched concurrently; one failing still returns the other with a warning."""
    summary: list[HealthSummary] = []
    routes: list[list[RouteHealth]] = []
    errors: list[AllTokenError] = []

    async def fetch(call: Callable[[], Awaitable[T]], into: list[T]) -> None:
        try:
            into.append(await call())
        except AllTokenError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, client.health_summary, summary)
        tg.start_soon(fetch, client.health_routes, routes)
    if errors and not summary and not routes:
        raise errors[0]
    warnings = [f"Part of the health data could not be read: {e}" for e in errors]
    rows = routes[0] if routes else []
    if model is not None:
        rows = [r for r in rows if r.model == model]
    return (summary[0] if summary else None), rows, warnings


def _summary_out(summary: HealthSummary | None) -> HealthSummaryOut | None:
    if summary is None:
        return None
    return HealthSummaryOut.model_validate(summary.model_dump(include=set(HealthSummaryOut.model_fields)))


def _health_text(out: RouteHealthOutput, model: str | None) -> str:
    lines: list[str] = []
    s = out.summary
    if s is not None:
        lines.append(
            f"AllToken: {s.total_routes} routes — {s.healthy_routes} healthy, {s.degraded_routes} degraded, "
            f"{s.incident_routes} incident; median latency {s.median_latency_ms} ms; "
            f"availability {s.overall_availability}%."
        )
    scope = f"for {model}" if model else "matching"
    lines.append(f"{out.total} route(s) {scope}" + (f", showing {len(out.routes)}:" if out.routes else "."))
    # Unhealthy routes first: they are what a caller acts on.
    rank = {"incident": 0, "degraded": 1}
    for r in sorted(out.routes, key=lambda r: rank.get(r.status or "", 2))[:40]:
        lines.append(
            f"- {r.model} via {r.provider}: {r.status}, {r.availability}% available, "
            f"p50 {r.latency_p50_ms} ms, p95 {r.latency_p95_ms} ms"
        )
    lines += [f"warning: {w}" for w in out.warnings]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ registration

LIST_MODELS_DESCRIPTION = """\
List AllToken's models with prices, limits and capabilities. Use it to pick a model id for
alltoken_chat / alltoken_image / alltoken_video, to compare prices, or to check a video model's allowed
durations, resolutions and ratios before starting a render. Filters combine (AND). Answers from a local
cache (refreshed every few hours); pass refresh=true to force a fresh listing."""

ROUTE_HEALTH_DESCRIPTION = """\
Current health of AllToken's routes (model × provider): a gateway-wide summary plus per-route
availability, p50/p95 latency and open incidents. Pass `model` to see only that model's routes — useful
before choosing a model or after a call failed with all_providers_failed."""


def register(server: MCPServer[AppState]) -> None:
    @server.tool(
        name="list_models",
        title="List AllToken models",
        description=LIST_MODELS_DESCRIPTION,
        annotations=t.ToolAnnotations(
            title="List AllToken models", read_only_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def list_models(
        ctx: Context[AppState],
        modality: Annotated[
            Modality | None,
            Field(
                description="text = every chat model; vision = chat models that accept images; "
                "image / video = generators"
            ),
        ] = None,
        search: Annotated[
            str | None,
            Field(max_length=100, description="case-insensitive substring of the id, name or family"),
        ] = None,
        supports: Annotated[
            list[Capability] | None,
            Field(
                max_length=8,
                description="only models supporting all of these: search (enable_search really searches), "
                "thinking, image_input, tools, structured_output, first_last_frame, audio, auto_duration",
            ),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="at most this many models")] = 100,
        refresh: Annotated[bool, Field(description="bypass the cache and fetch the listing now")] = False,
    ) -> Annotated[t.CallToolResult, ListModelsOutput]:
        cache = catalog_cache(app_state(ctx))
        try:
            snapshot, stale, warnings = await cache.get(refresh=refresh)
        except AllTokenError as exc:
            raise tool_error(exc) from exc
        matching = filter_models(snapshot.models, modality=modality, search=search, supports=supports or ())
        out = ListModelsOutput(
            models=matching[:limit],
            total=len(matching),
            fetched_at=_iso(snapshot.fetched_at),
            stale=stale,
            warnings=warnings,
        )
        head = f"{out.total} model(s)" + (
            f", showing {len(out.models)}" if out.total > len(out.models) else ""
        )
        lines = [head + f" (catalog fetched {_age(snapshot.fetched_at)} ago):"]
        lines += [f"- {_line(m)}" for m in out.models]
        lines += [f"warning: {w}" for w in warnings]
        if not matching:
            lines.append("No model matches; loosen the filters or call list_models with none.")
        return tool_result("\n".join(lines), out)

    @server.tool(
        name="route_health",
        title="AllToken route health",
        description=ROUTE_HEALTH_DESCRIPTION,
        annotations=t.ToolAnnotations(
            title="AllToken route health", read_only_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def route_health(
        ctx: Context[AppState],
        model: Annotated[
            str | None, Field(min_length=1, max_length=200, description="only routes serving this model id")
        ] = None,
        status: Annotated[RouteStatus | None, Field(description="only routes in this state")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="at most this many routes")] = 100,
    ) -> Annotated[t.CallToolResult, RouteHealthOutput]:
        state = app_state(ctx)
        try:
            summary, rows, warnings = await read_health(state.client, model)
        except AllTokenError as exc:
            raise tool_error(exc) from exc
        if model is not None and not rows:
            known = await catalog_cache(state).known_ids()
            if known and model not in known:
                hints = close_matches(model, known)
                raise ToolError(
                    f"AllToken has no model {model!r}."
                    + (f" Close matches: {', '.join(hints)}." if hints else "")
                    + " Call list_models to see every model id."
                )
            warnings.append(f"No monitored routes for {model}.")
        if status is not None:
            rows = [r for r in rows if r.status == status]
        out = RouteHealthOutput(
            summary=_summary_out(summary),
            routes=[
                RouteRow.model_validate(r.model_dump(include=set(RouteRow.model_fields)))
                for r in rows[:limit]
            ],
            total=len(rows),
            warnings=warnings,
        )
        return tool_result(_health_text(out, model), out)

    async def models_resource(state: AppState) -> str:
        snapshot, stale, warnings = await catalog_cache(state).get()
        return to_json(
            ListModelsOutput(
                models=snapshot.models,
                total=len(snapshot.models),
                fetched_at=_iso(snapshot.fetched_at),
                stale=stale,
                warnings=warnings,
            )
        )

    add_state_resource(
        server,
        "alltoken://models",
        models_resource,
        name="models",
        title="AllToken model catalog",
        description="Every AllToken model with prices, limits, capabilities and video constraints (JSON).",
    )

    @server.resource(
        "alltoken://models/{model_id}",
        name="model",
        title="One AllToken model",
        description="One model's catalog entry: price, limits, capabilities, video constraints (JSON).",
        mime_type=JSON_MIME,
    )
    async def model_resource(model_id: str, ctx: Context[AppState]) -> str:
        cache = catalog_cache(app_state(ctx))
        try:
            snapshot, _, _ = await cache.get()
        except AllTokenError as exc:
            raise ResourceError(describe(exc)) from exc
        for m in snapshot.models:
            if m.id == model_id:
                return to_json(m)
        hints = close_matches(model_id, [m.id for m in snapshot.models])
        raise ResourceNotFoundError(
            f"No AllToken model {model_id!r}." + (f" Close matches: {', '.join(hints)}." if hints else "")
        )

    async def health_resource(state: AppState) -> str:
        summary, rows, warnings = await read_health(state.client)
        out = RouteHealthOutput(
            summary=_summary_out(summary),
            routes=[RouteRow.model_validate(r.model_dump(include=set(RouteRow.model_fields))) for r in rows],
            total=len(rows),
            warnings=warnings,
        )
        return to_json(out)

    add_state_resource(
        server,
        "alltoken://health",
        health_resource,
        name="health",
        title="AllToken route health",
        description="Gateway health summary and every route's availability and latency (JSON).",
    )
