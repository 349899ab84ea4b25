"""Engine statistics as plain data: counters and fixed-bucket histograms, no I/O, no clock.

The latency model writes into an :class:`EngineStats`; the server renders it as Prometheus text
in whichever engine's dialect it speaks, and the what-if simulator reads it directly. Bucket
bounds are vLLM's (``vllm/v1/metrics/loggers.py``) so that histogram quantiles computed from the
sim match what the same query gives on a real vLLM.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# vLLM's bucket bounds, copied so PromQL quantiles over the sim and over vLLM line up.
# fmt: off
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)
# fmt: on


def one_two_five_buckets(limit: int) -> tuple[float, ...]:
    """The 1-2-5 token-count buckets vLLM uses, up to ``limit`` (request size histograms)."""
    out: list[float] = []
    base = 1
    while base <= limit:
        out.extend(float(base * m) for m in (1, 2, 5) if base * m <= limit)
        base *= 10
    return tuple(out)


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram with fixed upper bounds; ``+Inf`` is implicit."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            # One slot per bound plus the +Inf overflow slot; kept non-cumulative for speed.
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, n: int = 1) -> None:
        """Record ``n`` observations of ``value`` (n > 1 when a step emits a token per sequence)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n
        self.count += n

    def cumulative(self) -> list[int]:
        """Counts per bound, cumulative, ending with the +Inf count (Prometheus' ``le`` form)."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return out


@dataclass(slots=True)
class EngineStats:
    """Everything the engine counts, in the units vLLM uses (tokens, seconds)."""

    max_model_len: int
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the prefix cache (vLLM counts tokens, not requests)."""
    prefix_cache_hits: int = 0
    """Of those, tokens found in the GPU cache."""
    host_cache_hits: int = 0
    """Of those, tokens found in the host-memory tier (loaded back, not recomputed)."""
    requests_finished: int = 0
    requests_cancelled: int = 0
    adapter_swaps: int = 0
    """LoRA adapters brought into a GPU slot (each cost ``lora_swap_seconds``)."""
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    queue_time: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    prompt_len: Histogram = field(init=False)
    generation_len: Histogram = field(init=False)

    def __post_init__(self) -> None:
        sizes = one_two_five_buckets(self.max_model_len)
        self.prompt_len = Histogram(sizes)
        self.generation_len = Histogram(sizes)
