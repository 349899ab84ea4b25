"""Thousands of malformed requests: none gets a 5xx from the router, none crashes it."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.component.router.conftest import MODEL, RunningRouter, address

PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "", "nope"]) | json_values,
        "messages": json_values,
        "prompt": json_values,
        "input": json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "max_tokens": st.integers(-5, 50) | json_values,
    },
)
bodies = (
    fields.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | fields.map(lambda d: json.dumps(d).encode()[: max(1, len(json.dumps(d)) // 2)])
    | st.integers(1, 3000).map(lambda n: b"[" * n)
)


@pytest.fixture(scope="module")
def fuzz_router(sims):
    with RunningRouter(max_request_bytes=8192) as r:
        r.push({MODEL: [address(s) for s in sims]})
        with httpx.Client(base_url=r.base_url, timeout=10) as client:
            yield r, client


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(PATHS),
    body=bodies,
    ctype=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_malformed_requests_never_get_a_5xx(fuzz_router, path, body, ctype):
    router, client = fuzz_router
    r = client.post(path, content=body, headers={"Content-Type": ctype} if ctype else {})
    assert r.status_code < 500, (r.status_code, body[:200], r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json()


def test_the_router_still_serves_after_the_fuzzing(fuzz_router):
    router, client = fuzz_router
    r = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
    )
    assert r.status_code == 200
    assert router.metric("inferscale_router_requests_total", status="500") == 0
