"""The router's spilled-token counters: what one spilled request adds, and their exposition."""

from __future__ import annotations

import pytest

from inferscale.router.access import spilled_tokens
from inferscale.router.metrics import RouterMetrics


@pytest.mark.parametrize(
    ("usage", "body_bytes", "expected"),
    [
        ({"prompt_tokens": 900, "completion_tokens": 40}, 400, (900, 40)),
        # No usage (a provider that reports none): the prompt is estimated, the output unknown.
        (None, 4000, (1000, None)),
        ({"prompt_tokens": True, "completion_tokens": -3}, 400, (100, None)),
        ({"completion_tokens": 7}, 8, (2, 7)),
        ("not usage", 0, (0, None)),
    ],
)
def test_spilled_tokens_take_the_usage_else_the_estimate(usage, body_bytes, expected):
    assert spilled_tokens(usage, body_bytes) == expected


def test_spilled_token_counters_add_up_per_model_and_kind_and_are_exported():
    metrics = RouterMetrics()
    metrics.count_spilled("llama", 900, 40)
    metrics.count_spilled("llama", 100, None)  # output unknown: nothing added for it
    metrics.count_spilled("qwen", 5, 0)
    assert metrics.spillover_tokens == {
        ("llama", "prompt"): 1000,
        ("llama", "completion"): 40,
        ("qwen", "prompt"): 5,
        ("qwen", "completion"): 0,
    }
    text = metrics.render(in_flight=(), held=(), table_version=1)
    assert "# TYPE inferscale_router_spillover_tokens_total counter" in text
    assert 'inferscale_router_spillover_tokens_total{model="llama",kind="prompt"} 1000' in text
    assert 'inferscale_router_spillover_tokens_total{model="llama",kind="completion"} 40' in text
