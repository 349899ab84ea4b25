"""The learned standing floor: buckets of peak wants, a weighted quantile, decay and gaps."""

from __future__ import annotations

from inferscale.autoscaler.floor import (
    HORIZON_HALF_LIVES,
    floor_falls,
    learned_floor,
    remember_peak,
)
from inferscale.autoscaler.policy import History, PolicyParams, Sample, decide

HOUR = 3600.0


def test_a_bucket_keeps_its_largest_want():
    peaks = remember_peak((), 10, 2, 300, HOUR)
    peaks = remember_peak(peaks, 200, 7, 300, HOUR)
    peaks = remember_peak(peaks, 290, 3, 300, HOUR)
    assert peaks == ((0.0, 7),)
    assert remember_peak(peaks, 301, 1, 300, HOUR) == ((0.0, 7), (300.0, 1))


def test_old_buckets_are_forgotten():
    peaks = remember_peak((), 0, 9, 300, HOUR)
    later = HORIZON_HALF_LIVES * HOUR + 1
    assert remember_peak(peaks, later, 1, 300, HOUR) == ((later // 300 * 300, 1),)


def test_the_quantile_covers_bursts_that_recur():
    # A burst wanting 6 in 3 of 20 buckets (15 %): the 90th percentile keeps 6 standing,
    # the median does not.
    peaks = tuple((i * 300.0, 6 if i % 7 == 3 else 2) for i in range(20))
    now = 20 * 300.0
    assert learned_floor(peaks, now, 0.9, HOUR) == 6
    assert learned_floor(peaks, now, 0.5, HOUR) == 2
    assert learned_floor((), now, 0.9, HOUR) == 0


def test_old_bursts_weigh_less():
    # Two bursts, then two quiet hours: undecayed they are 8 % of the buckets, above the 95th
    # percentile's 5 %; with a half-life of half an hour they weigh next to nothing.
    peaks = ((0.0, 8), (300.0, 8)) + tuple((600.0 + i * 300, 1) for i in range(24))
    assert learned_floor(peaks, 8100, 0.95, 100 * HOUR) == 8
    assert learned_floor(peaks, 8100, 0.95, HOUR / 2) == 1


def test_a_gap_changes_nothing():
    # Every weight decays by the same factor over a gap: the quantile is the one before it.
    peaks = tuple((i * 300.0, 6 if i % 5 == 0 else 2) for i in range(12))
    before = learned_floor(peaks, 3600, 0.9, HOUR)
    assert learned_floor(peaks, 3600 + HOUR, 0.9, HOUR) == before == 6


def params(**overrides) -> PolicyParams:
    base = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_in_flight_per_replica": 4,
        "scale_down_delay_s": 60,
        "learned_floor_quantile": 0.9,
    }
    base.update(overrides)
    return PolicyParams(**base)


def run(p: PolicyParams, loads: list[tuple[float, float]], current: int, history=None):
    """Decide at each (time, load), applying each decision; the last decision."""
    h = history or History()
    d = None
    for at, load in loads:
        d = decide(p, h, Sample(at=at, in_flight=load, ready=current), at, current)
        h, current = d.history, d.replicas
    return d


def bursty(start: float, end: float, every: float = 600) -> list[tuple[float, float]]:
    """2 in flight, with a 20-s burst of 24 every ``every`` seconds."""
    return [(t, 24.0 if t % every < 20 else 2.0) for t in range(int(start), int(end), 2)]


def test_recurring_bursts_keep_their_replicas_standing_and_the_reason_says_so():
    d = run(params(), bursty(0, 3 * HOUR), 1)
    assert d is not None and d.replicas == 6
    assert "the learned floor is 6" in d.reason and "p90" in d.reason
    without = run(params(learned_floor_quantile=None), bursty(0, 3 * HOUR), 1)
    assert without is not None and without.replicas < 6


def test_the_floor_survives_a_restart_that_kept_the_annotation():
    first = run(params(), bursty(0, 2 * HOUR), 1)
    assert first is not None
    restored = History.from_json(first.history.to_json())
    assert restored.peaks == first.history.peaks
    # An hour with no observation (the operator was down), then quiet load: still standing.
    d = run(params(), [(3 * HOUR + t, 2.0) for t in range(0, 120, 2)], first.replicas, restored)
    assert d is not None and d.replicas == first.replicas == 6


def test_a_lost_history_falls_back_to_the_delay_and_never_drops_a_loaded_fleet():
    # No buckets: no learned floor; a load that wants all six replicas keeps them.
    d = run(params(), [(t, 24.0) for t in range(0, 600, 2)], 6)
    assert d is not None and d.replicas == 6 and d.action == "hold"


def test_to_zero_is_still_the_user_s_order_once_idle():
    p = params(min_replicas=0, scale_to_zero_delay_s=120)
    first = run(p, bursty(0, HOUR), 1)
    assert first is not None
    d = run(p, [(HOUR + t, 0.0) for t in range(0, 400, 2)], first.replicas, first.history)
    assert d is not None and d.replicas == 0


def test_a_burst_one_scrape_long_counts_in_the_floor():
    # Mooncake-like: twenty requests arrive in one second and are done before the next
    # scrape. The 6-s panic window's mean hardly moves; the sample itself wanted 6 replicas.
    loads = [(t, 24.0 if t % 600 == 0 else 2.0) for t in range(0, int(3 * HOUR), 2)]
    d = run(params(), loads, 1)
    assert d is not None and "the learned floor is 6" in d.reason
    without = run(params(), [(t, 2.0) for t, _ in loads], 1)
    assert without is not None and "learned floor" not in without.reason


def test_the_fall_estimate_replays_quiet_buckets_until_the_floor_reaches_the_load():
    peaks = tuple((i * 300.0, 5 if i % 3 == 0 else 1) for i in range(12))
    assert learned_floor(peaks, 3300, 0.8, HOUR) == 5
    steps = floor_falls(peaks, 3300, 0.8, HOUR, 300, want=1, floor=5, lowest=1)
    assert steps == ((4800, 1),)
    # Replaying it for real gives the same: the floor is still 5 a bucket before, 1 at it.
    replay = peaks
    for at in range(3600, 4801, 300):
        replay = remember_peak(replay, at, 1, 300, HOUR)
        assert learned_floor(replay, at, 0.8, HOUR) == (1 if at >= 4800 else 5)
    # The load wants as much as the floor, or the minimum is above it: nothing to fall.
    assert floor_falls(peaks, 3300, 0.8, HOUR, 300, want=5, floor=5, lowest=1) == ()
    assert floor_falls(peaks, 3300, 0.8, HOUR, 300, want=1, floor=5, lowest=5) == ()
    # Falls in steps, each at a bucket's start, never below the minimum.
    mixed = tuple((i * 300.0, (6, 3, 1)[i % 3]) for i in range(12))
    steps = floor_falls(mixed, 3300, 0.8, HOUR, 300, want=1, floor=6, lowest=2)
    assert [n for _, n in steps] == sorted({n for _, n in steps}, reverse=True)
    assert steps[-1][1] == 2 and all(at % 300 == 0 for at, _ in steps)
    # Within the horizon: every bucket of now is forgotten after four half-lives.
    assert steps[-1][0] <= 3300 + HORIZON_HALF_LIVES * HOUR + 300
