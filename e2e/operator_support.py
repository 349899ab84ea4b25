"""Helpers of the operator's end-to-end tests: the operator as a Deployment, models, children.

The operator runs in the cluster as the launcher runs any pod: image ``ghcr.io/inferscale/operator``
becomes ``inferscale operator``, under the ``inferscale-operator`` ServiceAccount with exactly the
rules of ``config/rbac/operator.yaml`` (only the namespace is rewritten), so a permission it lacks
or does not need shows here as it would on a real cluster.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import REPO, Cluster, load_yaml, pod_ready, wait_for

GROUP, VERSION, PLURAL = "inferscale.io", "v1alpha1", "inferencemodels"
RBAC_FILE = REPO / "config" / "rbac" / "operator.yaml"
RBAC_NAMESPACE = "inferscale-system"
SERVICE_ACCOUNT = "inferscale-operator"
OPERATOR_IMAGE = "ghcr.io/inferscale/operator:latest"
OPERATOR_NAME = "inferscale-operator"
LEASE_NAME = "inferscale-operator"
LABEL_MODEL = "inferscale.io/model"
#: KWOK's node: pods there only exist (Ready at once, nothing runs).
KWOK_SCHEDULING = {
    "nodeSelector": {"inferscale.io/pod-runner": "kwok"},
    "tolerations": [
        {"key": "inferscale.io/simulated", "operator": "Equal", "value": "true"},
    ],
}
#: Kinds the operator creates per model, with how to list them.
CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    """Run kubectl (the cluster's own, else the one on PATH) as the admin; return stdout."""
    local = cluster.local
    found = Path(local.assets_dir) / "kubectl" if local and local.assets_dir else None
    binary = str(found) if found and found.exists() else shutil.which("kubectl")
    assert binary, "kubectl not found"
    done = subprocess.run(
        [binary, "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def apply_crds(cluster: Cluster) -> None:
    """Server-side apply crds/ and wait until each CRD is Established."""
    paths = sorted((REPO / "crds").glob("*.yaml"))
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", *(f"-f={p}" for p in paths))
    for path in paths:
        for doc in load_yaml(path):
            kubectl(
                cluster,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                f"crd/{doc['metadata']['name']}",
            )


def namespaced_documents(
    path: Path, namespace: str, original: str = RBAC_NAMESPACE
) -> list[dict[str, Any]]:
    """A manifest with ``original`` (inferscale-system by default; objects, subjects) set to
    ``namespace``."""
    docs = load_yaml(path)
    for doc in docs:
        meta = doc["metadata"]
        if meta.get("namespace") == original:
            meta["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            if subject.get("namespace") == original:
                subject["namespace"] = namespace
    return docs


def rbac_documents(namespace: str) -> list[dict[str, Any]]:
    """config/rbac/operator.yaml with its namespace (objects and subjects) set to ``namespace``."""
    return namespaced_documents(RBAC_FILE, namespace)


def apply_documents(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    """Server-side apply ``docs`` as the admin (one kubectl call)."""
    kubectl(cluster, "apply", "--server-side", "-f", "-", stdin=json.dumps(_as_list(docs)))


@contextlib.contextmanager
def own_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """A namespace for the operator (and what runs beside it), deleted afterwards."""
    with contextlib.suppress(ApiException):
        cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def has_sa() -> bool:
        try:
            cluster.core.read_namespaced_service_account("default", name)
        except ApiException:
            return False
        return True

    wait_for(has_sa, 30, f"the default ServiceAccount of {name}")
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(name)


def operator_deployment(replicas: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The operator as it would be deployed: in-cluster credentials, leader election, probes.

    ``env`` adds settings (``INFERSCALE_*``) to the container.
    """
    field_env = [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OPERATOR_NAME, "labels": {"app": OPERATOR_NAME}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": OPERATOR_NAME}},
            "template": {
                "metadata": {"labels": {"app": OPERATOR_NAME}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        {
                            "name": "operator",
                            "image": OPERATOR_IMAGE,
                            "env": [
                                *(
                                    {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}}
                                    for n, p in field_env
                                ),
                                *({"name": k, "value": v} for k, v in (env or {}).items()),
                            ],
                            "ports": [{"name": "health", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


@dataclass
class Operator:
    """The operator Deployment the tests share."""

    cluster: Cluster
    namespace: str

    def pods(self) -> list[Any]:
        pods = self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=f"app={OPERATOR_NAME}"
        ).items
        return [p for p in pods if not p.metadata.deletion_timestamp]

    def ready_pods(self) -> list[Any]:
        return [p for p in self.pods() if pod_ready(p)]

    def lease_holder(self) -> str | None:
        try:
            lease = client.CoordinationV1Api(self.cluster.api).read_namespaced_lease(
                LEASE_NAME, self.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        holder: str | None = lease.spec.holder_identity
        return holder

    def leader_pod(self) -> Any | None:
        """The live pod whose name the Lease's holder identity starts with (``<pod>-<suffix>``)."""
        holder = self.lease_holder()
        if not holder:
            return None
        for pod in self.pods():
            if holder.rsplit("-", 1)[0] == pod.metadata.name:
                return pod
        return None

    def wait_leader(self, timeout: float = 60) -> Any:
        return wait_for(self.leader_pod, timeout, "an operator pod holding the Lease")

    def kill_process(self, pod: Any) -> None:
        """SIGKILL the operator process of ``pod``, as a crash or an OOM kill would."""
        local = self.cluster.require_local()
        record = local.pods_dir / pod.metadata.uid.replace("-", "") / "pids" / "operator.json"
        pid = int(json.loads(record.read_text())["pid"])
        os.killpg(pid, signal.SIGKILL)

    def logs(self) -> str:
        """The operator pods' logs, for failure messages."""
        local = self.cluster.local
        if local is None:
            return ""
        texts = []
        for folder in sorted((local.log_dir / "pods").glob(f"{self.namespace}_*")):
            for path in folder.glob("*.log"):
                texts.append(f"==> {folder.name} <==\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(texts)


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, namespace: str, replicas: int, env: dict[str, str] | None = None
) -> Iterator[Operator]:
    """Install RBAC into ``namespace``, run the operator there, and remove it all afterwards."""
    docs = rbac_documents(namespace)
    apply_documents(cluster, docs)
    cluster.apps.create_namespaced_deployment(namespace, operator_deployment(replicas, env))
    operator = Operator(cluster, namespace)
    try:
        wait_for(
            lambda: len(operator.ready_pods()) == replicas,
            90,
            f"{replicas} Ready operator pods",
        )
        operator.wait_leader()
        yield operator
    finally:
        with contextlib.suppress(ApiException):
            cluster.apps.delete_namespaced_deployment(OPERATOR_NAME, namespace)
        # Cluster-scoped objects outlive the namespace: remove them by hand.
        for doc in docs:
            name = doc["metadata"]["name"]
            with contextlib.suppress(ApiException):
                if doc["kind"] == "ClusterRole":
                    cluster.rbac.delete_cluster_role(name)
                elif doc["kind"] == "ClusterRoleBinding":
                    cluster.rbac.delete_cluster_role_binding(name)


def _as_list(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": docs}


def sim_model(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """A small sim InferenceModel with autoscaling off, quick to start and to stop."""
    body: dict[str, Any] = {
        "model": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "servedName": f"{name}-served",
        "engine": "sim",
        "args": ["--startup-delay-seconds", "1"],
        "resources": {"gpus": 0, "cpu": "100m", "memory": "128Mi"},
        "replicas": replicas,
        "minReplicas": 0,
        "maxReplicas": 4,
        "autoscaling": {"enabled": False},
        "serving": {"terminationGracePeriodSeconds": 2, "startupTimeoutSeconds": 60},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": body,
    }


def example_sim_model() -> dict[str, Any]:
    """examples/sim-model.yaml, made quick: autoscaling off, 2 replicas, 1 s cold start.

    The example scales to zero and waits for the autoscaler; the test pins the replica count
    instead, which is what the example turns into once ``autoscaling.enabled`` is false.
    """
    (doc,) = load_yaml(REPO / "examples" / "sim-model.yaml")
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    spec["autoscaling"]["enabled"] = False
    spec["replicas"] = 2
    spec["args"] = ["--startup-delay-seconds", "1"]
    spec["resources"]["cpu"] = "100m"
    spec["serving"] = {"terminationGracePeriodSeconds": 2}
    return doc


class Models:
    """InferenceModels of one namespace: create, read, patch, conditions, children, Events."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        model = self.get(name) or {}
        for cond in (model.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                found: dict[str, Any] = cond
                return found
        return None

    def is_ready(self, name: str) -> bool:
        cond = self.condition(name, "Ready")
        return bool(cond and cond.get("status") == "True")

    def children(self, name: str) -> dict[str, list[Any]]:
        """Every object of each child kind (and ReplicaSets, Pods) carrying the model's label."""
        selector = f"{LABEL_MODEL}={name}"
        ns = self.namespace
        policy = client.PolicyV1Api(self.cluster.api)
        return {
            "Deployment": self.cluster.apps.list_namespaced_deployment(
                ns, label_selector=selector
            ).items,
            "Service": self.cluster.core.list_namespaced_service(ns, label_selector=selector).items,
            "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget(
                ns, label_selector=selector
            ).items,
            "ReplicaSet": self.cluster.apps.list_namespaced_replica_set(
                ns, label_selector=selector
            ).items,
            "Pod": self.cluster.core.list_namespaced_pod(ns, label_selector=selector).items,
        }

    def events(self, name: str) -> list[Any]:
        """Events about the model."""
        return list(
            self.cluster.core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={name},involvedObject.kind=InferenceModel",
            ).items
        )

    def event_reasons(self, name: str) -> set[str]:
        return {e.reason for e in self.events(name)}

    def ready_pods(self, name: str) -> list[Any]:
        pods = self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=f"{LABEL_MODEL}={name}"
        ).items
        return [p for p in pods if not p.metadata.deletion_timestamp and pod_ready(p)]
