"""When requests start: open-loop Poisson arrivals over a schedule of rates, and their sizes.

Pure: a seeded ``random.Random`` goes in, arrival times come out, so a run is repeatable and the
tests can check the process statistically. Open loop means arrivals never wait for earlier
answers; a slow server gets more requests in flight, not fewer requests, as real users do.

A schedule is a list of stages. A stage lasts ``seconds`` and its rate goes linearly from
``start_rate`` to ``end_rate`` (equal for a constant stage). Times are drawn by thinning
(Lewis and Shedler): candidates at the stage's peak rate, each kept with probability
``rate(t) / peak``, which is exact for any bounded rate function.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_RATE = 1_000_000.0
"""Requests per second above which a rate is refused as a typo."""


class ScheduleError(ValueError):
    """A duration, rate or stage list that cannot be used; the message says which part."""


@dataclass(frozen=True, slots=True)
class Stage:
    """``seconds`` long, the rate moving linearly from ``start_rate`` to ``end_rate`` (req/s)."""

    seconds: float
    start_rate: float
    end_rate: float

    def rate_at(self, offset: float) -> float:
        """The rate ``offset`` seconds into this stage."""
        if self.seconds <= 0:
            return self.end_rate
        share = min(max(offset / self.seconds, 0.0), 1.0)
        return self.start_rate + (self.end_rate - self.start_rate) * share

    def describe(self) -> str:
        """``30s@2`` or ``30s@2..20``, the syntax :func:`parse_stages` reads."""
        rates = _number(self.start_rate)
        if self.end_rate != self.start_rate:
            rates += f"..{_number(self.end_rate)}"
        return f"{_number(self.seconds)}s@{rates}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request to send: when (seconds from the start), how big, and its prefix blocks."""

    index: int
    at: float
    prompt_tokens: int
    output_tokens: int
    blocks: tuple[int, ...] = ()
    """Prefix-block ids (Mooncake ``hash_ids``): equal ids give equal prompt text."""


def _number(value: float) -> str:
    return f"{value:g}"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``1m30s``, ``500ms`` or ``2h``; ScheduleError otherwise."""
    raw = text.strip().lower()
    if not raw:
        raise ScheduleError("empty duration")
    try:
        seconds = float(raw)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise ScheduleError(
                f"bad duration {text!r}: use seconds (90), or units such as 90s, 1m30s, 500ms"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ScheduleError(f"bad duration {text!r}: must be a finite number >= 0")
    return seconds


def _parse_rate(text: str, stage: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ScheduleError(f"bad rate {text!r} in stage {stage!r}") from None
    if not math.isfinite(rate) or not 0 <= rate <= MAX_RATE:
        raise ScheduleError(f"rate {text!r} in stage {stage!r} must be between 0 and {MAX_RATE:g}")
    return rate


def parse_stages(text: str) -> list[Stage]:
    """Stages from ``30s@2,60s@20,30s@2``; ``30s@2..20`` ramps linearly within the stage."""
    stages: list[Stage] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ScheduleError(f"empty stage in {text!r}")
        duration, at, rates = part.partition("@")
        if not at:
            raise ScheduleError(f"stage {part!r} needs DURATION@RATE, for example 30s@5")
        start, dots, end = rates.partition("..")
        start_rate = _parse_rate(start, part)
        end_rate = _parse_rate(end, part) if dots else start_rate
        stages.append(Stage(parse_duration(duration), start_rate, end_rate))
    if sum(s.seconds for s in stages) <= 0:
        raise ScheduleError(f"stages {text!r} last no time at all")
    return stages


def constant_schedule(rate: float, seconds: float, ramp_seconds: float = 0.0) -> list[Stage]:
    """``rate`` for ``seconds``, the first ``ramp_seconds`` of them climbing from 0."""
    if not math.isfinite(rate) or not 0 < rate <= MAX_RATE:
        raise ScheduleError(f"rate {rate:g} must be above 0 and at most {MAX_RATE:g}")
    if seconds <= 0:
        raise ScheduleError("the duration must be above 0")
    if not 0 <= ramp_seconds <= seconds:
        raise ScheduleError("the ramp must be between 0 and the duration")
    stages = []
    if ramp_seconds > 0:
        stages.append(Stage(ramp_seconds, 0.0, rate))
    if seconds > ramp_seconds:
        stages.append(Stage(seconds - ramp_seconds, rate, rate))
    return stages


def schedule_seconds(stages: Sequence[Stage]) -> float:
    """How long a schedule lasts."""
    return sum(s.seconds for s in stages)


def stage_at(stages: Sequence[Stage], t: float) -> tuple[int, float]:
    """(index of the stage, rate) at ``t`` seconds; past the end, the last stage's end rate."""
    start = 0.0
    for index, stage in enumerate(stages):
        if t < start + stage.seconds:
            return index, stage.rate_at(t - start)
        start += stage.seconds
    return len(stages) - 1, stages[-1].end_rate if stages else 0.0


def poisson_times(stages: Sequence[Stage], rng: random.Random) -> Iterator[float]:
    """Arrival times (seconds from 0, increasing) of a Poisson process with the staged rate."""
    start = 0.0
    for stage in stages:
        peak = max(stage.start_rate, stage.end_rate)
        end = start + stage.seconds
        if peak > 0:
            t = start
            constant = stage.start_rate == stage.end_rate
            while True:
                t += rng.expovariate(peak)
                if t >= end:
                    break
                # Constant stages keep every candidate; ramps thin by rate(t) / peak.
                if constant or rng.random() * peak < stage.rate_at(t - start):
                    yield t
        start = end


def poisson_arrivals(
    stages: Sequence[Stage], rng: random.Random, prompt_tokens: int, output_tokens: int
) -> Iterator[Arrival]:
    """Poisson arrivals of fixed-size requests."""
    for index, t in enumerate(poisson_times(stages, rng)):
        yield Arrival(index, t, prompt_tokens, output_tokens)


def resize(
    arrivals: Iterator[Arrival],
    *,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Iterator[Arrival]:
    """Arrivals with sizes overridden (``*_tokens``) or capped (``max_*``); times unchanged."""
    for a in arrivals:
        prompt = prompt_tokens if prompt_tokens is not None else a.prompt_tokens
        output = output_tokens if output_tokens is not None else a.output_tokens
        if max_prompt_tokens is not None:
            prompt = min(prompt, max_prompt_tokens)
        if max_output_tokens is not None:
            output = min(output, max_output_tokens)
        if (prompt, output) == (a.prompt_tokens, a.output_tokens):
            yield a
        else:
            yield Arrival(a.index, a.at, prompt, output, a.blocks)
