"""The response cache end to end: two router replicas share answers through Redis, per key.

One operator (config/rbac) and the two routers of config/router, pointed at a ``redis-server``
on the cluster's gateway address (pods reach it) and at the static embedding table this
process built (``INFERSCALE_EMBEDDING_DIR``: a launched pod has a home of its own). A sim
model behind an InferenceRoute with ``cache.enabled``; two InferenceClients. A question asked
through one router is answered by the other from the cache; the same question with the other
client's key is not (answers are partitioned per key by default). Requests go from this process
to each router pod's IP with ``httpx`` (the cache's header is the observable).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.redis_server import RedisServer

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import (
    Models,
    apply_crds,
    apply_documents,
    namespaced_documents,
    own_namespace,
    running_operator,
    sim_model,
)
from e2e.router_support import ROUTER_FILE, ROUTER_PORT, SECRET, Routers, wait_routers

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-cache"
GROUP, VERSION = "inferscale.io", "v1alpha1"


def embedding_dir() -> str:
    """Where this process keeps the static table (built now if missing: minutes, once)."""
    from inferscale.embedding.store import load_static_encoder, table_dir

    load_static_encoder()
    return str(table_dir())


def with_router_env(docs: list[dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            container.setdefault("env", []).extend({"name": k, "value": v} for k, v in env.items())
    return docs


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routers]:
    local = cluster.require_local()
    host = local.gateway_ip if local.network == "netns" else "127.0.0.1"
    env = {"INFERSCALE_EMBEDDING_DIR": embedding_dir()}
    apply_crds(cluster)
    token = secrets.token_hex(24)
    with (
        # A password, as a shared Redis has (off loopback, Redis refuses clients without one).
        RedisServer(tmp_path_factory.mktemp("redis"), host=host, password=token) as redis,
        own_namespace(cluster, OPERATOR_NAMESPACE) as ns,
    ):
        cluster.core.create_namespaced_secret(
            ns,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
             "stringData": {"token": token}},
        )  # fmt: skip
        with running_operator(cluster, ns, replicas=1) as operator:
            env["INFERSCALE_ROUTER_REDIS_URL"] = redis.url
            apply_documents(cluster, with_router_env(namespaced_documents(ROUTER_FILE, ns), env))
            running = Routers(cluster, ns, token, operator)
            wait_routers(running, lambda: len(running.ready_pods()) == 2, 90, "2 Ready routers")
            yield running
            running.http.close()


def create(cluster: Cluster, namespace: str, plural: str, body: dict[str, Any]) -> None:
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def client_key(cluster: Cluster, namespace: str, name: str) -> str:
    key = f"sk-{name}-" + secrets.token_hex(16)
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": f"{name}-key"}, "stringData": {"api-key": key}}
    )
    create(
        cluster,
        namespace,
        "inferenceclients",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceClient",
            "metadata": {"name": name},
            "spec": {"apiKeySecretRef": {"name": f"{name}-key", "key": "api-key"}},
        },
    )
    return key


def ask(routers: Routers, pod: Any, key: str, served: str, question: str) -> httpx.Response:
    return routers.http.post(
        f"http://{pod.status.pod_ip}:{ROUTER_PORT}/v1/chat/completions",
        json={
            "model": served,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 8,
        },
        headers={"Authorization": f"Bearer {key}"},
    )


def test_a_second_replica_answers_from_the_cache_and_another_key_misses(
    cluster: Cluster, stack: Routers, namespace: str
) -> None:
    routers, served = stack, "cached-served"
    models = Models(cluster, namespace)
    models.create(sim_model("cached"))
    create(
        cluster,
        namespace,
        "inferenceroutes",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceRoute",
            "metadata": {"name": "cached"},
            "spec": {
                "modelName": served,
                "backends": [{"inferenceModel": "cached"}],
                "cache": {"enabled": True},
            },
        },
    )
    alice, bob = client_key(cluster, namespace, "alice"), client_key(cluster, namespace, "bob")
    wait_for(lambda: len(models.ready_pods("cached")) == 1, 90, "a Ready pod of cached")
    first, second = routers.ready_pods()

    def cache_up(pod: Any) -> bool:
        metrics = routers.http.get(f"http://{pod.status.pod_ip}:{ROUTER_PORT}/metrics").text
        return f'inferscale_router_cache_entries{{model="{served}"}}' in metrics

    def serving() -> bool:
        return all(
            cache_up(pod) and ask(routers, pod, key, served, f"probe {n}").status_code == 200
            for pod in (first, second)
            for n, key in enumerate((alice, bob))
        )

    wait_routers(routers, serving, 60, f"both routers to serve {served} to both keys")
    question = "What is the capital of France?"
    miss = ask(routers, first, alice, served, question)
    assert miss.status_code == 200 and miss.headers["x-inferscale-cache"] == "miss"

    deadline = time.monotonic() + 15
    while True:  # the answer reaches the other replica through Redis in the background
        hit = ask(routers, second, alice, served, question)
        if hit.headers.get("x-inferscale-cache") == "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert hit.headers["x-inferscale-cache"] == "hit"
    assert hit.json()["choices"] == miss.json()["choices"]

    other = ask(routers, second, bob, served, question)
    assert other.status_code == 200 and other.headers["x-inferscale-cache"] == "miss"
