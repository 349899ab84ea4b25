"""The ``predictedTTFT`` picker: each replica's cache index, its learned prefill rate, the pick.

Pure code shared by the router and ``bench/routing`` (through :class:`TtftRouting`), so both
score replicas the same way. Nothing here reads a clock or a socket: events, observed TTFTs and
the time of each pick come in as arguments.

- :class:`CacheIndex` mirrors, per replica, which prompt blocks its engine holds and where (GPU
  or host memory), from the engine's KV events (vLLM's BlockStored / BlockRemoved /
  AllBlocksCleared). It is bounded: past ``max_blocks`` per replica the oldest entries go (a
  forgotten block only makes the estimate pessimistic, never wrong in kind).
- :class:`PrefillRate` learns a pool of replicas' TTFT as ``base + seconds_per_token * work`` from
  observed first tokens, where ``work`` is the prefill the request waited for (the work queued
  ahead of it plus its own), in prefill-token equivalents: an uncached token is 1, a token
  loaded from the host tier ``host_ratio`` (the load's cost as a share of recomputing it,
  learned from the first tokens of prompts with host hits, read against what first tokens
  without host hits imply beyond the model). Both rate figures move by an exponentially
  weighted average of clamped samples, the host ratio by fixed multiplicative steps towards
  the median of its samples, so one outlier (a stall, a cold start) moves them little, and all
  stay within fixed bounds. Host loads queued at a replica count in its pending work too.
- :func:`predicted_ttft` estimates each candidate's TTFT as ``base + seconds_per_token *
  (queued work + this prompt's uncached tokens + host_ratio * its host-tier hits)``
  and picks the lowest cost (:func:`delay_cost`: that TTFT, plus the wait this prompt's own
  prefill adds to the requests expected to arrive there before it is done), among the
  candidates with at most ``load_slack`` requests in flight more than the least loaded one (so
  affinity never piles requests on one replica). A replica without an index entry (no events,
  or a lost stream) is scored with an empty cache; the blocks of prompts already in flight at
  a replica (:class:`InFlightBlocks`) count as cached there.
- :class:`TtftRouting` is the glue around them that the router's pick stage and
  bench/routing's virtual replicas both run: one rate and one arrival rate per pool (model),
  the blocks in flight per replica.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from inferscale.protocol.simtokens import HASHABLE_ENGINES, block_hashes, request_token_ids

DEFAULT_BLOCK_SIZE: Final = 16
"""Tokens per KV block: vLLM's and the sim's default."""
DEFAULT_SECONDS_PER_TOKEN: Final = 1e-4
"""A replica's prefill cost before any TTFT is observed there (10k tokens/s, an 8B model)."""

GPU_TIER: Final = 1
HOST_TIER: Final = 2
MEDIUM_TIERS: Final[Mapping[str, int]] = {"GPU": GPU_TIER, "CPU": HOST_TIER}
"""vLLM's ``medium`` names (``None`` in older versions means the GPU) to index tiers."""

DEFAULT_HOST_RATIO: Final = 0.25
"""Prior cost of loading one token's KV from the host tier, as a share of prefilling it.

Deliberately not any engine's figure: the pool's ratio is learned from its first tokens
(:meth:`PrefillRate.observe`). For scale, 128 KiB per token over PCIe Gen5 against an H100's
prefill of Llama-3.1-8B is 0.05 (the sim's preset, ``docs/sim.md``); larger models do more
compute per byte of KV, so less.
"""
HOST_RATIO_BOUNDS: Final = (1e-3, 1.0)
"""The range the learned host ratio is kept in: never free, never dearer than recomputing (a
tier that cost more than recompute would not be configured)."""

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


class KvEventLike(Protocol):
    """One cache event as :meth:`CacheIndex.apply` reads it (decoded vLLM, or the sim's)."""

    @property
    def kind(self) -> str:
        """``stored``, ``removed`` or ``cleared``."""

    @property
    def hashes(self) -> Sequence[int]:
        """The blocks it is about (none for ``cleared``)."""

    @property
    def medium(self) -> str | None:
        """Where: ``GPU``, ``CPU`` or ``None`` (the GPU, in older vLLM)."""


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

    def apply(self, replica: str, events: Iterable[KvEventLike]) -> int:
        """Apply ``replica``'s events in order (the one path from an engine's events in here).

        The router's subscriber applies each decoded batch with it, and bench/routing the
        events its latency models record, so both learn a cache the same way. Returns how many
        events were applied.
        """
        n = 0
        for event in events:
            n += 1
            if event.kind == "stored":
                self.stored(replica, event.hashes, event.medium)
            elif event.kind == "removed":
                self.removed(replica, event.hashes, event.medium)
            else:
                self.cleared(replica)
        return n

    def blocks(self, replica: str) -> int:
        """Block hashes indexed for ``replica``."""
        return len(self._blocks.get(replica, ()))

    def match(
        self, replica: str, hashes: Sequence[int], in_flight: Mapping[int, int] | None = None
    ) -> tuple[int, int]:
        """Leading blocks of ``hashes`` cached at ``replica``: (on the GPU, only on the host).

        The prefix ends at the first block held in no tier, as an engine's prefix match does.
        ``in_flight`` holds the blocks of prompts already sent to ``replica`` and not finished:
        they count as on the GPU whatever the events said so far, because the engine computes
        them before (or in the same step as) a prompt queued behind them, and keeps them
        pinned while their request runs (:class:`InFlightBlocks`).
        """
        blocks = self._blocks.get(replica) or {}
        pinned = in_flight or {}
        if not blocks and not pinned:
            return 0, 0
        gpu = host = 0
        for h in hashes:
            tiers = blocks.get(h, 0)
            if tiers & GPU_TIER or h in pinned:
                gpu += 1
            elif tiers:
                host += 1
            else:
                break
        return gpu, host


class InFlightBlocks:
    """Per replica, the block hashes of the prompts this router has in flight there.

    A prompt queued behind another with the same prefix finds that prefix computed when its
    turn comes, though no event has announced it yet: counting those blocks as cached keeps
    a burst of requests sharing a prefix (an agent loop, a shared document) on the replica
    that will hold it, instead of spreading it before the first one's events arrive.
    Reference counts, because several requests in flight may share blocks; bounded by what
    is in flight.
    """

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        """Nothing in flight."""
        self._blocks: dict[str, dict[int, int]] = {}

    def get(self, replica: str) -> Mapping[int, int] | None:
        """The blocks in flight at ``replica`` (``None``: none)."""
        return self._blocks.get(replica)

    def sent(self, replica: str, hashes: Sequence[int]) -> None:
        """A prompt with these blocks went to ``replica``."""
        if not hashes:
            return
        blocks = self._blocks.setdefault(replica, {})
        for h in hashes:
            blocks[h] = blocks.get(h, 0) + 1

    def finished(self, replica: str, hashes: Sequence[int]) -> None:
        """The request sent with these blocks ended there (answered, failed or cancelled)."""
        blocks = self._blocks.get(replica)
        if blocks is None:
            return
        for h in hashes:
            left = blocks.get(h, 0) - 1
            if left > 0:
                blocks[h] = left
            else:
                blocks.pop(h, None)
        if not blocks:
            del self._blocks[replica]

    def forget(self, wanted: set[str]) -> None:
        """Drop the replicas not in ``wanted`` (they left the table)."""
        for key in [k for k in self._blocks if k not in wanted]:
            del self._blocks[key]


class PrefillRate:
    """A pool's TTFT as ``base_seconds + seconds_per_token * work``, learned online.

    ``work`` counts prefill-token equivalents: an uncached token is 1, a token loaded from the
    host tier :attr:`host_ratio` (also learned here).
    """

    __slots__ = (
        "base_seconds",
        "seconds_per_token",
        "host_ratio",
        "residual",
        "residual_spread",
        "weight",
        "min_tokens",
        "bounds",
    )

    def __init__(
        self,
        seconds_per_token: float,
        base_seconds: float = 0.01,
        *,
        host_ratio: float = DEFAULT_HOST_RATIO,
        weight: float = 0.05,
        min_tokens: int = 512,
        bounds: tuple[float, float] = (1e-7, 1e-2),
    ) -> None:
        """Start from a prior (a preset's figures) and move towards what is observed.

        Args:
            seconds_per_token: prior prefill cost per token, including the decode steps that
                interleave with it (what a queued token costs a waiting request).
            base_seconds: prior TTFT of a request with no prefill work (one step).
            host_ratio: prior cost of a host-tier token as a share of a prefilled one (kept
                within :data:`HOST_RATIO_BOUNDS`).
            weight: how far one sample moves the estimate (0..1).
            min_tokens: samples with less work than this teach ``base_seconds`` only, and
                with fewer host-tier tokens than this teach nothing of ``host_ratio``.
            bounds: the range ``seconds_per_token`` is kept in.
        """
        if not 0 < weight <= 1 or seconds_per_token <= 0 or base_seconds < 0:
            raise ValueError("weight must be in (0, 1], the priors positive")
        self.bounds = bounds
        self.seconds_per_token = min(max(seconds_per_token, bounds[0]), bounds[1])
        self.base_seconds = base_seconds
        low, high = HOST_RATIO_BOUNDS
        self.host_ratio = min(max(host_ratio, low), high)
        self.residual = 0.0
        """The median of the work first tokens imply beyond what was predicted (token
        equivalents), over samples without host hits: the model's own bias, which the host
        ratio's samples are read against (:meth:`_observe_host`)."""
        self.residual_spread = 0.0
        """The mean distance of those samples from :attr:`residual` (its tracking step)."""
        self.weight = weight
        self.min_tokens = min_tokens

    def observe(self, work_tokens: int, ttft_seconds: float, host_tokens: int = 0) -> None:
        """A first token came ``ttft_seconds`` after a request that waited for ``work_tokens``.

        ``host_tokens`` of the request's own prompt were to be loaded from the host tier (they
        are in ``work_tokens`` at the ratio they were predicted with). Each rate sample is
        clamped to a quarter..four times the current estimate before it is averaged in, so a
        single outlier moves the estimate by at most ``3 * weight`` of it. Non-finite or
        negative figures are ignored.
        """
        if not (0 <= ttft_seconds < 1e6) or work_tokens < 0:
            return
        if host_tokens >= self.min_tokens:
            self._observe_host(work_tokens, ttft_seconds, host_tokens)
        elif work_tokens >= self.min_tokens:
            self._observe_residual(work_tokens, ttft_seconds)
        if work_tokens < self.min_tokens:
            sample = min(max(ttft_seconds, self.base_seconds / 4), 4 * self.base_seconds + 1e-3)
            self.base_seconds += self.weight * (sample - self.base_seconds)
            return
        per_token = max(ttft_seconds - self.base_seconds, 0.0) / work_tokens
        est = self.seconds_per_token
        sample = min(max(per_token, est / 4), est * 4)
        low, high = self.bounds
        self.seconds_per_token = min(max(est + self.weight * (sample - est), low), high)

    def _implied(self, ttft_seconds: float) -> float:
        """The work (token equivalents) a first token after ``ttft_seconds`` implies."""
        return (ttft_seconds - self.base_seconds) / self.seconds_per_token

    def _observe_residual(self, work_tokens: int, ttft_seconds: float) -> None:
        """Track the median of what a sample without host hits implies beyond its work.

        A median tracker: :attr:`residual` moves a fifth of ``weight`` times the samples'
        mean distance from it, up or down, so no outlier moves it more than one step.
        """
        x = self._implied(ttft_seconds) - work_tokens
        median = self.residual
        self.residual_spread += self.weight * (abs(x - median) - self.residual_spread)
        step = 0.2 * self.weight * self.residual_spread
        self.residual = median + step if x > median else median - step

    def _observe_host(self, work_tokens: int, ttft_seconds: float, host_tokens: int) -> None:
        """Move :attr:`host_ratio` one step towards what this first token implies.

        What the TTFT implies beyond the rest of the work and beyond what first tokens without
        host hits imply anyway (:attr:`residual`: the linear model misses queueing for KV room
        and decode steps, and a host-hit sample must not be charged for that), over the host
        tokens, is this sample's ratio. Queueing makes single samples far noisier than the
        ratio itself (a few percent of a prefilled token), and clamping such samples would
        bias a mean, so the ratio moves by a fixed factor ``1 + weight`` up or down, which
        tracks the samples' median (in log space) and lets no outlier move it more than one
        step.
        """
        ratio = self.host_ratio
        rest = work_tokens - ratio * host_tokens
        implied = self._implied(ttft_seconds) - rest - self.residual
        step = 1.0 + self.weight
        ratio = ratio * step if implied > ratio * host_tokens else ratio / step
        low, high = HOST_RATIO_BOUNDS
        self.host_ratio = min(max(ratio, low), high)

    def predict(self, work_tokens: float) -> float:
        """Estimated TTFT for ``work_tokens`` (prefill-token equivalents) of work."""
        return self.base_seconds + self.seconds_per_token * work_tokens

    def work(self, uncached_tokens: int, host_tokens: int) -> int:
        """Prefill-token equivalents of recomputing some tokens and loading others from host."""
        return uncached_tokens + round(self.host_ratio * host_tokens)


class ArrivalRate:
    """A pool's request rate, from the gaps between its picks (exponentially weighted)."""

    __slots__ = ("weight", "mean_gap", "last")

    MIN_GAP: Final = 1e-3
    """Gaps are counted as at least 1 ms, so a burst at one instant reads as 1,000/s, not
    infinity."""

    def __init__(self, weight: float = 0.05) -> None:
        """No arrival seen yet (rate 0); each gap moves the mean by ``weight`` of the way."""
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self.mean_gap: float | None = None
        self.last: float | None = None

    def arrived(self, now: float) -> None:
        """A request arrived at ``now`` (monotonic seconds; a clock going back counts as 0)."""
        if self.last is not None:
            gap = max(now - self.last, self.MIN_GAP)
            mean = self.mean_gap
            self.mean_gap = gap if mean is None else mean + self.weight * (gap - mean)
        self.last = now

    def per_second(self) -> float:
        """Requests per second (0 until two have arrived)."""
        return 0.0 if self.mean_gap is None else 1.0 / self.mean_gap


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
    """Prefill work this request waits for there, in prefill-token equivalents: the work
    queued there plus its own (:attr:`own_tokens`)."""
    own_tokens: int
    """Of those, this prompt's own: its uncached tokens plus its host-tier hits at the pool's
    host ratio (what the replica's pending work grows by)."""
    gpu_tokens: int
    host_tokens: int
    """This prompt's tokens found only in the host tier (loaded, not recomputed)."""
    cost_seconds: float = 0.0
    """What the pick is scored by: :attr:`ttft_seconds` plus the delay its own prefill adds to
    the requests expected to reach the replica before that prefill is done (:func:`delay_cost`)."""


def delay_cost(ttft_seconds: float, own_seconds: float, arrivals_per_second: float) -> float:
    """A pick's cost: its own TTFT and the wait its prefill adds to the requests behind it.

    A replica prefills in arrival order, so every request that reaches it while this one is
    still waiting for its first token (``arrivals_per_second * ttft_seconds`` of them, at the
    pool's measured rate per replica) waits ``own_seconds`` longer. Greedy TTFT alone would
    recompute a long prompt on an idle replica rather than wait a little behind the replica
    that holds most of it; under load that recompute delays everyone queued after it. At no
    load (no arrivals) the cost is the TTFT itself.
    """
    return ttft_seconds * (1.0 + arrivals_per_second * own_seconds)


def estimate(
    candidate: TtftCandidate,
    *,
    prompt_tokens: int,
    hashes: Sequence[int],
    block_size: int,
    index: CacheIndex,
    rate: PrefillRate,
    in_flight: Mapping[int, int] | None = None,
    arrivals_per_second: float = 0.0,
) -> Estimate:
    """One candidate's predicted TTFT for this prompt and its cost (module docstring)."""
    gpu_blocks, host_blocks = index.match(candidate.key, hashes, in_flight)
    # An engine recomputes at least the last prompt token, even on a full hit.
    gpu = min(gpu_blocks * block_size, prompt_tokens - 1)
    host = min(host_blocks * block_size, prompt_tokens - 1 - gpu)
    own = rate.work(prompt_tokens - gpu - host, host)
    work = candidate.pending_prefill_tokens + own
    ttft = rate.predict(work)
    own_seconds = rate.seconds_per_token * own
    cost = delay_cost(ttft, own_seconds, arrivals_per_second)
    return Estimate(ttft, work, own, gpu, host, cost)


def predicted_ttft(
    candidates: Sequence[T],
    *,
    prompt_tokens: int,
    hashes: Sequence[int],
    block_size: int,
    index: CacheIndex,
    rates: Mapping[str, PrefillRate],
    default_rate: PrefillRate,
    load_slack: int = DEFAULT_LOAD_SLACK,
    start: int = 0,
    in_flight: InFlightBlocks | None = None,
    arrivals_per_second: float = 0.0,
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
        load_slack: only candidates with at most this many in flight above the least loaded
            one compete.
        start: where the scan begins; ties of estimate go to the fewer in flight, then to the
            first scanned, so idle replicas share traffic as ``start`` rotates.
        in_flight: the blocks of prompts in flight per replica, counted as cached there.
        arrivals_per_second: requests arriving per replica (the pool's rate over its
            replicas): weighs the delay a pick's own prefill adds to later ones
            (:func:`delay_cost`); 0 scores by TTFT alone.
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
            in_flight=in_flight.get(c.key) if in_flight is not None else None,
            arrivals_per_second=arrivals_per_second,
        )
        key = (est.cost_seconds, c.in_flight)
        if best is None or key < best_key:
            best, best_est, best_key = c, est, key
    assert best is not None and best_est is not None  # the least loaded always competes
    return best, best_est


class HashedCandidate(TtftCandidate, Protocol):
    """What :class:`TtftRouting` reads of an endpoint besides :class:`TtftCandidate`'s."""

    @property
    def engine(self) -> str:
        """Engine kind: whose block hashing applies."""

    @property
    def kv_events(self) -> str | None:
        """The engine's KV-events address; ``None`` when it publishes none."""


H = TypeVar("H", bound=HashedCandidate)


class TtftRouting:
    """The router's ``predictedTTFT`` state: the cache index, the blocks in flight, the rates.

    One rate per pool (the candidates' model), not per replica: a model's replicas run one
    spec on the same hardware, and per-replica rates, each learned from a fraction of the
    samples, chase each other's queueing noise (bench/routing/README.md measures both).
    This is the one glue the router's pick stage and bench/routing's virtual replicas share:
    :meth:`pick`, :meth:`sent` and :meth:`finished` around each request, :meth:`observe` at
    its first token, ``index.apply`` for events.
    """

    __slots__ = (
        "index",
        "in_flight",
        "rates",
        "arrivals",
        "block_size",
        "host_ratio",
        "seconds_per_token",
        "base_seconds",
        "load_slack",
    )

    def __init__(
        self,
        index: CacheIndex | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        seconds_per_token: float = DEFAULT_SECONDS_PER_TOKEN,
        base_seconds: float = 0.01,
        host_ratio: float = DEFAULT_HOST_RATIO,
        load_slack: int = DEFAULT_LOAD_SLACK,
    ) -> None:
        """An empty index and no rates yet (pools start from the priors given)."""
        self.index = index or CacheIndex()
        self.in_flight = InFlightBlocks()
        self.rates: dict[str, PrefillRate] = {}
        self.arrivals: dict[str, ArrivalRate] = {}
        self.block_size = block_size
        self.seconds_per_token = seconds_per_token
        self.base_seconds = base_seconds
        self.host_ratio = host_ratio
        self.load_slack = load_slack

    def prompt(
        self, candidates: Sequence[HashedCandidate], body: Mapping[str, Any]
    ) -> tuple[tuple[int, ...], int] | None:
        """The prompt's block hashes and length as the engine sees them; ``None``: can't tell.

        Exact means: every candidate runs one engine whose hashing the router knows
        (``protocol.simtokens``), at least one of them publishes events (with none, every
        cache looks empty and the pick would only be a worse ``leastPrefill``), and the body
        has a prompt that engine takes.
        """
        engines = {c.engine for c in candidates}
        if len(engines) != 1 or not any(c.kv_events for c in candidates):
            return None
        if engines.pop() not in HASHABLE_ENGINES:
            return None
        ids = request_token_ids(body)
        if not ids:
            return None
        return block_hashes(ids, self.block_size), len(ids)

    def rate(self, pool: str) -> PrefillRate:
        """``pool``'s learned rate (made from the priors on first use)."""
        rate = self.rates.get(pool)
        if rate is None:
            rate = self.rates[pool] = PrefillRate(
                self.seconds_per_token, self.base_seconds, host_ratio=self.host_ratio
            )
        return rate

    def arrivals_per_second(self, pool: str, now: float) -> float:
        """Count a request of ``pool`` arriving at ``now``; the pool's rate so far."""
        arrivals = self.arrivals.get(pool)
        if arrivals is None:
            arrivals = self.arrivals[pool] = ArrivalRate()
        arrivals.arrived(now)
        return arrivals.per_second()

    def pick(
        self,
        candidates: Sequence[T],
        hashes: Sequence[int],
        prompt_tokens: int,
        start: int,
        pool: str,
        now: float,
    ) -> tuple[T, Estimate]:
        """:func:`predicted_ttft` over ``candidates`` (of ``pool``) with this router's state.

        ``now`` (monotonic seconds) counts this request towards the pool's arrival rate, which
        weighs the delay a pick's prefill adds to the requests behind it.
        """
        per_replica = self.arrivals_per_second(pool, now) / len(candidates)
        return predicted_ttft(
            candidates,
            prompt_tokens=prompt_tokens,
            hashes=hashes,
            block_size=self.block_size,
            index=self.index,
            rates={},
            default_rate=self.rate(pool),
            load_slack=self.load_slack,
            start=start,
            in_flight=self.in_flight,
            arrivals_per_second=per_replica,
        )

    def sent(self, key: str, hashes: Sequence[int]) -> None:
        """The picked prompt went to replica ``key``: its blocks are in flight there."""
        self.in_flight.sent(key, hashes)

    def finished(self, key: str, hashes: Sequence[int]) -> None:
        """The request :meth:`sent` to ``key`` ended (any way): its blocks are no longer pinned."""
        self.in_flight.finished(key, hashes)

    def observe(
        self, pool: str, work_tokens: int, ttft_seconds: float, host_tokens: int = 0
    ) -> None:
        """A first token in ``pool`` after ``work_tokens`` of predicted prefill work.

        ``host_tokens``: the prompt's tokens the pick expected to load from the host tier
        (:attr:`Estimate.host_tokens`), which teach the pool's host ratio.
        """
        self.rate(pool).observe(work_tokens, ttft_seconds, host_tokens)

    def observe_answer(
        self,
        pool: str,
        work_tokens: int,
        seconds: float,
        completion_tokens: object,
        host_tokens: int = 0,
    ) -> bool:
        """A whole (non-streamed) answer: its time is a first token's if it has at most one.

        An answer of more tokens also holds their decode steps, which the rate does not model,
        so it teaches nothing. ``completion_tokens`` is the answer's ``usage`` figure as the
        engine sent it (anything but an int counts as unknown). True when it was used.
        """
        if type(completion_tokens) is not int or not 0 <= completion_tokens <= 1:
            return False
        self.observe(pool, work_tokens, seconds, host_tokens)
        return True

    def keep(self, keys: Iterable[str], pools: Iterable[str]) -> None:
        """Forget the replicas and pools that left the table (bounded by the table's size)."""
        self.in_flight.forget(set(keys))
        wanted = set(pools)
        for pool in [p for p in self.rates if p not in wanted]:
            del self.rates[pool]
        for pool in [p for p in self.arrivals if p not in wanted]:
            del self.arrivals[pool]
