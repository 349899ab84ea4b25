"""Metrics, queueing, prefix caching, bad input, disconnects and failure injection, over HTTP.

Latency assertions read the sim's own model-time numbers (the ``x-inferscale-sim-*`` headers
and ``/metrics``), never the wall clock, so a busy machine cannot make them flaky.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from inferscale.sim.weights import preload, read_manifest
from tests.component.sim.conftest import MODEL, RunningSim, make_settings

VLLM_NAMES = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
]


def wait_for(predicate, timeout: float = 10.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def ask(base_url: str, content: str, max_tokens: int, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    return httpx.post(
        base_url + "/v1/chat/completions",
        json={**body, "max_tokens": max_tokens, **extra},
        timeout=30,
    )


def test_every_vllm_metric_name_with_model_name_label(sim):
    ask(sim.base_url, "hello", 3)
    text = httpx.get(sim.base_url + "/metrics").text
    assert httpx.get(sim.base_url + "/metrics").headers["content-type"].startswith("text/plain")
    for name in VLLM_NAMES:
        sample = (
            name if name.endswith("_total") or "num_" in name or "perc" in name else name + "_sum"
        )
        assert f'{sample}{{engine="0",model_name="{MODEL}"}}' in text, name
        assert f"# TYPE {name} " in text, name
    assert (
        f'vllm:time_to_first_token_seconds_bucket{{engine="0",model_name="{MODEL}",le="+Inf"}}'
        in text
    )


@pytest.mark.parametrize(
    ("dialect", "running", "waiting"),
    [("sglang", "sglang:num_running_reqs", "sglang:num_queue_reqs"),
     ("tgi", "tgi_batch_current_size", "tgi_queue_size")],
)  # fmt: skip
def test_other_dialects(dialect, running, waiting):
    with RunningSim(make_settings(dialect=dialect)) as server:
        ask(server.base_url, "hello", 2)
        metrics = server.metrics()
    assert metrics[running] == 0 and metrics[waiting] == 0
    assert not any(name.startswith("vllm:") for name in metrics)


def test_full_kv_cache_makes_requests_wait_and_ttft_grow():
    # 16 blocks of 16 tokens; each request needs ~7 (a few prompt tokens + 100 output), so two
    # run and the rest wait. A decode step is 10 ms, so a request runs for ~1 s.
    settings = make_settings(
        kv_capacity_tokens=256, max_model_len=256, step_base_seconds=0.01, block_size=16
    )
    with RunningSim(settings) as server:

        async def burst():
            async with openai.AsyncOpenAI(
                base_url=server.base_url + "/v1", api_key="x", max_retries=0
            ) as client:
                calls = [
                    client.chat.completions.with_raw_response.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"request {i}"}],
                        max_tokens=100,
                    )
                    for i in range(4)
                ]
                return await asyncio.gather(*calls)

        results: list = []
        runner = asyncio.new_event_loop()
        try:
            task = runner.create_task(burst())
            # Let the loop send the requests, then watch the queue from the sim's gauges.
            runner.run_until_complete(asyncio.sleep(0.05))
            seen = {}

            def queued():
                runner.run_until_complete(asyncio.sleep(0.02))
                seen.update(server.metrics())
                return seen["vllm:num_requests_waiting"] >= 1

            assert wait_for(queued, timeout=10), seen
            assert seen["vllm:kv_cache_usage_perc"] >= 0.8
            assert seen["vllm:num_requests_running"] == 2
            results = runner.run_until_complete(task)
        finally:
            runner.close()
        metrics = server.metrics()

    ttft = sorted(float(r.headers["x-inferscale-sim-ttft"]) for r in results)
    queue = sorted(float(r.headers["x-inferscale-sim-queue-time"]) for r in results)
    assert ttft[1] < 0.1  # the two that fit start at once
    assert ttft[2] > 0.9 and ttft[3] > 0.9  # the others waited a whole request's decode
    assert queue[2] > 0.9
    assert metrics["vllm:request_queue_time_seconds_sum"] > 1.8
    assert metrics["vllm:time_to_first_token_seconds_count"] == 4
    assert metrics["vllm:kv_cache_usage_perc"] == 0


def test_prefix_cache_hit_lowers_ttft():
    settings = make_settings(step_base_seconds=0.001, prefill_seconds_per_token=0.001)
    long_context = " ".join(f"fact {i} is true." for i in range(100))  # ~500 tokens
    with (
        RunningSim(settings) as server,
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0) as client,
    ):
        replies = [
            client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[
                    {"role": "system", "content": long_context},
                    {"role": "user", "content": question},
                ],
                max_tokens=2,
            )
            for question in ("first question?", "second question?")
        ]
        metrics = server.metrics()
    cold, warm = (float(r.headers["x-inferscale-sim-ttft"]) for r in replies)
    cold_usage, warm_usage = (r.parse().usage for r in replies)
    assert cold_usage.prompt_tokens_details.cached_tokens == 0
    assert warm_usage.prompt_tokens_details.cached_tokens >= 480
    assert warm < cold / 5
    assert metrics["vllm:prefix_cache_hits_total"] == warm_usage.prompt_tokens_details.cached_tokens
    queried = cold_usage.prompt_tokens + warm_usage.prompt_tokens
    assert metrics["vllm:prefix_cache_queries_total"] == queried


BAD = [
    ("malformed JSON", "/v1/chat/completions", b'{"model": ', 400),
    ("not an object", "/v1/chat/completions", b"[1, 2]", 400),
    ("missing messages", "/v1/chat/completions", b'{"model": "%s"}', 400),
    ("empty messages", "/v1/chat/completions", b'{"model": "%s", "messages": []}', 400),
    ("wrong-typed messages", "/v1/chat/completions", b'{"model": "%s", "messages": "hi"}', 400),
    (
        "wrong-typed max_tokens",
        "/v1/chat/completions",
        b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
        400,
    ),
    (
        "zero max_tokens",
        "/v1/completions",
        b'{"model": "%s", "prompt": "x", "max_tokens": 0}',
        400,
    ),
    (
        "max_tokens beyond the context",
        "/v1/chat/completions",
        b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}',
        400,
    ),
    ("two prompts", "/v1/completions", b'{"model": "%s", "prompt": ["a", "b"]}', 400),
    ("wrong-typed input", "/v1/embeddings", b'{"model": "%s", "input": {"a": 1}}', 400),
    (
        "unknown model",
        "/v1/chat/completions",
        b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
        404,
    ),
    ("unknown model, embeddings", "/v1/embeddings", b'{"model": "nope", "input": "x"}', 404),
    ("unknown path", "/v1/nothing", b"{}", 404),
    ("oversized body", "/v1/chat/completions", b"x" * (200 * 1024), 413),
]


@pytest.mark.parametrize(("case", "path", "body", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_an_openai_error_and_the_right_4xx(sim, case, path, body, status):
    if b"%s" in body:
        body = body.replace(b"%s", MODEL.encode())
    response = httpx.post(
        sim.base_url + path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    # The server is still fine afterwards.
    assert ask(sim.base_url, "still there?", 2).status_code == 200


def test_wrong_method_is_405_with_an_error_object(sim):
    response = httpx.get(sim.base_url + "/v1/chat/completions")
    assert response.status_code == 405 and "error" in response.json()


def test_sdk_raises_typed_errors(sim):
    with openai.OpenAI(base_url=sim.base_url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=10_000
            )
    assert info.value.code == "context_length_exceeded"


def test_disconnect_mid_stream_frees_the_sequence_at_once():
    # 20 ms per step and 1,000 tokens: the request would hold its blocks for 20 s.
    settings = make_settings(step_base_seconds=0.02)
    with (
        RunningSim(settings) as server,
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0) as client,
    ):
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "tell me a long story"}],
            max_tokens=1000,
            stream=True,
        )
        first = next(iter(stream))
        assert first.choices[0].delta.content
        busy = server.metrics()
        assert busy["vllm:num_requests_running"] == 1 and busy["vllm:kv_cache_usage_perc"] > 0
        stream.close()
        freed = wait_for(
            lambda: (
                (m := server.metrics())["vllm:num_requests_running"] == 0
                and m["vllm:kv_cache_usage_perc"] == 0
            ),
            timeout=3,
        )
        assert freed, server.metrics()
        generated = server.metrics()["vllm:generation_tokens_total"]
    assert generated < 500  # it stopped long before the 1,000 tokens


def test_startup_delay_keeps_health_and_inference_at_503_until_ready():
    with RunningSim(make_settings(startup_delay_seconds=0.5)) as server:
        early = httpx.get(server.base_url + "/health")
        refused = ask(server.base_url, "x", 2)
        assert early.status_code == 503
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "model_loading"
        assert wait_for(lambda: httpx.get(server.base_url + "/health").status_code == 200, 10)
        assert ask(server.base_url, "x", 2).status_code == 200


def test_injected_errors_and_crash_after_n_requests():
    crashes = []
    failures = {"error_rate": 1.0, "error_status": 503, "crash_after_requests": 2}
    with RunningSim(make_settings(failures=failures), on_crash=lambda: crashes.append(1)) as server:
        first = ask(server.base_url, "x", 2)
        assert first.status_code == 503 and first.json()["error"]["code"] == "injected_failure"
        assert ask(server.base_url, "x", 2).status_code == 503
        assert crashes == []
        ask(server.base_url, "x", 2)
        assert crashes == [1]


def test_hang_after_n_requests_stops_answering_even_health():
    with RunningSim(make_settings(failures={"hang_after_requests": 1})) as server:
        assert ask(server.base_url, "x", 2).status_code == 200
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                server.base_url + "/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 1},
                timeout=0.5,
            )
        with pytest.raises(httpx.TimeoutException):
            httpx.get(server.base_url + "/health", timeout=0.5)
        with pytest.raises(httpx.TimeoutException):
            httpx.get(server.base_url + "/metrics", timeout=0.5)


def test_latency_spikes_show_in_inter_token_latency():
    settings = make_settings(step_base_seconds=0.001, spike_probability=0.5, spike_seconds=0.05)
    with RunningSim(settings) as server:
        ask(server.base_url, "x", 20)
        metrics = server.metrics()
    mean_itl = (
        metrics["vllm:inter_token_latency_seconds_sum"]
        / metrics["vllm:inter_token_latency_seconds_count"]
    )
    assert mean_itl > 0.01


def test_a_filled_weight_cache_starts_sooner_and_says_so(tmp_path):
    # The zero preset has no phases of its own: give it the H100's, 60 s scaled to 0.6 s.
    settings = make_settings(startup_delay_seconds=0.6).model_copy(
        update={"preset": "llama-3.1-8b-h100", "weights_cache": str(tmp_path)}
    )
    cold = settings.startup_plan()
    asyncio.run(preload(tmp_path, MODEL, "llama-3.1-8b-h100", 0.0))
    warm = settings.startup_plan(read_manifest(tmp_path))
    assert (cold.source, warm.source) == ("network", "cache")
    assert warm.total <= 0.5 * cold.total
    with RunningSim(settings) as server:
        text = httpx.get(server.base_url + "/metrics").text
        assert 'phase="weight_load",source="cache"' in text
        assert wait_for(lambda: httpx.get(server.base_url + "/health").status_code == 200, 10)
