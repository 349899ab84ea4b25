"""InferenceClient usage against its budgets, from the routers' budget reports (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.protocol.budgets import BudgetReport, HolderUse
from inferscale.reconcile.client_usage import (
    CONDITION_USAGE,
    CombinedUse,
    client_usage_status,
    combine_reports,
)

NOW = "2025-03-14T12:00:00Z"
LATER = "2025-03-14T12:00:05Z"


def report(process: str, holders: dict[str, dict[str, int]], **kw: Any) -> BudgetReport:
    fields: dict[str, Any] = {"day": "2025-03-14", "month": "2025-03", "shared": True}
    fields.update(kw)
    return BudgetReport(
        process=process,
        holders={h: HolderUse.model_validate(v) for h, v in holders.items()},
        **fields,
    )


def client(budgets: dict[str, Any] | None = None, team: dict[str, Any] | None = None) -> dict:
    spec: dict[str, Any] = {"apiKeySecretRef": {"name": "k", "key": "api-key"}}
    if budgets:
        spec["budgets"] = budgets
    if team:
        spec["team"] = team
    return {"metadata": {"namespace": "t", "name": "a", "generation": 2}, "spec": spec}


def test_shared_reports_take_the_largest_figure_and_local_ones_add_up():
    shared = combine_reports(
        [
            report("r1", {"t/a": {"tokens_day": 100, "micro_usd_day": 5}}),
            report("r2", {"t/a": {"tokens_day": 120}}),
        ]
    )
    assert shared is not None and shared.problems == ()
    assert shared.holders["t/a"] == HolderUse(tokens_day=120, micro_usd_day=5)
    local = combine_reports(
        [
            report("r1", {"t/a": {"tokens_day": 100}}, shared=False),
            report("r2", {"t/a": {"tokens_day": 120}}, shared=False),
        ]
    )
    assert local is not None and local.holders["t/a"].tokens_day == 220
    assert "no Redis" in local.problems[0]
    # One router counting alone has the whole figure: nothing is missing.
    alone = combine_reports([report("r1", {"t/a": {"tokens_day": 7}}, shared=False)])
    assert alone is not None and alone.problems == ()


def test_a_router_behind_midnight_and_a_degraded_one():
    combined = combine_reports(
        [
            report("old", {"t/a": {"tokens_day": 999}}, day="2025-03-13"),
            report("r1", {"t/a": {"tokens_day": 5}}, problem="Redis unreachable: TimeoutError"),
        ]
    )
    assert combined is not None
    assert combined.day == "2025-03-14"
    assert combined.holders["t/a"].tokens_day == 5
    assert combined.problems == ("router r1: Redis unreachable: TimeoutError",)
    assert combine_reports([]) is None


def test_usage_against_the_clients_and_its_teams_budgets_with_the_most_used_percent():
    obj = client(
        {"tokensPerDay": 1000, "usdPerMonth": 10.0},
        {"name": "research", "budgets": {"usdPerDay": 2.0}},
    )
    combined = CombinedUse(
        "2025-03-14",
        {
            "t/a": HolderUse(tokens_day=250, micro_usd_month=1_500_000, tokens_month=9),
            "team:t/research": HolderUse(micro_usd_day=1_800_000),
        },
    )
    patch = client_usage_status(obj, combined, None, NOW)
    assert patch is not None
    assert patch["usage"] == {
        "day": "2025-03-14",
        # tokens_month has no budget: not shown.
        "client": {"tokensToday": 250, "usdThisMonth": 1.5},
        "team": {"usdToday": 1.8},
        "budgetUsedPercent": 90,
    }
    (condition,) = patch["conditions"]
    assert condition["type"] == CONDITION_USAGE and condition["status"] == "True"
    # The same figures again: nothing to write.
    status = {**patch, "conditions": patch["conditions"]}
    assert client_usage_status(obj, combined, status, LATER) is None
    # New figures only: the patch leaves the conditions (and Ready) alone.
    more = CombinedUse("2025-03-14", {**combined.holders, "t/a": HolderUse(tokens_day=260)})
    again = client_usage_status(obj, more, status, LATER)
    assert again is not None and set(again) == {"usage"}
    assert again["usage"]["client"] == {"tokensToday": 260, "usdThisMonth": 0.0}


def test_a_budget_no_router_counted_yet_is_zero_and_no_budget_means_no_usage():
    patch = client_usage_status(
        client({"tokensPerMonth": 10}), CombinedUse("2025-03-14", {}), None, NOW
    )
    assert patch is not None
    assert patch["usage"]["client"] == {"tokensThisMonth": 0}
    assert patch["usage"]["budgetUsedPercent"] == 0
    assert client_usage_status(client(), CombinedUse("2025-03-14", {}), None, NOW) is None
    # A team without budgets is no budget either.
    unbudgeted = client(team={"name": "research"})
    assert client_usage_status(unbudgeted, CombinedUse("2025-03-14", {}), None, NOW) is None


@pytest.mark.parametrize(
    ("combined", "reason"),
    [
        (None, "RoutersUnreachable"),
        (CombinedUse("2025-03-14", {}, ("router r1: Redis unreachable",)), "Incomplete"),
    ],
)
def test_bad_data_turns_the_condition_false_and_keeps_what_is_known(combined, reason):
    obj = client({"tokensPerDay": 1000})
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KeyAccepted",
        "message": "",
        "lastTransitionTime": NOW,
    }
    good = client_usage_status(
        obj,
        CombinedUse("2025-03-14", {"t/a": HolderUse(tokens_day=5)}),
        {"conditions": [ready]},
        NOW,
    )
    assert good is not None
    assert [c["type"] for c in good["conditions"]] == ["Ready", CONDITION_USAGE]
    patch = client_usage_status(obj, combined, good, LATER)
    assert patch is not None
    ready_again, usage = patch["conditions"]
    assert ready_again == ready
    assert usage["status"] == "False" and usage["reason"] == reason
    if combined is None:
        assert "usage" not in patch  # the last figures stay
    # Said once: the same trouble next round writes nothing.
    assert client_usage_status(obj, combined, {**good, **patch}, LATER) is None


def test_a_budget_removed_drops_the_usage_and_its_condition():
    obj = client({"tokensPerDay": 1000})
    combined = CombinedUse("2025-03-14", {"t/a": HolderUse(tokens_day=5)})
    first = client_usage_status(obj, combined, None, NOW)
    assert first is not None
    patch = client_usage_status(client(), combined, first, LATER)
    assert patch == {"usage": None, "conditions": []}


def test_an_invalid_spec_or_status_is_left_to_the_credentials_publisher():
    bad = {"metadata": {"namespace": "t", "name": "a"}, "spec": {"apiKeySecretRef": 3}}
    assert client_usage_status(bad, CombinedUse("2025-03-14", {}), None, NOW) is None
    obj = client({"tokensPerDay": 1000})
    assert client_usage_status(obj, None, {"usage": {"day": "yesterday"}}, NOW) is None
