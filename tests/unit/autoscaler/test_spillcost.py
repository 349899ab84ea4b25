"""The cost-aware mode: its prices, the load histogram, the standing count and the policy's
gate on scale-ups, with the fallbacks for bad prices and history gaps."""

from __future__ import annotations

import math

import pytest

from inferscale.autoscaler.policy import (
    SPEND_CAPPED_WORDS,
    History,
    PolicyParams,
    Sample,
    decide,
)
from inferscale.autoscaler.spillcost import (
    MAX_PRICE_PER_HOUR,
    cost_mode_problem,
    hourly_spend_cap,
    remember_load,
    remember_tokens,
    spilled_share,
    standing_for_budget,
    token_floor,
)

HOUR = 3600.0


@pytest.mark.parametrize(
    ("replica", "spill", "problem"),
    [
        (None, 1.0, "no replica-hour price"),
        (3.0, None, "no spill price per replica-hour"),
        (math.nan, 1.0, "replica-hour price nan is not a sane price"),
        (3.0, -1.0, "spill price per replica-hour -1.0 is not a sane price"),
        (3.0, math.inf, "not a sane price"),
        (MAX_PRICE_PER_HOUR * 10, 1.0, "not a sane price"),
        (True, 1.0, "not a sane price"),
        (0.0, 1.0, "a replica-hour costs nothing"),
    ],
)
def test_a_missing_or_absurd_price_names_its_problem(replica, spill, problem):
    found = cost_mode_problem(replica, spill)
    assert found is not None and problem in found


def test_sane_prices_run_the_mode():
    assert cost_mode_problem(3.0, 60.0) is None
    assert cost_mode_problem(3.0, 0.0) is None  # a free provider: spill everything


def test_the_histogram_buckets_by_replicas_wanted_and_decays():
    hist = remember_load((), 0.0, 10.0, 4.0, HOUR)  # 3 replicas' worth at 4
    hist = remember_load(hist, 0.0, 11.0, 4.0, HOUR)
    assert hist == ((3, 2.0, 21.0),)
    hist = remember_load(hist, HOUR, 2.0, 4.0, HOUR)  # an hour later: the old half
    assert hist == ((1, 1.0, 2.0), (3, 1.0, 10.5))


def test_the_spilled_share_is_the_load_above_the_standing_replicas():
    # Nine samples of 4 (one replica's worth at 4) and one of 20: 56 in all.
    hist = ((1, 9.0, 36.0), (5, 1.0, 20.0))
    share, mean = spilled_share(hist, 1, 4.0)
    assert share == pytest.approx(16 / 56) and mean == pytest.approx(1.6)
    assert spilled_share(hist, 5, 4.0) == (0.0, 0.0)
    assert spilled_share((), 1, 4.0) == (0.0, 0.0)


def test_the_standing_count_keeps_the_spill_within_the_budget_and_the_cap():
    hist = ((1, 9.0, 36.0), (5, 1.0, 20.0))
    assert standing_for_budget(hist, 4.0, 0.30, 10.0, None) == 1  # 28.6 % spills
    assert standing_for_budget(hist, 4.0, 0.10, 10.0, None) == 4  # 3: 8 of 56, 4: 4 of 56
    # 1 replica spills 1.6 in flight on average, 0.4 replicas' worth: 4.0 per hour at 10;
    # 2 spill 3.0 per hour, 3 spill 2.0.
    assert standing_for_budget(hist, 4.0, 0.30, 10.0, 2.0) == 3
    assert standing_for_budget((), 4.0, 0.10, 10.0, None) == 0


@pytest.mark.parametrize(
    ("per_hour", "per_day", "cap", "words"),
    [
        (None, None, None, ""),
        (2.0, None, 2.0, "spend.maxPerHour 2"),
        (None, 24.0, 1.0, "spend.maxPerDay 24 / 24"),
        # The tighter wins: 48 a day is 2 an hour on average, tighter than 5 an hour.
        (5.0, 48.0, 2.0, "spend.maxPerDay 48 / 24"),
        (1.0, 48.0, 1.0, "spend.maxPerHour 1"),
        (None, 0.0, 0.0, "spend.maxPerDay 0 / 24"),  # no spill at all: replicas for the load
    ],
)
def test_the_hourly_cap_is_the_tighter_of_the_hour_and_a_day_spread_over_24(
    per_hour, per_day, cap, words
):
    assert hourly_spend_cap(per_hour, per_day) == (cap, words)


def test_a_day_cap_keeps_more_replicas_standing_than_the_hour_cap_alone():
    # As the test above: 2 standing spend 3.0 an hour, 3 spend 2.0, 4 spend 1.0.
    hist = ((1, 9.0, 36.0), (5, 1.0, 20.0))
    hour_only, _ = hourly_spend_cap(5.0, None)
    with_day, _ = hourly_spend_cap(5.0, 24.0)  # 1 an hour on average
    assert standing_for_budget(hist, 4.0, 0.30, 10.0, hour_only) == 1
    assert standing_for_budget(hist, 4.0, 0.30, 10.0, with_day) == 4


def params(**overrides) -> PolicyParams:
    base = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_in_flight_per_replica": 4,
        "scale_down_delay_s": 300,
        "time_to_ready_s": 60,
        "cost_aware": True,
        "replica_hour_price": 3.0,
        "spill_price_per_replica_hour": 63.0,
        "spill_share_budget": 0.10,
    }
    base.update(overrides)
    return PolicyParams(**base)


def run(p: PolicyParams, loads, current: int, history=None, share=None, capped=None):
    """Decide at each (time, load), applying each decision; every decision.

    ``share``: the spilled token share every sample reports (None: no router counts it);
    ``capped``: the requests per second the spend cap kept from spilling (None: unknown).
    """
    h = history or History()
    out = []
    for at, load in loads:
        sample = Sample(
            at=at, in_flight=load, ready=current, spilled_token_share=share, spend_capped=capped
        )
        d = decide(p, h, sample, at, current)
        h, current = d.history, d.replicas
        out.append(d)
    return out


def quiet_then(load: float, start: float, seconds: float):
    """4 in flight (one replica's worth) for ``start`` s, then ``load`` for ``seconds``."""
    before = [(float(t), 4.0) for t in range(0, int(start), 2)]
    return before + [(float(t), load) for t in range(int(start), int(start + seconds), 2)]


def test_a_burst_shorter_than_a_start_up_spills_instead_of_scaling():
    ds = run(params(), quiet_then(40.0, 600, 40), 1)
    assert max(d.replicas for d in ds) == 1
    assert "75.6 projected in flight, wanting 19 for 38 s" in ds[-1].reason
    assert "a burst shorter than the 60 s start-up spills (cost-aware mode)" in ds[-1].reason
    # The ordinary policy panics and scales up for the same burst.
    plain = run(params(cost_aware=False), quiet_then(40.0, 600, 40), 1)
    assert max(d.replicas for d in plain) > 1


def test_a_burst_with_the_spend_cap_reached_scales_up_at_once():
    # The router stops spilling at the cap, so the burst queues on the replica: no wait.
    loads = quiet_then(40.0, 600, 40)
    ds = run(params(), loads, 1, capped=0.5)
    today = run(params(), loads, 1)
    up = [i for i, d in enumerate(ds) if d.action == "scale-up"]
    assert up and max(d.replicas for d in today) == 1
    plain = run(params(cost_aware=False), loads, 1)
    first_plain = next(i for i, d in enumerate(plain) if d.action == "scale-up")
    # Up within the burst's first samples, the ordinary policy's first step too, not a
    # start-up (60 s) later.
    assert loads[up[0]][0] - 600 <= 4 and up[0] == first_plain
    assert SPEND_CAPPED_WORDS in ds[up[0]].reason
    assert "start-up spills" not in ds[up[0]].reason
    assert ds[up[0]].reason.startswith("scaled 1 -> ")


@pytest.mark.parametrize("capped", [None, 0.0, math.nan, -1.0])
def test_no_capped_spill_is_todays_cost_aware_mode(capped):
    loads = quiet_then(40.0, 600, 200)
    today = [(d.replicas, d.reason, d.history) for d in run(params(), loads, 1)]
    assert [(d.replicas, d.reason, d.history) for d in run(params(), loads, 1, capped=capped)] == (
        today
    )


def test_the_ordinary_policy_ignores_the_capped_spill():
    loads = quiet_then(40.0, 600, 200)
    p = params(cost_aware=False)
    today = [(d.replicas, d.reason) for d in run(p, loads, 1)]
    assert [(d.replicas, d.reason) for d in run(p, loads, 1, capped=2.0)] == today


def test_once_the_cap_no_longer_stops_spill_bursts_spill_again():
    # Capped for the first burst only (the hour turned, the cap reset): the next one spills.
    p = params()
    first = run(p, quiet_then(40.0, 600, 40), 1, capped=1.0)
    assert first[-1].replicas > 1
    h, current = first[-1].history, first[-1].replicas
    quiet = [(640.0 + t, 4.0) for t in range(0, 2000, 2)]
    settled = run(p, quiet, current, history=h)
    standing = settled[-1].replicas
    burst = [(2640.0 + t, 40.0) for t in range(0, 40, 2)]
    again = run(p, burst, standing, history=settled[-1].history, capped=0.0)
    assert max(d.replicas for d in again) == standing < 10
    assert "start-up spills (cost-aware mode)" in again[-1].reason


def test_an_excess_that_lasts_a_start_up_gets_its_replicas():
    loads = quiet_then(40.0, 600, 200)
    ds = run(params(), loads, 1)
    up = [i for i, d in enumerate(ds) if d.action == "scale-up"]
    assert up, "a lasting excess must scale up"
    # The stable window first wants more a few seconds into the excess; a start-up later, up.
    assert 60 <= loads[up[0]][0] - 600 <= 80


def test_the_prices_do_not_hold_a_lasting_excess_for_longer():
    # Spilling far cheaper than a replica: a lasting excess still gets replicas after a
    # start-up (held on the replicas it would queue below the spill threshold).
    ds = run(params(spill_price_per_replica_hour=0.01), quiet_then(40.0, 600, 400), 1)
    assert max(d.replicas for d in ds) > 1


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"replica_hour_price": None}, "no replica-hour price"),
        ({"spill_price_per_replica_hour": math.nan}, "not a sane price"),
        ({"replica_hour_price": -3.0}, "not a sane price"),
    ],
)
def test_a_bad_price_falls_back_to_the_ordinary_policy_and_says_why(overrides, why):
    p = params(**overrides)
    assert not p.cost_mode and why in (p.cost_mode_fallback or "")
    ds = run(p, quiet_then(40.0, 600, 40), 1)
    assert all(why in (d.cost_fallback or "") for d in ds)
    # The ordinary policy: the burst gets replicas.
    assert max(d.replicas for d in ds) > 1


def test_without_the_mode_asked_for_there_is_no_fallback():
    d = run(params(cost_aware=False, replica_hour_price=None), [(0.0, 4.0)], 1)[-1]
    assert d.cost_fallback is None


def test_a_history_gap_under_load_never_scales_to_zero_and_scales_from_zero_at_once():
    p = params(min_replicas=0, scale_to_zero_delay_s=600)
    before = run(p, quiet_then(4.0, 0, 600), 1)
    # The operator was down for an hour; the load is back (and larger).
    after = run(p, [(HOUR + 600 + t, 8.0) for t in range(0, 120, 2)], 1, before[-1].history)
    assert min(d.replicas for d in after) >= 1
    # With no replica and held requests, the count goes up on the first decision.
    d = decide(p, History(), Sample(at=10.0, in_flight=0.0, held=3), 10.0, 0)
    assert d.action == "scale-from-zero" and d.replicas == 1


def test_the_budget_floor_keeps_replicas_for_recurring_bursts_and_replaces_the_learned_floor():
    # Bursts of 16 (4 replicas' worth) a fifth of the time: one standing replica would spill
    # 37.5 % of the load, two 25 %, three 12.5 %, within the 15 % budget.
    loads = [(float(t), 16.0 if t % 100 < 20 else 4.0) for t in range(0, 2 * int(HOUR), 2)]
    p = params(learned_floor_quantile=0.99, spill_share_budget=0.15)
    ds = run(p, loads, 4)
    assert ds[-1].replicas == 3
    assert "spill at most 15% of the recent load" in " ".join(d.reason for d in ds)


def test_the_history_round_trips_the_mode_and_refuses_a_bad_histogram():
    ds = run(params(), quiet_then(40.0, 60, 10), 1)
    h = ds[-1].history
    assert h.load_hist and h.over_since is not None
    assert History.from_json(h.to_json()) == h
    for bad in ('{"load_hist": [[1, -1, 2]]}', '{"load_hist": [[2, 1, 1], [1, 1, 1]]}'):
        with pytest.raises(ValueError, match="load_hist"):
            History.from_json(bad)


def test_the_scale_down_delay_is_at_most_what_a_restart_costs():
    # A replica removed too early comes back after 60 s of its GPU and 60 s of its load
    # spilled: at 0.80 a replica-hour and 1.20 for a replica's load spilled, an idle replica
    # is worth keeping for 60 x (1 + 1.2 / 0.8) = 150 s.
    p = params(replica_hour_price=0.8, spill_price_per_replica_hour=1.2)
    assert p.down_delay_s == pytest.approx(150.0)
    # Spilling dear (63 against 3 a replica-hour): the user's 300 s stays; never lengthened.
    assert params().down_delay_s == 300.0
    # The ordinary policy, a fallback, or no start-up time known: the user's delay.
    assert params(cost_aware=False, spill_price_per_replica_hour=1.2).down_delay_s == 300.0
    assert params(replica_hour_price=None).down_delay_s == 300.0
    assert params(time_to_ready_s=None, spill_price_per_replica_hour=1.2).down_delay_s == 300.0
    # A free provider: a restart costs only its start-up's GPU time.
    assert params(spill_price_per_replica_hour=0.0).down_delay_s == pytest.approx(60.0)


def test_the_cost_aware_mode_sheds_an_idle_replica_after_the_break_even():
    # Eight replicas' worth, then one: the mode steps down after 150 s, the ordinary
    # policy after its 300 s (a budget of the whole load: the standing count holds nothing).
    loads = [(float(t), 32.0) for t in range(0, 120, 2)]
    loads += [(float(t), 4.0) for t in range(120, 600, 2)]
    cheap = params(replica_hour_price=0.8, spill_price_per_replica_hour=1.2, spill_share_budget=1.0)
    first_down = {}
    for name, p in {"cost": cheap, "ordinary": params(cost_aware=False)}.items():
        ds = run(p, loads, 8)
        downs = [loads[i][0] for i, d in enumerate(ds) if d.action == "scale-down"]
        first_down[name] = downs[0]
        assert ds[-1].replicas < 8
    assert 150 <= first_down["cost"] - 120 < 220
    assert first_down["ordinary"] - 120 >= 300
    ds = run(cheap, loads, 8)
    assert any("of the 150 s scale-down delay" in d.reason for d in ds)


@pytest.mark.parametrize(
    ("recent", "overall", "since_settled", "expected"),
    [
        (None, 0.20, None, 0),  # no counters: the histogram alone rules
        (0.13, 0.10, None, 4),  # both over the 8 % budget, never unsettled: one more
        (0.13, 0.10, 600.0, 4),  # the whole window has seen at least the 3 set now
        (0.13, 0.10, 120.0, 3),  # a scale-up 2 min ago: the window still holds fewer
        (0.13, 0.05, None, 3),  # a burst over a long run within the budget: none goes
        (0.13, None, None, 3),  # the long run not known yet: holds only
        (0.06, 0.20, None, 3),  # a past excess; the recent share is not well within: hold
        (0.03, 0.20, None, 0),  # well within (under half the budget): released
        (0.0, None, None, 0),
    ],
)
def test_the_token_floor_raises_over_the_budget_holds_near_it_and_releases_well_within(
    recent, overall, since_settled, expected
):
    floor, why, raised = token_floor(recent, overall, 0.08, 3, since_settled)
    assert floor == expected
    assert (why != "") == (expected != 0)
    assert raised == (4 if expected == 4 else 0)
    assert token_floor(0.5, 0.5, 0.08, 0, None) == (0, "", 0)  # at zero the held queue rules


@pytest.mark.parametrize(
    ("recent", "overall", "expected"),
    [
        (0.03, 0.06, (5, 5)),  # recent well within, the long run not: the raised 5 stay
        (0.06, 0.06, (5, 5)),
        (0.03, 0.03, (0, 0)),  # well within over the budget's horizon: let go
        (0.06, 0.03, (3, 0)),  # let go; the recent share alone still holds the 3 there
        (None, 0.06, (0, 5)),  # no share now: today's policy, the raise remembered
    ],
)
def test_a_count_raised_for_the_budget_stays_until_the_long_run_is_well_within(
    recent, overall, expected
):
    floor, why, raised = token_floor(recent, overall, 0.08, 3, None, raised=5)
    assert (floor, raised) == expected
    if floor == 5:
        assert "raised to 5 for the 8% budget" in why


def steady(load: float, seconds: float, start: float = 0.0):
    return [(float(t), load) for t in range(int(start), int(start + seconds), 2)]


def test_tokens_spilled_over_the_budget_add_a_replica_once_per_window():
    # One replica's worth of requests in flight: the histogram keeps 1, but the routers see
    # 13 % of the tokens spill (the long prompts). Once the long-run share is known (half a
    # half-life of history: 300 s here), one more stands, and another only when the window
    # (600 s) has seen nothing below it.
    p = params(spill_share_budget=0.08, spill_history_half_life_s=600)
    ds = run(p, steady(4.0, 1600), 2, share=0.13)
    ups = [(d.history.last_change_at, d.replicas) for d in ds if d.action == "scale-up"]
    assert ups == [(300.0, 3), (900.0, 4), (1500.0, 5)]
    assert (
        "13.0% of the tokens spilled in the last 600 s, 13.0% over the last hours, over the 8% "
        "budget: one more stands" in ds[150].reason
    )
    # Before the long run is known, the share only holds: 2 stand, none goes.
    assert all(d.replicas == 2 for d in ds[:150])
    assert "not well within the 8% budget" in ds[0].reason


def test_a_share_near_the_budget_keeps_the_replicas_and_well_within_lets_them_go():
    loads = steady(4.0, 700)
    near = run(params(spill_share_budget=0.08), loads, 4, share=0.06)
    assert all(d.replicas == 4 for d in near)
    assert "the learned floor is 4 (6.0% of the tokens spilled" in near[-1].reason
    within = run(params(spill_share_budget=0.08), loads, 4, share=0.02)
    assert within[-1].replicas < 4


@pytest.mark.parametrize("share", [None, math.nan, -0.1, 1.5])
def test_no_or_bad_token_share_is_todays_policy(share):
    loads = steady(4.0, 700) + steady(40.0, 200, 700)
    p = params(spill_share_budget=0.08)
    today = [(d.replicas, d.reason) for d in run(p, loads, 4)]
    assert [(d.replicas, d.reason) for d in run(p, loads, 4, share=share)] == today


def test_the_ordinary_policy_ignores_the_token_share():
    loads = steady(4.0, 700)
    p = params(cost_aware=False)
    today = [(d.replicas, d.reason) for d in run(p, loads, 4)]
    assert [(d.replicas, d.reason) for d in run(p, loads, 4, share=0.5)] == today


def test_the_next_raise_waits_a_window_after_the_last_one_is_ready():
    # Replicas take 180 s to start: the window holds the raised count only once it is ready,
    # so the second raise comes a window after that, not a window after the first raise.
    p = params(spill_share_budget=0.08, time_to_ready_s=180, spill_history_half_life_s=600)
    h, current, set_at, ups = History(), 2, {2: -1e9}, []
    for at, load in steady(4.0, 1800):
        ready = max(n for n, t in set_at.items() if t + 180 <= at and n <= current)
        sample = Sample(
            at=at, in_flight=load, ready=ready, starting=current - ready, spilled_token_share=0.13
        )
        d = decide(p, h, sample, at, current)
        if d.replicas > current:
            set_at[d.replicas] = at
            ups.append(at)
        h, current = d.history, d.replicas
    # Raised at 300 s, ready at 480 s (the last sample with it starting: 478 s), then 600 s.
    assert ups[:2] == [300.0, 478.0 + 600.0]
    assert History.from_json(h.to_json()) == h


def test_the_long_run_share_weighs_each_window_by_its_tokens():
    # A busy window spilling 20 % and a quiet one spilling none: by tokens, 20 x 9 / 10.
    acc = remember_tokens((0.0, 0.0), 0.0, 0.20, 900.0, 3600.0)
    acc = remember_tokens(acc, 0.0, 0.0, 100.0, 3600.0)
    assert acc[0] / acc[1] == pytest.approx(0.18)
    # An hour later the older sums weigh half.
    assert remember_tokens(acc, 3600.0, 0.0, 0.0, 3600.0) == pytest.approx((90.0, 500.0))
    with pytest.raises(ValueError, match="token_spill"):
        History.from_json('{"token_spill": [1, -1]}')


def test_the_raised_count_outlasts_a_quiet_window_and_goes_once_the_long_run_is_within():
    # 13 % spill until the raise to 3, then 3 % (the raised count is enough): the ordinary
    # policy would step down after its delay, but the long-run share (half-life 600 s) is
    # still over half the budget, so the 3 stay; once it is well within, they may go.
    p = params(spill_share_budget=0.08, spill_history_half_life_s=600)
    h, current, counts = History(), 2, []
    for at, load in steady(4.0, 3600):
        share = 0.13 if current < 3 else 0.03
        sample = Sample(at=at, in_flight=load, ready=current, spilled_token_share=share)
        d = decide(p, h, sample, at, current)
        h, current = d.history, d.replicas
        counts.append((at, current, h.token_raised))
    raised_at = next(at for at, n, _ in counts if n == 3)
    assert raised_at == 300.0
    kept = [n for at, n, _ in counts if raised_at <= at < raised_at + 900]
    assert min(kept) == 3  # the scale-down delay (300 s) passed twice meanwhile
    assert counts[-1][1] < 3 and counts[-1][2] == 0
