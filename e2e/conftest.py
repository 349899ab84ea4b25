"""Fixtures for tests against a real cluster: the local one by default, any other by kubeconfig.

``INFERSCALE_E2E_KUBECONFIG=/path`` runs the suite against an existing cluster (kind, a GPU
cluster); the tests that need the local cluster's launcher (processes on pod IPs, Prometheus
of the cluster) are skipped there. Otherwise one local cluster is brought up per session in
``.cluster/e2e`` (logs stay there after the run) and taken down at the end, also when the run
is interrupted with Ctrl-C or SIGTERM. A leftover from a killed run is cleaned first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from e2e.audit import read_operator_requests
from e2e.leaks import SecretWatch
from e2e.rbac_calls import unlisted
from inferscale.cluster.config import CONTAINER_NODE_ENV, ClusterConfig, NodePool
from inferscale.cluster.control import down, up

REPO = Path(__file__).resolve().parents[1]
#: The session cluster's state directory, name and first port; the overrides let a test run a
#: nested pytest session with a cluster of its own (see test_lifecycle.py).
STATE_DIR = Path(os.environ.get("INFERSCALE_E2E_CLUSTER_DIR", REPO / ".cluster" / "e2e"))
CLUSTER_NAME = os.environ.get("INFERSCALE_E2E_CLUSTER_NAME", "e2e")
PORT_BASE = int(os.environ.get("INFERSCALE_E2E_PORT_BASE", "17443"))
POD_CIDR = os.environ.get("INFERSCALE_E2E_POD_CIDR", "10.246.0.0/16")
TEST_IMAGE = "inferscale.io/testing/http-echo:latest"
KUBE_VERSION = "v1.36.3"
#: A taint that keeps ordinary pods off the KWOK-only node.
SIMULATED_TAINT = {"key": "inferscale.io/simulated", "value": "true", "effect": "NoSchedule"}


LLAMACPP_BUILD = REPO / "tools" / "llamacpp" / "build.sh"
LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp"
#: llama.cpp's server image names /app/llama-server as its command (reconcile/engines.py).
LLAMACPP_IMAGE_BINARY = "/app/llama-server"


def built_dir(script: Path, *args: str, quiet: bool = False) -> Path:
    """Run a ``tools/*/build.sh`` (stderr shown unless ``quiet``); the folder it prints last."""
    done = subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        timeout=3600,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.fail(f"{script} failed with exit status {done.returncode} (see its stderr)")
    return Path(lines[-1])


def llamacpp_dir(build: bool) -> Path:
    """Where tools/llamacpp/build.sh keeps llama-server and model.gguf (``build``: make them).

    Without ``build`` the directory is only named, so the cluster's image map can point at a
    binary that the llama.cpp tests build later (the launcher resolves commands at pod start).
    """
    return built_dir(LLAMACPP_BUILD, *([] if build else ["--dir"]), quiet=not build)


def e2e_image_map(state_dir: Path) -> Path:
    """An image map beside the state directory: llama.cpp's image runs build.sh's llama-server."""
    server = str(llamacpp_dir(build=False) / "llama-server")
    entry = {"command": [server], "paths": {LLAMACPP_IMAGE_BINARY: server}}
    path = state_dir.parent / f"{state_dir.name}-images.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"images": {LLAMACPP_IMAGE: entry}}))
    return path


def e2e_config(state_dir: Path = STATE_DIR, **overrides: Any) -> ClusterConfig:
    """The e2e session's local cluster: ports, ranges and bridge apart from `make cluster-up`."""
    settings: dict[str, Any] = {
        "image_map": str(e2e_image_map(state_dir)),
        "state_dir": state_dir,
        "name": CLUSTER_NAME,
        "port_base": PORT_BASE,
        "pod_cidr": POD_CIDR,
        "kwok_pod_cidr": "10.247.0.0/16",
        "scrape_interval": 2.0,
        "initial_backoff": 1.0,
        "max_backoff": 8.0,
        "pools": [
            NodePool(name="gpu", count=2, gpus=4, labels={"nvidia.com/gpu.product": "Sim-80GB"}),
            NodePool(name="kwok", count=1, gpus=8, runner="kwok", taints=[SIMULATED_TAINT]),
        ],
        # Opt-in: a kubelet node whose pods run in containerd (e2e/test_container_node.py).
        "container_node": os.environ.get(CONTAINER_NODE_ENV) == "1",
    }
    settings.update(overrides)
    return ClusterConfig(**settings)


@dataclass
class Cluster:
    """What a test gets: API clients, and for the local cluster its config."""

    kubeconfig: Path
    api: client.ApiClient
    local: ClusterConfig | None = None
    started_in: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def prometheus(self) -> str:
        assert self.local is not None
        return self.local.prometheus_url

    def require_local(self) -> ClusterConfig:
        if self.local is None:
            pytest.skip("needs the local cluster's launcher (INFERSCALE_E2E_KUBECONFIG is set)")
        return self.local


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One cluster per session: the local one (started here) or the one named by kubeconfig."""
    foreign = os.environ.get("INFERSCALE_E2E_KUBECONFIG")
    if foreign:
        api = kube_config.new_client_from_config(config_file=foreign)
        yield Cluster(Path(foreign), api)
        api.close()
        return
    # SIGTERM (CI's stop, `timeout`) must run the teardown below, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    config = e2e_config()
    # Whatever a killed earlier run left behind, even outside the state directory.
    down(STATE_DIR, quiet=True, expected=config)
    began = datetime.now(UTC)
    try:
        started = up(config)
        api = kube_config.new_client_from_config(config_file=str(started.config.kubeconfig))
        secrets = SecretWatch(api)
        secrets.start()
        try:
            yield Cluster(started.config.kubeconfig, api, started.config, started.seconds)
            secrets.close()
            # Security by default: no credential any test issued is in any log or Event.
            leaks = secrets.leaks(started.config.log_dir)
            assert not leaks, "\n".join(sorted({str(leak) for leak in leaks}))
            print(f"\nno leak: {len(secrets.values)} secret values, {len(secrets.events)} Events")
            # Least privilege on observed calls: all the operator asked is what its roles prove.
            requests = read_operator_requests(started.config.log_dir, began)
            problems = unlisted(requests)
            assert not problems, "operator requests not in e2e/rbac_calls.py:\n" + "\n".join(
                problems
            )
            print(f"audit: {len(requests)} operator requests, each a call of e2e/rbac_calls.py")
        finally:
            secrets.close()
            api.close()
    finally:
        down(STATE_DIR, quiet=True)
        signal.signal(signal.SIGTERM, previous)


def pod_ready(pod: Any) -> bool:
    """Whether the pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll until ``check()`` is truthy and return it; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its pods are stopped by the launcher)."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"e2e-{base}-{digest}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: _has_default_sa(cluster, name), 30, f"the default ServiceAccount in {name}")
    yield name
    with contextlib.suppress(ApiException):
        cluster.core.delete_namespace(name)


def _has_default_sa(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.core.read_namespaced_service_account("default", namespace)
    except ApiException:
        return False
    return True


def echo_container(args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A container of the test image, with its downward-API env and a metrics port."""
    return {
        "name": "http",
        "image": TEST_IMAGE,
        "args": ["--port", "8080", *(args or [])],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [{"name": "metrics", "containerPort": 8080}],
        **extra,
    }


def echo_deployment(name: str, replicas: int, grace: int = 30, **pod_spec: Any) -> dict[str, Any]:
    """A Deployment of the test server with an HTTP readiness probe."""
    container = echo_container(
        readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [container],
                    **pod_spec,
                },
            },
        },
    }


def echo_pod(name: str, args: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """A bare pod of the test server."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                echo_container(
                    args,
                    readinessProbe={
                        "httpGet": {"path": "/healthz", "port": 8080},
                        "periodSeconds": 1,
                    },
                )
            ],
            **spec,
        },
    }


def ready_pods(cluster: Cluster, namespace: str, selector: str) -> list[Any]:
    """Pods matching ``selector`` whose Ready condition is True."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if not p.metadata.deletion_timestamp and pod_ready(p)]


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a URL and decode its JSON body (traffic to 127.0.0.0/8 or the tests' pod network)."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return response.json()


def load_yaml(path: Path) -> list[dict[str, Any]]:
    """Every document of a YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
