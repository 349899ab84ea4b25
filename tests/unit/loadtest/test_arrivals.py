"""Arrival processes: Poisson statistics with a fixed seed, stages and ramps, durations."""

import math
import random
import statistics

import pytest

from inferscale.loadtest.arrivals import (
    Arrival,
    ScheduleError,
    Stage,
    constant_schedule,
    parse_duration,
    parse_stages,
    poisson_arrivals,
    poisson_times,
    resize,
    schedule_seconds,
    stage_at,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5m", 90), ("0", 0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "s", "1m 30s", "-5", "5s10", "nan", "inf"])
def test_parse_duration_refuses(text):
    with pytest.raises(ScheduleError):
        parse_duration(text)


def test_parse_stages_constant_and_ramped():
    stages = parse_stages("30s@2, 1m@20 ,10s@0..5")
    assert stages == [Stage(30, 2, 2), Stage(60, 20, 20), Stage(10, 0, 5)]
    assert schedule_seconds(stages) == 100
    assert [s.describe() for s in stages] == ["30s@2", "60s@20", "10s@0..5"]
    assert parse_stages(",".join(s.describe() for s in stages)) == stages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30s", "needs DURATION@RATE"),
        ("30s@", "bad rate"),
        ("30s@x", "bad rate"),
        ("30s@-1", "must be between"),
        ("30s@2,,10s@1", "empty stage"),
        ("0s@5", "last no time"),
        ("abc@5", "bad duration"),
        ("10s@1..z", "bad rate"),
        ("10s@1e9", "must be between"),
    ],
)
def test_parse_stages_refuses_with_the_part_named(text, message):
    with pytest.raises(ScheduleError, match=message):
        parse_stages(text)


def test_constant_schedule_with_ramp():
    assert constant_schedule(10, 60, 20) == [Stage(20, 0, 10), Stage(40, 10, 10)]
    assert constant_schedule(10, 60) == [Stage(60, 10, 10)]
    assert constant_schedule(10, 60, 60) == [Stage(60, 0, 10)]
    for bad in ((0, 60, 0), (10, 0, 0), (10, 60, 61), (math.nan, 60, 0)):
        with pytest.raises(ScheduleError):
            constant_schedule(*bad)


def test_stage_at():
    stages = parse_stages("10s@2,10s@0..10")
    assert stage_at(stages, 0) == (0, 2)
    assert stage_at(stages, 9.9) == (0, 2)
    assert stage_at(stages, 15) == (1, pytest.approx(5))
    assert stage_at(stages, 99) == (1, 10)


def test_poisson_times_are_repeatable_with_a_seed():
    stages = [Stage(100, 5, 5)]
    first = list(poisson_times(stages, random.Random(7)))
    assert first == list(poisson_times(stages, random.Random(7)))
    assert first != list(poisson_times(stages, random.Random(8)))


def test_constant_rate_is_poisson_like():
    rate, seconds = 20.0, 2000.0
    times = list(poisson_times([Stage(seconds, rate, rate)], random.Random(1)))
    n = len(times)
    # Count: mean rate*T, sd sqrt(rate*T) = 200; 4 sd either way.
    assert abs(n - rate * seconds) < 4 * math.sqrt(rate * seconds)
    gaps = [b - a for a, b in zip(times, times[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.02)
    # Exponential gaps: coefficient of variation 1, and P(gap > mean) = 1/e.
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.03)
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.01)
    # Counts per second: variance equals mean (index of dispersion 1).
    per_second = [0] * int(seconds)
    for t in times:
        per_second[int(t)] += 1
    dispersion = statistics.pvariance(per_second) / statistics.fmean(per_second)
    assert dispersion == pytest.approx(1.0, abs=0.1)
    assert times == sorted(times) and 0 <= times[0] and times[-1] < seconds


def test_stages_change_the_rate_where_they_say():
    stages = parse_stages("300s@2,300s@20,300s@2")
    times = list(poisson_times(stages, random.Random(3)))
    counts = [sum(lo <= t < lo + 300 for t in times) for lo in (0, 300, 600)]
    for count, rate in zip(counts, (2, 20, 2)):
        expected = rate * 300
        assert abs(count - expected) < 4 * math.sqrt(expected), counts


def test_a_ramp_thins_linearly():
    # Rate 0 -> 40 over 1000 s: the expected count in [a, b) is the integral 0.02 (b^2 - a^2).
    times = list(poisson_times([Stage(1000, 0, 40)], random.Random(5)))
    for lo, hi in ((0, 250), (250, 500), (500, 750), (750, 1000)):
        expected = 0.02 * (hi**2 - lo**2)
        count = sum(lo <= t < hi for t in times)
        assert abs(count - expected) < 4 * math.sqrt(expected), (lo, count, expected)


def test_a_zero_rate_stage_sends_nothing_but_takes_its_time():
    stages = parse_stages("10s@0,10s@5")
    times = list(poisson_times(stages, random.Random(0)))
    assert times and min(times) >= 10


def test_poisson_arrivals_are_numbered_and_sized():
    arrivals = list(poisson_arrivals([Stage(10, 5, 5)], random.Random(0), 100, 20))
    assert [a.index for a in arrivals] == list(range(len(arrivals)))
    assert {(a.prompt_tokens, a.output_tokens, a.blocks) for a in arrivals} == {(100, 20, ())}


def test_resize_overrides_and_caps():
    rows = [Arrival(0, 0.0, 5000, 300, (1, 2)), Arrival(1, 1.0, 10, 2)]
    capped = list(resize(iter(rows), max_prompt_tokens=1000, max_output_tokens=100))
    assert [(a.prompt_tokens, a.output_tokens) for a in capped] == [(1000, 100), (10, 2)]
    assert capped[0].blocks == (1, 2) and capped[1] is rows[1]
    fixed = list(resize(iter(rows), prompt_tokens=64, output_tokens=8))
    assert [(a.prompt_tokens, a.output_tokens, a.at) for a in fixed] == [(64, 8, 0.0), (64, 8, 1.0)]
