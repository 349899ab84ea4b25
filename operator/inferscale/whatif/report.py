"""The figures of a what-if run, per policy: a summary, a text table and a JSON document.

- **SLO attainment**: the share of requests whose time to first token is within the target;
  spilled requests meet it (the provider answers at once, by assumption), requests that never
  got a first token miss it, and requests the engine rejects as too long are left out (no
  policy can serve them; their count is reported).
- **TTFT quantiles** over the requests the replicas served (plus those never served, as
  infinite); spilled and rejected ones are left out.
- **GPU-hours**: GPU time of every replica inside the trace's span, starting ones included
  (a loading replica holds its GPU). **Cost**, the objective: GPU-hours x the price per
  accelerator-hour + spilled prompt and output tokens x the provider's prices per million
  (the CLI takes them from the preset's list price and the InferenceProvider).

Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from inferscale.whatif.cluster import REJECTED, SERVED, SPILLED, UNFINISHED, RunResult


@dataclass(frozen=True, slots=True)
class Prices:
    """What GPU time and spilled tokens cost (the defaults are placeholders for tests)."""

    gpu_hour: float = 1.0
    """Per GPU-hour."""
    input_per_million: float = 0.5
    """Per million prompt tokens at the spillover provider."""
    output_per_million: float = 1.5
    """Per million output tokens at the spillover provider."""


DEFAULT_PRICES = Prices()


@dataclass(frozen=True, slots=True)
class Summary:
    """One policy's figures."""

    policy: str
    requests: int
    rejected: int
    unfinished: int
    slo_attainment: float
    cost: float
    """GPU-hours x price + spilled tokens x the provider's prices."""
    spill_cost: float
    """The spilled tokens' part of ``cost``."""
    ttft_p50: float
    ttft_p95: float
    ttft_p99: float
    gpu_hours: float
    scale_events: int
    cold_starts: int
    spilled_requests: int
    spilled_tokens_pct: float
    peak_replicas: int
    mean_replicas: float


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation (NaN for no values)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    if math.isinf(a) or math.isinf(b):
        return b if pos > lo else a
    return a + (b - a) * (pos - lo)


def gpu_hours(result: RunResult) -> float:
    """GPU time of all replicas within [0, horizon], in hours (the presets use one GPU)."""
    total = 0.0
    for created, stopped in result.replica_spans:
        lo, hi = max(created, 0.0), min(stopped, result.horizon)
        if hi > lo:
            total += hi - lo
    return total / 3600.0


def summarize(result: RunResult, prices: Prices = DEFAULT_PRICES) -> Summary:
    """The figures of one run."""
    slo = result.config.slo_ttft_s
    counted = met = 0
    served: list[float] = []
    spilled_tokens = all_tokens = 0
    spilled_in = spilled_out = 0
    outcomes = {SERVED: 0, SPILLED: 0, REJECTED: 0, UNFINISHED: 0}
    for request, ttft, outcome in zip(
        result.trace.requests, result.ttft, result.outcome, strict=True
    ):
        outcomes[outcome] += 1
        if outcome == REJECTED:
            continue
        counted += 1
        tokens = request.prompt_tokens + request.output_tokens
        all_tokens += tokens
        if outcome == SPILLED:
            met += 1
            spilled_tokens += tokens
            spilled_in += request.prompt_tokens
            spilled_out += request.output_tokens
            continue
        served.append(ttft)
        if ttft <= slo:
            met += 1
    served.sort()
    hours = gpu_hours(result)
    spill_cost = (
        spilled_in / 1e6 * prices.input_per_million + spilled_out / 1e6 * prices.output_per_million
    )
    replicas = [p.replicas for p in result.timeline if p.at <= result.horizon] or [0]
    return Summary(
        policy=result.policy,
        requests=len(result.trace.requests),
        rejected=outcomes[REJECTED],
        unfinished=outcomes[UNFINISHED],
        slo_attainment=met / counted if counted else math.nan,
        cost=hours * prices.gpu_hour + spill_cost,
        spill_cost=spill_cost,
        ttft_p50=quantile(served, 0.50),
        ttft_p95=quantile(served, 0.95),
        ttft_p99=quantile(served, 0.99),
        gpu_hours=hours,
        scale_events=result.scale_events,
        cold_starts=result.cold_starts,
        spilled_requests=outcomes[SPILLED],
        spilled_tokens_pct=100.0 * spilled_tokens / all_tokens if all_tokens else 0.0,
        peak_replicas=max(replicas),
        mean_replicas=sum(replicas) / len(replicas),
    )


def _seconds(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "never"
    return f"{x:.2f}"


COLUMNS = (
    "policy",
    "SLO att.",
    "cost",
    "TTFT p50",
    "p95",
    "p99",
    "GPU-h",
    "scale ev.",
    "cold st.",
    "spilled tok.",
)


def render_table(summaries: Sequence[Summary]) -> str:
    """A plain-text table, one row per policy."""
    rows = [COLUMNS]
    for s in summaries:
        rows.append(
            (
                s.policy,
                f"{100 * s.slo_attainment:.2f}%",
                f"{s.cost:.2f}",
                _seconds(s.ttft_p50),
                _seconds(s.ttft_p95),
                _seconds(s.ttft_p99),
                f"{s.gpu_hours:.2f}",
                str(s.scale_events),
                str(s.cold_starts),
                f"{s.spilled_tokens_pct:.2f}%",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _jsonable(value: float) -> float | str | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


def to_json(summaries: Sequence[Summary], meta: dict[str, Any]) -> str:
    """The figures as JSON: ``{"run": meta, "policies": [summary, ...]}`` (no NaN: null)."""
    policies = [{k: _jsonable(v) for k, v in asdict(s).items()} for s in summaries]
    return json.dumps({"run": meta, "policies": policies}, indent=2)
