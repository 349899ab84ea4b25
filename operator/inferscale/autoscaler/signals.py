"""The autoscaler's signals: PromQL built from the engines' metric names, and one policy sample.

Users never write PromQL: the operator knows which gauges each engine exports for requests
running and waiting and for KV-cache use, and builds one query per signal that covers every
engine at once (a ``__name__`` regex over all their names), grouped by namespace and model.
Renamed metrics are listed side by side (vLLM's ``gpu_cache_usage_perc`` became
``kv_cache_usage_perc``), so either version of an engine is read.

:func:`build_sample` turns what was read (Prometheus, the routers) into the policy's
:class:`~inferscale.autoscaler.policy.Sample`, deciding what counts as *unknown*: a model with
ready replicas but no engine series is unknown (a renamed metric, a broken scrape), never
*zero*; a model with no replica at all has zero engine load by definition.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from inferscale.autoscaler.policy import Sample
from inferscale.autoscaler.spillprice import Throughput

ModelKey = tuple[str, str]
"""(namespace, InferenceModel name)."""


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """The Prometheus gauges of one engine that the autoscaler reads."""

    in_flight: tuple[str, ...]
    """Gauges whose sum is the requests running plus waiting in one replica."""
    kv_cache: tuple[str, ...] = ()
    """Gauges of KV-cache use from 0 to 1 (alternatives: one engine version exports one)."""
    prompt_tokens: tuple[str, ...] = ()
    """Counters of prompt tokens processed (the cost-aware mode's throughput)."""
    output_tokens: tuple[str, ...] = ()
    """Counters of tokens generated."""


ENGINE_METRICS: Final[Mapping[str, EngineMetrics]] = {
    "vllm": EngineMetrics(
        ("vllm:num_requests_running", "vllm:num_requests_waiting"),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ("vllm:prompt_tokens_total",),
        ("vllm:generation_tokens_total",),
    ),
    # The sim exports vLLM's exact names.
    "sim": EngineMetrics(
        ("vllm:num_requests_running", "vllm:num_requests_waiting"),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ("vllm:prompt_tokens_total",),
        ("vllm:generation_tokens_total",),
    ),
    "sglang": EngineMetrics(
        ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
        ("sglang:token_usage",),
        ("sglang:prompt_tokens_total",),
        ("sglang:generation_tokens_total",),
    ),
    # TGI counts tokens only in its per-request histograms; their sums are counters.
    "tgi": EngineMetrics(
        ("tgi_batch_current_size", "tgi_queue_size"),
        (),
        ("tgi_request_input_length_sum",),
        ("tgi_request_generated_tokens_sum",),
    ),
    # llama-server --metrics: slots decoding, and requests deferred for want of a free slot.
    # It exports no KV-cache gauge (its context is split into fixed slots instead).
    "llamacpp": EngineMetrics(
        ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
        (),
        ("llamacpp:prompt_tokens_total",),
        ("llamacpp:tokens_predicted_total",),
    ),
    # trtllm-serve exports no in-flight gauge in Prometheus form: its load is the routers'
    # in-flight count alone.
    "trtllm": EngineMetrics(()),
}
"""Engine -> the gauges read for it (see docs/autoscaling.md for the sources)."""


@dataclass(frozen=True, slots=True)
class Queries:
    """The three PromQL queries of one autoscaler round."""

    in_flight: str
    """Requests running plus waiting, summed per model."""
    freshness: str
    """Timestamp of the newest in-flight sample per model: an old one means a dead scrape."""
    kv_cache: str
    """Mean KV-cache use per model."""
    prompt_rate: str = ""
    """Prompt tokens per second per model over :data:`THROUGHPUT_WINDOW` (the cost-aware
    mode's throughput; read once every few rounds)."""
    output_rate: str = ""
    """Tokens generated per second per model over the same window."""
    mean_in_flight: str = ""
    """Mean requests in flight per model over the same window."""
    spilled_tokens: str = ""
    """Prompt plus output tokens per second that spillover backends answered, per served name
    (the routers' ``model`` label), over the same window: with the engines' rates above, the
    spilled token share (:func:`spilled_token_share`)."""
    spend_capped: str = ""
    """Requests per second the routers did not spill because a route's spend cap was reached,
    per route (``namespace/name``), over :data:`SPEND_CAPPED_WINDOW` (read every round)."""


THROUGHPUT_WINDOW: Final = "10m"
"""The window of the throughput queries: long enough to hold a few bursts; the spilled token
share's recent window too (:data:`~inferscale.autoscaler.spillcost.SPILL_SHARE_WINDOW_S`)."""

THROUGHPUT_STEP: Final = "5s"
"""The step of the mean in flight's subquery."""

SPILLED_TOKENS_METRIC: Final = "inferscale_router_spillover_tokens_total"
"""The routers' counter of the tokens spillover backends answered (label ``model``: the
served name; ``kind``: prompt or completion)."""

ROUTER_MODEL_LABEL: Final = "model"
"""The routers' label for the served name."""

SPEND_CAPPED_METRIC: Final = "inferscale_router_spend_capped_total"
"""The routers' counter of the requests a route's spend cap kept from spilling over."""

ROUTER_ROUTE_LABEL: Final = "route"
"""The routers' label for an InferenceRoute: ``namespace/name``."""

SPEND_CAPPED_WINDOW: Final = "2m"
"""The recent window of the capped spill: a cap reached now stops the cost-aware mode's wait
within a round; one that no longer stops spill (the UTC hour turned) lets it go in minutes."""


def _names_regex(names: Iterable[str]) -> str:
    return "|".join(re.escape(n).replace("\\:", ":") for n in sorted(set(names)))


def build_queries(model_label: str, namespace_label: str) -> Queries:
    """The queries for every engine's metrics, grouped by ``(namespace_label, model_label)``."""
    in_flight = _names_regex(n for m in ENGINE_METRICS.values() for n in m.in_flight)
    # One gauge per engine for the timestamp: timestamp() drops the metric name, and two
    # gauges of one pod would then be two series with one label set (an error in PromQL).
    first = _names_regex(m.in_flight[0] for m in ENGINE_METRICS.values() if m.in_flight)
    kv = _names_regex(n for m in ENGINE_METRICS.values() for n in m.kv_cache)
    by = f"by ({namespace_label}, {model_label})"
    ours = f'{model_label}!=""'
    prompt = _names_regex(n for m in ENGINE_METRICS.values() for n in m.prompt_tokens)
    output = _names_regex(n for m in ENGINE_METRICS.values() for n in m.output_tokens)
    w = THROUGHPUT_WINDOW
    summed = f'sum {by} ({{__name__=~"{in_flight}", {ours}}})'
    return Queries(
        in_flight=summed,
        freshness=f'max {by} (timestamp({{__name__=~"{first}", {ours}}}))',
        kv_cache=f'avg {by} ({{__name__=~"{kv}", {ours}}})',
        # One counter name per engine, so rate() (which drops names) cannot clash.
        prompt_rate=f'sum {by} (rate({{__name__=~"{prompt}", {ours}}}[{w}]))',
        output_rate=f'sum {by} (rate({{__name__=~"{output}", {ours}}}[{w}]))',
        # The sum first, then its mean over a subquery: a function over the raw gauges would
        # drop the names of a pod's running and waiting gauges and clash on the same labels.
        mean_in_flight=f"avg_over_time(({summed})[{w}:{THROUGHPUT_STEP}])",
        spilled_tokens=f"sum by ({ROUTER_MODEL_LABEL}) (rate({SPILLED_TOKENS_METRIC}[{w}]))",
        spend_capped=(
            f"sum by ({ROUTER_ROUTE_LABEL}) (rate({SPEND_CAPPED_METRIC}[{SPEND_CAPPED_WINDOW}]))"
        ),
    )


def route_id(namespace: str, route: str | None) -> str | None:
    """The routers' ``route`` label of a model's spill route (None: no spill route)."""
    return None if route is None else f"{namespace}/{route}"


def spend_capped_rate(rates: Mapping[str, float] | None, route: str | None) -> float | None:
    """The capped spill rate of ``route`` (``namespace/name``) from one read of every route's.

    None (unknown: the policy runs as without a cap signal) when the read failed or the model
    has no spill route; 0 when the read answered without the route (no router has capped it
    since it started: the counter has no series yet).
    """
    if rates is None or route is None:
        return None
    return rates.get(route, 0.0)


def throughputs(
    prompt: Mapping[ModelKey, float],
    output: Mapping[ModelKey, float],
    in_flight: Mapping[ModelKey, float],
) -> dict[ModelKey, Throughput]:
    """Per model, the throughput queries' three values; a model missing any is left out."""
    return {
        key: Throughput(prompt[key], output[key], in_flight[key])
        for key in prompt.keys() & output.keys() & in_flight.keys()
    }


def spilled_token_share(
    spilled: float | None, engines: Throughput | None
) -> tuple[float | None, float | None]:
    """A model's spilled token share and its tokens per second, over one window.

    From the routers' spilled rate and the engines' throughput. ``(None, None)`` (the policy
    then runs without them) when either is unknown, not a sane rate, or both are zero: an
    older router exports no spilled-token counter, an engine without token counters (trtllm)
    would make every token look spilled, and an idle window says nothing.
    """
    if spilled is None or engines is None:
        return None, None
    local = engines.prompt_tokens_per_s + engines.output_tokens_per_s
    if not (math.isfinite(spilled) and math.isfinite(local)) or spilled < 0 or local < 0:
        return None, None
    total = spilled + local
    return (spilled / total, total) if total > 0 else (None, None)


def parse_by_label(result: object, label: str) -> dict[str, float]:
    """Values per ``label`` from an instant-query result; bad entries are left out."""
    values: dict[str, float] = {}
    for entry in result if isinstance(result, list) else []:
        metric = entry.get("metric") if isinstance(entry, dict) else None
        key = metric.get(label) if isinstance(metric, dict) else None
        number = _number(entry.get("value")) if isinstance(key, str) and key else None
        if isinstance(key, str) and number is not None:
            values[key] = number
    return values


def parse_vector(
    result: object, model_label: str, namespace_label: str
) -> tuple[dict[ModelKey, float], list[str]]:
    """Values per model from an instant-query result (``data.result`` of a vector).

    Returns the values and the problems met: entries without the labels, values that are not
    finite numbers. Such entries are left out (the model's signal is then unknown), never
    read as zero.
    """
    values: dict[ModelKey, float] = {}
    problems: list[str] = []
    if not isinstance(result, list):
        return values, [f"expected a vector result, got {type(result).__name__}"]
    for entry in result:
        if not isinstance(entry, dict):
            problems.append("a result entry is not an object")
            continue
        metric = entry.get("metric")
        value = entry.get("value")
        if not isinstance(metric, dict):
            problems.append("a result entry has no labels")
            continue
        namespace, model = metric.get(namespace_label), metric.get(model_label)
        if not isinstance(namespace, str) or not isinstance(model, str) or not model:
            problems.append(f"a series lacks the {namespace_label}/{model_label} labels")
            continue
        number = _number(value)
        if number is None:
            problems.append(f"{namespace}/{model}: value {value!r} is not a finite number")
            continue
        values[(namespace, model)] = number
    return values, problems


def _number(value: Any) -> float | None:
    # A vector sample is [timestamp, "value"]; the value is a string ("NaN" and "+Inf" too).
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    try:
        number = float(value[1])
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class EngineReading:
    """What Prometheus said about one model's engines."""

    in_flight: float | None
    """Sum of running plus waiting over the replicas scraped; None when no series matched."""
    sampled_at: float | None
    """Unix time of the newest sample behind ``in_flight``."""
    kv_cache: float | None = None
    """Mean KV-cache use, 0..1."""


@dataclass(frozen=True, slots=True)
class RouterReading:
    """What the routers said about one model (summed over router pods)."""

    held: int
    """Requests held because no replica is ready."""
    in_flight: int
    """Requests the routers have in flight to the model's replicas."""
    hosted_in_flight: int = 0
    """Requests hosted providers answer for the model now (spillover, fallback): demand the
    replicas did not meet, so it counts as load."""
    pending_prompt_tokens: int | None = None
    """Prompt tokens of the requests sent to the model's replicas that have no first token yet
    (the routers' estimate, the sum their ``inferscale_router_pending_prompt_tokens`` gauge
    exports per endpoint); None: a router that does not report it."""


def build_sample(
    *,
    engine: str,
    now: float,
    ready: int,
    starting: int,
    prometheus_configured: bool,
    prometheus: EngineReading | None,
    prometheus_error: str | None,
    router: RouterReading | None,
    router_error: str | None,
    stale_after: float,
    spilled_tokens: tuple[float | None, float | None] = (None, None),
    spend_capped: float | None = None,
) -> tuple[Sample, str | None]:
    """The policy's sample for one model, and why its load is unknown (None when known).

    ``prometheus`` is None when Prometheus returned nothing for the model; ``router`` is None
    when no router answered (``router_error`` says why; both None: there are no routers). In
    flight is the larger of the
    engines' count and the routers' (engines also see clients that bypass the router; the
    routers see requests before the next scrape does), plus the requests hosted providers answer
    for the model (spilled over). Held requests only come from routers, and so do the prompt
    tokens waiting for a first token (no engine exports them as one gauge: vLLM counts
    requests waiting, not their tokens), which the policy weighs against
    ``prompt_tokens_per_replica``; unknown (None) when no router reports them. The spilled
    token share and the token rate (:func:`spilled_token_share`) go into the sample as they are,
    and so does the capped spill rate (:func:`spend_capped_rate`).
    """
    metrics = ENGINE_METRICS.get(engine, EngineMetrics(()))
    reasons: list[str] = []
    engine_load: float | None = None
    kv: float | None = None
    if ready == 0:
        engine_load = 0.0  # nothing serves, so no engine holds a request
    elif not metrics.in_flight or not prometheus_configured:
        pass  # no gauges for this engine, or no Prometheus: the routers' count is the signal
    elif prometheus_error is not None:
        reasons.append(prometheus_error)
    elif prometheus is not None and prometheus.in_flight is not None:
        age = now - prometheus.sampled_at if prometheus.sampled_at is not None else math.inf
        if age > stale_after:
            reasons.append(
                f"engine metrics are {age:.0f} s old (stale after {stale_after:g} s)"
                if math.isfinite(age)
                else "engine metrics carry no timestamp"
            )
        else:
            engine_load = prometheus.in_flight
            kv = prometheus.kv_cache
    else:
        names = ", ".join(metrics.in_flight)
        reasons.append(f"no engine metrics for {ready} ready replicas (looked for {names})")

    held = router.held if router is not None else 0
    router_load = float(router.in_flight) if router is not None else None
    hosted = router.hosted_in_flight if router is not None else 0
    if router is None and router_error is not None:
        reasons.append(router_error)

    known = [v for v in (engine_load, router_load) if v is not None]
    unknown = bool(reasons) or not known
    if not known and not reasons:
        reasons.append("no load signal: neither Prometheus nor a router answered")
    # Spilled requests are demand the replicas would have served: without them, spillover
    # would hide the very load that should scale the model up.
    in_flight = None if unknown else max(known) + hosted
    sample = Sample(
        at=now,
        in_flight=in_flight,
        held=held,
        kv_cache_usage=kv,
        ready=ready,
        starting=starting,
        pending_prompt_tokens=None if router is None else router.pending_prompt_tokens,
        spilled_token_share=spilled_tokens[0],
        token_rate=spilled_tokens[1],
        spend_capped=spend_capped,
    )
    return sample, ("; ".join(reasons) if unknown else None)


def _count(value: object) -> int | None:
    """A router's count when it is a non-negative integer, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def router_readings(docs: Sequence[object]) -> dict[str, RouterReading]:
    """Each served name's counts summed over the routers' ``GET /admin/v1/held`` documents.

    A count that is not a non-negative integer (an older router has no hostedInFlight) adds
    nothing. The prompt tokens waiting are known only when every router that lists the model
    reports them: a partial sum would understate the work.
    """
    totals: dict[str, list[int]] = {}
    tokens: dict[str, int | None] = {}
    for doc in docs:
        per_model = doc.get("models") if isinstance(doc, dict) else None
        if not isinstance(per_model, dict):
            continue
        for served, counts in per_model.items():
            if not isinstance(counts, dict):
                continue
            name = str(served)
            total = totals.setdefault(name, [0, 0, 0])
            for i, field_name in enumerate(("held", "inFlight", "hostedInFlight")):
                total[i] += _count(counts.get(field_name)) or 0
            pending = _count(counts.get("pendingPromptTokens"))
            so_far = tokens.get(name, 0)
            tokens[name] = None if pending is None or so_far is None else so_far + pending
    return {
        k: RouterReading(
            held=v[0], in_flight=v[1], hosted_in_flight=v[2], pending_prompt_tokens=tokens[k]
        )
        for k, v in totals.items()
    }
