"""The ``predictedTTFT`` picker: each replica's cache index, its learned prefill rate, the pick.

Pure code shared by the router, the what-if simulator and ``bench/routing``, so all three score
replicas the same way. Nothing here reads a clock or a socket: events and observed TTFTs come in
as arguments.

- :class:`CacheIndex` mirrors, per replica, which prompt blocks its engine holds and where (GPU
  or host memory), from the engine's KV events (vLLM's BlockStored / BlockRemoved /
  AllBlocksCleared). It is bounded: past ``max_blocks`` per replica the oldest entries go (a
  forgotten block only makes the estimate pessimistic, never wrong in kind).
- :class:`PrefillRate` learns one replica's TTFT as ``base + seconds_per_token * work`` from
  observed first tokens, where ``work`` is the prefill the request waited for (the uncached
  tokens queued ahead of it plus its own). Both figures move by an exponentially weighted
  average of clamped samples, so one outlier (a stall, a cold start) moves them little, and they
  stay within fixed bounds.
- :func:`predicted_ttft` estimates each candidate's TTFT as ``base + seconds_per_token *
  (queued work + uncached part of this prompt) + host_seconds_per_token * host-tier hits``
  and picks the lowest, among the candidates with at most ``load_slack`` requests in flight
  more than the least loaded one (so affinity never piles requests on one replica). A replica
  without an index entry (no events, or a lost stream) is scored with an empty cache.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

GPU_TIER: Final = 1
HOST_TIER: Final = 2
MEDIUM_TIERS: Final[Mapping[str, int]] = {"GPU": GPU_TIER, "CPU": HOST_TIER}
"""vLLM's ``medium`` names (``None`` in older versions means the GPU) to index tiers."""

DEFAULT_MAX_BLOCKS: Final = 4_000_000
"""Per replica: 16-token blocks of a 400k-token GPU cache and a 16x larger host tier, with room."""
DEFAULT_LOAD_SLACK: Final = 16
"""Most requests in flight above the least loaded candidate that a cache hit may justify.

Measured in bench/routing (conversation trace, virtual time; ratio of mean TTFT to
leastInFlight's). Window 0, 600 rows, speed-up 1.5: slack 1: 0.85, 2: 0.95, 8: 0.72,
unbounded: 0.75. 1,500 rows at speed-up 2 (overloaded), windows 0 / 3000: slack 4:
1.01 / 1.01, 8: 1.00 / 0.98 (p95 0.97 / 1.13), 16: 0.98 / 0.96 (p95 1.00 / 0.98). Queued
prefill, not requests in flight, is what delays a first token, so the bound only has to stop
affinity from piling decoding requests on one replica.
"""


def tier_of(medium: str | None) -> int:
    """The index tier of an event's medium; unknown media count as host (slower than GPU)."""
    if medium is None:
        return GPU_TIER
    return MEDIUM_TIERS.get(medium.upper(), HOST_TIER)


class CacheIndex:
    """Which blocks each replica holds, per tier, as its KV events said; bounded per replica."""

    __slots__ = ("max_blocks", "_blocks")

    def __init__(self, max_blocks: int = DEFAULT_MAX_BLOCKS) -> None:
        """Keep at most ``max_blocks`` block hashes per replica."""
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self.max_blocks = max_blocks
        # Per replica: block hash -> bit set of tiers, oldest stored first (the eviction order).
        self._blocks: dict[str, dict[int, int]] = {}

    def stored(self, replica: str, hashes: Iterable[int], medium: str | None) -> None:
        """The blocks now hold KV in ``medium`` at ``replica``."""
        tier = tier_of(medium)
        blocks = self._blocks.setdefault(replica, {})
        for h in hashes:
            blocks[h] = blocks.get(h, 0) | tier
        if len(blocks) > self.max_blocks:
            # Drop an eighth at once, so a full index does not pay a scan per event.
            excess = len(blocks) - self.max_blocks + self.max_blocks // 8
            for h in list(itertools.islice(blocks, excess)):
                del blocks[h]

    def removed(self, replica: str, hashes: Iterable[int], medium: str | None) -> None:
        """The blocks no longer hold KV in ``medium`` at ``replica`` (unknown ones are ignored)."""
        tier = tier_of(medium)
        blocks = self._blocks.get(replica)
        if blocks is None:
            return
        for h in hashes:
            left = blocks.get(h, 0) & ~tier
            if left:
                blocks[h] = left
            else:
                blocks.pop(h, None)

    def cleared(self, replica: str) -> None:
        """Every block of ``replica`` is gone (AllBlocksCleared, a restart, a lost stream)."""
        self._blocks.pop(replica, None)

    def blocks(self, replica: str) -> int:
        """Block hashes indexed for ``replica``."""
        return len(self._blocks.get(replica, ()))

    def match(self, replica: str, hashes: Sequence[int]) -> tuple[int, int]:
        """Leading blocks of ``hashes`` cached at ``replica``: (on the GPU, only on the host).

        The prefix ends at the first block held in no tier, as an engine's prefix match does.
        """
        blocks = self._blocks.get(replica)
        if not blocks:
            return 0, 0
        gpu = host = 0
        for h in hashes:
            tiers = blocks.get(h, 0)
            if tiers & GPU_TIER:
                gpu += 1
            elif tiers:
                host += 1
            else:
                break
        return gpu, host


class PrefillRate:
    """One replica's TTFT as ``base_seconds + seconds_per_token * work``, learned online."""

    __slots__ = ("base_seconds", "seconds_per_token", "weight", "min_tokens", "bounds")

    def __init__(
        self,
        seconds_per_token: float,
        base_seconds: float = 0.01,
        *,
        weight: float = 0.05,
        min_tokens: int = 512,
        bounds: tuple[float, float] = (1e-7, 1e-2),
    ) -> None:
        """Start from a prior (a preset's figures) and move towards what is observed.

        Args:
            seconds_per_token: prior prefill cost per token, including the decode steps that
                interleave with it (what a queued token costs a waiting request).
            base_seconds: prior TTFT of a request with no prefill work (one step).
            weight: how far one sample moves the estimate (0..1).
            min_tokens: samples with less work than this teach ``base_seconds`` only.
            bounds: the range ``seconds_per_token`` is kept in.
        """
        if not 0 < weight <= 1 or seconds_per_token <= 0 or base_seconds < 0:
            raise ValueError("weight must be in (0, 1], the priors positive")
        self.bounds = bounds
        self.seconds_per_token = min(max(seconds_per_token, bounds[0]), bounds[1])
        self.base_seconds = base_seconds
        self.weight = weight
        self.min_tokens = min_tokens

    def observe(self, work_tokens: int, ttft_seconds: float) -> None:
        """A first token came ``ttft_seconds`` after a request that waited for ``work_tokens``.

        Each sample is clamped to a quarter..four times the current estimate before it is
        averaged in, so a single outlier moves the estimate by at most ``3 * weight`` of it.
        Non-finite or negative figures are ignored.
        """
        if not (0 <= ttft_seconds < 1e6) or work_tokens < 0:
            return
        if work_tokens < self.min_tokens:
            sample = min(max(ttft_seconds, self.base_seconds / 4), 4 * self.base_seconds + 1e-3)
            self.base_seconds += self.weight * (sample - self.base_seconds)
            return
        per_token = max(ttft_seconds - self.base_seconds, 0.0) / work_tokens
        est = self.seconds_per_token
        sample = min(max(per_token, est / 4), est * 4)
        low, high = self.bounds
        self.seconds_per_token = min(max(est + self.weight * (sample - est), low), high)

    def predict(self, work_tokens: float, host_tokens: int, host_seconds_per_token: float) -> float:
        """Estimated TTFT for ``work_tokens`` of prefill and ``host_tokens`` loaded from host."""
        return (
            self.base_seconds
            + self.seconds_per_token * work_tokens
            + host_seconds_per_token * host_tokens
        )


class TtftCandidate(Protocol):
    """What :func:`predicted_ttft` reads of an endpoint."""

    @property
    def key(self) -> str:
        """Stable identity (the address): the index's and the rates' key."""

    @property
    def in_flight(self) -> int:
        """Requests this router has in flight there."""

    @property
    def pending_prefill_tokens(self) -> int:
        """Uncached prompt tokens of this router's requests there with no first token yet."""


T = TypeVar("T", bound=TtftCandidate)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Why a candidate scored what it did."""

    ttft_seconds: float
    work_tokens: int
    """Prefill tokens this request waits for there: queued plus its own uncached ones."""
    own_tokens: int
    """Of those, this prompt's uncached tokens (what the replica's pending work grows by)."""
    gpu_tokens: int
    host_tokens: int


def estimate(
    candidate: TtftCandidate,
    *,
    prompt_tokens: int,
    hashes: Sequence[int],
    block_size: int,
    index: CacheIndex,
    rate: PrefillRate,
    host_seconds_per_token: float,
) -> Estimate:
    """One candidate's predicted TTFT for this prompt (module docstring)."""
    gpu_blocks, host_blocks = index.match(candidate.key, hashes)
    # An engine recomputes at least the last prompt token, even on a full hit.
    gpu = min(gpu_blocks * block_size, prompt_tokens - 1)
    host = min(host_blocks * block_size, prompt_tokens - 1 - gpu)
    own = prompt_tokens - gpu - host
    work = candidate.pending_prefill_tokens + own
    ttft = rate.predict(work, host, host_seconds_per_token)
    return Estimate(ttft, work, own, gpu, host)


def predicted_ttft(
    candidates: Sequence[T],
    *,
    prompt_tokens: int,
    hashes: Sequence[int],
    block_size: int,
    index: CacheIndex,
    rates: Mapping[str, PrefillRate],
    default_rate: PrefillRate,
    host_seconds_per_token: float = 0.0,
    load_slack: int = DEFAULT_LOAD_SLACK,
    start: int = 0,
) -> tuple[T, Estimate]:
    """The candidate with the lowest estimated TTFT within the load bound, and its estimate.

    Args:
        candidates: at least one.
        prompt_tokens: this prompt's length in tokens (at least 1).
        hashes: the prompt's full-block hashes, as the engine computes them.
        block_size: tokens per block.
        index: the replicas' cached blocks.
        rates: each replica's learned rate; ``default_rate`` for the others.
        default_rate: the rate of a replica not yet observed.
        host_seconds_per_token: cost of loading one token from the host tier.
        load_slack: only candidates with at most this many in flight above the least loaded
            one compete.
        start: where the scan begins; ties of estimate go to the fewer in flight, then to the
            first scanned, so idle replicas share traffic as ``start`` rotates.
    """
    least = min(c.in_flight for c in candidates)
    n = len(candidates)
    best: T | None = None
    best_est: Estimate | None = None
    best_key = (0.0, 0)
    for i in range(n):
        c = candidates[(start + i) % n]
        if c.in_flight > least + load_slack:
            continue
        est = estimate(
            c,
            prompt_tokens=max(prompt_tokens, 1),
            hashes=hashes,
            block_size=block_size,
            index=index,
            rate=rates.get(c.key, default_rate),
            host_seconds_per_token=host_seconds_per_token,
        )
        key = (est.ttft_seconds, c.in_flight)
        if best is None or key < best_key:
            best, best_est, best_key = c, est, key
    assert best is not None and best_est is not None  # the least loaded always competes
    return best, best_est
