"""`list_models` and `route_health`, and the `alltoken://models…` and `alltoken://health` resources.

The catalog itself — the merged listings, their cache, what each video model accepts — is the
`Catalog` on the app state (alltoken_mcp/catalog); these tools ask it and format the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
import mcp_types as t
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import BaseModel, Field

from alltoken_mcp import formats
from alltoken_mcp.app_state import AppState, app_state
from alltoken_mcp.catalog import (
    Capability,
    CatalogView,
    Modality,
    ModelEntry,
    VideoRules,
    filter_models,
)
from alltoken_mcp.client import AllTokenClient, HealthSummary, RouteHealth
from alltoken_mcp.errors import AllTokenError
from alltoken_mcp.people import current_budget, current_person
from alltoken_mcp.store import StoreError
from alltoken_mcp.tools.error_text import close_matches, describe, tool_error
from alltoken_mcp.tools.results import JSON_MIME, to_json, tool_result
from alltoken_mcp.tools.state_resources import add_state_resource

RouteStatus = Literal["healthy", "degraded", "incident"]
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ models


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
    # A plain object in the schema: the report's shape is alltoken://usage's, and spelling it out here would
    # cost every tools/list ~400 tokens.
    spend: dict[str, Any] | None = Field(None, description="known spend and quota, as alltoken://usage")


# ------------------------------------------------------------------------------------------ text


def listing(view: CatalogView, models: list[ModelEntry], total: int) -> ListModelsOutput:
    return ListModelsOutput(
        models=models,
        total=total,
        fetched_at=formats.utc_iso(view.snapshot.fetched_at),
        stale=view.stale,
        warnings=view.warnings,
    )


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
    if m.video is not None:
        parts += _video_parts(m.video)
    if m.supports:
        parts.append("supports " + ",".join(m.supports))
    return " · ".join(parts)


def _video_parts(rules: VideoRules) -> list[str]:
    """Durations, ratios and resolutions in short: the structured `video` field has the rest."""
    if rules.source == "none":
        return ["no published constraints"]
    parts: list[str] = []
    d = rules.durations
    if rules.duration_fixed:
        parts.append("duration set by the model")
    elif d is not None:
        span = "/".join(map(str, d.values)) if d.values is not None else f"{d.min or 1}-{d.max or '…'}"
        step = f" by {d.step}" if d.values is None and d.step > 1 else ""
        parts.append(f"{span}s{step}" + (" or auto" if d.supports_auto else ""))
    if rules.ratio_fixed:
        parts.append("ratio set by the model")
    elif rules.ratios:
        parts.append("/".join(rules.ratios))
    if rules.resolution_fixed:
        parts.append("one resolution")
    elif rules.resolutions:
        parts.append("/".join(rules.resolutions))
    return parts


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

LIST_MODELS_DESCRIPTION = (
    "AllToken's models with prices, limits and capabilities, and each video model's durations, ratios "
    "and resolutions. Filters combine. Served from a cache of a few hours; refresh=true refetches."
)

ROUTE_HEALTH_DESCRIPTION = (
    "Health of AllToken's routes (model × provider): availability, p50/p95 latency, incidents, and a "
    "gateway summary; also today's and this month's known spend and the account quota. Check it before "
    "choosing a model or after all_providers_failed."
)


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
            Field(description="text: every chat model; vision: chat models that take images"),
        ] = None,
        search: Annotated[
            str | None,
            Field(max_length=100, description="substring of the id, name or family"),
        ] = None,
        supports: Annotated[
            list[Capability] | None,
            Field(max_length=8, description="all of these"),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
        refresh: bool = False,
    ) -> Annotated[t.CallToolResult, ListModelsOutput]:
        try:
            view = await app_state(ctx).catalog.snapshot(refresh=refresh)
        except AllTokenError as exc:
            raise tool_error(exc) from exc
        matching = filter_models(view.models, modality=modality, search=search, supports=supports or ())
        out = listing(view, matching[:limit], len(matching))
        head = f"{out.total} model(s)" + (
            f", showing {len(out.models)}" if out.total > len(out.models) else ""
        )
        lines = [head + f" (catalog fetched {formats.age(view.snapshot.fetched_at)} ago):"]
        lines += [f"- {_line(m)}" for m in out.models]
        lines += [f"warning: {w}" for w in out.warnings]
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
            str | None, Field(min_length=1, max_length=200, description="only this model's routes")
        ] = None,
        status: RouteStatus | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> Annotated[t.CallToolResult, RouteHealthOutput]:
        state = app_state(ctx)
        try:
            summary, rows, warnings = await read_health(state.client, model)
        except AllTokenError as exc:
            raise tool_error(exc) from exc
        if model is not None and not rows:
            known = await state.catalog.known_ids()
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
        text = _health_text(out, model)
        try:
            report = await state.spend.report(person=current_person(), budget=current_budget())
        except StoreError as exc:
            out.warnings.append(f"Known spend could not be read: {exc}")
            return tool_result(f"{text}\nwarning: {out.warnings[-1]}", out)
        out.spend = report.model_dump(mode="json")
        return tool_result(f"{text}\n{report.summary()}", out)

    async def models_resource(state: AppState) -> str:
        view = await state.catalog.snapshot()
        return to_json(listing(view, view.models, len(view.models)))

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
        try:
            view = await app_state(ctx).catalog.snapshot()
        except AllTokenError as exc:
            raise ResourceError(describe(exc)) from exc
        for m in view.models:
            if m.id == model_id:
                return to_json(m)
        hints = close_matches(model_id, [m.id for m in view.models])
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
