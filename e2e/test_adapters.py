"""LoRA adapters on the cluster: the operator loads them on sim replicas and the routers serve them.

One operator and the two routers of config/router serve the module (as in test_routing); the
test's InferenceModel runs two sim replicas with two adapters. The operator's adapter timer
loads them through the sims' ``/v1/load_lora_adapter``, writes ``status.adapters``, and the
routing table tells the routers which replica holds which adapter. Requests name the adapter as
``model``; the router's ``x-inferscale-pod`` header says which replica answered. Adding an
adapter with a spec patch serves it within 10 s with no restart; removing one unloads it and its
name answers 404. Waits are bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import Models, sim_model
from e2e.router_support import Routers, routers_running, wait_routable, wait_routers

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-adapters"
SERVED_WITHIN_SECONDS = 10.0
"""An adapter added to the spec answers requests this soon (issue #25)."""

SQL = {"name": "sql", "source": "hf://org/llama-sql-lora", "rank": 8}
CHAT = {"name": "chat", "source": "hf://org/llama-chat-lora"}
NEW = {"name": "support", "source": "hf://org/llama-support-lora"}
ARCHIVE = {"name": "archive", "source": "s3://bucket/llama-archive-lora"}
"""Refused (no download step for s3:// adapters): reported, and the others are unaffected."""
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    with routers_running(cluster, OPERATOR_NAMESPACE) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def adapter_status(models: Models, name: str) -> dict[str, dict[str, Any]]:
    status = (models.get(name) or {}).get("status") or {}
    return {a["name"]: a for a in status.get("adapters") or []}


def loaded_everywhere(
    models: Models, name: str, adapters: list[str], n: int, failed: tuple[str, ...] = ()
) -> bool:
    found = adapter_status(models, name)
    return sorted(found) == sorted([*adapters, *failed]) and all(
        found[a]["phase"] == "Loaded" and found[a]["loadedReplicas"] == n for a in adapters
    )


def ask(client: openai.OpenAI, model: str) -> str:
    """One chat completion for ``model``; the pod that answered."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=2
    )
    assert raw.parse().model == model
    return raw.headers["x-inferscale-pod"]


def test_adapters_are_loaded_routed_added_and_removed(
    cluster: Cluster, routers: Routers, models: Models
) -> None:
    name, served = "lora", "lora-served"
    models.create(sim_model(name, replicas=2, adapters=[SQL, CHAT, ARCHIVE], adapterSlots=2))
    pods = wait_routable(routers, models, name, served, 2)
    pod_names = sorted(p.metadata.name for p in pods)
    wait_for(
        lambda: loaded_everywhere(models, name, ["sql", "chat"], 2, failed=("archive",)),
        60,
        "adapters loaded",
    )
    status = adapter_status(models, name)
    assert status["sql"]["loadedOn"] == pod_names
    assert status["archive"]["phase"] == "Failed" and "s3://" in status["archive"]["message"]
    ready = models.condition(name, "AdaptersReady")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "AdapterFailed")

    def tables_know(adapters: set[str]) -> bool:
        for table in routers.tables():
            entry = (table or {}).get("models", {}).get(served) or {}
            held = [set(e.get("adapters") or []) for e in entry.get("endpoints") or []]
            if set(entry.get("adapters") or []) != adapters or held != [adapters] * 2:
                return False
        return True

    wait_routers(routers, lambda: tables_know({"sql", "chat"}), 15, "tables with both adapters")
    for router in routers.ready_pods():
        with routers.client(router) as client:
            for adapter in ("sql", "chat"):
                answered = {ask(client, adapter) for _ in range(4)}
                assert answered <= set(status[adapter]["loadedOn"])
            with pytest.raises(openai.NotFoundError):
                ask(client, "archive")  # never routed: no replica could ever load it

    # A third adapter with a spec patch: served within 10 s, and no replica restarts.
    patched_at = time.monotonic()
    models.patch_spec(name, {"adapters": [SQL, CHAT, ARCHIVE, NEW]})
    (router, *_) = routers.ready_pods()
    with routers.client(router) as client:
        deadline = patched_at + 30
        while True:
            try:
                ask(client, "support")
                break
            except (openai.NotFoundError, openai.APIStatusError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    took = time.monotonic() - patched_at
    print(f"\nadapter added -> served: {took * 1000:.0f} ms")
    assert took <= SERVED_WITHIN_SECONDS, f"served {took:.1f}s after the patch"
    assert sorted(p.metadata.name for p in models.ready_pods(name)) == pod_names

    # Removed (and the refused one with it): unloaded from every replica, its name answers 404
    # through the routers, and the condition turns True.
    models.patch_spec(name, {"adapters": [SQL, NEW]})
    wait_for(lambda: loaded_everywhere(models, name, ["sql", "support"], 2), 30, "chat unloaded")
    wait_routers(routers, lambda: tables_know({"sql", "support"}), 15, "tables without chat")
    with routers.client(router) as client:
        with pytest.raises(openai.NotFoundError) as refused:
            ask(client, "chat")
        assert "The model `chat` does not exist." in str(refused.value)
        assert ask(client, "sql") in pod_names
    ready = models.condition(name, "AdaptersReady")
    assert ready is not None and ready["status"] == "True"
    reasons = {e.reason for e in models.events(name)}
    assert {"AdapterLoaded", "AdapterUnloaded", "AdapterFailed"} <= reasons
