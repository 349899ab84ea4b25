"""InferenceClient usage against its budgets: the routers' budget reports -> ``status.usage``.

:func:`combine_reports` merges the routers' :class:`~inferscale.protocol.budgets.BudgetReport`
s: shared figures (Redis) are the same store seen from every router, so the largest counts;
figures a router counts alone are added up. :func:`client_usage_status` turns them into one
client's ``status.usage`` and its ``UsageReported`` condition, or ``None`` when the status
already says so (writes only on change).

Rules that are not obvious:

- a budget that is unset is not counted (no counter exists) and stays absent from the status;
  a client with no budget of its own nor of its team gets no ``usage`` at all;
- with no router report the last figures stay and the condition turns False
  (``RoutersUnreachable``); a report with a ``problem`` (Redis unreachable) or without shared
  limits while several routers report gives figures that may be incomplete: False too;
- the team's percentage uses the team budgets this client declares (the tightest across the
  team's clients is what the routers enforce, so another client may show a higher figure);
- reports of an older UTC day than the newest are left out (a router that has not seen
  midnight yet).

Pure: no I/O, no clock (``now`` comes in as text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from inferscale.api.meta import Condition, ConditionStatus, make_condition
from inferscale.api.v1alpha1.inference_client import (
    BudgetUse,
    ClientBudgets,
    ClientUsage,
    InferenceClientSpec,
    InferenceClientStatus,
)
from inferscale.protocol.budgets import TEAM_PREFIX, BudgetReport, HolderUse

CONDITION_USAGE: Final = "UsageReported"
FIELDS: Final = ("tokens_day", "tokens_month", "micro_usd_day", "micro_usd_month")
MICRO: Final = 1_000_000


@dataclass(frozen=True)
class CombinedUse:
    """Every router's budget counters merged: one figure per holder and field."""

    day: str
    holders: Mapping[str, HolderUse]
    problems: tuple[str, ...] = ()
    """Why the figures may be incomplete (empty: they are complete)."""


def combine_reports(reports: Iterable[BudgetReport]) -> CombinedUse | None:
    """Merge the routers' reports (``None``: there is none)."""
    latest = list(reports)
    if not latest:
        return None
    day = max(r.day for r in latest)
    current = [r for r in latest if r.day == day]
    sums: dict[str, dict[str, int]] = {}
    for report in current:
        for holder, use in report.holders.items():
            into = sums.setdefault(holder, {})
            for name in FIELDS:
                value = getattr(use, name)
                if value is None:
                    continue
                before = into.get(name)
                if before is None:
                    into[name] = value
                elif report.shared:
                    into[name] = max(before, value)
                else:
                    into[name] = before + value
    problems = sorted({f"router {r.process}: {r.problem}" for r in current if r.problem})
    if len(current) > 1 and not all(r.shared for r in current):
        problems.append(
            f"{len(current)} routers count budgets each on its own (no Redis): the figures "
            "are their sum, and each router lets a client spend its whole budget"
        )
    return CombinedUse(
        day, {h: HolderUse.model_validate(f) for h, f in sums.items()}, tuple(problems)
    )


def _use(budgets: ClientBudgets, held: HolderUse | None) -> tuple[BudgetUse, int | None]:
    """The figures of the budgets that are set, and the most used one in percent."""
    held = held or HolderUse()
    pairs: list[tuple[str, float | None, float | None, float]] = [
        ("tokens_today", budgets.tokens_per_day, held.tokens_day, 1),
        ("tokens_this_month", budgets.tokens_per_month, held.tokens_month, 1),
        ("usd_today", budgets.usd_per_day, held.micro_usd_day, MICRO),
        ("usd_this_month", budgets.usd_per_month, held.micro_usd_month, MICRO),
    ]
    figures: dict[str, Any] = {}
    percent: int | None = None
    for name, limit, counted, scale in pairs:
        if limit is None:
            continue
        used = (counted or 0) / scale
        figures[name] = int(used) if scale == 1 else round(used, 6)
        share = int(used * 100 / limit)
        percent = share if percent is None else max(percent, share)
    return BudgetUse.model_validate(figures), percent


def _has_budget(budgets: ClientBudgets | None) -> bool:
    if budgets is None:
        return False
    values = (budgets.tokens_per_day, budgets.tokens_per_month)
    return any(v is not None for v in (*values, budgets.usd_per_day, budgets.usd_per_month))


def client_usage(
    namespace: str, name: str, spec: InferenceClientSpec, combined: CombinedUse
) -> ClientUsage | None:
    """The client's usage against its budgets (``None``: it has none, nor has its team)."""
    team = spec.team
    team_budgets = team.budgets if team is not None and _has_budget(team.budgets) else None
    if not _has_budget(spec.budgets) and team_budgets is None:
        return None
    own, own_percent = _use(spec.budgets, combined.holders.get(f"{namespace}/{name}"))
    team_use, team_percent = None, None
    if team is not None and team_budgets is not None:
        held = combined.holders.get(f"{TEAM_PREFIX}{namespace}/{team.name}")
        team_use, team_percent = _use(team_budgets, held)
    percents = [p for p in (own_percent, team_percent) if p is not None]
    return ClientUsage(
        day=combined.day,
        client=own,
        team=team_use,
        budget_used_percent=max(percents) if percents else None,
    )


def client_usage_status(
    obj: Mapping[str, Any],
    combined: CombinedUse | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any] | None:
    """The status patch of one InferenceClient (``usage`` and its condition), or ``None``.

    ``previous`` is the status as last seen or written. The patch carries ``conditions`` only
    when ``UsageReported`` changes (the list is replaced whole by a merge patch, and its
    ``Ready`` belongs to the credentials publisher).
    """
    meta = obj.get("metadata") or {}
    try:
        spec = InferenceClientSpec.model_validate(obj.get("spec") or {})
        before = InferenceClientStatus.model_validate(previous or {})
    except ValidationError:
        return None  # an invalid spec is the credentials publisher's to report
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    status: ConditionStatus
    if combined is None:
        usage = before.usage
        status, reason, message = "False", "RoutersUnreachable", "no router answered"
    else:
        usage = client_usage(namespace, name, spec, combined)
        if combined.problems:
            status, reason = "False", "Incomplete"
            message = "; ".join(combined.problems)[:1024]
        else:
            status, reason, message = "True", "Counted", "figures from every router"
    if usage is None and before.usage is None:
        # No budget: no usage, and no condition about it (one left from before goes).
        if any(c.type == CONDITION_USAGE for c in before.conditions):
            return {"conditions": _wire(_others(before.conditions))}
        return None
    patch: dict[str, Any] = {}
    want_usage = usage.to_wire() if usage is not None else None
    have_usage = before.usage.to_wire() if before.usage is not None else None
    if want_usage != have_usage:
        patch["usage"] = want_usage
    if usage is None:
        if any(c.type == CONDITION_USAGE for c in before.conditions):
            patch["conditions"] = _wire(_others(before.conditions))
        return patch or None
    old = next((c for c in before.conditions if c.type == CONDITION_USAGE), None)
    if old is None or (old.status, old.reason, old.message) != (status, reason, message):
        condition = make_condition(
            CONDITION_USAGE,
            status,
            reason,
            message,
            now=now,
            generation=meta.get("generation"),
            previous=before.conditions,
        )
        patch["conditions"] = _wire([*_others(before.conditions), condition])
    return patch or None


def _others(conditions: list[Condition]) -> list[Condition]:
    return [c for c in conditions if c.type != CONDITION_USAGE]


def _wire(conditions: list[Condition]) -> list[dict[str, Any]]:
    return [c.to_wire() for c in conditions]
