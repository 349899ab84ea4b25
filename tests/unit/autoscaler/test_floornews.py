"""Why replicas stand that the load does not want: the ScalingLimited condition, its Event and
status.learnedFloor, decided without I/O."""

from __future__ import annotations

from typing import Any

from inferscale.autoscaler.floornews import FloorNews, floor_news
from inferscale.autoscaler.policy import Decision, History, PolicyParams, Sample
from inferscale.autoscaler.report import ScalingNews, is_news, scaling_status

HOUR = 3600.0
AT = 1_800_000_000.0 // 300 * 300  # 2027-01-15T08:00Z, a bucket's start
# Bursts wanting 5 in one bucket of three over the last hour; the load wants 1 between them.
PEAKS = tuple((AT - 3300 + i * 300.0, 5 if i % 3 == 0 else 1) for i in range(12))
NOW = "2027-01-15T08:00:00Z"
SAMPLE = Sample(at=AT, in_flight=2.0, ready=5)


def params(**overrides: Any) -> PolicyParams:
    base: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_in_flight_per_replica": 4,
        "learned_floor_quantile": 0.8,
    }
    base.update(overrides)
    return PolicyParams(**base)


def news(floor: int = 5, wanted: int = 1, **kw: Any) -> FloorNews:
    base: dict[str, Any] = {
        "floor": floor,
        "lowest": 1,
        "wanted": wanted,
        "at": AT,
        "preset": "balanced",
        "percentile_set": False,
        "params": params(),
        "peaks": PEAKS,
    }
    base.update(kw)
    return FloorNews(**base)


def test_a_floor_above_the_load_says_what_holds_how_it_is_learned_and_when_it_falls():
    status, reason, message = news().condition()
    assert (status, reason) == ("True", "LearnedFloor")
    assert message.startswith("5 replicas stand although the load's peaks want 1 now: ")
    assert "the balanced preset's learned floor, the 80th percentile" in message
    assert "a burst counts half after 1 h" in message
    # The floor's own replay (test_floor): 1,500 s after the last burst bucket, at 08:25.
    assert "at this load it falls to 1 at about 2027-01-15T08:25Z (if no burst comes)" in message
    assert "set spec.autoscaling.preset: economy (no floor)" in message


def test_a_set_percentile_is_named_instead_of_the_preset():
    message = news(percentile_set=True, preset="latency").condition()[2]
    assert "the learned floor of learnedFloorPercentile 80" in message
    assert "lower or remove learnedFloorPercentile" in message


def test_during_a_burst_the_floor_is_what_will_stand_after_it():
    status, _, message = news(wanted=7).condition()
    assert status == "True"
    assert message.startswith("at least 5 replicas will stand after the load falls")
    assert "it falls as the bursts age" in message


def test_the_cost_aware_mode_names_its_spill_budget():
    priced = params(
        cost_aware=True,
        replica_hour_price=3.0,
        spill_price_per_replica_hour=2.0,
        spill_share_budget=0.08,
        spill_spend_cap_per_hour=2.0,
    )
    status, reason, message = news(floor=3, params=priced).condition()
    assert (status, reason) == ("True", "SpillBudget")
    assert "spill at most 8% of the recent load within the route's spend cap" in message
    assert "preset: economy lets up to 40% spill" in message


def test_no_floor_above_the_minimum_is_false_and_says_why():
    assert news(floor=1).condition()[:2] == ("False", "FloorAtMinimum")
    economy = news(floor=0, params=params(learned_floor_quantile=None), preset="economy")
    assert "no learned floor (the economy preset)" in economy.condition()[2]


def decision(floor: int, peak_want: int | None, replicas: int = 5) -> Decision:
    history = History(peaks=PEAKS)
    return Decision(
        replicas,
        replicas,
        "hold",
        "stable",
        "holding",
        False,
        history,
        floor=floor,
        peak_want=peak_want,
    )


def test_floor_news_comes_from_a_decision_and_not_from_a_hold_on_bad_data():
    found = floor_news(params(), decision(5, 1), AT, "balanced", False)
    assert found is not None and (found.floor, found.wanted, found.lowest) == (5, 1, 1)
    assert found.peaks == PEAKS
    assert floor_news(params(), decision(0, None), AT, "balanced", False) is None


def model(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "generation": 2}, "status": status}


def scaling(floor: FloorNews) -> ScalingNews:
    return ScalingNews(5, decision(floor.floor, floor.wanted), SAMPLE, None, floor=floor)


def test_the_status_gets_the_floor_the_condition_and_one_event_when_it_starts_holding():
    update = scaling_status(scaling(news()), model(), history="{}", now=NOW, due=False)
    assert update.patch is not None and update.patch["learnedFloor"] == 5
    limited = next(c for c in update.patch["conditions"] if c["type"] == "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "LearnedFloor")
    assert update.floor_event == ("Normal", "LearnedFloor", limited["message"])
    # Stored: the same floor again is no write and no Event.
    stored = model(conditions=update.patch["conditions"], learnedFloor=5)
    again = scaling_status(scaling(news()), stored, history="{}", now=NOW, due=False)
    assert again.patch is None and again.floor_event is None
    # The floor steps down: a write with the new count, no Event (same status and reason).
    lower = scaling_status(scaling(news(floor=3)), stored, history="{}", now=NOW, due=False)
    assert lower.patch is not None and lower.patch["learnedFloor"] == 3
    assert lower.floor_event is None
    # At the minimum: False, and a Normal Event saying so.
    done = scaling_status(scaling(news(floor=1)), stored, history="{}", now=NOW, due=False)
    assert done.patch is not None and done.floor_event is not None
    assert done.floor_event[:2] == ("Normal", "FloorAtMinimum")


def test_a_first_condition_at_the_minimum_posts_nothing():
    update = scaling_status(scaling(news(floor=1)), model(), history="{}", now=NOW, due=False)
    assert update.patch is not None and update.floor_event is None


def test_the_load_moving_above_the_floor_is_one_state_below_it_news():
    known = scaling(news(wanted=6)).known()
    assert not is_news(scaling(news(wanted=9)), known, due=False)
    assert is_news(scaling(news(wanted=1)), known, due=False)
    assert is_news(scaling(news(floor=4, wanted=6)), known, due=False)
