"""What a load test counts: outcomes, sliding windows, percentiles and the replicas it saw.

Pure and clock-free: every method takes ``now`` (seconds on the runner's monotonic clock), so the
tests drive time by hand. Every structure is bounded whatever the rate or the duration: the
whole-run latency samples are a reservoir (exact up to :data:`RESERVOIR_SIZE` samples, a uniform
sample of them beyond), the windows keep at most :data:`WINDOW_MAX_SAMPLES`, the replica history
keeps the last :data:`SCALE_EVENTS_KEPT` changes.

Percentiles interpolate linearly between the two nearest ranks (NumPy's default, ``method=
"linear"``), so p50 of ``[1, 2]`` is 1.5.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from inferscale.loadtest.status import ModelStatus

RESERVOIR_SIZE = 200_000
WINDOW_MAX_SAMPLES = 100_000
SCALE_EVENTS_KEPT = 200
HISTORY_KEPT = 60
"""Replica observations kept per model for the live view's history (one per cluster poll)."""
RATE_WINDOW_SECONDS = 5.0
"""Span of the live requests-per-second figures (short, so a load step shows within seconds)."""
TTFT_WINDOW_SECONDS = 10.0
"""Span of the live time-to-first-token percentiles."""


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, interpolated linearly; ValueError if empty."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is outside 0..1")
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True, slots=True)
class Quantiles:
    """Summary of a sample: count, mean, p50, p95, p99, max (seconds, or whatever went in)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles | None:
        """None for an empty sample."""
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            mean=math.fsum(ordered) / len(ordered),
            p50=percentile(ordered, 0.5),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
        )


class Reservoir:
    """Up to ``capacity`` values: all of them, then a uniform sample (Vitter's algorithm R)."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        """``rng`` decides which values stay once the reservoir is full."""
        self.capacity = capacity
        self.seen = 0
        self.values: list[float] = []
        self._rng = rng

    def add(self, value: float) -> None:
        """Offer one value."""
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value


class SlidingSamples:
    """Values observed in the last ``span`` seconds (at most ``max_samples`` of the newest)."""

    def __init__(self, span: float, max_samples: int = WINDOW_MAX_SAMPLES) -> None:
        """Keep ``span`` seconds."""
        self.span = span
        self._items: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, now: float, value: float) -> None:
        """One value observed at ``now``."""
        self._items.append((now, value))

    def values(self, now: float) -> list[float]:
        """The values of the window ending at ``now`` (older ones are dropped for good)."""
        items = self._items
        while items and items[0][0] <= now - self.span:
            items.popleft()
        return [v for _, v in items]


class RateWindow:
    """Events per second over the last ``span`` seconds, counted in one-second buckets."""

    def __init__(self, span: float, start: float) -> None:
        """Count from ``start``; until ``span`` has passed the rate is over the time so far."""
        self.span = span
        self.start = start
        self._buckets: deque[list[int]] = deque()

    def add(self, now: float, n: int = 1) -> None:
        """``n`` events at ``now``."""
        second = math.floor(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.span - 1:
            self._buckets.popleft()

    def rate(self, now: float) -> float:
        """Events per second in the window ending at ``now``."""
        self._trim(now)
        floor_now = math.floor(now)
        # Whole buckets only: the one in progress would make the figure jump every second.
        since = floor_now - self.span
        events = sum(n for second, n in self._buckets if since <= second < floor_now)
        elapsed = min(self.span, max(floor_now - self.start, 0.0))
        return events / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended."""

    ok: bool
    latency: float
    """Seconds from sending to the last byte (or to the failure)."""
    ttft: float | None = None
    """Seconds from sending to the first content chunk (streams only)."""
    error: str | None = None
    """Kind of failure: ``http 503``, ``timeout``, ``connect``, ``stream error`` and so on."""
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One change of a model's desired replicas, as seen by the load test."""

    at: float
    """Seconds from the start of the run."""
    model: str
    before: int
    after: int
    reason: str | None


@dataclass(slots=True)
class ReplicaRange:
    """Replica counts seen for one model over the run."""

    desired: int | None = None
    ready: int | None = None
    min_desired: int | None = None
    max_desired: int | None = None
    min_ready: int | None = None
    max_ready: int | None = None
    scale_ups: int = 0
    scale_downs: int = 0
    history: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY_KEPT))
    """Ready counts of the latest observations (desired where ready is unknown)."""

    def observe(self, desired: int | None, ready: int | None) -> int | None:
        """Take one observation; return the previous desired count when it changed."""
        previous = self.desired
        if desired is not None:
            self.min_desired = _min(self.min_desired, desired)
            self.max_desired = _max(self.max_desired, desired)
        if ready is not None:
            self.min_ready = _min(self.min_ready, ready)
            self.max_ready = _max(self.max_ready, ready)
        self.ready = ready
        shown = ready if ready is not None else desired
        if shown is not None:
            self.history.append(shown)
        if desired is None:
            return None
        self.desired = desired
        if previous is None or desired == previous:
            return None
        if desired > previous:
            self.scale_ups += 1
        else:
            self.scale_downs += 1
        return previous


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


@dataclass
class ReplicaTracker:
    """Replica counts per model (``namespace/name``) and the changes between observations."""

    models: dict[str, ReplicaRange] = field(default_factory=dict)
    events: deque[ScaleEvent] = field(default_factory=lambda: deque(maxlen=SCALE_EVENTS_KEPT))

    def observe(
        self, at: float, model: str, desired: int | None, ready: int | None, reason: str | None
    ) -> None:
        """One model's counts, ``at`` seconds into the run."""
        seen = self.models.setdefault(model, ReplicaRange())
        previous = seen.observe(desired, ready)
        if previous is not None and desired is not None:
            self.events.append(ScaleEvent(at, model, previous, desired, reason))


class Recorder:
    """Everything the runner reports about a load test, fed as requests start and end."""

    def __init__(self, start: float, rng: random.Random) -> None:
        """Count from ``start``; ``rng`` picks the reservoir samples once it is full."""
        self.start = start
        self.sent = 0
        self.dropped = 0
        self.ok = 0
        self.in_flight = 0
        self.cancelled = 0
        self.errors: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.max_lag = 0.0
        """Longest delay between an arrival's scheduled time and its sending (the client's own
        slowness: a large value means the figures under-report the offered load)."""
        self.ttft = Reservoir(RESERVOIR_SIZE, rng)
        self.latency = Reservoir(RESERVOIR_SIZE, rng)
        self.recent_ttft = SlidingSamples(TTFT_WINDOW_SECONDS)
        self.sent_rate = RateWindow(RATE_WINDOW_SECONDS, start)
        self.done_rate = RateWindow(RATE_WINDOW_SECONDS, start)
        self.failed_rate = RateWindow(RATE_WINDOW_SECONDS, start)
        """Errors and drops per second."""
        self.output_rate = RateWindow(RATE_WINDOW_SECONDS, start)
        self.replicas = ReplicaTracker()

    @property
    def errored(self) -> int:
        """Requests that ended in an error."""
        return sum(self.errors.values())

    def on_sent(self, now: float, lag: float) -> None:
        """A request left ``lag`` seconds after its scheduled time."""
        self.sent += 1
        self.in_flight += 1
        self.max_lag = max(self.max_lag, lag)
        self.sent_rate.add(now)

    def on_dropped(self, now: float) -> None:
        """A request was due while ``--max-in-flight`` were already running: not sent."""
        self.dropped += 1
        self.failed_rate.add(now)

    def on_cancelled(self) -> None:
        """A request in flight was abandoned (the run was interrupted)."""
        self.in_flight -= 1
        self.cancelled += 1

    def on_models(self, now: float, models: Iterable[ModelStatus]) -> None:
        """The cluster's InferenceModels as read at ``now``."""
        for m in models:
            self.replicas.observe(now - self.start, m.key, m.desired, m.ready, m.last_scale_reason)

    def on_done(self, now: float, outcome: Outcome) -> None:
        """A request ended."""
        self.in_flight -= 1
        self.done_rate.add(now)
        self.prompt_tokens += outcome.prompt_tokens
        self.output_tokens += outcome.output_tokens
        if outcome.output_tokens:
            self.output_rate.add(now, outcome.output_tokens)
        if outcome.ok:
            self.ok += 1
            self.latency.add(outcome.latency)
            if outcome.ttft is not None:
                self.ttft.add(outcome.ttft)
                self.recent_ttft.add(now, outcome.ttft)
        else:
            self.errors[outcome.error or "error"] += 1
            self.failed_rate.add(now)
