"""The budget report (``GET /admin/v1/budgets``): every budget counter of the clients and teams.

:func:`budget_counters` (pure) lists the counters the credentials' policies set, in the current
UTC day and month; :func:`budget_report` reads them where admission counts them: Redis when the
limits are shared (one pipelined round trip, off the request path: the operator asks every few
seconds), else this router's own :class:`~inferscale.router.limits.LocalLimiter`.

Failure behaviour: while Redis is unreachable (or the limiter says it is degraded) the report
carries this router's own view and says why in ``problem``; it never raises.
"""

from __future__ import annotations

from collections.abc import Iterable

from inferscale.protocol.budgets import BudgetReport, HolderUse
from inferscale.router.access import Access
from inferscale.router.limits import CountersUnavailable, Policy, counter_id

Counter = tuple[str, str]
"""(holder, counter id) as the limiters key them."""


def budget_counters(policies: Iterable[Policy], day: str, month: str) -> dict[Counter, str]:
    """Each counter a policy's budgets count in ``day`` and ``month`` -> its report field."""
    out: dict[Counter, str] = {}
    for policy in policies:
        if not policy.budgeted:
            continue
        if policy.tokens_per_day is not None:
            out[(policy.client, day)] = "tokens_day"
        if policy.tokens_per_month is not None:
            out[(policy.client, month)] = "tokens_month"
        for budget in policy.extra:
            window = month if budget.month else day
            field = ("micro_usd_" if budget.money else "tokens_") + (
                "month" if budget.month else "day"
            )
            out[(budget.holder, counter_id(window, budget.money))] = field
    return out


def build_report(
    counters: dict[Counter, str],
    values: list[int],
    *,
    process: str,
    day: str,
    month: str,
    shared: bool,
    problem: str | None,
) -> BudgetReport:
    """Group counter ``values`` (in ``counters``' order) by holder."""
    holders: dict[str, dict[str, int]] = {}
    for ((holder, _), field), value in zip(counters.items(), values, strict=True):
        holders.setdefault(holder, {})[field] = max(0, value)
    return BudgetReport(
        process=process,
        day=day,
        month=month,
        shared=shared,
        problem=problem,
        holders={h: HolderUse.model_validate(f) for h, f in sorted(holders.items())},
    )


async def budget_report(access: Access, process: str, wall: float) -> BudgetReport:
    """Every budget counter of ``access``'s policies, from Redis or from this process."""
    local = access.local
    bounds = local.calendar.bounds(wall)
    counters = budget_counters(access.policies.values(), bounds.day, bounds.month)
    shared = access.shared
    problem = shared.degraded() if shared is not None else None
    values: list[int] | None = None
    if shared is not None and problem is None and counters:
        try:
            values = await shared.read_counters(list(counters))
        except CountersUnavailable as error:
            problem = f"Redis unreachable: {error}"
    if values is None:
        values = [local.used(h, local.clients.get(h), c) for h, c in counters]
    return build_report(
        counters,
        values,
        process=process,
        day=bounds.day,
        month=bounds.month,
        shared=shared is not None,
        problem=problem,
    )
