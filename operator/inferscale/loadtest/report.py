"""What a load test shows: the live view while it runs, and the summary (text or JSON) after.

Pure: text in, text out; the runner decides where it goes and when. The live view is a few lines
(redrawn in place on a terminal) or one line per interval (a log, a CI job). The summary's JSON
shape is documented in ``docs/loadtest.md`` and kept stable for scripts.

The failed ratio counts errors and dropped requests (due while ``--max-in-flight`` requests were
already running) against every request that was due: both are requests the users of the
endpoint would not have had answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferscale.loadtest.stats import Quantiles, Recorder, ReplicaRange, ScaleEvent, percentile
from inferscale.loadtest.status import ModelStatus
from inferscale.loadtest.trace import TraceStats

Phase = Callable[[float, int], str]
"""(seconds since the start, index of the next arrival) -> what the arrivals are doing now."""

SPARK = " ▁▂▃▄▅▆▇█"
MODELS_SHOWN = 8
EVENTS_SHOWN = 4


@dataclass(frozen=True)
class RunInfo:
    """What the run was asked to do (never the API key)."""

    url: str
    model: str
    api: str
    stream: bool
    load: str
    """``stages 30s@2,60s@20`` or ``trace conv.csv x10``: what shaped the arrivals."""
    seed: int
    duration: float | None
    """Seconds of arrivals planned; None for a whole trace."""
    max_in_flight: int
    max_error_ratio: float
    expect_scaling: bool = False
    """Fail the run unless some InferenceModel scaled both up and down during it."""


@dataclass(frozen=True)
class Summary:
    """The end-of-run figures; :meth:`to_json` and :func:`render_summary` show them."""

    info: RunInfo
    elapsed: float
    sent: int
    ok: int
    errors: dict[str, int]
    dropped: int
    cancelled: int
    prompt_tokens: int
    output_tokens: int
    ttft: Quantiles | None
    latency: Quantiles | None
    replicas: dict[str, ReplicaRange]
    scale_events: list[ScaleEvent]
    max_lag: float
    interrupted: bool
    trace: TraceStats | None = None
    cluster_note: str | None = None
    """Why replica counts are missing, when they are."""
    notes: list[str] = field(default_factory=list)

    @property
    def errored(self) -> int:
        """Requests that ended in an error."""
        return sum(self.errors.values())

    @property
    def attempted(self) -> int:
        """Requests that were due: sent plus dropped."""
        return self.sent + self.dropped

    @property
    def failed_ratio(self) -> float:
        """(errors + dropped) / attempted; 0 with nothing attempted."""
        due = self.attempted
        return (self.errored + self.dropped) / due if due else 0.0

    @property
    def scaled_up_and_down(self) -> bool:
        """Whether some model's desired replicas went both up and down during the run."""
        return any(r.scale_ups and r.scale_downs for r in self.replicas.values())

    @property
    def passed(self) -> bool:
        """Failed ratio within ``--max-error-ratio`` and, if asked for, scaling seen."""
        scaled = self.scaled_up_and_down or not self.info.expect_scaling
        return self.failed_ratio <= self.info.max_error_ratio and scaled

    def rate(self, count: int) -> float:
        """``count`` per second of the run."""
        return count / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON values (the shape ``--json`` prints)."""
        return {
            "target": {
                "url": self.info.url,
                "model": self.info.model,
                "api": self.info.api,
                "stream": self.info.stream,
            },
            "load": {
                "description": self.info.load,
                "seed": self.info.seed,
                "planned_seconds": self.info.duration,
                "max_in_flight": self.info.max_in_flight,
            },
            "elapsed_seconds": round(self.elapsed, 3),
            "requests": {
                "attempted": self.attempted,
                "sent": self.sent,
                "ok": self.ok,
                "errors": self.errored,
                "dropped": self.dropped,
                "cancelled": self.cancelled,
            },
            "rates": {
                "sent_per_second": round(self.rate(self.sent), 3),
                "ok_per_second": round(self.rate(self.ok), 3),
                "output_tokens_per_second": round(self.rate(self.output_tokens), 1),
            },
            "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens},
            "ttft_seconds": _quantiles_json(self.ttft),
            "latency_seconds": _quantiles_json(self.latency),
            "errors": dict(sorted(self.errors.items())),
            "replicas": {
                key: {
                    "min_desired": r.min_desired,
                    "max_desired": r.max_desired,
                    "min_ready": r.min_ready,
                    "max_ready": r.max_ready,
                    "last_desired": r.desired,
                    "last_ready": r.ready,
                    "scale_ups": r.scale_ups,
                    "scale_downs": r.scale_downs,
                }
                for key, r in sorted(self.replicas.items())
            },
            "scale_events": [
                {
                    "at_seconds": round(e.at, 1),
                    "model": e.model,
                    "from": e.before,
                    "to": e.after,
                    "reason": e.reason,
                }
                for e in self.scale_events
            ],
            "cluster": self.cluster_note,
            "trace": None
            if self.trace is None
            else {
                "rows": self.trace.rows,
                "bad_lines": self.trace.bad_lines,
                "out_of_order": self.trace.out_of_order,
                "problems": list(self.trace.problems),
            },
            "max_schedule_lag_seconds": round(self.max_lag, 4),
            "failed_ratio": round(self.failed_ratio, 6),
            "max_error_ratio": self.info.max_error_ratio,
            "expect_scaling": self.info.expect_scaling,
            "scaled_up_and_down": self.scaled_up_and_down,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "notes": list(self.notes),
        }


def _quantiles_json(q: Quantiles | None) -> dict[str, float] | None:
    if q is None:
        return None
    return {
        "count": q.count,
        "mean": round(q.mean, 6),
        "p50": round(q.p50, 6),
        "p95": round(q.p95, 6),
        "p99": round(q.p99, 6),
        "max": round(q.max, 6),
    }


def summarize(
    info: RunInfo,
    recorder: Recorder,
    elapsed: float,
    *,
    interrupted: bool = False,
    trace: TraceStats | None = None,
    cluster_note: str | None = None,
    notes: Sequence[str] = (),
) -> Summary:
    """Freeze a recorder's counts into a :class:`Summary`."""
    return Summary(
        info=info,
        elapsed=elapsed,
        sent=recorder.sent,
        ok=recorder.ok,
        errors=dict(recorder.errors),
        dropped=recorder.dropped,
        cancelled=recorder.cancelled,
        prompt_tokens=recorder.prompt_tokens,
        output_tokens=recorder.output_tokens,
        ttft=Quantiles.of(recorder.ttft.values),
        latency=Quantiles.of(recorder.latency.values),
        replicas=dict(recorder.replicas.models),
        scale_events=list(recorder.replicas.events),
        max_lag=recorder.max_lag,
        interrupted=interrupted,
        trace=trace,
        cluster_note=cluster_note,
        notes=list(notes),
    )


# ----- formatting helpers --------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    """``41 ms``, ``1.24 s``, ``95 s``; ``-`` for None."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.0f} s"


def clock_text(seconds: float) -> str:
    """``1:05`` (minutes:seconds)."""
    whole = max(int(seconds), 0)
    return f"{whole // 60}:{whole % 60:02d}"


def count_text(n: float) -> str:
    """Thousands separated: ``12,345``."""
    return f"{n:,.0f}"


def errors_text(errors: dict[str, int]) -> str:
    """``http 503 x3, timeout x1``, most frequent first; ``none`` when empty."""
    if not errors:
        return "none"
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{kind} x{n}" for kind, n in ranked)


def sparkline(values: Iterable[int], top: int) -> str:
    """One character per value, from blank (0) to a full block (``top`` or more)."""
    steps = len(SPARK) - 1
    if top <= 0:
        return "".join(SPARK[0] for _ in values)
    return "".join(SPARK[min(steps, round(v * steps / top))] for v in values)


def _replicas_text(status: ModelStatus) -> str:
    ready = "?" if status.ready is None else str(status.ready)
    desired = "?" if status.desired is None else str(status.desired)
    return f"{ready}/{desired}"


def _trend(status: ModelStatus) -> str:
    if status.desired is None or status.ready is None or status.desired == status.ready:
        return ""
    return "scaling up" if status.desired > status.ready else "scaling down"


# ----- live view -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveFrame:
    """Everything one refresh of the live view shows."""

    info: RunInfo
    elapsed: float
    phase: str
    """Where the arrivals are: ``stage 2/3 60s@20, 20.0/s now`` or ``trace row 1,234``."""
    recorder: Recorder
    now: float
    models: Sequence[ModelStatus] = ()
    cluster_note: str | None = None
    draining: bool = False
    finished: bool = False


def _shown_models(frame: LiveFrame) -> tuple[list[ModelStatus], int]:
    models = sorted(frame.models, key=lambda m: m.key)
    if len(models) > MODELS_SHOWN:
        # The target model first: the one the requests go to is the one worth watching.
        target = [m for m in models if frame.info.model in (m.served_name, m.name)]
        rest = [m for m in models if m not in target]
        models = (target + rest)[:MODELS_SHOWN]
    return models, max(len(frame.models) - len(models), 0)


def render_live(frame: LiveFrame) -> list[str]:
    """The live view's lines (no colours, no cursor codes: the caller redraws)."""
    info, rec, now = frame.info, frame.recorder, frame.now
    planned = f" / {clock_text(info.duration)}" if info.duration is not None else ""
    mode = "streaming" if info.stream else "non-streaming"
    head = frame.phase
    if frame.finished:
        head = "finished"
    elif frame.draining:
        head = "draining: waiting for the requests in flight"

    ttft = sorted(rec.recent_ttft.values(now))
    p50 = seconds_text(_pct(ttft, 0.5))
    p95 = seconds_text(_pct(ttft, 0.95))
    lines = [
        f"inferscale loadtest  {info.url}  model {info.model}  ({info.api}, {mode})",
        f"  {clock_text(frame.elapsed)}{planned}  {head}",
        f"  req/s      sent {rec.sent_rate.rate(now):7.1f}   done {rec.done_rate.rate(now):7.1f}"
        f"   failed {rec.failed_rate.rate(now):5.1f}   in flight {rec.in_flight:>5}",
        f"  totals     sent {count_text(rec.sent)}   ok {count_text(rec.ok)}"
        f"   errors {count_text(rec.errored)}   dropped {count_text(rec.dropped)}",
        f"  TTFT 10s   p50 {p50:>8}   p95 {p95:>8}"
        f"   output {count_text(rec.output_rate.rate(now))} tok/s",
        f"  errors     {errors_text(dict(rec.errors))}",
    ]
    if frame.cluster_note is not None and not frame.models:
        lines.append(f"  replicas   {frame.cluster_note}")
        return lines
    shown, hidden = _shown_models(frame)
    if shown:
        lines.append("  replicas   ready/desired  history (oldest left)")
        width = max(len(m.key) for m in shown)
        for m in shown:
            seen = rec.replicas.models.get(m.key)
            top = max(seen.max_desired or 0, seen.max_ready or 0) if seen else 0
            spark = sparkline(seen.history, top) if seen else ""
            lines.append(
                f"    {m.key:<{width}}  {_replicas_text(m):>7}  {spark}  {_trend(m)}".rstrip()
            )
        if hidden:
            lines.append(f"    ... and {hidden} more InferenceModels")
    events = list(rec.replicas.events)[-EVENTS_SHOWN:]
    for event in events:
        reason = f"  {event.reason}" if event.reason else ""
        lines.append(
            f"    {clock_text(event.at)} {event.model} {event.before} -> {event.after}{reason}"
        )
    return lines


def render_line(frame: LiveFrame) -> str:
    """One line for a log: the same figures as the live view, models as ``name ready/desired``."""
    rec, now = frame.recorder, frame.now
    ttft = sorted(rec.recent_ttft.values(now))
    parts = [
        f"[{clock_text(frame.elapsed)}]",
        f"sent {rec.sent_rate.rate(now):.1f}/s",
        f"done {rec.done_rate.rate(now):.1f}/s",
        f"in-flight {rec.in_flight}",
        f"ok {rec.ok}",
        f"errors {rec.errored}",
        f"dropped {rec.dropped}",
        f"ttft p50 {seconds_text(_pct(ttft, 0.5))} p95 {seconds_text(_pct(ttft, 0.95))}",
    ]
    shown, hidden = _shown_models(frame)
    if shown:
        parts.append("| " + " ".join(f"{m.key} {_replicas_text(m)}" for m in shown))
        if hidden:
            parts.append(f"(+{hidden} more)")
    return " ".join(parts)


def _pct(ordered: Sequence[float], q: float) -> float | None:
    return percentile(ordered, q) if ordered else None


# ----- summary -------------------------------------------------------------------------------


def render_summary(summary: Summary) -> str:
    """The summary table printed at the end of a run."""
    info = summary.info
    mode = "streaming" if info.stream else "non-streaming"
    lines = [
        "",
        "inferscale loadtest summary" + ("  (interrupted)" if summary.interrupted else ""),
        f"  target      {info.url}  model {info.model}  ({info.api}, {mode})",
        f"  load        {info.load}  seed {info.seed}  max in flight {info.max_in_flight}",
        f"  elapsed     {summary.elapsed:.1f} s",
        f"  requests    attempted {count_text(summary.attempted)}   sent {count_text(summary.sent)}"
        f"   ok {count_text(summary.ok)}   errors {count_text(summary.errored)}"
        f"   dropped {count_text(summary.dropped)}"
        + (f"   cancelled {count_text(summary.cancelled)}" if summary.cancelled else ""),
        f"  throughput  {summary.rate(summary.sent):.2f} req/s sent   "
        f"{summary.rate(summary.ok):.2f} ok/s   "
        f"{count_text(summary.rate(summary.output_tokens))} output tok/s",
        f"  tokens      prompt {count_text(summary.prompt_tokens)}"
        f"   output {count_text(summary.output_tokens)}",
        "",
        f"  {'':<10}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}{'mean':>10}{'n':>9}",
    ]
    for label, q in (("TTFT", summary.ttft), ("latency", summary.latency)):
        if q is None:
            lines.append(f"  {label:<10}{'-':>10}{'':>40}{'0':>9}")
            continue
        cells = "".join(f"{seconds_text(v):>10}" for v in (q.p50, q.p95, q.p99, q.max, q.mean))
        lines.append(f"  {label:<10}{cells}{count_text(q.count):>9}")
    lines += ["", f"  errors      {errors_text(summary.errors)}"]
    if summary.replicas:
        width = max(10, *(len(k) for k in summary.replicas))
        lines += [
            "",
            f"  {'replicas':<{width + 2}}{'desired':>10}{'ready':>10}{'ups':>6}{'downs':>7}",
        ]
        for key, r in sorted(summary.replicas.items()):
            lines.append(
                f"  {key:<{width + 2}}{_span(r.min_desired, r.max_desired):>10}"
                f"{_span(r.min_ready, r.max_ready):>10}{r.scale_ups:>6}{r.scale_downs:>7}"
            )
        for event in summary.scale_events[-10:]:
            reason = f"  {event.reason}" if event.reason else ""
            lines.append(
                f"    at {clock_text(event.at)} {event.model} {event.before} -> {event.after}"
                f"{reason}"
            )
    elif summary.cluster_note:
        lines += ["", f"  replicas    {summary.cluster_note}"]
    if summary.trace is not None and (summary.trace.bad_lines or summary.trace.out_of_order):
        t = summary.trace
        lines.append(
            f"  trace       {t.rows} rows, {t.bad_lines} bad lines skipped, "
            f"{t.out_of_order} out of order"
        )
        lines.extend(f"              {p}" for p in t.problems)
    lines.extend(f"  note        {n}" for n in summary.notes)
    verdict = "PASS" if summary.passed else "FAIL"
    lines += [
        "",
        f"  result      {verdict}: failed {summary.failed_ratio:.2%} of requests"
        f" (limit {info.max_error_ratio:.2%})",
    ]
    if info.expect_scaling:
        seen = "seen" if summary.scaled_up_and_down else "NOT seen"
        lines.append(f"              scale-up and scale-down {seen} (--expect-scaling)")
    return "\n".join(lines)


def _span(low: int | None, high: int | None) -> str:
    if low is None or high is None:
        return "-"
    return str(low) if low == high else f"{low}..{high}"
