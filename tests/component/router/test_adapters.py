"""Routing by LoRA adapter through the router to real sims, each holding other adapters."""

from __future__ import annotations

import httpx
import openai
import pytest

from inferscale.sim.settings import SimSettings
from tests.component.router.conftest import MODEL, RunningRouter, address
from tests.component.sim.conftest import RunningSim, make_settings

MESSAGES = [{"role": "user", "content": "hello"}]


def lora_sim(*modules: str) -> RunningSim:
    base = make_settings().model_dump()
    return RunningSim(SimSettings(**base | {"enable_lora": True, "lora_modules": list(modules)}))


@pytest.fixture(scope="module")
def lora_sims():
    with lora_sim("sql=/l/sql") as a, lora_sim("chat=/l/chat") as b:
        yield a, b


@pytest.fixture
def routed(router: RunningRouter, lora_sims) -> RunningRouter:
    a, b = lora_sims
    endpoints = [
        {"pod": "pod-a", "address": address(a), "adapters": ["sql"]},
        {"pod": "pod-b", "address": address(b), "adapters": ["chat"]},
    ]
    table = {MODEL: {"endpoints": endpoints, "adapters": ["sql", "chat", "new"]}}
    assert router.push(table).status_code == 200
    return router


def client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url + "/v1", api_key="unused", max_retries=0)


def served(sim: RunningSim) -> float:
    return sim.metrics().get("vllm:generation_tokens_total", 0.0) / 2  # 2 tokens each


def test_each_adapter_goes_to_the_replica_that_holds_it(routed, lora_sims):
    a, b = lora_sims
    before = served(a), served(b)
    with client(routed) as c:
        # A replica without the adapter answers 404: each of these would fail if misrouted.
        for _ in range(6):
            out = c.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=2)
            assert out.model == "sql"  # forwarded with the adapter's name as model
        for _ in range(4):
            out = c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=2)
            assert out.model == "chat"
    assert (served(a) - before[0], served(b) - before[1]) == (6, 4)


def test_the_base_model_still_balances_over_both(routed, lora_sims):
    a, b = lora_sims
    before = served(a), served(b)
    with client(routed) as c:
        for _ in range(4):
            c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert served(a) - before[0] >= 1 and served(b) - before[1] >= 1


def test_an_adapter_no_replica_holds_yet_goes_to_any_and_gets_the_engines_answer(routed):
    with client(routed) as c, pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="new", messages=MESSAGES, max_tokens=2)
    assert "new" in str(info.value)  # the engine's own 404, relayed


def test_an_unknown_adapter_is_404_in_openais_shape(routed):
    resp = httpx.post(
        routed.base_url + "/v1/chat/completions",
        json={"model": "gone", "messages": MESSAGES},
        timeout=10,
    )
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["message"] == "The model `gone` does not exist."


def test_models_lists_the_adapters(routed):
    with client(routed) as c:
        ids = {m.id for m in c.models.list().data}
    assert ids == {MODEL, "sql", "chat", "new"}


def test_a_table_whose_adapter_shadows_a_model_is_refused(router, lora_sims):
    a, _ = lora_sims
    table = {MODEL: {"endpoints": [address(a)], "adapters": ["other"]}, "other": [address(a)]}
    resp = router.push(table)
    assert resp.status_code == 400
    assert "adapter names served twice" in resp.text
