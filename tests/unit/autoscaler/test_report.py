"""The autoscaler's status patch, ScalingActive condition and Event, decided without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.autoscaler.policy import Decision, History, Sample
from inferscale.autoscaler.report import (
    CONDITION_SCALING_ACTIVE,
    LAST_SCALE_REASON_MAX,
    ScalingNews,
    is_news,
    scaling_status,
    write_due,
)

NOW = "2026-01-01T00:00:10Z"
EARLIER = "2026-01-01T00:00:00Z"
SAMPLE = Sample(at=1_767_225_600.0, in_flight=12.0, held=2, kv_cache_usage=0.5, ready=2)


def decision(replicas: int, current: int, reason: str = "scaled 2 -> 3: load") -> Decision:
    action = "hold" if replicas == current else "scale-up" if replicas > current else "scale-down"
    return Decision(replicas, current, action, "stable", reason, False, History())


HOLD = ScalingNews(2, decision(2, 2, "holding at 2"), SAMPLE, None)
BLIND = ScalingNews(2, decision(2, 2, "holding at 2"), SAMPLE, "no metrics for 40 s")
INVALID = ScalingNews(2, None, None, "invalid autoscaling settings: min > max")
UP = ScalingNews(3, decision(3, 2), SAMPLE, None, scaled=True)
DOWN = ScalingNews(1, decision(1, 2, "scaled 2 -> 1: idle"), SAMPLE, None, scaled=True)


def active(status: str, reason: str, message: str = "", since: str = EARLIER) -> dict[str, Any]:
    return {
        "type": CONDITION_SCALING_ACTIVE,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def model(*conditions: dict[str, Any], generation: object = 4, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "status": {"conditions": list(conditions), **status},
    }


SEEING = active("True", "ValidSignals", "the autoscaler sees the load")
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "AllReplicasReady",
    "message": "",
    "lastTransitionTime": EARLIER,
}


@pytest.mark.parametrize(
    ("news", "expected"),
    [
        (HOLD, ("True", "ValidSignals", "the autoscaler sees the load")),
        (UP, ("True", "ValidSignals", "the autoscaler sees the load")),
        (BLIND, ("False", "SignalsUnavailable", "holding at 2 replicas: no metrics for 40 s")),
        (
            INVALID,
            (
                "False",
                "InvalidSettings",
                "holding at 2 replicas: invalid autoscaling settings: min > max",
            ),
        ),
    ],
)
def test_the_condition_says_whether_the_load_is_seen(news, expected) -> None:
    assert news.condition() == expected


@pytest.mark.parametrize(
    ("news", "written", "since", "due"),
    [
        (HOLD, None, 60.0, True),  # never written: the windows are worth keeping
        (HOLD, (12.0, 2, 0.5, 2), 60.0, False),  # the same load and count: nothing new
        (HOLD, (11.0, 2, 0.5, 2), 60.0, True),
        (HOLD, (11.0, 2, 0.5, 2), 59.0, False),  # not yet the interval
        (HOLD, (12.0, 2, 0.5, 3), 60.0, True),  # the count moved
        (INVALID, None, 600.0, False),  # no decision: no windows to keep
    ],
)
def test_the_periodic_write_is_due_after_the_interval_with_new_signals(
    news, written, since, due
) -> None:
    assert write_due(news, written, since, 60.0) is due


SEEN = (("True", "ValidSignals"), None)
UNSEEN = (("False", "SignalsUnavailable"), None)


@pytest.mark.parametrize(
    ("news", "known", "due", "expected"),
    [
        (HOLD, SEEN, False, False),
        (HOLD, None, False, True),  # nothing known yet: read the stored status
        (HOLD, UNSEEN, False, True),
        (HOLD, SEEN, True, True),
        (UP, SEEN, False, True),
        # Only status and reason count: a message that grows every round is no news.
        (BLIND, UNSEEN, False, False),
    ],
)
def test_news_is_a_scale_a_due_write_or_a_new_status_or_reason(news, known, due, expected) -> None:
    assert is_news(news, known, due) is expected


def test_an_unchanged_condition_with_nothing_due_writes_nothing() -> None:
    update = scaling_status(HOLD, model(SEEING), history="{}", now=NOW, due=False)
    assert update.patch is None and update.event is None


def test_a_due_write_keeps_the_windows_and_the_transition_time() -> None:
    update = scaling_status(HOLD, model(READY, SEEING), history='{"samples":[]}', now=NOW, due=True)
    assert update.event is None
    assert update.patch == {
        "conditions": [
            READY,
            {**SEEING, "observedGeneration": 4},
        ],
        "autoscalerState": '{"samples":[]}',
        "signals": {
            "inFlight": 12.0,
            "held": 2,
            "kvCacheUsage": 0.5,
            "observedAt": "2026-01-01T00:00:00Z",
        },
    }


@pytest.mark.parametrize(("news", "kind"), [(UP, "ScaledUp"), (DOWN, "ScaledDown")])
def test_a_scale_writes_its_reason_and_posts_a_normal_event(news, kind) -> None:
    update = scaling_status(news, model(SEEING), history="{}", now=NOW, due=False)
    assert update.patch is not None
    assert update.patch["lastScaleTime"] == NOW
    assert update.patch["lastScaleReason"] == news.decision.reason
    assert update.event == ("Normal", kind, news.decision.reason)


def test_a_long_scale_reason_is_cut_for_the_status_but_not_the_event() -> None:
    reason = "scaled 2 -> 3: " + "x" * 2000
    news = ScalingNews(3, decision(3, 2, reason), SAMPLE, None, scaled=True)
    update = scaling_status(news, model(SEEING), history="{}", now=NOW, due=False)
    assert update.patch is not None
    assert update.patch["lastScaleReason"] == reason[:LAST_SCALE_REASON_MAX]
    assert update.event == ("Normal", "ScaledUp", reason)


@pytest.mark.parametrize("news", [BLIND, INVALID])
def test_losing_sight_of_the_load_flips_the_condition_and_warns_once(news) -> None:
    update = scaling_status(news, model(SEEING), history="{}", now=NOW, due=False)
    status, reason, message = news.condition()
    assert update.patch is not None
    assert update.patch["conditions"] == [
        {
            "type": CONDITION_SCALING_ACTIVE,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": NOW,
            "observedGeneration": 4,
        }
    ]
    assert update.event == ("Warning", reason, message)
    assert ("signals" in update.patch) is (news.sample is not None)
    # Stored, the same hold says nothing new: no write, no second Warning.
    stored = model(*update.patch["conditions"])
    assert scaling_status(news, stored, history="{}", now=NOW, due=False).patch is None


def test_seeing_the_load_again_flips_back_without_an_event() -> None:
    was_blind = model(active("False", "SignalsUnavailable", "holding"))
    update = scaling_status(HOLD, was_blind, history="{}", now=NOW, due=False)
    assert update.patch is not None
    assert update.patch["conditions"][0]["status"] == "True"
    assert update.patch["conditions"][0]["lastTransitionTime"] == NOW
    assert update.event is None


@pytest.mark.parametrize(
    "stored",
    [
        {"metadata": {"generation": "four"}, "status": {"conditions": "not a list"}},
        {"metadata": "garbage", "status": ["not", "a", "map"]},
        {"metadata": {"generation": -1}, "status": {"conditions": [{"type": 3}]}},
        {"metadata": {"generation": True}},
        {},
    ],
)
def test_a_garbled_stored_model_reads_as_empty_and_gets_a_valid_condition(stored) -> None:
    update = scaling_status(HOLD, stored, history="{}", now=NOW, due=False)
    assert update.patch is not None
    [condition] = update.patch["conditions"]
    assert condition["type"] == CONDITION_SCALING_ACTIVE
    assert condition["lastTransitionTime"] == NOW
    assert "observedGeneration" not in condition


PRICED = ("True", "SpillPriced", "a replica-hour costs 3, spilling its load 1.2")
UNPRICED = ("False", "PriceMissing", "ordinary policy: spec.autoscaling.acceleratorHourPrice")
NO_SPILL = ("False", "NoSpillover", "no InferenceRoute has this model as a primary")


def cost(status: str, reason: str, message: str = "", since: str = EARLIER) -> dict[str, Any]:
    return {**active(status, reason, message, since), "type": "CostAware"}


def test_the_cost_aware_condition_stays_apart_from_scaling_active() -> None:
    # A fallback of the mode is its own condition: the load is still seen.
    news = ScalingNews(2, decision(2, 2, "holding at 2"), SAMPLE, None, cost=UNPRICED)
    assert news.condition()[:2] == ("True", "ValidSignals")
    # A new CostAware reason is news: the status is written although nothing else changed.
    assert is_news(news, (("True", "ValidSignals"), ("True", "SpillPriced")), due=False)
    assert not is_news(news, (("True", "ValidSignals"), ("False", "PriceMissing")), due=False)


@pytest.mark.parametrize(
    ("stored", "news_cost", "event"),
    [
        # A fallback warns, naming the field; the first time too.
        ((), UNPRICED, ("Warning", "PriceMissing", UNPRICED[2])),
        ((cost(*PRICED),), UNPRICED, ("Warning", "PriceMissing", UNPRICED[2])),
        # The mode starting to run is a Normal Event.
        ((cost(*UNPRICED),), PRICED, ("Normal", "SpillPriced", PRICED[2])),
        # No spillover is every plain model's state: no Event when first set ...
        ((), NO_SPILL, None),
        # ... but one when a route stops spilling the model.
        ((cost(*PRICED),), NO_SPILL, ("Normal", "NoSpillover", NO_SPILL[2])),
        # Unchanged: nothing.
        ((cost(*UNPRICED),), UNPRICED, None),
    ],
)
def test_a_cost_aware_change_is_written_and_posted(stored, news_cost, event) -> None:
    news = ScalingNews(2, decision(2, 2, "holding at 2"), SAMPLE, None, cost=news_cost)
    update = scaling_status(news, model(SEEING, *stored), history="{}", now=NOW, due=False)
    assert update.cost_event == event and update.event is None
    if not stored or stored[0]["reason"] != news_cost[1]:
        assert update.patch is not None
        written = {c["type"]: c for c in update.patch["conditions"]}
        assert (written["CostAware"]["status"], written["CostAware"]["reason"]) == news_cost[:2]
        assert written["ScalingActive"]["reason"] == "ValidSignals"
    else:
        assert update.patch is None
