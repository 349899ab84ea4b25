"""The operator programs the routers: OpenAI requests through config/router to sims on the cluster.

One operator (its own namespace, its own ServiceAccount, exactly config/rbac) and the two routers
of config/router beside it, with the admin-token Secret, serve the whole module; each test has a
namespace of its own for its models. Requests go from this process to a router pod's IP with the
official ``openai`` SDK (no SDK retries, so every error counts). Waits are bounded; timings are
measured by polling the pods' API and the routers' admin API together every 50 ms.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import OPERATOR_NAME, Models, sim_model
from e2e.router_support import (
    POLL_SECONDS,
    Load,
    Routers,
    chat,
    endpoints,
    pod_ready,
    routers_running,
    wait_routable,
    wait_routers,
)

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-routing"
ROUTABLE_WITHIN_SECONDS = 1.0
"""A pod is in every router's table this soon after it turns Ready (issue #6)."""


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    """CRDs, the admin-token Secret, the operator and two routers, all in one namespace."""
    with routers_running(cluster, OPERATOR_NAMESPACE) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def test_chat_completions_reach_the_sims_through_every_router(
    routers: Routers, models: Models
) -> None:
    name = "chat"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=2))
    pods = wait_routable(routers, models, name, served, 2)
    by_ip = {p.status.pod_ip: p.metadata.name for p in pods}
    for table in routers.tables():
        entry = (table or {})["models"][served]
        assert {e["address"]: e["pod"] for e in entry["endpoints"]} == {
            f"{ip}:8000": pod for ip, pod in by_ip.items()
        }
        assert {e["engine"] for e in entry["endpoints"]} == {"sim"}
    for router in routers.ready_pods():
        with routers.client(router) as client:
            _chat_through(client, served, set(by_ip.values()))


def _chat_through(client: openai.OpenAI, served: str, pods: set[str]) -> None:
    """Plain and streamed answers, both replicas used, and a clear 404 for an unknown model."""
    assert served in [m.id for m in client.models.list().data]
    assert chat(client, served, stream=False)
    assert chat(client, served, stream=True)
    # Least-in-flight rotates among idle equals: both replicas answer.
    answered = set()
    for _ in range(8):
        raw = client.chat.completions.with_raw_response.create(
            model=served,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
        )
        raw.parse()
        answered.add(raw.headers["x-inferscale-pod"])
    assert answered == pods
    # A model nobody serves is a clear 404, not a hang.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_new_replica_is_routable_within_a_second_of_turning_ready(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    name = "grow"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=1))
    (first,) = wait_routable(routers, models, name, served, 1)
    models.patch_spec(name, {"replicas": 2})
    ready_at: float | None = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"inferscale.io/model={name}"
        ).items
        new = [p for p in pods if p.metadata.name != first.metadata.name]
        if ready_at is None and new and pod_ready(new[0]):
            ready_at = time.monotonic()
        if new and all(endpoints(t, served).get(new[0].metadata.name) for t in routers.tables()):
            routable_at = time.monotonic()
            break
        time.sleep(POLL_SECONDS)
    else:
        routers.fail("the new replica never became routable on every router")
    assert ready_at is not None, "routable before the API showed it Ready"
    delay = routable_at - ready_at
    print(f"\nReady -> routable on both routers: {delay * 1000:.0f} ms")
    assert delay <= ROUTABLE_WITHIN_SECONDS, f"routable {delay:.2f}s after turning Ready"


def test_scale_down_under_steady_load_loses_no_request(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    name = "shrink"
    served = f"{name}-served"
    # The local cluster's launcher sends SIGTERM at once (it runs no preStop pause), and the
    # sim then gives requests in flight its grace period: 10 s, so that a slow machine's
    # requests finish rather than being cut by the engine.
    serving = {"terminationGracePeriodSeconds": 10, "startupTimeoutSeconds": 60}
    models.create(sim_model(name, replicas=3, serving=serving))
    wait_routable(routers, models, name, served, 3)
    deleting_seen: dict[str, float] = {}
    left_after: dict[str, float] = {}
    with Load(routers, served).running() as load:
        time.sleep(2)
        before = load.done
        models.patch_spec(name, {"replicas": 1})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pods = cluster.core.list_namespaced_pod(
                namespace, label_selector=f"inferscale.io/model={name}"
            ).items
            now = time.monotonic()
            for p in pods:
                if p.metadata.deletion_timestamp:
                    deleting_seen.setdefault(p.metadata.name, now)
            tables = routers.tables()
            for pod_name, seen in deleting_seen.items():
                if pod_name not in left_after and all(
                    pod_name not in endpoints(t, served) for t in tables
                ):
                    left_after[pod_name] = now - seen
            if len(pods) == 1 and len(left_after) == 2:
                break
            time.sleep(POLL_SECONDS)
        else:
            routers.fail(f"scale-down did not finish: deleting {deleting_seen}, left {left_after}")
        time.sleep(2)  # traffic keeps flowing to the one left
    print(
        f"\n{load.done} requests, {len(load.errors)} errors; left the tables after "
        + ", ".join(f"{v * 1000:.0f} ms" for v in left_after.values())
    )
    assert load.errors == [], load.errors[:5]
    assert load.done > before + 20, "the load did not keep flowing during the scale-down"
    assert len(left_after) == 2
    assert max(left_after.values()) <= ROUTABLE_WITHIN_SECONDS


def test_a_restarted_router_serves_at_once_from_the_configmap_while_the_operator_is_down(
    cluster: Cluster, routers: Routers, models: Models
) -> None:
    name = "steady"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=1))
    (pod,) = wait_routable(routers, models, name, served, 1)
    wait_routers(
        routers,
        lambda: endpoints(routers.stored_table(), served) == {pod.metadata.name: True},
        15,
        "the ConfigMap to hold the model's pod",
    )
    ns = routers.namespace
    scale = {"spec": {"replicas": 0}}
    cluster.apps.patch_namespaced_deployment_scale(OPERATOR_NAME, ns, scale)
    try:
        # Gone, not just terminating: a stopping operator could still push.
        wait_for(
            lambda: (
                not cluster.core.list_namespaced_pod(
                    ns, label_selector=f"app={OPERATOR_NAME}"
                ).items
            ),
            60,
            "the operator's pods to be gone",
        )
        stored = routers.stored_table()
        assert stored is not None
        old = routers.ready_pods()[0]
        cluster.core.delete_namespaced_pod(old.metadata.name, ns)

        def replacement() -> Any:
            fresh = [
                p
                for p in routers.ready_pods()
                if p.metadata.creation_timestamp > old.metadata.creation_timestamp
            ]
            return fresh[0] if fresh else None

        new = wait_routers(
            routers, replacement, 60, "a replacement router Ready without the operator"
        )
        # Ready with no operator to push: the table came from the ConfigMap.
        table = routers.table(new)
        assert table is not None and table["version"] == stored["version"]
        with routers.client(new) as client:
            assert chat(client, served, stream=False)
            assert chat(client, served, stream=True)
    finally:
        cluster.apps.patch_namespaced_deployment_scale(OPERATOR_NAME, ns, {"spec": {"replicas": 1}})
        routers.operator.wait_leader(90)
    # The operator is back: its next table is newer than the stored one, on every router.
    models.patch_spec(name, {"replicas": 2})
    wait_routable(routers, models, name, served, 2)
    assert all((t or {}).get("version", 0) > stored["version"] for t in routers.tables())
