"""LoRA adapters on the sim, through the official openai SDK and vLLM's load/unload endpoints."""

from __future__ import annotations

import argparse
import time

import httpx
import openai
import pytest
from pydantic import ValidationError

from inferscale.cli import sim as sim_cli
from inferscale.reconcile.engines import ENGINES
from inferscale.sim.settings import SimSettings
from tests.component.sim.conftest import MODEL, RunningSim, make_settings

MESSAGES = [{"role": "user", "content": "Hi there"}]
LOAD_SECONDS = 0.2
SWAP_SECONDS = 0.25


def lora_settings(**extra) -> SimSettings:
    base = make_settings(max_loras=1, lora_swap_seconds=SWAP_SECONDS).model_dump()
    return SimSettings(
        **base
        | {"enable_lora": True, "lora_modules": ["sql=/loras/sql"], "lora_load_seconds": 0}
        | extra
    )


@pytest.fixture(scope="module")
def lora_sim():
    with RunningSim(lora_settings(lora_load_seconds=LOAD_SECONDS)) as running:
        yield running


@pytest.fixture
def client(lora_sim):
    with openai.OpenAI(base_url=lora_sim.base_url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def post(sim, path, body):
    return httpx.post(sim.base_url + path, json=body, timeout=10)


def test_models_lists_adapters_with_the_base_as_parent(client):
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) >= {MODEL, "sql"}
    assert cards["sql"].parent == MODEL and cards["sql"].root == "/loras/sql"
    assert cards[MODEL].parent is None


def test_requests_naming_an_adapter_are_served_under_it(client):
    chat = client.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=4)
    assert chat.model == "sql" and chat.usage.completion_tokens == 4
    chunks = list(
        client.completions.create(model="sql", prompt="SELECT", max_tokens=3, stream=True)
    )
    assert {c.model for c in chunks} == {"sql"}
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_an_unknown_adapter_is_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    body = error.value.body
    assert body["message"] == "The model `nope` does not exist."
    assert body["type"] == "invalid_request_error" and body["code"] == "model_not_found"


def test_load_takes_the_loading_time_then_serves_and_unload_removes(lora_sim, client):
    started = time.monotonic()
    loaded = post(lora_sim, "/v1/load_lora_adapter", {"lora_name": "chat", "lora_path": "/l/c"})
    assert time.monotonic() - started >= LOAD_SECONDS
    assert loaded.status_code == 200
    assert loaded.text == "Success: LoRA adapter 'chat' added successfully."
    assert "chat" in {m.id for m in client.models.list().data}
    assert client.chat.completions.create(model="chat", messages=MESSAGES).model == "chat"

    gone = post(lora_sim, "/v1/unload_lora_adapter", {"lora_name": "chat"})
    assert gone.status_code == 200
    assert gone.text == "Success: LoRA adapter 'chat' removed successfully."
    assert "chat" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="chat", messages=MESSAGES)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/x"}, 400,
         "The lora adapter 'sql' has already been loaded."),
        ("/v1/load_lora_adapter", {"lora_name": "x"}, 400,
         "Both 'lora_name' and 'lora_path' must be provided."),
        ("/v1/load_lora_adapter", {"lora_name": MODEL, "lora_path": "/x"}, 400,
         f"The lora adapter '{MODEL}' has the base model's name."),
        ("/v1/load_lora_adapter", {"lora_name": 3, "lora_path": "/x"}, 400, "Invalid request"),
        ("/v1/unload_lora_adapter", {"lora_name": "nope"}, 404,
         "The lora adapter 'nope' cannot be found."),
        ("/v1/unload_lora_adapter", {}, 400,
         "'lora_name' needs to be provided to unload a LoRA adapter."),
    ],
)  # fmt: skip
def test_bad_loads_and_unloads_get_vllms_status_codes(lora_sim, path, body, status, message):
    answer = post(lora_sim, path, body)
    assert answer.status_code == status
    assert answer.json()["error"]["message"].startswith(message)


def test_load_endpoints_refuse_bad_json(lora_sim):
    answer = httpx.post(lora_sim.base_url + "/v1/load_lora_adapter", content=b"{", timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "The request body is not valid JSON."


def test_without_enable_lora_the_endpoints_are_404(sim):
    answer = post(sim, "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/a"})
    assert answer.status_code == 404
    assert "--enable-lora" in answer.json()["error"]["message"]
    assert "vllm:lora_requests_info" not in httpx.get(sim.base_url + "/metrics").text


def ttft(sim, model):
    answer = post(sim, "/v1/completions", {"model": model, "prompt": "hello", "max_tokens": 1})
    assert answer.status_code == 200
    return float(answer.headers["x-inferscale-sim-ttft"])


def test_a_swap_costs_time_only_when_the_adapter_is_not_in_its_slot():
    with RunningSim(lora_settings(lora_modules=["a=/a", "b=/b"])) as sim:
        assert ttft(sim, MODEL) == 0.0
        assert ttft(sim, "a") == pytest.approx(SWAP_SECONDS)
        assert ttft(sim, "a") == 0.0
        assert ttft(sim, "b") == pytest.approx(SWAP_SECONDS)  # one slot: b evicts a


def test_lora_requests_info_gauge_as_vllm_exports_it(lora_sim):
    text = httpx.get(lora_sim.base_url + "/metrics").text
    assert "# TYPE vllm:lora_requests_info gauge" in text
    (line,) = [x for x in text.splitlines() if x.startswith("vllm:lora_requests_info{")]
    labels, value = line.rsplit(" ", 1)
    assert labels == (
        'vllm:lora_requests_info{max_lora="1",waiting_lora_adapters="",running_lora_adapters=""}'
    )
    assert abs(float(value) - time.time()) < 60


@pytest.mark.parametrize(
    "extra",
    [
        {"lora_modules": ["noequals"]},
        {"lora_modules": ["=path"]},
        {"lora_modules": ["name="]},
        {"lora_modules": ["a=/1", "a=/2"]},
        {"lora_modules": [f"{MODEL}=/p"]},
        {"enable_lora": False},
        {"lora_load_seconds": -1},
    ],
)
def test_bad_lora_settings_are_refused(extra):
    with pytest.raises(ValidationError):
        lora_settings(**extra)


def test_lora_flags_parse(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("INFERSCALE_SIM_")]:
        monkeypatch.delenv(key)
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["sim", "--enable-lora", "--lora-modules", "a=/a", "b=/b", "--lora-load-seconds", "1.5",
         "--max-loras", "2", "--lora-swap-seconds", "0.01"]
    )  # fmt: skip
    settings = sim_cli.settings_from_args(args)
    assert settings.enable_lora and settings.adapters() == {"a": "/a", "b": "/b"}
    assert settings.lora_load_seconds == 1.5
    assert settings.engine_params().max_loras == 2
    plain = sim_cli.settings_from_args(parser.parse_args(["sim"]))
    assert not plain.enable_lora and plain.adapters() == {}


def test_the_sim_answers_on_the_endpoints_the_operator_calls(lora_sim):
    endpoints = ENGINES["sim"].adapter_endpoints
    assert endpoints == ENGINES["vllm"].adapter_endpoints
    body = {"lora_name": "ops", "lora_path": "/l/ops"}
    assert post(lora_sim, endpoints.load, body).status_code == 200
    assert post(lora_sim, endpoints.unload, {"lora_name": "ops"}).status_code == 200
