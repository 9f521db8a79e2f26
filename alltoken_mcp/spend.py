"""Spend: what paid calls cost, today and this month, and the daily budget (design.md, "Cost is visible and
bounded").

The ledger (`store.charges`) holds one row per paid call with its cost when it is known: a chat turn's from
the cost comment AllToken sends after `[DONE]` (exact), a media job's from AllToken's billing record, looked
up when the job completes (`media_cost`). Which id AllToken files a media charge under is not documented,
so both the create call's request id and the task id are tried; a record that cannot be found or read
leaves the cost unknown, and the ledger counts such charges apart.

Days and months are UTC: "today" starts at 00:00 UTC, and so does the budget's reset — one answer on any
machine and for every process sharing the state directory.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import anyio
from pydantic import BaseModel, Field

from alltoken_mcp.client import AllTokenClient
from alltoken_mcp.errors import AllTokenError, NotFoundError
from alltoken_mcp.settings import BUDGET_VAR, TOKENS_FILE_VAR, Settings
from alltoken_mcp.store import Charge, ChargeKind, Job, SpendTotal, Store

logger = logging.getLogger(__name__)

COST_LOOKUP_SECONDS = 10.0
"""The most a completed job's billing lookups may take together; past it the cost stays unknown."""
QUOTA_LOOKUP_SECONDS = 5.0
"""The most the `/v1/usage` call behind a spend report may take; past it the report says so."""


def usd_text(amount: Decimal) -> str:
    """`$0.0421`: four decimals, enough for a chat turn and exact for media prices."""
    return f"${amount:.4f}"


def day_bounds(now: float) -> tuple[datetime, datetime, datetime]:
    """The start of `now`'s UTC day, of its UTC month, and the next 00:00 UTC."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1), day + timedelta(days=1)


def _in(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


class BudgetReached(Exception):
    """Today's known spend has reached ALLTOKEN_DAILY_BUDGET_USD; the message says by how much and when the
    budget resets."""


async def media_cost(client: AllTokenClient, job: Job) -> Decimal | None:
    """What AllToken charged for `job`, from its billing record; None when no record under the create's
    request id or the task id can be found or read within COST_LOOKUP_SECONDS. Never raises an API error."""
    with anyio.move_on_after(COST_LOOKUP_SECONDS):
        for filed_under in dict.fromkeys(i for i in (job.request_id, job.upstream_id) if i):
            try:
                cost = (await client.billing_record(filed_under)).charged_usd()
            except NotFoundError:
                continue
            except AllTokenError as exc:
                logger.info("job %s: its cost could not be looked up: %s", job.job_id, exc)
                return None
            if cost is not None:
                return cost
    return None


class SpendPeriod(BaseModel):
    known_usd: str = Field(description="the sum of the known costs, USD as a decimal string")
    charges: int
    unknown_cost: int = Field(description="paid calls whose cost is not known (not in known_usd)")

    @classmethod
    def of(cls, total: SpendTotal) -> SpendPeriod:
        return cls(known_usd=str(total.known_usd), charges=total.charges, unknown_cost=total.unknown)


class AccountQuota(BaseModel):
    quota_usd: str | None = Field(default=None, description="USD left on the account (GET /v1/usage)")
    tokens_remaining: int | None = None
    error: str | None = Field(default=None, description="why the account quota could not be read")


class SpendReport(BaseModel):
    """Known spend of this server's AllToken (base URL and key), by UTC day and month."""

    day: str = Field(description="today, UTC (YYYY-MM-DD)")
    today: SpendPeriod
    month: SpendPeriod
    daily_budget_usd: str | None = Field(default=None, description="ALLTOKEN_DAILY_BUDGET_USD, if set")
    budget_resets_at: str = Field(description="the next 00:00 UTC")
    account: AccountQuota | None = None

    def summary(self) -> str:
        """One line for a tool answer."""
        line = (
            f"Known spend: {usd_text(Decimal(self.today.known_usd))} today (UTC), "
            f"{usd_text(Decimal(self.month.known_usd))} this month"
        )
        unknown = self.month.unknown_cost
        if unknown:
            line += f" (+{unknown} charge{'s' if unknown != 1 else ''} of unknown cost)"
        if self.daily_budget_usd is not None:
            line += f"; daily budget ${self.daily_budget_usd}"
        if self.account is not None and self.account.quota_usd is not None:
            line += f"; account quota left ${self.account.quota_usd}"
        return line + "."


class SpendLedger:
    """Records paid calls and answers what they cost; enforces the daily budget. One per server."""

    def __init__(self, *, store: Store, client: AllTokenClient, settings: Settings) -> None:
        self._store = store
        self._client = client
        self._upstream = settings.upstream
        self._budget = settings.daily_budget_usd

    # `person` (`people.current_person`): whose spend it is. With people, ALLTOKEN_DAILY_BUDGET_USD is each
    # person's own daily budget, and the report is theirs; without (None), the whole ledger's. `budget`
    # (`people.current_budget`): the person's own budget from the tokens file, in place of that setting.

    async def record_chat(
        self, model: str, cost: Decimal | None, request_id: str | None, person: str | None = None
    ) -> None:
        await self._record("chat", model, cost, request_id=request_id, person=person)

    async def record_job(self, job: Job, cost: Decimal | None) -> None:
        """A media job's charge (the job's person's); recording it again replaces the earlier one."""
        await self._record(
            job.kind, job.model, cost, request_id=job.request_id, job_id=job.job_id, person=job.person
        )

    async def _record(
        self,
        kind: ChargeKind,
        model: str,
        cost: Decimal | None,
        *,
        request_id: str | None,
        job_id: str | None = None,
        person: str | None = None,
    ) -> None:
        charge = Charge(
            kind,
            model,
            cost,
            time.time(),
            self._upstream,
            request_id=request_id,
            job_id=job_id,
            person=person,
        )
        await self._store.record_charge(charge)

    def _limit(self, budget: Decimal | None) -> Decimal | None:
        """The daily budget in force: the person's own (`budget`) if they have one, else the server's."""
        return budget if budget is not None else self._budget

    async def check_budget(
        self, now: float | None = None, person: str | None = None, budget: Decimal | None = None
    ) -> None:
        """Raise `BudgetReached` when today's known spend (`person`'s) has reached the daily budget."""
        limit = self._limit(budget)
        if limit is None:
            return
        now = time.time() if now is None else now
        day, _, reset = day_bounds(now)
        today = await self._store.spend(self._upstream, since=day.timestamp(), person=person)
        if today.known_usd < limit:
            return
        unknown = f" ({today.unknown} of today's charges have no known cost.)" if today.unknown else ""
        if budget is not None:
            source = f"your daily budget of ${budget}"
            go_on = f"ask whoever keeps {TOKENS_FILE_VAR} to raise the budget= on your line"
        else:
            source, go_on = f"{BUDGET_VAR}=${limit}", f"raise {BUDGET_VAR} in this server's configuration"
        raise BudgetReached(
            f"Daily budget reached: {usd_text(today.known_usd)} known spend today (UTC) of {source}, so "
            "paid calls (chat, image, video) are refused until the budget resets at 00:00 UTC (in "
            f"{_in(reset.timestamp() - now)}). Nothing was sent.{unknown} To go on now, {go_on}."
        )

    async def report(
        self,
        *,
        with_account: bool = True,
        now: float | None = None,
        person: str | None = None,
        budget: Decimal | None = None,
    ) -> SpendReport:
        """Today's and this month's known spend, the budget, and (when asked and available) the account's
        quota from `GET /v1/usage`."""
        now = time.time() if now is None else now
        day, month, reset = day_bounds(now)
        report = SpendReport(
            day=day.date().isoformat(),
            today=SpendPeriod.of(
                await self._store.spend(self._upstream, since=day.timestamp(), person=person)
            ),
            month=SpendPeriod.of(
                await self._store.spend(self._upstream, since=month.timestamp(), person=person)
            ),
            daily_budget_usd=None if (limit := self._limit(budget)) is None else str(limit),
            budget_resets_at=reset.isoformat().replace("+00:00", "Z"),
        )
        if with_account and self._client.has_api_key:
            report.account = await self._account()
        return report

    async def _account(self) -> AccountQuota:
        try:
            with anyio.fail_after(QUOTA_LOOKUP_SECONDS):
                usage = await self._client.usage()
        except TimeoutError:
            return AccountQuota(error=f"GET /v1/usage did not answer within {QUOTA_LOOKUP_SECONDS:g} s")
        except AllTokenError as exc:
            return AccountQuota(error=str(exc))
        quota = usage.quota_usd
        return AccountQuota(
            quota_usd=None if quota is None else str(quota), tokens_remaining=usage.tokens_remaining
        )
