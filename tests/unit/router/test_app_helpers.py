"""Pure helpers of the app: engine-metric parsing, stream usage, error bodies."""

from __future__ import annotations

import json
from typing import get_args

from inferscale.api.v1alpha1.inference_model import Engine
from inferscale.router.codec import error_body, sse_error, stream_usage
from inferscale.router.scrape import ENGINE_METRICS, parse_engine_metrics

VLLM = """# HELP vllm:num_requests_waiting x
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="0",model_name="m"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42
"""


def test_every_engine_with_a_queue_gauge_is_scraped():
    engines = set(get_args(Engine))
    assert set(ENGINE_METRICS) == engines - {"trtllm"}
    assert parse_engine_metrics(
        "llamacpp:requests_processing 2\nllamacpp:requests_deferred 3\n", ENGINE_METRICS["llamacpp"]
    ) == (3, 0.0)


def test_parse_engine_metrics():
    assert parse_engine_metrics(
        VLLM, ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
    ) == (3, 0.42)
    assert parse_engine_metrics("tgi_queue_size 5\n", ("tgi_queue_size", "")) == (5, 0.0)
    assert parse_engine_metrics("", ("a", "b")) == (0, 0.0)


def test_stream_usage_reads_the_last_usage_event():
    tail = (
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert stream_usage(tail) == {"prompt_tokens": 5, "completion_tokens": 7}
    assert stream_usage(b'data: {"usage": {"prompt_tokens": 1}}\n\n') == {"prompt_tokens": 1}
    assert stream_usage(b"data: [DONE]\n\n") is None
    assert stream_usage(b'"usage":{"broken') is None
    assert stream_usage(b'data: {"usage":{"x": \n') is None


def test_error_bodies_are_openai_shaped():
    doc = json.loads(error_body(404, "nope", param="model", code="model_not_found"))
    assert doc == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    event = sse_error(502, "broke")
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["error"]["type"] == "upstream_error"
