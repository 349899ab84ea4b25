"""The router's Prometheus metrics: plain counters and histograms, rendered as text format 0.0.4.

Hand-rolled rather than prometheus_client because the hot path adds to a few dicts per request
and nothing else (no locks, no label objects). Gauges that mirror live state (in flight per
endpoint, held per model) are read from the router at render time. One instance per app; no
module-level registry.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[object]) -> str:
    inner = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}" if inner else ""


class Histogram:
    """A histogram keyed by a label tuple."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        """Fixed upper bounds (``+Inf`` is implicit)."""
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count one observation: per-bucket counts, then sum, then count."""
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.buckets) + 3)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-2] += value
        row[-1] += 1

    def render(self, name: str, labels: Sequence[str]) -> Iterable[str]:
        """Exposition lines (cumulative buckets)."""
        for key, row in self.series.items():
            acc = 0.0
            for i, bound in enumerate((*self.buckets, float("inf"))):
                acc += row[i]
                le = "+Inf" if bound == float("inf") else repr(bound)
                yield f"{name}_bucket{_labels((*labels, 'le'), (*key, le))} {acc:g}"
            yield f"{name}_sum{_labels(labels, key)} {row[-2]!r}"
            yield f"{name}_count{_labels(labels, key)} {row[-1]:g}"


COUNTERS: Final[tuple[tuple[str, str, tuple[str, ...], str], ...]] = (
    # name, the RouterMetrics attribute holding it (keyed by one label value or a tuple of
    # them), its label names, its help text
    ("inferscale_router_prompt_tokens_total", "tokens_in", ("model",), "Prompt tokens (usage)."),
    ("inferscale_router_completion_tokens_total", "tokens_out", ("model",), "Output tokens."),
    ("inferscale_router_retries_total", "retries", ("model",), "Attempts after the first."),
    (
        "inferscale_router_ejections_total",
        "ejections",
        ("endpoint",),
        "Circuit-breaker ejections.",
    ),
    (
        "inferscale_router_provider_ejections_total",
        "provider_ejections",
        ("provider",),
        "Circuit-breaker ejections of hosted providers.",
    ),
    (
        "inferscale_router_held_total",
        "held_total",
        ("model", "outcome"),
        "Held requests by outcome.",
    ),
    (
        "inferscale_router_spillover_total",
        "spillover",
        ("model", "reason"),
        "Requests sent to spillover backends first, by why.",
    ),
    (
        "inferscale_router_spillover_tokens_total",
        "spillover_tokens",
        ("model", "kind"),
        "Tokens of the requests spillover backends answered: prompt (the provider's usage, else"
        " the router's estimate) and completion (the provider's usage, when it reports one).",
    ),
    (
        "inferscale_router_provider_failures_total",
        "provider_failures",
        ("provider", "reason"),
        "Failed provider calls, by reason.",
    ),
    (
        "inferscale_router_provider_key_requests_total",
        "provider_key_requests",
        ("provider", "key", "outcome"),
        "Provider calls per API key (its id, never the key), by outcome.",
    ),
    (
        "inferscale_router_mirror_requests_total",
        "mirrored",
        ("model", "backend", "outcome"),
        "Copies of requests sent to mirror backends, by outcome.",
    ),
    ("inferscale_router_failovers_total", "failovers", ("model",), "Steps after a failed one."),
    (
        "inferscale_router_spend_capped_total",
        "spend_capped",
        ("route",),
        "Requests that would have spilled over past a spend cap.",
    ),
    (
        "inferscale_router_spend_total",
        "spend_total",
        ("route", "backend"),
        "Money spent on hosted providers.",
    ),
    (
        "inferscale_router_cache_requests_total",
        "cache_requests",
        ("model", "outcome"),
        "Cacheable requests by outcome: hit_exact, hit_semantic, miss, bypass.",
    ),
    (
        "inferscale_router_cache_tokens_saved_total",
        "cache_tokens_saved",
        ("model", "kind"),
        "Prompt and completion tokens of answers served from the cache.",
    ),
    (
        "inferscale_router_cache_cost_saved_total",
        "cache_cost_saved",
        ("model",),
        "What the answers served from the cache cost the first time at a provider's prices.",
    ),
    (
        "inferscale_router_selections_total",
        "selections",
        ("route", "model"),
        "Requests a selecting route sent to each of its candidates.",
    ),
    (
        "inferscale_router_selection_cost_saved_total",
        "cost_saved",
        ("route",),
        "What selected answers would have cost more on the route's strongest candidate.",
    ),
)
"""Every counter of :class:`RouterMetrics`, in exposition order."""


class RouterMetrics:
    """Everything the router counts."""

    def __init__(self) -> None:
        """All zero."""
        self.requests: dict[tuple[str, str, int], int] = {}
        """(model, pod, status) → requests answered."""
        self.latency = Histogram()
        """model → whole-request seconds."""
        self.ttft = Histogram()
        """model → seconds to the first streamed chunk from the engine."""
        self.tokens_in: dict[str, int] = {}
        self.tokens_out: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.ejections: dict[str, int] = {}
        """pod → circuit-breaker ejections."""
        self.provider_ejections: dict[str, int] = {}
        """provider id → circuit-breaker ejections."""
        self.held_total: dict[tuple[str, str], int] = {}
        """(model, outcome) → held requests by how the hold ended."""
        self.spillover: dict[tuple[str, str], int] = {}
        """(model, reason) → requests sent to spillover first (saturated, cold_start,
        hold_full)."""
        self.spillover_tokens: dict[tuple[str, str], int] = {}
        """(model, prompt or completion) → tokens of the requests spillover backends answered
        (the autoscaler's spilled token share)."""
        self.spend_capped: dict[str, int] = {}
        """route → requests that would have spilled over but a spend cap stopped."""
        self.failovers: dict[str, int] = {}
        """model → steps taken after a failed one (to spillover, replicas or fallback)."""
        self.provider_failures: dict[tuple[str, str], int] = {}
        """(provider, reason) → failed provider calls."""
        self.provider_key_requests: dict[tuple[str, str, str], int] = {}
        """(provider, key id, outcome) → provider calls (``ok``, ``refused``, a fault reason)."""
        self.mirrored: dict[tuple[str, str, str], int] = {}
        """(model, backend, outcome) → mirror copies."""
        self.spend_total: dict[tuple[str, str], float] = {}
        """(route, backend) → money spent."""
        self.cache_requests: dict[tuple[str, str], int] = {}
        """(model, outcome) → cacheable requests (hit_exact, hit_semantic, miss, bypass)."""
        self.cache_tokens_saved: dict[tuple[str, str], int] = {}
        """(model, prompt or completion) → tokens of answers served from the cache."""
        self.cache_cost_saved: dict[str, float] = {}
        """model → provider cost of the answers served from the cache."""
        self.selections: dict[tuple[str, str], int] = {}
        """(selecting route, chosen model) → requests."""
        self.cost_saved: dict[str, float] = {}
        """selecting route → money saved against always-strong (negative: spent more)."""

    def count_request(self, model: str, pod: str, status: int) -> None:
        """One answered request."""
        key = (model, pod, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def count_selection(self, route: str, model: str) -> None:
        """One request a selecting route sent to ``model``."""
        key = (route, model)
        self.selections[key] = self.selections.get(key, 0) + 1

    def add_cost_saved(self, route: str, amount: float) -> None:
        """Money one selected answer saved against the route's strongest candidate."""
        self.cost_saved[route] = self.cost_saved.get(route, 0.0) + amount

    def count_spilled(self, model: str, prompt: int, completion: int | None) -> None:
        """The tokens of one request a spillover backend answered (completion None: unknown)."""
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n is not None and n >= 0:
                key = (model, kind)
                self.spillover_tokens[key] = self.spillover_tokens.get(key, 0) + n

    def bump(self, table: dict[str, int], key: str, by: int = 1) -> None:
        """Add to a counter keyed by one label."""
        table[key] = table.get(key, 0) + by

    def render(
        self,
        in_flight: Iterable[tuple[str, str, int]],
        held: Iterable[tuple[str, int]],
        table_version: int,
        spend: Iterable[tuple[str, float, float]] = (),
        extra: Iterable[str] = (),
        pending_prompt_tokens: Iterable[tuple[str, str, int]] = (),
    ) -> str:
        """The whole exposition, with the live gauges (and others' lines) passed in.

        ``spend`` holds this router's (route, hour, day) spend in the current UTC windows;
        ``pending_prompt_tokens`` (model, endpoint, tokens) the estimated prompt tokens of its
        requests there that have no first token yet (what ``leastPrefill`` and
        ``spillover.promptTokensPerReplica`` read).
        """
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        family("inferscale_router_requests_total", "counter", "Requests answered.")
        for (model, pod, status), n in self.requests.items():
            labels = _labels(("model", "endpoint", "status"), (model, pod, status))
            out.append(f"inferscale_router_requests_total{labels} {n}")
        family("inferscale_router_request_duration_seconds", "histogram", "Whole request.")
        out.extend(self.latency.render("inferscale_router_request_duration_seconds", ("model",)))
        family(
            "inferscale_router_time_to_first_token_seconds",
            "histogram",
            "Streams: request received to the engine's first chunk.",
        )
        out.extend(self.ttft.render("inferscale_router_time_to_first_token_seconds", ("model",)))
        for name, attribute, label_names, text in COUNTERS:
            table: Mapping[Any, float] = getattr(self, attribute)
            family(name, "counter", text)
            out.extend(
                f"{name}{_labels(label_names, k if isinstance(k, tuple) else (k,))} {v!r}"
                for k, v in table.items()
            )
        self._gauges(family, out, in_flight, held, table_version, spend, pending_prompt_tokens)
        out.extend(extra)
        return "\n".join(out) + "\n"

    @staticmethod
    def _gauges(
        family: Callable[[str, str, str], None],
        out: list[str],
        in_flight: Iterable[tuple[str, str, int]],
        held: Iterable[tuple[str, int]],
        table_version: int,
        spend: Iterable[tuple[str, float, float]],
        pending_prompt_tokens: Iterable[tuple[str, str, int]],
    ) -> None:
        """The gauges that mirror live state, read at render time."""
        family(
            "inferscale_router_spend",
            "gauge",
            "This router's spend in the current UTC hour and day.",
        )
        for route, hour, day in spend:
            out.append(
                f"inferscale_router_spend{_labels(('route', 'window'), (route, 'hour'))} {hour!r}"
            )
            out.append(
                f"inferscale_router_spend{_labels(('route', 'window'), (route, 'day'))} {day!r}"
            )
        family("inferscale_router_in_flight", "gauge", "Requests in flight per endpoint.")
        out.extend(
            f"inferscale_router_in_flight{_labels(('model', 'endpoint'), (m, p))} {n}"
            for m, p, n in in_flight
        )
        family(
            "inferscale_router_pending_prompt_tokens",
            "gauge",
            "Estimated prompt tokens of requests with no first token yet, per endpoint.",
        )
        out.extend(
            f"inferscale_router_pending_prompt_tokens{_labels(('model', 'endpoint'), (m, p))} {n}"
            for m, p, n in pending_prompt_tokens
        )
        family("inferscale_router_held_requests", "gauge", "Requests held per model now.")
        out.extend(
            f"inferscale_router_held_requests{_labels(('model',), (m,))} {n}" for m, n in held
        )
        family("inferscale_router_table_version", "gauge", "Version of the routing table held.")
        out.append(f"inferscale_router_table_version {table_version}")


def connection_metric_lines(open_now: int, limit: int, refused: int) -> list[str]:
    """The client-connection cap's series: open connections, the cap, and those refused."""
    return [
        "# HELP inferscale_router_client_connections Client connections open now.",
        "# TYPE inferscale_router_client_connections gauge",
        f"inferscale_router_client_connections {open_now}",
        "# HELP inferscale_router_client_connections_max The cap on open client connections.",
        "# TYPE inferscale_router_client_connections_max gauge",
        f"inferscale_router_client_connections_max {limit}",
        "# HELP inferscale_router_client_connections_refused_total Connections refused past"
        " the cap (answered 503 and closed).",
        "# TYPE inferscale_router_client_connections_refused_total counter",
        f"inferscale_router_client_connections_refused_total {refused}",
    ]
