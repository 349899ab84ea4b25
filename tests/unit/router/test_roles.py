"""plan(): which backends a request tries, in what order (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.protocol.table import ModelRoute, TableBackend
from inferscale.router.roles import LOCAL, plan, prefill_saturated, saturated
from inferscale.router.table import RouteRoles

OPENAI = TableBackend(role="primary", provider="team/openai", model="mini", weight=1)
SPILL = TableBackend(role="spillover", provider="team/openai", model="mini")
SPILL_2 = TableBackend(role="spillover", model="big")
FALLBACK = TableBackend(role="fallback", provider="team/claude", model="sonnet")
MIRROR = TableBackend(role="mirror", model="shadow", mirror_percent=10)


def entry(backends: list[TableBackend], **route: Any) -> ModelRoute:
    return ModelRoute.model_validate({"route": route, "routeId": "team/r", "weight": 3}).model_copy(
        update={"backends": backends}
    )


def make(backends, serves_locally=True, **route) -> tuple[RouteRoles, Any]:
    e = entry(backends, **route).model_copy(update={"serves_locally": serves_locally})
    return RouteRoles(e), e.route


def run(backends, *, ready=2, busy=False, held=0, capped=False, usable=None, r=0.0, **route):
    roles, settings = make(backends, **route)
    return plan(
        roles,
        settings,
        ready=ready,
        busy=busy,
        held=held,
        capped=capped,
        usable=usable or (lambda b: True),
        r=r,
    )


def test_roles_are_sorted_and_mirrors_kept_apart():
    roles, _ = make([OPENAI, SPILL, FALLBACK, MIRROR, SPILL_2])
    assert roles.primaries == [OPENAI]
    assert roles.spillover == [SPILL, SPILL_2]
    assert roles.fallback == [FALLBACK]
    assert roles.mirror == [MIRROR]
    assert roles.local_weight == 3 and roles.route_id == "team/r"


@pytest.mark.parametrize(
    ("in_flight", "threshold", "expected"),
    [([], 4, False), ([4, 5], 4, True), ([3, 9], 4, False), ([0], 1, False), ([1], 1, True)],
)
def test_saturated(in_flight, threshold, expected):
    assert saturated(in_flight, threshold) is expected


@pytest.mark.parametrize(
    ("pending", "prompt", "threshold", "expected"),
    [
        ([], 100, 1_000, False),  # no ready replica: the cold-start rules decide
        ([0, 0], 5_000, None, False),  # the rule is off
        ([900, 0], 1_000, 1_000, False),  # the idle replica takes it: exactly at the bound
        ([900, 1], 1_000, 1_000, True),
        ([0], 1_001, 1_000, True),  # a prompt longer than the bound on its own
        ([4_000, 2_500], 2_000, 4_800, False),
    ],
)
def test_prefill_saturated(pending, prompt, threshold, expected):
    assert prefill_saturated(pending, prompt, threshold) is expected


def test_free_replicas_take_the_request_and_fallbacks_follow():
    out = run([SPILL, FALLBACK])
    assert out.steps == (LOCAL, FALLBACK) and out.spill is None


def test_saturated_replicas_spill_over_then_replicas_then_fallback():
    out = run([SPILL, SPILL_2, FALLBACK], busy=True)
    assert out.steps == (SPILL, SPILL_2, LOCAL, FALLBACK) and out.spill == "saturated"


def test_cold_start_spills_at_once_with_on_cold_start():
    out = run([SPILL], ready=0)
    assert out.steps == (SPILL, LOCAL) and out.spill == "cold_start"


def test_cold_start_holds_until_the_queue_is_full_without_on_cold_start():
    route = {"spillover": {"onColdStart": False}, "holdQueue": {"maxRequests": 5}}
    assert run([SPILL], ready=0, held=4, **route).steps == (LOCAL,)
    out = run([SPILL], ready=0, held=5, **route)
    assert out.steps == (SPILL, LOCAL) and out.spill == "hold_full"


def test_a_spend_cap_stops_spillover_queue_or_reject():
    queued = run([SPILL, FALLBACK], busy=True, capped=True)
    assert queued.steps == (LOCAL, FALLBACK) and queued.capped == "saturated" and not queued.reject
    rejected = run([SPILL], busy=True, capped=True, spend={"onCapReached": "reject"})
    assert rejected.steps == () and rejected.reject and rejected.capped == "saturated"
    # Not spilling anyway: the cap changes nothing.
    assert run([SPILL], capped=True, spend={"onCapReached": "reject"}).steps == (LOCAL,)


def test_unusable_backends_are_left_out():
    out = run([SPILL, SPILL_2, FALLBACK], busy=True, usable=lambda b: b is SPILL_2)
    assert out.steps == (SPILL_2, LOCAL)
    assert run([SPILL], busy=True, usable=lambda b: False).steps == (LOCAL,)


@pytest.mark.parametrize(
    ("r", "first"), [(0.0, LOCAL), (0.74, LOCAL), (0.75, OPENAI), (0.99, OPENAI)]
)
def test_primaries_share_by_weight(r, first):
    # Replicas weigh 3, the hosted primary 1.
    out = run([OPENAI, FALLBACK], r=r)
    assert out.steps[0] is first and out.steps[-1] is FALLBACK


def test_a_hosted_primary_fails_over_to_fallbacks_not_replicas():
    assert run([OPENAI, FALLBACK], r=0.9).steps == (OPENAI, FALLBACK)


def test_replicas_with_none_ready_give_way_to_a_hosted_primary():
    assert run([OPENAI, SPILL], ready=0, r=0.0).steps == (OPENAI,)
    # ... unless it cannot take requests: then the replicas (and their spillover).
    assert run([OPENAI, SPILL], ready=0, usable=lambda b: b is not OPENAI).steps == (SPILL, LOCAL)


def test_a_route_served_by_providers_alone():
    roles, settings = make([OPENAI, FALLBACK], serves_locally=False)
    assert roles.local_weight == 0
    steps = plan(
        roles, settings, ready=0, busy=False, held=0, capped=False, usable=lambda b: True, r=0.1
    )
    assert steps.steps == (OPENAI, FALLBACK)
    nothing = plan(
        roles, settings, ready=0, busy=False, held=0, capped=False, usable=lambda b: False, r=0.1
    )
    assert nothing.steps == ()
