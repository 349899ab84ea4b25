"""The learned standing floor: replicas that recent bursts needed, kept between them.

A burst shorter than a cold start is over before a replica asked for at its start is ready, so
only capacity already standing meets it. Where bursts recur, the replicas they wanted are
remembered as the peak want of each ``bucket_s``-second bucket (the larger of the panic
window's want, the figure the scale-down delay keeps, and the single sample's: a burst that
arrives at once is often served before the next scrape), and the floor is a high quantile of
those peaks, each weighted by ``0.5 ** (age / half_life_s)``: a burst an hour old counts half
as much as one now, and buckets older than :data:`HORIZON_HALF_LIVES` half-lives are dropped.

A gap in the observations (the operator was down) adds no bucket: a gap is not evidence of a
low load, and as every weight decays by the same factor over it, the quantile, which depends
only on the weights' ratios, is the one from before the gap. A history that is lost (a new
annotation) has no bucket and no floor: the fallback is ``minReplicas`` and the scale-down
delay, which never scales down a load that still wants its replicas.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Final

Peaks = tuple[tuple[float, int], ...]
"""``(bucket start, the most replicas the load's peaks wanted in it)``, oldest first."""

HORIZON_HALF_LIVES: Final = 4.0
"""Buckets older than this many half-lives (weight under 1/16) are forgotten."""

MAX_BUCKETS: Final = 512


def remember_peak(
    peaks: Peaks, now: float, want: int, bucket_s: float, half_life_s: float
) -> Peaks:
    """``peaks`` with ``want`` folded into the bucket holding ``now``, old buckets dropped."""
    start = math.floor(now / bucket_s) * bucket_s
    kept = [(at, n) for at, n in peaks if at > now - HORIZON_HALF_LIVES * half_life_s]
    if kept and kept[-1][0] == start:
        kept[-1] = (start, max(kept[-1][1], want))
    elif not kept or kept[-1][0] < start:
        kept.append((start, want))
    # A bucket after `start` means a clock that went back; the caller resets on that.
    return tuple(kept[-MAX_BUCKETS:])


def learned_floor(peaks: Peaks, now: float, quantile: float, half_life_s: float) -> int:
    """The weighted ``quantile`` of the buckets' peaks (0 with no bucket).

    The smallest count whose buckets (that count or fewer) carry at least ``quantile`` of the
    total weight: with ``quantile`` 0.9, bursts that reach a count in more than a tenth of the
    recent (weighted) buckets keep it standing.
    """
    if not peaks:
        return 0
    weighted = sorted((n, 0.5 ** (max(now - at, 0.0) / half_life_s)) for at, n in peaks)
    total = sum(w for _, w in weighted)
    covered = 0.0
    for n, w in weighted:
        covered += w
        if covered >= quantile * total - 1e-12:
            return n
    return weighted[-1][0]


def floor_falls(
    peaks: Peaks,
    now: float,
    quantile: float,
    half_life_s: float,
    bucket_s: float,
    *,
    want: int,
    floor: int,
    lowest: int,
) -> tuple[tuple[float, int], ...]:
    """When the floor would fall if the load kept wanting ``want``: ``(time, floor after)``.

    The floor's buckets are replayed forward, one bucket of ``want`` per ``bucket_s`` (what
    the policy records at a steady load), until the floor is at ``max(want, lowest)`` or every
    bucket of now is forgotten (:data:`HORIZON_HALF_LIVES`). An estimate for people (status
    and Events): a new burst raises the floor again, and a load that changes moves the times.
    Each fall is at a bucket's start, so the times stay put while the load does.
    """
    bottom = max(want, lowest)
    steps: list[tuple[float, int]] = []
    at, current = now, floor
    horizon = now + HORIZON_HALF_LIVES * half_life_s + bucket_s
    while current > bottom and at < horizon:
        at = (math.floor(at / bucket_s) + 1) * bucket_s
        peaks = remember_peak(peaks, at, want, bucket_s, half_life_s)
        fallen = max(learned_floor(peaks, at, quantile, half_life_s), bottom)
        if fallen < current:
            steps.append((at, fallen))
            current = fallen
    return tuple(steps)
