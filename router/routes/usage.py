"""Usage and cost (a vendo extension): what an account's predictions ran for and cost, per
billing period, by model, hardware or day."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query

from router import wire
from router.deps import CurrentAccount, Rt
from vendo_core.billing import BY, UsageRow, period_of, usd

router = APIRouter(prefix="/v1", tags=["usage"])


def _row(r: UsageRow) -> dict:
    return {"key": r.key, "seconds": r.seconds, "cost_usd": float(r.cost_usd), "cost_nanos": r.nanos}


@router.get("/usage", response_model=wire.Usage)
async def get_usage(account: CurrentAccount, rt: Rt,
                    of: str | None = Query(None, alias="account", description="whose (admins: anyone's)"),
                    since: str | None = Query(None, description="from this day (default: the period's start)"),
                    by: str = Query("model", description=f"one of {list(BY)}")):
    """Billed seconds and cost of an account's predictions since a day, grouped by model, hardware
    or day; the total equals the sum of the predictions' own costs exactly."""
    now = time.time()
    acct, start, rows = await rt.accounts.usage_of(account, of, since, by, now)
    total = UsageRow("total", sum(r.milliseconds for r in rows), sum(r.nanos for r in rows))
    return {"account": acct.username, "since": start.isoformat(), "by": by,
            "period": period_of(now, rt.settings.billing_period),
            "limit_usd": None if acct.limit_nanos is None else float(usd(acct.limit_nanos)),
            "total": _row(total), "results": [_row(r) for r in rows]}
