"""KV-cache-aware routing on the local cluster: sims publish KV events, the routers follow them.

Two sim replicas with ``optimization.kvCacheEvents`` on; the operator puts each pod's events
address in the routing table, each router subscribes to it, and the default strategy
(``predictedTTFT``) sends a repeated long prompt to the replica whose cache holds its prefix.
When that replica is replaced, its entry leaves the index and the new pod's entry starts empty,
then fills from the new process's events. The index is read from the router's ``/metrics``
(``inferscale_router_kv_index_blocks``). Every wait is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import Models, sim_model
from e2e.router_support import ROUTER_PORT, Routers, routers_running, wait_routable
from inferscale.protocol.kvevents import DEFAULT_PORT as KV_EVENTS_PORT

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-kv-routing"
LONG_PROMPT = " ".join(f"clause{i} of the shared contract" for i in range(120))
_BLOCKS = re.compile(r'^inferscale_router_kv_index_blocks\{endpoint="([^"]+)"\} (\d+)$', re.M)


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    with routers_running(cluster, OPERATOR_NAMESPACE) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def indexed(routers: Routers, router: Any) -> dict[str, int]:
    """Pod -> block hashes the router's index holds for it (subscribed endpoints only)."""
    text = routers.http.get(f"http://{router.status.pod_ip}:{ROUTER_PORT}/metrics").text
    return {pod: int(n) for pod, n in _BLOCKS.findall(text)}


def ask(client: Any, served: str, prompt: str) -> str:
    """One completion; the pod that answered it."""
    raw = client.completions.with_raw_response.create(model=served, prompt=prompt, max_tokens=2)
    raw.parse()
    return str(raw.headers["x-inferscale-pod"])


def fill(routers: Routers, router: Any, client: Any, served: str, pods: set[str]) -> None:
    """Distinct prompts until the router has indexed blocks of every pod (ZMQ's slow joiner)."""
    for i in range(200):  # bounded: about 60 s
        if pods <= {p for p, n in indexed(routers, router).items() if n > 0}:
            return
        ask(client, served, f"warm-up prompt number {i} " * 8)
        time.sleep(0.3)
    routers.fail(f"the index never held blocks of {sorted(pods)}: {indexed(routers, router)}")


def test_a_repeated_prompt_goes_to_the_replica_that_holds_it_and_a_restart_relearns(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    name = "kv"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=2, optimization={"kvCacheEvents": True}))
    pods = wait_routable(routers, models, name, served, 2)
    ips = {p.metadata.name: p.status.pod_ip for p in pods}
    for table in routers.tables():
        entry = (table or {})["models"][served]
        assert {e["pod"]: e.get("kvEvents") for e in entry["endpoints"]} == {
            pod: f"{ip}:{KV_EVENTS_PORT}" for pod, ip in ips.items()
        }
        assert entry["route"].get("strategy", "predictedTTFT") == "predictedTTFT"
    router = routers.ready_pods()[0]
    with routers.client(router) as client:
        fill(routers, router, client, served, set(ips))
        before = indexed(routers, router)  # read first: the events may beat the answer
        holder = ask(client, served, LONG_PROMPT)
        wait_for(
            lambda: indexed(routers, router)[holder] > before[holder], 10, "the prompt's blocks"
        )
        chosen = [ask(client, served, LONG_PROMPT) for _ in range(6)]
        assert chosen == [holder] * 6, f"the prefix is on {holder}; went to {chosen}"

        cluster.core.delete_namespaced_pod(holder, namespace)
        fresh = wait_routable(routers, models, name, served, 2)
        (new,) = [p.metadata.name for p in fresh if p.metadata.name not in ips]
        # The replaced pod left the index with the table; the new one starts from nothing.
        after = wait_for(
            lambda: (lambda seen: seen if new in seen else None)(indexed(routers, router)),
            15,
            "the router to subscribe to the new pod",
        )
        assert holder not in after
        print(f"\nnew pod's entry on subscribing: {after[new]} blocks")
        assert after[new] == 0
        fill(routers, router, client, served, {new})
        assert indexed(routers, router)[new] > 0
