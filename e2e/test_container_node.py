"""The chart's pods as real containers: a kubelet, containerd and runc beside the simulated nodes.

With ``INFERSCALE_CONTAINER_NODE=1`` the local cluster gets the node ``containers-0``
(inferscale/cluster/containers.py): the upstream kubelet of the cluster's release, whose pods
containerd runs with runc from the images ``make images`` built. ``helm install`` here runs
the operator and both routers on that node, under the chart's own securityContext (non-root,
read-only root filesystem, no capabilities, RuntimeDefault seccomp) and with in-cluster
configuration through the ``kubernetes`` Service; a sim InferenceModel, scheduled there too,
must become Ready and answer through a router. This is the check that the images, the chart
and the pods the operator builds work in a real container runtime, not only as processes.

Skipped, with the reason, where the node cannot run: without the variable, without root,
containerd, runc, podman or the images. A run takes about a minute once the images are in
containerd (the first import of the four images: about 6 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import REPO, Cluster, pod_ready, wait_for
from e2e.operator_support import Models, own_namespace, sim_model
from inferscale.cluster import containers

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "inferscale"
RELEASE = "e2e-ctr"
NAMESPACE = "e2e-ctr-system"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
ON_THE_NODE = {
    "nodeSelector": {"inferscale.io/node-pool": containers.POOL},
    "tolerations": [{"key": containers.TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
}


def _skip_reason(cluster: Cluster) -> str | None:
    local = cluster.local
    if local is None:
        return "needs the local cluster (the container node is one of its nodes)"
    if not local.container_node:
        missing = containers.missing_prerequisites()
        return (
            "the local cluster runs without its container node: set INFERSCALE_CONTAINER_NODE=1"
            + (f" (this machine also lacks {'; '.join(missing)})" if missing else "")
        )
    return None


def _stale_images() -> list[str]:
    """Images built before the newest change to what they are built from (``make images``).

    An operator image from before a new API field rejects the objects the current CRDs default,
    which would read as a failure of the node rather than of the build.
    """
    sources = [REPO / "requirements.txt", *(REPO / "operator" / "inferscale").rglob("*.py")]
    sources += [p for p in (REPO / "images").rglob("*") if p.is_file()]
    changed = max(int(p.stat().st_mtime) for p in sources if p.exists())
    stale = []
    for image in containers.IMAGES[1:]:
        created = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Created.Unix}}", image],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout.strip()  # fmt: skip
        if created.isdigit() and int(created) < changed:
            stale.append(f"{image} (built {_utc(int(created))}, sources changed {_utc(changed)})")
    return stale


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


@pytest.fixture(scope="module")
def node_cluster(cluster: Cluster) -> Cluster:
    reason = _skip_reason(cluster)
    if reason:
        pytest.skip(reason)
    stale = _stale_images()
    if stale:
        pytest.fail(f"run `make images`: the node would run old code: {'; '.join(stale)}")
    return cluster


def _helm(cluster: Cluster, *args: str, timeout: float = 300) -> str:
    local = cluster.require_local()
    done = subprocess.run(
        [str(Path(local.assets_dir) / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"helm {' '.join(args[:2])}:\n{done.stderr}\n{_pod_logs(cluster)}")
    return done.stdout


def _pod_logs(cluster: Cluster) -> str:
    """The container logs the kubelet wrote for the release's pods (tails)."""
    folder = cluster.require_local().log_dir / "container-pods"
    texts = []
    for path in sorted(folder.glob(f"{NAMESPACE}_*/*/*.log")):
        texts.append(f"==> {path.parent.parent.name}/{path.parent.name} <==")
        texts.append(path.read_text(errors="replace")[-2000:])
    return "\n".join(texts)


@pytest.fixture(scope="module")
def release(node_cluster: Cluster) -> Iterator[Cluster]:
    """The chart, with the operator and the routers pinned to the container node."""
    cluster = node_cluster
    values = [
        "router.drainSeconds=1",
        "router.shutdownGraceSeconds=3",
        "operator.terminationGracePeriodSeconds=10",
        # The chart's CRDs are already there when other modules ran first.
        "crds.enabled=false",
    ]
    for component in ("operator", "router"):
        values += [
            f"{component}.nodeSelector.inferscale\\.io/node-pool={containers.POOL}",
            f"{component}.tolerations[0].key={containers.TAINT['key']}",
            f"{component}.tolerations[0].operator=Exists",
            f"{component}.tolerations[0].effect=NoSchedule",
        ]
    crds = [str(path) for path in sorted((REPO / "crds").glob("*.yaml"))]
    kubectl = str(Path(cluster.require_local().assets_dir) / "kubectl")
    for path in crds:
        subprocess.run(
            [kubectl, "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side",
             "--force-conflicts", "-f", path],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    with own_namespace(cluster, NAMESPACE):
        args = ["install", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=240s"]
        for item in values:
            args += ["--set", item]
        _helm(cluster, *args, timeout=300)
        try:
            yield cluster
        finally:
            _helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=120)


def _release_pods(cluster: Cluster, component: str) -> list[Any]:
    selector = f"{SELECTOR},app.kubernetes.io/component={component}"
    pods = cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def test_helm_install_runs_the_operator_and_routers_as_containerd_containers(
    release: Cluster,
) -> None:
    pods = _release_pods(release, "operator") + _release_pods(release, "router")
    assert len(pods) == 3, [p.metadata.name for p in pods]
    for pod in pods:
        assert pod.spec.node_name == containers.NODE_NAME
        assert pod_ready(pod), pod.metadata.name
        (status,) = pod.status.container_statuses
        # The kubelet reports the runtime's own container ID; the launcher has none.
        assert status.container_id.startswith("containerd://"), status.container_id
        assert status.restart_count == 0, f"{pod.metadata.name} restarted: {_pod_logs(release)}"
        context = pod.spec.containers[0].security_context
        assert context.read_only_root_filesystem is True
        assert context.capabilities.drop == ["ALL"]
    node = release.core.read_node(containers.NODE_NAME)
    assert node.status.node_info.container_runtime_version.startswith("containerd://")


def test_a_sim_model_in_a_container_becomes_ready_and_answers_through_a_router(
    release: Cluster, namespace: str
) -> None:
    models = Models(release, namespace)
    models.create(sim_model("ctr-sim", replicas=1, scheduling=ON_THE_NODE))
    served = "ctr-sim-served"
    try:
        wait_for(lambda: models.is_ready("ctr-sim"), 120, "Ready=True on the model")
    except pytest.fail.Exception as error:
        ready = models.condition("ctr-sim", "Ready")
        pytest.fail(f"{error}\nReady: {ready}\n{_pod_logs(release)}")
    (replica,) = [
        p
        for p in release.core.list_namespaced_pod(namespace).items
        if p.spec.node_name == containers.NODE_NAME and not p.metadata.deletion_timestamp
    ]
    assert replica.status.container_statuses[0].container_id.startswith("containerd://")
    routers = [p for p in _release_pods(release, "router") if p.status.pod_ip]
    assert routers
    with httpx.Client(timeout=10, trust_env=False) as http:
        for router in routers:
            base = f"http://{router.status.pod_ip}:8080/v1"

            def routed(base: str = base) -> bool:
                try:
                    listed = http.get(f"{base}/models").json()
                except (httpx.HTTPError, ValueError):
                    return False
                return served in [m["id"] for m in listed.get("data", [])]

            wait_for(routed, 60, f"{router.metadata.name} to route {served}")
            answer = http.post(
                f"{base}/chat/completions",
                json={
                    "model": served,
                    "messages": [{"role": "user", "content": "Say hello."}],
                    "max_tokens": 8,
                },
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]


def test_a_field_the_pinned_engine_lacks_is_a_condition_not_a_crash_looping_pod(
    release: Cluster, namespace: str
) -> None:
    # SGLang 0.5.4 publishes no KV-cache events (docs/engines.md's matrix: refused). The
    # operator, in its container, must say so on the model and create no Deployment.
    models = Models(release, namespace)
    body = sim_model("ctr-sglang", replicas=1, scheduling=ON_THE_NODE)
    body["spec"].update(engine="sglang", optimization={"kvCacheEvents": True})
    body["spec"]["resources"] = {"gpus": 1}
    models.create(body)

    def refused() -> dict[str, Any] | None:
        ready = models.condition("ctr-sglang", "Ready")
        return ready if ready and ready.get("reason") == "InvalidSpec" else None

    ready = wait_for(refused, 60, "Ready=False InvalidSpec on the sglang model")
    assert ready["status"] == "False"
    assert "publishes no KV-cache events" in ready["message"]
    assert not release.apps.list_namespaced_deployment(namespace).items
    assert not release.core.list_namespaced_pod(namespace).items


def test_the_node_is_only_for_pods_that_ask_for_it(node_cluster: Cluster) -> None:
    node = node_cluster.core.read_node(containers.NODE_NAME)
    taints = [(t.key, t.effect) for t in node.spec.taints or []]
    assert (containers.TAINT["key"], "NoSchedule") in taints
