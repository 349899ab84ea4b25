"""Prometheus text exposition of the engine's state, in vLLM's, SGLang's or TGI's names.

Hand-rolled (text format 0.0.4) rather than ``prometheus_client``: the sim keeps its numbers in
:class:`~inferscale.sim.stats.EngineStats` already, and rendering them on scrape costs nothing
on the request path. Names and labels follow ``research/anchors-autoscaling.md`` section 3:

- vLLM V1: ``vllm:*`` with labels ``model_name`` and ``engine`` (always ``"0"``: one engine core);
  counters are exposed with ``_total`` as ``prometheus_client`` does.
- SGLang: ``sglang:*`` with ``model_name``.
- TGI: ``tgi_*`` without labels; TGI has no TTFT histogram and no KV-usage gauge, so neither is
  exported in that dialect.

Histograms use vLLM's buckets in every dialect.
"""

from __future__ import annotations

from collections.abc import Callable

from inferscale.sim.model import LatencyModel
from inferscale.sim.startup import StartupPlan
from inferscale.sim.stats import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Renderer = Callable[[LatencyModel, str], str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    """Collects metric families into exposition text."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.labels = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())

    def _head(self, name: str, kind: str, doc: str) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")

    def _braces(self, extra: str = "") -> str:
        inner = ",".join(p for p in (self.labels, extra) if p)
        return f"{{{inner}}}" if inner else ""

    def gauge(self, name: str, doc: str, value: float) -> None:
        self._head(name, "gauge", doc)
        self.lines.append(f"{name}{self._braces()} {float(value)!r}")

    def counter(self, name: str, doc: str, value: float) -> None:
        self._head(name, "counter", doc)
        self.lines.append(f"{name}{self._braces()} {float(value)!r}")

    def histogram(self, name: str, doc: str, hist: Histogram) -> None:
        self._head(name, "histogram", doc)
        cumulative = hist.cumulative()
        for bound, count in zip(hist.bounds, cumulative, strict=False):
            le = f'le="{float(bound)!r}"'
            self.lines.append(f"{name}_bucket{self._braces(le)} {float(count)!r}")
        inf = 'le="+Inf"'
        self.lines.append(f"{name}_bucket{self._braces(inf)} {float(cumulative[-1])!r}")
        self.lines.append(f"{name}_count{self._braces()} {float(hist.count)!r}")
        self.lines.append(f"{name}_sum{self._braces()} {float(hist.total)!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_vllm_lora_info(model: LatencyModel, timestamp: float) -> str:
    """``vllm:lora_requests_info``, as vLLM V1 exports it when LoRA is on.

    One sample whose labels carry the state (adapter names joined by commas) and whose value is
    the wall-clock time it was set, so readers take the newest series. vLLM keeps every label set
    it ever set as a series of its own; the sim exports only the current one.
    """
    labels = {
        "max_lora": str(model.params.max_loras),
        "waiting_lora_adapters": ",".join(model.waiting_adapters),
        "running_lora_adapters": ",".join(model.running_adapters),
    }
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return (
        "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
        "# TYPE vllm:lora_requests_info gauge\n"
        f"vllm:lora_requests_info{{{inner}}} {float(timestamp)!r}\n"
    )


def render_startup(plan: StartupPlan, model_name: str) -> str:
    """``inferscale_sim_startup_phase_seconds``: each start-up phase, labelled with the source.

    The sim's own name (no engine exports its phases): what a dashboard compares between a
    replica that loaded from the weight cache and one that downloaded.
    """
    lines = [
        "# HELP inferscale_sim_startup_phase_seconds Seconds each start-up phase took.",
        "# TYPE inferscale_sim_startup_phase_seconds gauge",
    ]
    for phase, seconds in plan.phases:
        labels = f'model_name="{_escape(model_name)}",phase="{phase}",source="{plan.source}"'
        lines.append(f"inferscale_sim_startup_phase_seconds{{{labels}}} {float(seconds)!r}")
    return "\n".join(lines) + "\n"


def render_vllm(model: LatencyModel, model_name: str) -> str:
    """Render in vLLM V1's names (``vllm/v1/metrics/loggers.py``)."""
    s = model.stats
    w = _Writer({"engine": "0", "model_name": model_name})
    w.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        model.num_running,
    )
    w.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        model.num_waiting,
    )
    w.gauge(
        "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", model.kv_usage
    )
    w.counter(
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        s.prefix_cache_queries,
    )
    w.counter(
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        s.prefix_cache_hits,
    )
    if model.host_blocks:
        # vLLM counts a KV connector's (its CPU offloading's) hits apart, over the tokens the
        # GPU cache missed; it has these counters only with a connector, the sim with a host tier.
        w.counter(
            "vllm:external_prefix_cache_queries_total",
            "External prefix cache queries from KV connector, in queried tokens.",
            s.prefix_cache_queries - s.prefix_cache_hits,
        )
        w.counter(
            "vllm:external_prefix_cache_hits_total",
            "External prefix cache hits from KV connector, in cached tokens.",
            s.host_cache_hits,
        )
    w.counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", s.prompt_tokens)
    w.counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        s.generation_tokens,
    )
    w.histogram(
        "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft
    )
    w.histogram(
        "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.itl
    )
    w.histogram(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        s.tpot,
    )
    w.histogram(
        "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e
    )
    w.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        s.queue_time,
    )
    w.histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", s.prompt_len)
    w.histogram(
        "vllm:request_generation_tokens", "Number of generation tokens processed.", s.generation_len
    )
    return w.text()


def render_sglang(model: LatencyModel, model_name: str) -> str:
    """Render in SGLang's names (``python/sglang/srt/metrics/collector.py``)."""
    s = model.stats
    w = _Writer({"model_name": model_name})
    used_tokens = model.used_blocks * model.params.block_size
    hit_rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
    w.gauge("sglang:num_running_reqs", "The number of running requests.", model.num_running)
    w.gauge(
        "sglang:num_queue_reqs", "The number of requests in the waiting queue.", model.num_waiting
    )
    w.gauge("sglang:token_usage", "The token usage.", model.kv_usage)
    w.gauge("sglang:num_used_tokens", "The number of used tokens.", used_tokens)
    w.gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", hit_rate)
    w.counter("sglang:prompt_tokens_total", "Number of prefill tokens processed.", s.prompt_tokens)
    w.counter(
        "sglang:generation_tokens_total",
        "Number of generation tokens processed.",
        s.generation_tokens,
    )
    w.counter("sglang:cached_tokens_total", "Number of cached prompt tokens.", s.prefix_cache_hits)
    w.counter("sglang:num_requests_total", "Number of requests processed.", s.requests_finished)
    w.histogram(
        "sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft
    )
    w.histogram(
        "sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.itl
    )
    w.histogram(
        "sglang:e2e_request_latency_seconds",
        "Histogram of End-to-end request latency in seconds",
        s.e2e,
    )
    w.histogram("sglang:queue_time_seconds", "Histogram of queueing time in seconds.", s.queue_time)
    return w.text()


def render_tgi(model: LatencyModel, model_name: str) -> str:
    """Render in TGI's names (``docs/source/reference/metrics.md``); TGI labels nothing by model."""
    del model_name
    s = model.stats
    w = _Writer({})
    w.gauge("tgi_batch_current_size", "Current batch size", model.num_running)
    w.gauge("tgi_queue_size", "Current queue size", model.num_waiting)
    w.counter(
        "tgi_request_count", "Total number of requests", s.requests_finished + s.requests_cancelled
    )
    w.counter("tgi_request_success", "Number of successful requests", s.requests_finished)
    w.histogram("tgi_request_duration", "Request duration", s.e2e)
    w.histogram("tgi_request_queue_duration", "Request queue duration", s.queue_time)
    w.histogram(
        "tgi_request_mean_time_per_token_duration", "Mean time per token per request", s.tpot
    )
    w.histogram("tgi_request_input_length", "Input token length per request", s.prompt_len)
    w.histogram("tgi_request_generated_tokens", "Generated tokens per request", s.generation_len)
    return w.text()


RENDERERS: dict[str, Renderer] = {"vllm": render_vllm, "sglang": render_sglang, "tgi": render_tgi}
