"""KEDA on the local cluster, for e2e/test_keda.py: its CRDs, RBAC, and its operator as a process.

``tools/keda/build.sh`` builds KEDA's operator from its Go module (opt-in, ``INFERSCALE_KEDA=1``:
the first build takes 15 to 30 minutes on 2 cores) and copies the module's ``config/`` beside the
binary, so the CRDs and the RBAC applied here are KEDA's own at the pinned version.

:func:`keda_running` applies KEDA's CRDs, creates KEDA's namespace with its ServiceAccount and
exactly its published roles (``config/rbac``: a ClusterRole and a Role for its namespace),
writes a kubeconfig holding a bound token of that ServiceAccount, and runs the operator on this
machine with it: no admission webhooks (a separate binary; nothing validates ScaledObjects
here), the metrics gRPC service on loopback, certificates made by KEDA's own rotation into a
directory of the state folder. :func:`scaled_object` is ``examples/interop/keda-scaledobject.yaml``
pointed at a test's model and at the cluster's Prometheus.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes.client.rest import ApiException

from e2e.conftest import REPO, Cluster, built_dir, load_yaml, wait_for
from e2e.images_support import free_port
from e2e.operator_support import apply_documents, kubectl, namespaced_documents, own_namespace

KEDA_ENV = "INFERSCALE_KEDA"
KEDA_BUILD = REPO / "tools" / "keda" / "build.sh"
KEDA_EXAMPLE = REPO / "examples" / "interop" / "keda-scaledobject.yaml"
KEDA_GROUP, KEDA_VERSION = "keda.sh", "v1alpha1"
#: The namespace KEDA's config/ names, and the ServiceAccount its roles are bound to.
KEDA_CONFIG_NAMESPACE = "keda"
KEDA_SERVICE_ACCOUNT = "keda-operator"
TOKEN_SECONDS = 3600
#: KEDA's metrics API server, as its config/metrics-server names it.
METRICS_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS = "v1beta1.external.metrics.k8s.io"
CERTS_SECRET = "kedaorg-certs"


KEDA_OPT_IN = (
    f"KEDA is opt-in: set {KEDA_ENV}=1 (tools/keda/build.sh builds it from its Go module "
    "first: 15 to 30 min on 2 cores, then cached)"
)


def keda_skip_reason(cluster: Cluster) -> str | None:
    """Why KEDA cannot run on this cluster, or None."""
    if cluster.local is None:
        return "needs the local cluster (KEDA runs as a process beside it)"
    if cluster.local.network != "netns":
        return (
            "needs the pod network (netns): the API server reaches KEDA's metrics API server "
            "on the bridge address, as Endpoints refuse loopback ones"
        )
    return None


def keda_dir() -> Path:
    """Where tools/keda/build.sh keeps keda, keda-adapter and config/ (built on the first call)."""
    return built_dir(KEDA_BUILD)


def keda_query(namespace: str, name: str, served: str) -> str:
    """The example ScaledObject's query, for this model instead of the example's."""
    (doc,) = load_yaml(KEDA_EXAMPLE)
    (trigger,) = doc["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    for old, new in (
        ('namespace="default"', f'namespace="{namespace}"'),
        ('inferscale_io_model="llama"', f'inferscale_io_model="{name}"'),
        ('model="llama-3.1-8b"', f'model="{served}"'),
    ):
        assert old in query, f"{KEDA_EXAMPLE.name}: the query no longer selects {old}"
        query = query.replace(old, new)
    return query


def scaled_object(
    namespace: str, name: str, served: str, prometheus: str, **spec: Any
) -> dict[str, Any]:
    """The example ScaledObject for model ``name``, on ``prometheus``, with ``spec`` overrides."""
    (doc,) = load_yaml(KEDA_EXAMPLE)
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["scaleTargetRef"]["name"] = name
    (trigger,) = doc["spec"]["triggers"]
    trigger["metadata"]["serverAddress"] = prometheus
    trigger["metadata"]["query"] = keda_query(namespace, name, served)
    doc["spec"].update(spec)
    return doc


def _keda_documents(paths: list[Path], namespace: str) -> list[dict[str, Any]]:
    """KEDA's manifests (ServiceAccount, roles) from its config/, moved into ``namespace``."""
    return [d for p in paths for d in namespaced_documents(p, namespace, KEDA_CONFIG_NAMESPACE)]


def apply_keda_crds(cluster: Cluster, config: Path) -> None:
    """Server-side apply KEDA's CRDs (config/crd/bases) and wait until they are Established."""
    paths = sorted((config / "crd" / "bases").glob("*.yaml"))
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", *(f"-f={p}" for p in paths))
    names = [f"crd/{doc['metadata']['name']}" for p in paths for doc in load_yaml(p)]
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", *names)


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> None:
    """A kubeconfig of the admin's cluster entry with a bound token of ``account``."""
    request = {"spec": {"expirationSeconds": TOKEN_SECONDS}}
    token = cluster.core.create_namespaced_service_account_token(account, namespace, request)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = config["clusters"]
    user = f"system:serviceaccount:{namespace}:{account}"
    config["users"] = [{"name": user, "user": {"token": token.status.token}}]
    config["contexts"] = [{"name": user, "context": {"cluster": entry["name"], "user": user}}]
    config["current-context"] = user
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Keda:
    """The KEDA operator process: how it is started, and where it writes."""

    namespace: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    home: Path
    """KEDA's folder in the cluster's state: its kubeconfig and its certificates (certs/)."""
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def logs(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def stop(self, grace: float = 15) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _keda(cluster: Cluster, assets: Path, namespace: str) -> Keda:
    """KEDA's operator as its ServiceAccount, its servers on loopback ports (not started)."""
    local = cluster.require_local()
    home = local.state_dir / "keda"
    kubeconfig = home / "kubeconfig"
    service_account_kubeconfig(cluster, namespace, KEDA_SERVICE_ACCOUNT, kubeconfig)
    ports = {name: free_port() for name in ("metrics", "health", "grpc")}
    argv = [
        str(assets / "keda"),
        "--leader-elect=false",
        f"--metrics-bind-address=127.0.0.1:{ports['metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['health']}",
        f"--metrics-service-bind-address=127.0.0.1:{ports['grpc']}",
        # The gRPC metrics service needs certificates: KEDA's own rotation makes them (the
        # Secret kedaorg-certs in its namespace) without patching webhooks or APIServices.
        "--enable-cert-rotation=true",
        f"--cert-dir={home / 'certs'}",
        "--enable-webhook-patching=false",
        "--enable-apiservice-patching=false",
        f"--ca-dir={home / 'ca'}",
        "--zap-encoder=console",
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": namespace,
        "POD_NAMESPACE": namespace,
    }
    return Keda(namespace, argv, env, local.log_dir / "keda-operator.log", home, ports)


def _certs_made(cluster: Cluster, namespace: str) -> bool:
    try:
        secret = cluster.core.read_namespaced_secret(CERTS_SECRET, namespace)
    except ApiException:
        return False
    return "tls.key" in (secret.data or {})


def _mount_certs(cluster: Cluster, keda: Keda) -> None:
    """What a kubelet does for KEDA's pod: its certificates Secret as files in --cert-dir."""
    secret = cluster.core.read_namespaced_secret(CERTS_SECRET, keda.namespace)
    certs = keda.home / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for key, value in (secret.data or {}).items():
        path = certs / key
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(value))


def _healthy(keda: Keda) -> bool:
    assert keda.process and keda.process.poll() is None, f"KEDA exited:\n{keda.logs()}"
    try:
        return httpx.get(f"http://127.0.0.1:{keda.ports['health']}/readyz", timeout=2).is_success
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def keda_running(cluster: Cluster, assets: Path, namespace: str) -> Iterator[Keda]:
    """KEDA's CRDs and roles, and its operator running as its least-privilege ServiceAccount."""
    config = assets / "config"
    apply_keda_crds(cluster, config)
    docs = _keda_documents(
        [
            config / "service_account" / "service_account.yaml",
            config / "rbac" / "role.yaml",
            config / "rbac" / "role_binding.yaml",
        ],
        namespace,
    )
    with own_namespace(cluster, namespace) as ns:
        apply_documents(cluster, docs)
        keda = _keda(cluster, assets, ns)
        keda.start()
        try:
            # KEDA's certificate rotation writes a new Secret and exits, to be restarted with
            # the Secret mounted (RestartOnSecretRefresh): do what the kubelet would.
            wait_for(lambda: _certs_made(cluster, ns), 60, f"KEDA's {CERTS_SECRET} Secret")
            keda.stop(grace=30)
            _mount_certs(cluster, keda)
            keda.start()
            wait_for(lambda: _healthy(keda), 90, "KEDA's operator to be ready")
            yield keda
        finally:
            keda.stop()
            _delete_cluster_scoped(cluster, docs)


def _delete_cluster_scoped(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    """Cluster-scoped roles and bindings (and the kube-system one) outlive KEDA's namespace."""
    for doc in docs:
        name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace")
        with contextlib.suppress(ApiException):
            if doc["kind"] == "ClusterRole":
                cluster.rbac.delete_cluster_role(name)
            elif doc["kind"] == "ClusterRoleBinding":
                cluster.rbac.delete_cluster_role_binding(name)
            elif doc["kind"] == "RoleBinding" and namespace == "kube-system":
                cluster.rbac.delete_namespaced_role_binding(name, namespace)


@dataclass
class MetricsServer:
    """KEDA's metrics API server (keda-adapter) as a process, behind the aggregation layer."""

    process: subprocess.Popen[bytes]
    log: Path

    def logs(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]


def _metrics_server_objects(keda: Keda, address: str, port: int) -> list[dict[str, Any]]:
    """The Service, its Endpoints (this machine's bridge address) and the APIService."""
    ca = base64.b64encode((keda.home / "certs" / "ca.crt").read_bytes()).decode()
    meta = {"name": METRICS_SERVICE, "namespace": keda.namespace}
    return [
        # No selector: the server is a process of this machine, not a pod. The API server
        # (--enable-aggregator-routing) dials the Endpoints' address.
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port}]}
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS},
            "spec": {
                "service": {"name": METRICS_SERVICE, "namespace": keda.namespace, "port": 443},
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": ca,  # KEDA's CA, which signed the server's certificate
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def _start_metrics_server(cluster: Cluster, assets: Path, keda: Keda, port: int) -> MetricsServer:
    local = cluster.require_local()
    certs, kubeconfig = keda.home / "certs", str(keda.home / "kubeconfig")
    argv = [
        str(assets / "keda-adapter"),
        f"--bind-address={local.gateway_ip}",
        f"--secure-port={port}",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'tls.crt'}",
        f"--tls-private-key-file={certs / 'tls.key'}",
        f"--port={free_port()}",
        f"--metrics-service-address=127.0.0.1:{keda.ports['grpc']}",
        f"--metrics-service-grpc-authority=keda-operator.{keda.namespace}.svc",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--zap-encoder=console",
    ]
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": keda.namespace,
    }
    log = local.log_dir / "keda-metrics-apiserver.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return MetricsServer(process, log)


def _api_service_available(cluster: Cluster, server: MetricsServer) -> bool:
    assert server.process.poll() is None, f"KEDA's metrics API server exited:\n{server.logs()}"
    found = cluster.custom.get_cluster_custom_object(
        "apiregistration.k8s.io", "v1", "apiservices", EXTERNAL_METRICS
    )
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


@contextlib.contextmanager
def metrics_server_running(cluster: Cluster, assets: Path, keda: Keda) -> Iterator[MetricsServer]:
    """KEDA's metrics API server serving external.metrics.k8s.io through the API server.

    Its roles are KEDA's config/metrics-server ones (delegated authentication and authorization
    for KEDA's ServiceAccount, external metrics for the HPA controller). The APIService is
    removed before the server stops: an unavailable APIService would break discovery, and so
    namespace deletion, for every later test of the session.
    """
    local = cluster.require_local()
    config = assets / "config" / "metrics-server"
    docs = _keda_documents([config / "role.yaml", config / "role_binding.yaml"], keda.namespace)
    apply_documents(cluster, docs)
    port = free_port()
    server = _start_metrics_server(cluster, assets, keda, port)
    objects = _metrics_server_objects(keda, local.gateway_ip, port)
    try:
        apply_documents(cluster, objects)
        wait_for(
            lambda: _api_service_available(cluster, server),
            90,
            f"the APIService {EXTERNAL_METRICS} to be Available",
        )
        yield server
    finally:
        with contextlib.suppress(ApiException):
            cluster.custom.delete_cluster_custom_object(
                "apiregistration.k8s.io", "v1", "apiservices", EXTERNAL_METRICS
            )
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(15)
        _delete_cluster_scoped(cluster, docs)
