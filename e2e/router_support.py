"""Routers on the local cluster for end-to-end tests: config/router, its token, the operator.

:func:`routers_running` installs the admin-token Secret, runs the operator (exactly
config/rbac, optional extra settings) and the two routers of config/router in one namespace;
:class:`Routers` reads their tables over the admin API and makes ``openai`` clients for them;
:class:`Load` keeps chat traffic flowing through them from a few threads and keeps every error.
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

from e2e.conftest import REPO, Cluster, pod_ready, wait_for
from e2e.operator_support import (
    Models,
    Operator,
    apply_crds,
    apply_documents,
    namespaced_documents,
    own_namespace,
    running_operator,
)

ROUTER_FILE = REPO / "config" / "router" / "router.yaml"
ROUTER_SELECTOR = "app.kubernetes.io/name=inferscale-router"
ROUTER_PORT = 8080
SECRET = "inferscale-router-admin"
CONFIGMAP = "inferscale-routing-table"
POLL_SECONDS = 0.05


def read_table(http: httpx.Client, address: str, token: str) -> dict[str, Any] | None:
    """The routing table the router at ``address`` holds, or None when it has none or is down."""
    try:
        response = http.get(
            f"http://{address}/admin/v1/routing-table",
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError:
        return None
    assert response.status_code != 403, "the router refuses the test's admin token"
    return response.json() if response.status_code == 200 else None


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
        return [p for p in self.pods() if pod_ready(p) and p.status.pod_ip]

    def table(self, pod: Any) -> dict[str, Any] | None:
        """The table a router holds (its admin API), or None when it has none or is down."""
        return read_table(self.http, f"{pod.status.pod_ip}:{ROUTER_PORT}", self.token)

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


def wait_routers(routers: Routers, check: Any, timeout: float, what: str) -> Any:
    """``wait_for``, with the operator's log tail in the failure."""
    try:
        return wait_for(check, timeout, what)
    except pytest.fail.Exception as error:
        routers.fail(str(error))


def endpoints(table: dict[str, Any] | None, served: str) -> dict[str, bool]:
    """Pod name -> ready, for ``served`` in ``table``; empty when it is not there."""
    model = ((table or {}).get("models") or {}).get(served)
    if model is None:
        return {}
    return {e["pod"]: e.get("ready", True) for e in model.get("endpoints") or []}


@contextlib.contextmanager
def routers_running(
    cluster: Cluster,
    namespace: str,
    env: dict[str, str] | None = None,
    operator_replicas: int = 1,
) -> Iterator[Routers]:
    """CRDs, the admin-token Secret, the operator (plus ``env``) and two routers, in one place."""
    cluster.require_local()
    apply_crds(cluster)
    token = secrets.token_hex(24)
    with own_namespace(cluster, namespace) as ns:
        cluster.core.create_namespaced_secret(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET},
                "stringData": {"token": token},
            },
        )
        with running_operator(cluster, ns, replicas=operator_replicas, env=env) as operator:
            apply_documents(cluster, namespaced_documents(ROUTER_FILE, ns))
            running = Routers(cluster, ns, token, operator)
            # Routers turn Ready only with a table: the operator's first push (or the ConfigMap).
            wait_routers(running, lambda: len(running.ready_pods()) == 2, 90, "2 Ready routers")
            try:
                yield running
            finally:
                running.http.close()


def fast_autoscaler_env(cluster: Cluster) -> dict[str, str]:
    """The operator's autoscaler on the cluster's Prometheus, deciding every second."""
    return {
        "INFERSCALE_AUTOSCALER__PROMETHEUS_URL": cluster.prometheus,
        "INFERSCALE_AUTOSCALER__INTERVAL_SECONDS": "1",
        "INFERSCALE_AUTOSCALER__STATUS_INTERVAL_SECONDS": "5",
    }


def wait_routable(routers: Routers, models: Models, name: str, served: str, n: int) -> list[Any]:
    """Wait for ``n`` Ready pods of the model and for every router to route to exactly them."""
    pods = wait_for(
        lambda: len(models.ready_pods(name)) == n and models.ready_pods(name),
        90,
        f"{n} Ready pods of {name}",
    )
    want = {p.metadata.name: True for p in pods}

    def routed() -> bool:
        return all(endpoints(t, served) == want for t in routers.tables())

    wait_routers(routers, routed, 15, f"every router to route {served} to {sorted(want)}")
    return list(pods)


def chat(client: openai.OpenAI, served: str, stream: bool) -> str:
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
                chat(client, self.served, stream=bool(n % 2))
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
