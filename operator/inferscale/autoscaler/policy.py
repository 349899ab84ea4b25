"""The autoscaling policy: ``decide(params, history, sample, now, current) -> Decision``.

Pure: no clock (``now`` comes in), no I/O, no asyncio. Everything the policy remembers between
calls is the :class:`History` it is handed and hands back; the operator keeps it in an
annotation, so a restart keeps the windows.

How a decision is made (``docs/autoscaling.md`` has the long version):

- **Load** is requests in flight (running plus waiting, summed over the engines) plus requests
  the routers hold while no replica is ready, or the work waiting when that is larger: with
  ``prompt_tokens_per_replica`` set (the prompt tokens one replica prefills within the TTFT
  SLO) and the sample's prompt tokens waiting for a first token known, the load counts at
  least ``waiting / prompt_tokens_per_replica`` replicas' worth (times the target). So fifteen
  15k-token prompts want more replicas than fifteen chat turns, with the same defaults; where
  no source counts tokens, requests in flight alone remain the signal. When the ready
  replicas' mean KV-cache use is above ``kv_cache_saturation`` they are full whatever their
  request count: the sample counts as at least their capacity and the policy wants one
  replica more than are ready.
- **Windows** in the manner of Knative's KPA: the desired count is ``ceil(load / target)`` over
  the mean of the stable window (60 s), or of the panic window (6 s) in panic. Panic starts when
  the panic window wants at least twice the ready replicas and lasts at least a stable window
  after the last time it did; in panic the count never goes down.
- **Start-up aware**: with ``time_to_ready_s`` known, a queue (a stable-window load beyond what
  the replicas set carry) that is still growing is projected that far ahead (least squares over
  the stable window, shrunk by the fit's R^2 so noise does not count as growth) and the count
  sized for the projection, because replicas asked for now serve only then. The replica count
  passed in includes replicas still starting, so they count as capacity already on its way,
  and at most ``max(max_scale_up_step, ready)`` replicas start at once: a burst shorter than a
  cold start does not fill the cluster with replicas that arrive after it, while a lasting rise
  still doubles the count every cold start.
- **Up** at most ``max_scale_up_step`` replicas per decision, and, outside panic, only as far
  as the panic window still wants (a burst that is over stays in the stable mean for a whole
  window); from zero straight to what the held queue needs, on the first held request.
- **Down** only after the load's peaks (the panic window's want when it is a burst, at least
  ``BURST_RATIO`` times the stable mean's, else the stable mean's) have wanted fewer replicas
  for ``scale_down_delay_s``, then to the most they wanted during
  that delay (HPA's stabilisation), so bursts that recur within the delay keep their capacity;
  by at most ``1 - 1 / max_scale_down_rate`` of the replicas per step (Knative's
  max-scale-down-rate), and each step down restarts the delay, because the in-flight count
  measured at the larger count understates what the smaller one will carry (queueing grows as
  replicas go); never while a replica is starting (a Deployment scale-down may remove the
  loading pod first) and never below ``max(min, 1)``. In the cost-aware mode the delay is at
  most what a replica removed too early costs to bring back (:attr:`PolicyParams.down_delay_s`:
  ``time_to_ready_s x (1 + S / P)``), since spilling covers the restart.
- **A learned floor** (``learned_floor_quantile`` set): a high quantile of the replicas that
  recent bursts wanted, decaying over hours (:mod:`inferscale.autoscaler.floor`), below which
  no step down goes, so bursts that recur and are shorter than a cold start meet standing
  capacity. It never raises the count by itself (that cost 12 % more GPU-hours on the Azure
  code trace for no attainment); the reason names it when it holds the count.
- **The cost-aware mode** (``cost_aware``, spillover priced) replaces that floor with the
  fewest replicas whose spill stays within ``spill_share_budget``
  (:mod:`inferscale.autoscaler.spillcost`), held in tokens where the sample carries the
  routers' spilled token share: one more replica while it is over the budget, none going
  while it is near it (:func:`~inferscale.autoscaler.spillcost.token_floor`).
- **To zero** only with ``min_replicas == 0`` and ``scale_to_zero_delay_s`` set, after that long
  with zero load and nothing held.
- **Bad data holds.** No sample, a NaN, a negative count, a sample older than ``stale_after_s``
  or from the future: hold, ``stale=True``, the reason says why. A clock that went backwards
  resets the windows and holds. Bounds still apply: a count outside ``[min, max]`` (the user
  changed them) is brought inside even on bad data, because the bounds are the user's order and
  need no metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Literal

from inferscale.autoscaler.floor import Peaks, learned_floor, remember_peak
from inferscale.autoscaler.presets import PRESETS
from inferscale.autoscaler.spillcost import (
    LoadHist,
    SpillPrices,
    TokenSpill,
    cost_mode_problem,
    remember_load,
    remember_tokens,
    standing_for_budget,
    token_floor,
)

if TYPE_CHECKING:
    from inferscale.api.v1alpha1.inference_model import InferenceModelSpec

DEFAULT_SCALE_TO_ZERO_DELAY_S: Final = 600.0
"""Idle time before the last replica goes when ``minReplicas`` is 0 and no delay is given."""

SPEND_CAPPED_WORDS: Final = "spend cap reached: spill stopped, scaling for the excess"
"""The cost-aware mode's words when the route's spend cap stops spill (the excess queues)."""

BURST_RATIO: Final = 2.0
"""A burst: the panic window wants this many times the replicas that are ready (panic starts)
or that the stable window wants (the peak is remembered for scale-down). Knative's panic
threshold, 200 %."""

MAX_SAMPLES: Final = 512
"""Most samples a History keeps (the newest), so the annotation stays small at any tick rate."""

Action = Literal["scale-up", "scale-down", "hold", "scale-to-zero", "scale-from-zero"]
Window = Literal["stable", "panic", "none"]


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """The knobs of one model's policy; construction refuses values that cannot work."""

    min_replicas: int
    max_replicas: int
    target_in_flight_per_replica: float
    stable_window_s: float = 60
    panic_window_s: float = 6
    max_scale_up_step: int = 4
    scale_down_delay_s: float = 300
    scale_to_zero_delay_s: float | None = None
    """None: never to zero. Needs ``min_replicas == 0``."""
    kv_cache_saturation: float = 0.8
    time_to_ready_s: float | None = None
    """Measured start-up time of this model; sizes scale-up from the load's growth."""
    stale_after_s: float = 30
    """A sample older than this (against ``now``) is stale: hold."""
    prompt_tokens_per_replica: float | None = None
    """Prompt tokens one replica prefills within the TTFT SLO (with headroom); None: size on
    requests alone."""
    learned_floor_quantile: float | None = None
    """Keep at least this quantile of recent bursts' wants standing (None: no learned floor)."""
    learned_floor_half_life_s: float = 3600
    """A burst this old weighs half as much in the learned floor."""
    learned_floor_bucket_s: float = 300
    """The learned floor remembers the peak want of each bucket this long."""
    max_scale_down_rate: float = 2.0
    """A step down keeps at least ``current / max_scale_down_rate`` replicas, rounded up but
    always one fewer than now (Knative's default, 2: at most half go at once)."""
    cost_aware: bool = False
    """With spillover available and spilling cheaper than a replica: keep standing only the
    replicas that hold the spilled share within ``spill_share_budget``, and let bursts spill
    (:mod:`inferscale.autoscaler.spillcost`). Needs both prices; without them it falls back to
    the ordinary policy and :attr:`cost_mode_fallback` says why."""
    replica_hour_price: float | None = None
    """One replica's accelerators per hour (the cost-aware mode's price of standing)."""
    spill_price_per_replica_hour: float | None = None
    """The provider's price for the tokens one replica serves in an hour at its target."""
    spill_share_budget: float = 0.08
    """Most of the load (requests in flight, or work) the cost-aware mode lets spill."""
    spill_spend_cap_per_hour: float | None = None
    """The route's spend cap per hour: the cost-aware mode keeps the spill's spend under it."""
    spill_history_half_life_s: float = 3600
    """A sample this old weighs half as much in the cost-aware mode's load history."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.min_replicas < 0:
            problems.append(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            problems.append(
                f"min_replicas ({self.min_replicas}) must not exceed "
                f"max_replicas ({self.max_replicas})"
            )
        if not _finite(self.target_in_flight_per_replica) or self.target_in_flight_per_replica <= 0:
            problems.append(
                "target_in_flight_per_replica must be a positive number, "
                f"got {self.target_in_flight_per_replica}"
            )
        for name in ("stable_window_s", "panic_window_s", "stale_after_s"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value}")
        if (
            _finite(self.panic_window_s)
            and _finite(self.stable_window_s)
            and self.panic_window_s > self.stable_window_s
        ):
            problems.append(
                f"panic_window_s ({self.panic_window_s}) must not exceed "
                f"stable_window_s ({self.stable_window_s})"
            )
        if not _finite(self.max_scale_down_rate) or self.max_scale_down_rate < 1:
            problems.append(f"max_scale_down_rate must be >= 1, got {self.max_scale_down_rate}")
        if self.max_scale_up_step < 1:
            problems.append(f"max_scale_up_step must be >= 1, got {self.max_scale_up_step}")
        if not _finite(self.scale_down_delay_s) or self.scale_down_delay_s < 0:
            problems.append(f"scale_down_delay_s must be >= 0, got {self.scale_down_delay_s}")
        if self.scale_to_zero_delay_s is not None:
            if not _finite(self.scale_to_zero_delay_s) or self.scale_to_zero_delay_s < 0:
                problems.append(
                    f"scale_to_zero_delay_s must be >= 0, got {self.scale_to_zero_delay_s}"
                )
            if self.min_replicas != 0:
                problems.append("scale_to_zero_delay_s needs min_replicas == 0")
        if not _finite(self.kv_cache_saturation) or not 0 < self.kv_cache_saturation <= 1:
            problems.append(
                f"kv_cache_saturation must be in (0, 1], got {self.kv_cache_saturation}"
            )
        if self.time_to_ready_s is not None and (
            not _finite(self.time_to_ready_s) or self.time_to_ready_s < 0
        ):
            problems.append(f"time_to_ready_s must be >= 0, got {self.time_to_ready_s}")
        if self.prompt_tokens_per_replica is not None and (
            not _finite(self.prompt_tokens_per_replica) or self.prompt_tokens_per_replica <= 0
        ):
            problems.append(
                "prompt_tokens_per_replica must be a positive number, "
                f"got {self.prompt_tokens_per_replica}"
            )
        problems.extend(self._floor_problems())
        problems.extend(self._cost_problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _floor_problems(self) -> list[str]:
        problems: list[str] = []
        q = self.learned_floor_quantile
        if q is not None and (not _finite(q) or not 0 < q <= 1):
            problems.append(f"learned_floor_quantile must be in (0, 1], got {q}")
        for name in ("learned_floor_half_life_s", "learned_floor_bucket_s"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value}")
        return problems

    def _cost_problems(self) -> list[str]:
        """The cost-aware mode's settings.

        Its prices are not checked here: bad prices make the mode fall back, they do not make
        the params invalid.
        """
        problems: list[str] = []
        share = self.spill_share_budget
        if not _finite(share) or not 0 <= share <= 1:
            problems.append(f"spill_share_budget must be in [0, 1], got {share}")
        cap = self.spill_spend_cap_per_hour
        if cap is not None and (not _finite(cap) or cap < 0):
            problems.append(f"spill_spend_cap_per_hour must be >= 0, got {cap}")
        half_life = self.spill_history_half_life_s
        if not _finite(half_life) or half_life <= 0:
            problems.append(f"spill_history_half_life_s must be a positive number, got {half_life}")
        return problems

    @property
    def cost_mode_fallback(self) -> str | None:
        """Why the cost-aware mode, asked for, runs as the ordinary policy.

        None: it runs, or it was not asked for.
        """
        if not self.cost_aware:
            return None
        return cost_mode_problem(self.replica_hour_price, self.spill_price_per_replica_hour)

    @property
    def cost_mode(self) -> bool:
        """The cost-aware mode is asked for and its prices make spilling the cheaper answer."""
        return self.cost_aware and self.cost_mode_fallback is None

    @property
    def down_delay_s(self) -> float:
        """The scale-down delay in force: at most a restart's cost in the cost-aware mode.

        ``scale_down_delay_s``, or in the cost-aware mode at most what a replica removed too
        early costs to bring back, in its own replica-time.
        A replica removed too early comes back after a start-up (``time_to_ready_s``) that
        holds its GPU (``P x ttr``) while its share of the load spills (``S x ttr``, S the
        spill price of one replica's load for an hour). Keeping an idle replica costs P per
        hour, so keeping it longer than ``ttr x (1 + S / P)`` costs more than the mistake it
        guards against (ski rental's break-even: at most twice the hindsight cost). The
        delay a user set is never lengthened.
        """
        ttr = self.time_to_ready_s
        if not self.cost_mode or ttr is None:
            return self.scale_down_delay_s
        replica = self.replica_hour_price or 0.0
        spill = self.spill_price_per_replica_hour or 0.0
        return min(self.scale_down_delay_s, ttr * (1 + spill / replica))

    @classmethod
    def from_spec(
        cls,
        spec: InferenceModelSpec,
        time_to_ready_s: float | None = None,
        spill: SpillPrices | None = None,
    ) -> PolicyParams:
        """The params of an InferenceModel's spec (its replicas and ``autoscaling`` fields).

        A model with ``minReplicas: 0`` and no ``scaleToZeroDelaySeconds`` scales to zero after
        the API's documented default of 600 s. The preset (:mod:`inferscale.autoscaler.presets`)
        sets the learned floor unless ``learnedFloorPercentile`` is set, and asks for the
        cost-aware mode when ``spill`` is given (a route can spill this model's requests): with
        a price missing or wrong in it the mode falls back (:attr:`cost_mode_fallback`).

        Raises:
            ValueError: the spec's values cannot work together.
        """
        a = spec.autoscaling
        preset = PRESETS[a.preset]
        to_zero: float | None = a.scale_to_zero_delay_seconds
        if to_zero is None and spec.min_replicas == 0:
            to_zero = DEFAULT_SCALE_TO_ZERO_DELAY_S
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            target_in_flight_per_replica=a.target_in_flight_per_replica,
            stable_window_s=a.stable_window_seconds,
            panic_window_s=a.panic_window_seconds,
            max_scale_up_step=a.max_scale_up_step,
            scale_down_delay_s=a.scale_down_delay_seconds,
            scale_to_zero_delay_s=to_zero,
            kv_cache_saturation=a.kv_cache_saturation,
            time_to_ready_s=time_to_ready_s,
            prompt_tokens_per_replica=a.prompt_tokens_per_replica,
            learned_floor_quantile=(
                preset.learned_floor_quantile
                if a.learned_floor_percentile is None
                else a.learned_floor_percentile / 100
            ),
            cost_aware=preset.cost_aware and spill is not None,
            replica_hour_price=None if spill is None else spill.replica_hour_price,
            spill_price_per_replica_hour=(
                None if spill is None else spill.spill_price_per_replica_hour
            ),
            spill_share_budget=preset.spill_share_budget,
            spill_spend_cap_per_hour=None if spill is None else spill.spend_cap_per_hour,
        )

    def clamp(self, replicas: int) -> int:
        """``replicas`` brought inside ``[min_replicas, max_replicas]``."""
        return max(self.min_replicas, min(self.max_replicas, replicas))

    def wanted(self, load: float) -> int:
        """Replicas that carry ``load`` at the target (unbounded)."""
        # The epsilon keeps 32.0000000001 / 16 (float noise in a mean) at 2, not 3.
        return max(0, math.ceil(load / self.target_in_flight_per_replica - 1e-9))


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a model's load, taken by the caller at ``at`` (caller's clock, s)."""

    at: float
    in_flight: float | None
    """Running plus waiting across all replicas (engine metrics); None: unknown."""
    held: int = 0
    """Requests held by the routers (the model has no ready replica)."""
    kv_cache_usage: float | None = None
    """Mean KV-cache use over the ready replicas, 0 to 1."""
    ready: int = 0
    """Ready replicas."""
    starting: int = 0
    """Replicas that exist but are not ready yet (loading the model)."""
    pending_prompt_tokens: float | None = None
    """Prompt tokens of the requests without a first token yet (queued or in prefill, held
    ones included); None: no source counts them."""
    spilled_token_share: float | None = None
    """The share of the model's tokens (prompt and output) that spillover backends answered
    over the last :data:`~inferscale.autoscaler.spillcost.SPILL_SHARE_WINDOW_S` (the routers'
    counters); None: unknown (no router counts them, or no tokens in the window)."""
    token_rate: float | None = None
    """Tokens per second of the model over the same window (its engines' and the spilled):
    the share's weight in the cost-aware mode's long-run share; None: weight 1."""
    spend_capped: float | None = None
    """Requests per second the routers did not spill over the recent window because the
    model's spill route reached its spend cap (``inferscale_router_spend_capped_total``);
    above 0, the cost-aware mode holds no scale-up back for spill. None: unknown (no
    Prometheus, no spill route; the what-if simulator), the same as 0."""


@dataclass(frozen=True, slots=True)
class History:
    """Everything the policy remembers between calls; JSON round-trips it for an annotation."""

    samples: tuple[tuple[float, float], ...] = ()
    """``(at, load)`` within the stable window, oldest first (load with KV saturation)."""
    panic_until: float | None = None
    low_since: float | None = None
    """The load has wanted fewer replicas than there are since then."""
    idle_since: float | None = None
    """The load (in flight and held) has been zero since then."""
    last_change_at: float | None = None
    recent_wants: tuple[tuple[float, int], ...] = ()
    """``(since, replicas)``: what the load's peaks wanted (the larger of the decision's want
    and the panic window's), run-length encoded over the last scale-down delay (the first entry
    may start earlier: it covers the window's start)."""
    last_sample_at: float | None = None
    """Time of the newest sample used, kept even when the window has emptied (gap detection)."""
    peaks: Peaks = ()
    """The learned floor's buckets: ``(start, peak want)``, oldest first."""
    load_hist: LoadHist = ()
    """The cost-aware mode's load histogram (:mod:`inferscale.autoscaler.spillcost`)."""
    over_since: float | None = None
    """The load has wanted more replicas than there are since then (the cost-aware mode
    spills such an excess until it has lasted long enough to be worth a replica)."""
    unsettled_at: float | None = None
    """The last scale-up, or the last sample with fewer replicas ready than set or some
    starting (cost-aware mode): once it is a window old, every count the spilled token share's
    window saw was at least the count set now."""
    token_spill: TokenSpill = (0.0, 0.0)
    """The cost-aware mode's long-run spilled token share, decayed
    (:func:`~inferscale.autoscaler.spillcost.remember_tokens`)."""
    token_since: float | None = None
    """The first sample with a spilled token share (the long-run share's age)."""
    token_raised: int = 0
    """The count the token correction last raised to, kept while the long-run share is not
    well within the budget (0: none)."""

    def to_json(self) -> str:
        """Compact JSON; :meth:`from_json` reads it back."""
        return json.dumps(
            {
                "samples": [[at, load] for at, load in self.samples],
                "panic_until": self.panic_until,
                "low_since": self.low_since,
                "idle_since": self.idle_since,
                "last_change_at": self.last_change_at,
                "recent_wants": [[at, n] for at, n in self.recent_wants],
                "last_sample_at": self.last_sample_at,
                "peaks": [[at, n] for at, n in self.peaks],
                "load_hist": [[k, w, y] for k, w, y in self.load_hist],
                "over_since": self.over_since,
                "unsettled_at": self.unsettled_at,
                "token_spill": list(self.token_spill),
                "token_since": self.token_since,
                "token_raised": self.token_raised,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> History:
        """Parse :meth:`to_json` output; unknown keys are ignored (a newer operator wrote them).

        Raises:
            ValueError: not JSON, not an object, or a field of the wrong type or not finite.
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"history is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise ValueError("history must be a JSON object")
        raw_samples = data.get("samples", [])
        if not isinstance(raw_samples, list):
            raise ValueError("history.samples must be a list")
        samples: list[tuple[float, float]] = []
        for item in raw_samples[-MAX_SAMPLES:]:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(_finite(v) for v in item)
                or item[1] < 0
            ):
                raise ValueError(f"history.samples holds a bad entry: {item!r}")
            samples.append((float(item[0]), float(item[1])))
        if any(b[0] < a[0] for a, b in zip(samples, samples[1:], strict=False)):
            raise ValueError("history.samples are not in time order")

        def time_field(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            if not _finite(value):
                raise ValueError(f"history.{name} must be a finite number or null")
            return float(value)

        wants = _counts_field(data, "recent_wants")
        return cls(
            samples=tuple(samples),
            panic_until=time_field("panic_until"),
            low_since=time_field("low_since"),
            idle_since=time_field("idle_since"),
            last_change_at=time_field("last_change_at"),
            over_since=time_field("over_since"),
            unsettled_at=time_field("unsettled_at"),
            token_spill=_token_spill_field(data),
            token_since=time_field("token_since"),
            token_raised=_count_field(data, "token_raised"),
            recent_wants=tuple(wants),
            last_sample_at=time_field("last_sample_at"),
            peaks=_counts_field(data, "peaks"),
            load_hist=_load_hist_field(data),
        )

    def latest_time(self) -> float | None:
        """The latest time this history has seen (a later ``now`` must not be earlier)."""
        times = [
            t
            for t in (self.last_sample_at, self.last_change_at, self.low_since, self.idle_since)
            if t is not None
        ]
        if self.samples:
            times.append(self.samples[-1][0])
        return max(times) if times else None


def _counts_field(data: dict[str, object], name: str) -> tuple[tuple[float, int], ...]:
    """A list of ``[time, replicas]`` pairs of a history's JSON (absent: empty).

    Raises:
        ValueError: not a list, or an entry that is not a finite time and a count >= 0.
    """
    raw = data.get(name, [])
    if not isinstance(raw, list):
        raise ValueError(f"history.{name} must be a list")
    pairs: list[tuple[float, int]] = []
    for item in raw[-MAX_SAMPLES:]:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not _finite(item[0])
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or item[1] < 0
        ):
            raise ValueError(f"history.{name} holds a bad entry: {item!r}")
        pairs.append((float(item[0]), item[1]))
    return tuple(pairs)


def _count_field(data: dict[str, object], name: str) -> int:
    """A replica count of a history's JSON (absent: 0).

    Raises:
        ValueError: not an integer >= 0.
    """
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"history.{name} must be an integer >= 0, got {value!r}")
    return value


def _token_spill_field(data: dict[str, object]) -> TokenSpill:
    """The ``token_spill`` of a history's JSON (absent: none).

    Raises:
        ValueError: not two finite numbers >= 0.
    """
    raw = data.get("token_spill", [0.0, 0.0])
    if not isinstance(raw, list) or len(raw) != 2 or not all(_finite(v) and v >= 0 for v in raw):
        raise ValueError(f"history.token_spill must be two numbers >= 0, got {raw!r}")
    return float(raw[0]), float(raw[1])


def _load_hist_field(data: dict[str, object]) -> LoadHist:
    """The ``load_hist`` of a history's JSON (absent: empty).

    Raises:
        ValueError: not a list, or an entry that is not a count >= 0 and two finite weights
            >= 0, or buckets out of order.
    """
    raw = data.get("load_hist", [])
    if not isinstance(raw, list):
        raise ValueError("history.load_hist must be a list")
    buckets: list[tuple[int, float, float]] = []
    for item in raw[-MAX_SAMPLES:]:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], int)
            or isinstance(item[0], bool)
            or item[0] < 0
            or not all(_finite(v) and v >= 0 for v in item[1:])
        ):
            raise ValueError(f"history.load_hist holds a bad entry: {item!r}")
        buckets.append((item[0], float(item[1]), float(item[2])))
    if any(b[0] <= a[0] for a, b in zip(buckets, buckets[1:], strict=False)):
        raise ValueError("history.load_hist is not in bucket order")
    return tuple(buckets)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, why, and the history to keep for the next call."""

    replicas: int
    """The count to set (``== current`` when holding)."""
    current: int
    action: Action
    window: Window
    reason: str
    """In words, for the Event and ``status.lastScaleReason``."""
    stale: bool
    """The decision is a hold because the signal was missing, stale or invalid."""
    history: History
    load: float | None = None
    """The load the decision was sized on (window mean or projection); None when stale."""
    desired: int | None = None
    """What the load wanted before steps, delays and bounds; None when stale."""
    cost_fallback: str | None = None
    """Why the cost-aware mode, asked for, fell back to the ordinary policy (for a condition);
    None when it runs or was not asked for."""
    floor: int = 0
    """The learned floor in force (in the cost-aware mode, its spill budget's standing count),
    within the bounds; 0 with none, or when the sample was stale."""
    peak_want: int | None = None
    """What the load's peaks want (what a scale-down compares); None when stale."""


def _num(x: float) -> str:
    """A load for a reason: whole numbers bare, others to one decimal."""
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def _secs(x: float) -> str:
    return f"{x:.0f} s"


def _sample_problem(sample: Sample | None, now: float, params: PolicyParams) -> str | None:
    """Why ``sample`` cannot be used, or None when it can."""
    if sample is None:
        return "no metrics"
    if not _finite(sample.at):
        return "the sample has no valid time"
    if sample.in_flight is None:
        return "in-flight count missing"
    if not _finite(sample.in_flight) or sample.in_flight < 0:
        return f"in-flight count invalid ({sample.in_flight})"
    for name in ("held", "ready", "starting"):
        value = getattr(sample, name)
        if not _finite(value) or value < 0:
            return f"{name} count invalid ({value})"
    kv = sample.kv_cache_usage
    if kv is not None and (not _finite(kv) or kv < 0):
        return f"KV-cache use invalid ({kv})"
    age = now - sample.at
    if age < 0:
        return f"the sample is {_secs(-age)} in the future (clocks disagree)"
    if age > params.stale_after_s:
        return f"no metrics for {_secs(age)}"
    return None


def _bound_move(current: int, target: int) -> tuple[Action, str]:
    """The action and the bound's name for a move from ``current`` into bounds at ``target``."""
    action: Action = "scale-up" if target > current else "scale-down"
    if current == 0:
        action = "scale-from-zero"
    elif target == 0:
        action = "scale-to-zero"
    return action, "minReplicas" if target > current else "maxReplicas"


def _bounded(
    params: PolicyParams, history: History, now: float, current: int, reason: str, stale: bool
) -> Decision:
    """A hold at ``current``, or the move into bounds when ``current`` is outside them."""
    target = params.clamp(current)
    if target == current:
        return Decision(current, current, "hold", "none", reason, stale, history)
    action, side = _bound_move(current, target)
    return Decision(
        target,
        current,
        action,
        "none",
        f"scaled {current} -> {target}: {side} is {target} ({reason})",
        stale,
        replace(
            history, last_change_at=now if _finite(now) else history.last_change_at, low_since=None
        ),
    )


def _trend(points: list[tuple[float, float]]) -> float:
    """The load's growth per second, shrunk by how well a line fits (0 with < 3 points).

    The least-squares slope times R^2: a steady ramp (R^2 near 1) keeps its slope, while the
    slope that noise alone draws through a flat load (R^2 near 0) is all but dropped, so
    projecting it a cold start ahead does not add replicas for nothing.
    """
    n = len(points)
    if n < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    var_y = sum((y - mean_y) ** 2 for _, y in points)
    if var_t <= 0 or var_y <= 0:
        return 0.0
    cov = sum((t - mean_t) * (y - mean_y) for t, y in points)
    r_squared = cov * cov / (var_t * var_y)
    return cov / var_t * r_squared


def _remember_want(
    wants: tuple[tuple[float, int], ...], now: float, desired: int, delay: float
) -> tuple[tuple[float, int], ...]:
    """``wants`` with ``desired`` at ``now``, run-length encoded and pruned to the delay."""
    kept = list(wants)
    if not kept or kept[-1][1] != desired:
        kept.append((now, desired))
    # Drop an entry once the next one starts at or before the window's start: it no longer
    # covers any of the window. The first kept entry may start earlier and still cover it.
    while len(kept) >= 2 and kept[1][0] <= now - delay:
        kept.pop(0)
    return tuple(kept[-MAX_SAMPLES:])


def _low_since(wants: tuple[tuple[float, int], ...], replicas: int) -> float | None:
    """Since when the load has wanted fewer than ``replicas`` (None: it wants that many now)."""
    since: float | None = None
    for at, n in reversed(wants):
        if n >= replicas:
            return since
        since = at
    return since


def decide(
    params: PolicyParams, history: History, sample: Sample | None, now: float, current: int
) -> Decision:
    """The replica count for a model now, and why.

    Args:
        params: the model's knobs.
        history: what the last call returned (``History()`` the first time).
        sample: the latest observation, or None when none could be read.
        now: the caller's clock, in the same seconds as ``sample.at``.
        current: the replica count now set (ready plus starting plus not yet created).

    Returns:
        The decision; its ``history`` is what to pass next time. Never raises on bad data.
    """
    decision = _decide_any(params, history, sample, now, current)
    fallback = params.cost_mode_fallback
    return decision if fallback is None else replace(decision, cost_fallback=fallback)


def _decide_any(
    params: PolicyParams, history: History, sample: Sample | None, now: float, current: int
) -> Decision:
    """``decide`` before the cost-aware mode's fallback is noted."""
    current = max(0, current)
    if not _finite(now):
        return _bounded(
            params, history, now, current, f"holding at {current}: invalid clock ({now})", True
        )
    latest = history.latest_time()
    if latest is not None and now < latest:
        # The clock jumped back: every recorded time is in the future. Forget them all, so no
        # delay or window is measured across the jump, and wait for fresh samples.
        reason = f"holding at {current}: clock went back {_secs(latest - now)}; windows reset"
        return _bounded(params, History(), now, current, reason, True)
    problem = _sample_problem(sample, now, params)
    if problem is None and sample is not None and history.last_sample_at is not None:
        if sample.at < history.last_sample_at:
            problem = "the sample is older than the one used before"
    if problem is not None or sample is None:
        return _bounded(
            params, history, now, current, f"holding at {current}: {problem} (stale)", True
        )
    return _decide_on(params, history, sample, now, current)


@dataclass(frozen=True, slots=True)
class _Assessment:
    """What the load wants at one decision, and the history to keep whatever is decided."""

    now: float
    current: int
    raw: float
    """In flight plus held, before KV saturation (zero load means idle)."""
    window: Window
    panic: bool
    sized_on: float
    desired: int
    peak_want: int
    """What the load's peaks want (see :func:`_peak_want`)."""
    low_since: float | None
    idle_since: float | None
    wants: tuple[tuple[float, int], ...]
    learned: int
    """The learned floor (0: none), within the bounds."""
    history: History
    what: str
    """The load in words, for the reason."""
    where: str
    """The target and window in words, for the reason."""
    floor_why: str = ""
    """Why the learned floor is what it is, when the spilled token share sets it."""

    def change(
        self, replicas: int, action: Action, why: str, win: Window | None = None
    ) -> Decision:
        """A move to ``replicas``; the history records the change."""
        if action == "scale-down":
            # Fresh evidence for the next step: the delay restarts at the new count.
            low = self.now if self.peak_want < replicas else None
        else:
            low = _low_since(self.wants, replicas)
        moved = replace(self.history, last_change_at=self.now, low_since=low)
        if replicas > self.current and moved.token_since is not None:
            # The spilled token share's window now holds a smaller count than the one set.
            moved = replace(moved, unsettled_at=self.now)
        reason = f"scaled {self.current} -> {replicas}: {why}"
        return Decision(
            replicas,
            self.current,
            action,
            self.window if win is None else win,
            reason,
            False,
            moved,
            self.sized_on,
            self.desired,
            floor=self.learned,
            peak_want=self.peak_want,
        )

    def hold(self, why: str, win: Window | None = None) -> Decision:
        """No move; the history still takes the sample."""
        return Decision(
            self.current,
            self.current,
            "hold",
            self.window if win is None else win,
            f"holding at {self.current}: {why}",
            False,
            self.history,
            self.sized_on,
            self.desired,
            floor=self.learned,
            peak_want=self.peak_want,
        )


def _decide_on(
    params: PolicyParams, history: History, sample: Sample, now: float, current: int
) -> Decision:
    """``decide`` once the sample is known to be usable."""
    a = _assess(params, history, sample, now, current)
    bounded = params.clamp(current)
    if bounded != current:
        action, side = _bound_move(current, bounded)
        return a.change(bounded, action, f"{side} is {bounded}", "none")
    if current == 0:
        return _from_zero(params, a)
    if a.desired > current:
        return _scale_up(params, sample, a)
    to_zero = _to_zero(params, sample, a)
    if to_zero is not None:
        return to_zero
    if a.peak_want < current:
        down = _scale_down(params, sample, a)
        if down is not None:
            return down
    if a.desired < current <= a.peak_want:
        return a.hold(f"{a.what}, {a.where}; its peaks (panic window) want {a.peak_want}")
    return a.hold(f"{a.what}, {a.where}")


def _assess(
    params: PolicyParams, history: History, sample: Sample, now: float, current: int
) -> _Assessment:
    """The windows, panic, and what the load wants, from a usable sample."""
    target = params.target_in_flight_per_replica
    raw, load, saturated, by_work = _sample_load(params, sample)

    # A gap in the observations means the delays were not watched: they restart now.
    low_since, idle_since = history.low_since, history.idle_since
    wants = history.recent_wants
    if history.last_sample_at is None or sample.at - history.last_sample_at > params.stale_after_s:
        low_since = idle_since = None
        wants = ()

    kept, stable_load, panic_load = _windows(params, history, sample, load)
    stable_want = params.wanted(stable_load)
    panic_want = params.wanted(panic_load)
    panic_until = _panic_until(params, history, now, current, sample.ready, panic_want)
    if params.cost_mode:
        # Bursts spill: no panic, and (below) no burst kept for the scale-down delay.
        panic_load, panic_want = stable_load, stable_want
    panic = panic_until is not None
    window: Window = "panic" if panic else "stable"

    sized_on, desired, projected = _size(params, kept, current, stable_load, panic_load, panic)
    if saturated:
        desired = max(desired, sample.ready + 1)
    if panic:
        desired = max(desired, current)
    peak_want = _peak_want(params, desired, stable_want, panic_want)
    idle_since = (idle_since if idle_since is not None else now) if raw == 0 else None
    low_since = (low_since if low_since is not None else now) if peak_want < current else None
    wants = _remember_want(wants, now, peak_want, params.down_delay_s)
    # The sample's own want too: a burst that arrives at once and is served before the next
    # scrape barely moves even the panic window's mean, but it needed those replicas standing.
    peaks, learned = _learn(params, history.peaks, now, max(peak_want, params.wanted(load)))
    load_hist, standing, (token, token_why, kept_tokens) = _learn_spill(
        params, history, sample, load, current
    )
    # Cost-aware: the budget's count replaces the learned floor (they work against each other).
    learned = max(standing, token) if params.cost_mode else learned
    over_since, desired, spilling = _spill_or_scale(params, history, sample, now, current, desired)
    if token > max(desired, current):  # over the budget in tokens: a lasting excess
        desired, spilling = token, f"{spilling}; {token_why}"
    new_history = kept_tokens.into(
        History(
            samples=tuple(kept),
            panic_until=panic_until,
            low_since=low_since,
            idle_since=idle_since,
            last_change_at=history.last_change_at,
            recent_wants=wants,
            last_sample_at=max(sample.at, history.last_sample_at or sample.at),
            peaks=peaks,
            load_hist=load_hist,
            over_since=over_since,
        )
    )
    return _Assessment(
        now=now,
        current=current,
        raw=raw,
        window=window,
        panic=panic,
        sized_on=sized_on,
        desired=desired,
        peak_want=peak_want,
        low_since=low_since,
        idle_since=idle_since,
        wants=wants,
        learned=learned,
        history=new_history,
        what=_load_words(
            sample, sized_on, projected=projected, saturated=saturated, by_work=by_work
        )
        + spilling,
        where=f"target {_num(target)} per replica ({window} window)",
        floor_why=token_why if token >= standing else "",
    )


def _sample_load(params: PolicyParams, sample: Sample) -> tuple[float, float, bool, bool]:
    """``(raw, load, KV-saturated, sized by work)``: in flight plus held, and the load."""
    raw = float(sample.in_flight or 0) + sample.held
    kv = sample.kv_cache_usage
    saturated = kv is not None and sample.ready > 0 and kv > params.kv_cache_saturation
    # A KV-full replica is at capacity whatever its request count (long contexts).
    load = max(raw, sample.ready * params.target_in_flight_per_replica) if saturated else raw
    work = _work_load(params, sample)
    return raw, max(load, work), saturated, work > load


def _panic_until(
    params: PolicyParams, history: History, now: float, current: int, ready: int, panic_want: int
) -> float | None:
    """When panic ends (None: no panic).

    It starts when the panic window wants at least ``BURST_RATIO`` times the ready replicas;
    never in the cost-aware mode (bursts spill).
    """
    if params.cost_mode:
        return None
    panic_until = history.panic_until
    if panic_until is not None and now >= panic_until:
        panic_until = None
    if current > 0 and panic_want >= BURST_RATIO * max(ready, 1):
        panic_until = now + params.stable_window_s
    return panic_until


def _load_words(
    sample: Sample, sized_on: float, *, projected: bool, saturated: bool, by_work: bool
) -> str:
    """The load a decision was sized on, in words, for the reason."""
    what = f"{_num(sized_on)} {'projected in' if projected else 'in'} flight"
    if sample.held:
        what += f" ({sample.held} held)"
    if saturated:
        what += f", KV cache {sample.kv_cache_usage or 0:.0%} full"
    if by_work:
        what += f" ({_num(sample.pending_prompt_tokens or 0)} prompt tokens waiting)"
    return what


def _work_load(params: PolicyParams, sample: Sample) -> float:
    """The prompt tokens waiting, as requests in flight: replicas' worth times the target.

    Zero when either side is unknown or the tokens are not a sane count (bad data never
    raises; the request count is then the signal alone).
    """
    tokens, per_replica = sample.pending_prompt_tokens, params.prompt_tokens_per_replica
    if tokens is None or per_replica is None or not _finite(tokens) or tokens <= 0:
        return 0.0
    return tokens / per_replica * params.target_in_flight_per_replica


def _spill_or_scale(
    params: PolicyParams, history: History, sample: Sample, now: float, current: int, desired: int
) -> tuple[float | None, int, str]:
    """The cost-aware mode's gate on a scale-up: ``(over_since, desired, words)``.

    An excess over the replicas there are spills (the router sends it to the provider) until
    it has lasted a start-up (``time_to_ready_s``): a replica asked for a shorter burst would
    be ready only after it, absorbing none of it, so spilling the burst is the cheaper answer
    at any price; an excess that has lasted a start-up is a lasting rise and gets replicas.
    (Waiting longer, for the excess to pay for a replica at the prices, measured worse: the
    excess does not all spill, part queues on the replicas below the spill threshold and
    misses the SLO, a cost the prices do not carry; docs/autoscaling.md, step 7b.) Never
    below ``max(minReplicas, 1)``: from zero (or below the floor) the ordinary rule runs, so
    a loaded model always gets a replica. Nor while the routers report requests the route's
    spend cap kept from spilling (``sample.spend_capped`` above 0): the excess then queues on
    the replicas, so it scales up at once, as the ordinary policy would.
    """
    over_since = history.over_since if desired > current else None
    if not params.cost_mode or desired <= current or current < max(params.min_replicas, 1):
        return over_since, desired, ""
    over_since = now if over_since is None else over_since
    capped = sample.spend_capped
    if capped is not None and _finite(capped) and capped > 0:
        return over_since, desired, f", {SPEND_CAPPED_WORDS}"
    lasted = now - over_since
    start_up = params.time_to_ready_s or 0.0
    if lasted >= start_up:
        return over_since, desired, ""
    why = f"a burst shorter than the {_secs(start_up)} start-up spills (cost-aware mode)"
    return over_since, current, f", wanting {desired} for {_secs(lasted)}: {why}"


def _learn_spill(
    params: PolicyParams, history: History, sample: Sample, load: float, current: int
) -> tuple[LoadHist, int, tuple[int, str, _TokenState]]:
    """The mode's load histogram with this sample, its count, and :func:`_token_floor`'s."""
    if not params.cost_mode:
        return (), 0, (0, "", _TokenState())
    hist = history.load_hist
    last = history.last_sample_at
    elapsed: float | None = None  # None: the sample was seen before
    if last is None or sample.at > last:
        # After a gap (or with no history) nothing decays: a gap is not evidence.
        gap = last is None or sample.at - last > params.stale_after_s
        elapsed = 0.0 if gap or last is None else sample.at - last
        threshold = params.target_in_flight_per_replica
        hist = remember_load(hist, elapsed, load, threshold, params.spill_history_half_life_s)
    standing = standing_for_budget(
        hist,
        params.target_in_flight_per_replica,
        params.spill_share_budget,
        params.spill_price_per_replica_hour or 0.0,
        params.spill_spend_cap_per_hour,
    )
    token = _token_floor(params, history, sample, current, elapsed)
    return hist, params.clamp(standing), token


@dataclass(frozen=True, slots=True)
class _TokenState:
    """What the token correction keeps in the history."""

    unsettled_at: float | None = None
    token_spill: TokenSpill = (0.0, 0.0)
    token_since: float | None = None
    token_raised: int = 0

    def into(self, history: History) -> History:
        """``history`` with this state."""
        return replace(
            history,
            unsettled_at=self.unsettled_at,
            token_spill=self.token_spill,
            token_since=self.token_since,
            token_raised=self.token_raised,
        )


def _token_floor(
    params: PolicyParams, history: History, sample: Sample, current: int, elapsed: float | None
) -> tuple[int, str, _TokenState]:
    """The count the observed spilled token shares ask for, why, and the state to keep.

    The long-run share's sums take this sample unless ``elapsed`` is None (seen before).
    Every count the recent window saw was at least the count set now once the last sample
    with a replica missing or starting (a scale-up landing a start-up later) is a window
    old: its share is then at most what the count set now spills alone.
    """
    unsettled = sample.ready < current or sample.starting > 0
    unsettled_at = sample.at if unsettled else history.unsettled_at
    share, rate = sample.spilled_token_share, sample.token_rate
    if share is not None and (not _finite(share) or not 0 <= share <= 1):
        share = None  # bad data never raises: the histogram alone rules
    acc = history.token_spill
    if share is not None and elapsed is not None:
        weight = rate if rate is not None and _finite(rate) and rate > 0 else 1.0
        acc = remember_tokens(acc, elapsed, share, weight, params.spill_history_half_life_s)
    token_since = history.token_since
    if share is not None and token_since is None:
        token_since = sample.at
    # The long-run share is the budget's measure once its history spans half a half-life;
    # before that it is its first minutes (a start-up transient), and only holds act.
    mature = token_since is not None and (
        sample.at - token_since >= params.spill_history_half_life_s / 2
    )
    overall = acc[0] / acc[1] if acc[1] > 0 and mature else None
    since = None if unsettled_at is None else sample.at - unsettled_at
    token, why, raised = token_floor(
        share, overall, params.spill_share_budget, current, since, history.token_raised
    )
    kept = _TokenState(unsettled_at, acc, token_since, raised)
    return min(token, params.max_replicas), why, kept


def _learn(params: PolicyParams, peaks: Peaks, now: float, peak_want: int) -> tuple[Peaks, int]:
    """The learned floor's buckets with this decision's peak want, and the floor now."""
    q = params.learned_floor_quantile
    if q is None:
        return (), 0
    half_life = params.learned_floor_half_life_s
    peaks = remember_peak(peaks, now, peak_want, params.learned_floor_bucket_s, half_life)
    return peaks, params.clamp(learned_floor(peaks, now, q, half_life))


def _windows(
    params: PolicyParams, history: History, sample: Sample, load: float
) -> tuple[list[tuple[float, float]], float, float]:
    """The stable window's samples with this one, and the stable and panic windows' means."""
    # Windows end at the newest sample, not at `now`: a scrape's lag must not empty them.
    stable_from = sample.at - params.stable_window_s
    kept = [(t, y) for t, y in history.samples if t > stable_from]
    if history.last_sample_at is None or sample.at > history.last_sample_at:
        kept.append((sample.at, load))
    kept = kept[-MAX_SAMPLES:]
    panic_from = sample.at - params.panic_window_s
    in_panic_window = [y for t, y in kept if t > panic_from] or [load]
    stable_load = sum(y for _, y in kept) / len(kept)
    panic_load = sum(in_panic_window) / len(in_panic_window)
    return kept, stable_load, panic_load


def _size(
    params: PolicyParams,
    kept: list[tuple[float, float]],
    current: int,
    stable_load: float,
    panic_load: float,
    panic: bool,
) -> tuple[float, int, bool]:
    """The load to size on, the replicas it wants, and whether that load is a projection."""
    stable_want = params.wanted(stable_load)
    panic_want = params.wanted(panic_load)
    sized_on = panic_load if panic else stable_load
    desired = panic_want if panic else stable_want
    if not panic and desired > current and panic_want < desired:
        # The stable mean still remembers a burst that is over: go up only as far as the
        # load now (the panic window) still wants.
        desired = max(current, panic_want)
    queue_growing = (
        stable_load > current * params.target_in_flight_per_replica and panic_load >= stable_load
    )
    if params.time_to_ready_s and queue_growing:
        # Only a queue (load beyond what the replicas set carry) is projected: the wander
        # of a load that the replicas carry is not growth worth a cold start.
        growth = _trend(kept)
        if growth > 0:
            # The window's mean lags a ramp by half the window; then a cold start ahead.
            lead = (kept[-1][0] - kept[0][0]) / 2 + params.time_to_ready_s
            ahead = stable_load + growth * lead
            if params.wanted(ahead) > desired:
                return ahead, params.wanted(ahead), True
    return sized_on, desired, False


def _peak_want(params: PolicyParams, desired: int, stable_want: int, panic_want: int) -> int:
    """What the load's peaks want, for the scale-down delay to remember.

    A burst shorter than the stable window barely moves its mean, but the replicas it needed
    are what the next burst needs too. The scale-down delay keeps them while bursts recur
    within it. Only a burst counts (the panic window wanting BURST_RATIO times the stable
    window's count): the 6 s wander of a steady load would otherwise keep a replica or two more
    than the load needs, all the time.
    """
    if panic_want >= BURST_RATIO * max(stable_want, 1):
        return max(desired, min(panic_want, params.max_replicas))
    return desired


def _from_zero(params: PolicyParams, a: _Assessment) -> Decision:
    """No replica: the first held request scales straight to what the queue needs."""
    if a.raw <= 0:
        return a.hold("no load", "none")
    # No step limit: the requests are already waiting.
    replicas = min(params.max_replicas, max(1, params.wanted(a.raw)))
    if replicas == 0:
        return a.hold("requests are held but maxReplicas is 0", "none")
    held = f"{_num(a.raw)} waiting for a replica"
    return a.change(replicas, "scale-from-zero", f"{held}, {a.where}", "none")


def _scale_up(params: PolicyParams, sample: Sample, a: _Assessment) -> Decision:
    """The load wants more replicas: a step up, or why not."""
    current = a.current
    replicas = min(a.desired, current + params.max_scale_up_step, params.max_replicas)
    if params.time_to_ready_s is not None:
        # Scale-ups already on their way count: at most max(step, ready) replicas start at
        # once, so a burst shorter than a cold start does not fill the cluster with
        # replicas that arrive after it; a lasting rise still doubles every cold start.
        on_the_way = max(current - sample.ready, 0)
        room = max(params.max_scale_up_step, sample.ready) - on_the_way
        replicas = min(replicas, current + max(room, 0))
    if replicas > current:
        return a.change(replicas, "scale-up", f"{a.what}, {a.where}")
    if replicas < params.max_replicas:
        return a.hold(f"{a.what} wants {a.desired}; {current - sample.ready} already starting")
    return a.hold(f"{a.what} wants {a.desired}, but maxReplicas is {params.max_replicas}")


def _floor_words(params: PolicyParams) -> str:
    """How the learned floor is learned, for the reason."""
    if params.cost_mode:
        return (
            f"the fewest that spill at most {params.spill_share_budget:.0%} of the recent load"
            + ("" if params.spill_spend_cap_per_hour is None else " within the spend cap")
        )
    q = params.learned_floor_quantile or 0
    half_life = _secs(params.learned_floor_half_life_s)
    return f"p{q * 100:g} of recent bursts' wants, half-life {half_life}"


def _to_zero(params: PolicyParams, sample: Sample, a: _Assessment) -> Decision | None:
    """Scale to zero after the idle delay (or hold for a starting replica); None: not idle."""
    zero_delay = params.scale_to_zero_delay_s
    if params.min_replicas != 0 or zero_delay is None or a.idle_since is None:
        return None
    idle_for = a.now - a.idle_since
    if idle_for < zero_delay or a.panic:
        return None
    if sample.starting:
        return a.hold(f"idle, but {sample.starting} replica(s) still starting", "none")
    return a.change(0, "scale-to-zero", f"idle for {_secs(idle_for)}", "none")


def _scale_down(params: PolicyParams, sample: Sample, a: _Assessment) -> Decision | None:
    """The peaks want fewer replicas: a step down, a hold saying why not, or None (no step)."""
    current = a.current
    floor = max(params.min_replicas, 1, a.learned)
    if current <= floor:
        if a.learned > max(params.min_replicas, 1) or a.floor_why:
            why = a.floor_why or _floor_words(params)
            return a.hold(f"{a.what}; the learned floor is {floor} ({why})")
        return a.hold(f"{a.what}; at the floor of {floor}")
    if a.panic:
        return a.hold(f"{a.what} wants {a.peak_want}, but no scale-down in panic")
    assert a.low_since is not None
    low_for = a.now - a.low_since
    if low_for < params.down_delay_s:
        return a.hold(
            f"{a.what} wants {a.peak_want} for {_secs(low_for)} of the "
            f"{_secs(params.down_delay_s)} scale-down delay"
        )
    if sample.starting:
        return a.hold(
            f"{a.what} wants {a.peak_want}, but {sample.starting} replica(s) still starting"
        )
    # HPA's stabilisation: the most the peaks wanted over the whole delay, not the least;
    # and at most a share of the replicas at once (Knative's max-scale-down-rate).
    replicas = max(
        max(n for _, n in a.wants),
        floor,
        # At least one goes: ceil(2 / 1.5) would keep 2 for ever.
        min(math.ceil(current / params.max_scale_down_rate - 1e-9), current - 1),
    )
    if replicas < current:
        return a.change(replicas, "scale-down", f"{a.what} for {_secs(low_for)}, {a.where}")
    return None
