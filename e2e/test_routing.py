"""The operator programs the routers: OpenAI requests through config/router to sims on the cluster.

One operator (its own namespace, its own ServiceAccount, exactly config/rbac) and the two routers
of config/router beside it, with the admin-token Secret, serve the whole module; each test has a
namespace of its own for its models. Requests go from this process to a router pod's IP with the
official ``openai`` SDK (no SDK retries, so every error counts). Waits are bounded; timings are
measured by polling the pods' API and the routers' admin API together every 50 ms.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from kubernetes.client.rest import ApiException

from e2e.conftest import REPO, Cluster, wait_for
from e2e.operator_support import (
    OPERATOR_NAME,
    Models,
    Operator,
    apply_crds,
    apply_documents,
    namespaced_documents,
    own_namespace,
    running_operator,
    sim_model,
)

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-routing"
ROUTER_FILE = REPO / "config" / "router" / "router.yaml"
ROUTER_SELECTOR = "app.kubernetes.io/name=inferscale-router"
ROUTER_PORT = 8080
SECRET = "inferscale-router-admin"
CONFIGMAP = "inferscale-routing-table"
ROUTABLE_WITHIN_SECONDS = 1.0
"""A pod is in every router's table this soon after it turns Ready (issue #6)."""
POLL_SECONDS = 0.05


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@dataclass
class Routers:
    """The routers of config/router and the operator that programs them."""

    cluster: Cluster
    namespace: str
    token: str
    operator: Operator
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5, trust_env=False))

    def pods(self) -> list[Any]:
        pods = self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=ROUTER_SELECTOR
        ).items
        return [p for p in pods if not p.metadata.deletion_timestamp]

    def ready_pods(self) -> list[Any]:
        return [p for p in self.pods() if _ready(p) and p.status.pod_ip]

    def table(self, pod: Any) -> dict[str, Any] | None:
        """The table a router holds (its admin API), or None when it has none or is down."""
        try:
            response = self.http.get(
                f"http://{pod.status.pod_ip}:{ROUTER_PORT}/admin/v1/routing-table",
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.HTTPError:
            return None
        assert response.status_code != 403, "the routers refuse the test's admin token"
        return response.json() if response.status_code == 200 else None

    def tables(self) -> list[dict[str, Any] | None]:
        return [self.table(p) for p in self.ready_pods()]

    def client(self, pod: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://{pod.status.pod_ip}:{ROUTER_PORT}/v1",
            api_key="unused",  # the router has no client keys yet
            max_retries=0,
            timeout=30,
            http_client=httpx.Client(trust_env=False),
        )

    def stored_table(self) -> dict[str, Any] | None:
        try:
            cm = self.cluster.core.read_namespaced_config_map(CONFIGMAP, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        doc: dict[str, Any] = json.loads((cm.data or {})["routing-table.json"])
        return doc

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- operator logs ---\n{self.operator.logs()}")


def _wait(routers: Routers, check: Any, timeout: float, what: str) -> Any:
    """``wait_for``, with the operator's log tail in the failure."""
    try:
        return wait_for(check, timeout, what)
    except pytest.fail.Exception as error:
        routers.fail(str(error))


def _endpoints(table: dict[str, Any] | None, served: str) -> dict[str, bool]:
    """Pod name -> ready, for ``served`` in ``table``; empty when it is not there."""
    model = ((table or {}).get("models") or {}).get(served)
    if model is None:
        return {}
    return {e["pod"]: e.get("ready", True) for e in model.get("endpoints") or []}


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    """CRDs, the admin-token Secret, the operator and two routers, all in one namespace."""
    cluster.require_local()
    apply_crds(cluster)
    token = secrets.token_hex(24)
    with own_namespace(cluster, OPERATOR_NAMESPACE) as namespace:
        cluster.core.create_namespaced_secret(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET},
                "stringData": {"token": token},
            },
        )
        with running_operator(cluster, namespace, replicas=1) as operator:
            apply_documents(cluster, namespaced_documents(ROUTER_FILE, namespace))
            running = Routers(cluster, namespace, token, operator)
            # Routers turn Ready only with a table: the operator's first push (or the ConfigMap).
            _wait(running, lambda: len(running.ready_pods()) == 2, 90, "2 Ready routers")
            yield running
            running.http.close()


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def _wait_routable(routers: Routers, models: Models, name: str, served: str, n: int) -> list[Any]:
    """Wait for ``n`` Ready pods of the model and for every router to route to exactly them."""
    pods = wait_for(
        lambda: len(models.ready_pods(name)) == n and models.ready_pods(name),
        90,
        f"{n} Ready pods of {name}",
    )
    want = {p.metadata.name: True for p in pods}

    def routed() -> bool:
        return all(_endpoints(t, served) == want for t in routers.tables())

    _wait(routers, routed, 15, f"every router to route {served} to {sorted(want)}")
    return list(pods)


def _chat(client: openai.OpenAI, served: str, stream: bool) -> str:
    """One chat completion (streamed or not); its text. Raises on any error."""
    messages = [{"role": "user", "content": "Say hello."}]
    if not stream:
        answer = client.chat.completions.create(model=served, messages=messages, max_tokens=8)
        assert answer.model == served and answer.choices[0].finish_reason
        return answer.choices[0].message.content or ""
    parts = []
    finished = None
    with client.chat.completions.create(
        model=served,
        messages=messages,
        max_tokens=8,
        stream=True,
    ) as chunks:
        for chunk in chunks:
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finished = choice.finish_reason or finished
    assert finished, "the stream ended without a finish reason"
    return "".join(parts)


def test_chat_completions_reach_the_sims_through_every_router(
    routers: Routers, models: Models
) -> None:
    name = "chat"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=2))
    pods = _wait_routable(routers, models, name, served, 2)
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
    assert _chat(client, served, stream=False)
    assert _chat(client, served, stream=True)
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
    (first,) = _wait_routable(routers, models, name, served, 1)
    models.patch_spec(name, {"replicas": 2})
    ready_at: float | None = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"inferscale.io/model={name}"
        ).items
        new = [p for p in pods if p.metadata.name != first.metadata.name]
        if ready_at is None and new and _ready(new[0]):
            ready_at = time.monotonic()
        if new and all(_endpoints(t, served).get(new[0].metadata.name) for t in routers.tables()):
            routable_at = time.monotonic()
            break
        time.sleep(POLL_SECONDS)
    else:
        routers.fail("the new replica never became routable on every router")
    assert ready_at is not None, "routable before the API showed it Ready"
    delay = routable_at - ready_at
    print(f"\nReady -> routable on both routers: {delay * 1000:.0f} ms")
    assert delay <= ROUTABLE_WITHIN_SECONDS, f"routable {delay:.2f}s after turning Ready"


@dataclass
class Load:
    """Steady chat traffic through the routers from a few threads; every error is kept."""

    routers: Routers
    served: str
    threads: int = 4
    done: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(self.routers.client(p)) for p in self.routers.ready_pods()
            ]
            self.loop(index, clients)

    def loop(self, index: int, clients: list[openai.OpenAI]) -> None:
        n = 0
        while not self.stop.is_set():
            client = clients[(index + n) % len(clients)]
            try:
                _chat(client, self.served, stream=bool(n % 2))
            except (openai.OpenAIError, AssertionError) as error:
                with self.lock:
                    self.errors.append(f"{type(error).__name__}: {error}")
            else:
                with self.lock:
                    self.done += 1
            n += 1
            time.sleep(0.02)

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        workers = [
            threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(60)


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
    _wait_routable(routers, models, name, served, 3)
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
                    pod_name not in _endpoints(t, served) for t in tables
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
    (pod,) = _wait_routable(routers, models, name, served, 1)
    _wait(
        routers,
        lambda: _endpoints(routers.stored_table(), served) == {pod.metadata.name: True},
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

        new = _wait(routers, replacement, 60, "a replacement router Ready without the operator")
        # Ready with no operator to push: the table came from the ConfigMap.
        table = routers.table(new)
        assert table is not None and table["version"] == stored["version"]
        with routers.client(new) as client:
            assert _chat(client, served, stream=False)
            assert _chat(client, served, stream=True)
    finally:
        cluster.apps.patch_namespaced_deployment_scale(OPERATOR_NAME, ns, {"spec": {"replicas": 1}})
        routers.operator.wait_leader(90)
    # The operator is back: its next table is newer than the stored one, on every router.
    models.patch_spec(name, {"replicas": 2})
    _wait_routable(routers, models, name, served, 2)
    assert all((t or {}).get("version", 0) > stored["version"] for t in routers.tables())
