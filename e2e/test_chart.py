"""The Helm chart on a real API server: install, serve through the router, upgrade, uninstall.

One ``helm install`` of ``charts/inferscale`` serves the module, in a namespace of its own, under
the release name ``e2e-chart`` (so its cluster-wide RBAC never meets config/rbac's, which other
modules apply). The local cluster's launcher runs the operator and the two routers as processes
under the chart's own ServiceAccounts, with the tokens, Secret and ConfigMap volumes and
environment the chart gives them; nothing else is installed by hand. A sim InferenceModel must
become Ready and answer the official ``openai`` SDK through the router Service (its
EndpointSlices: the local cluster has no kube-proxy); ``helm upgrade`` must keep the generated
admin token; ``helm uninstall`` must leave no workload and no process behind, and keep the CRDs.

The tests run in file order and share the release; the last one uninstalls it. They need the
local cluster (the launcher's process list, pod IPs reachable from here).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.redis_server import RedisServer
from tests.redis_server import command as redis_command

from e2e.conftest import REPO, Cluster, get_json, pod_ready, wait_for
from e2e.operator_support import Models, kubectl, own_namespace, sim_model
from e2e.router_support import read_table

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "inferscale"
RELEASE = "e2e-chart"
NAMESPACE = "e2e-chart-system"
FULLNAME = "e2e-chart-inferscale"
OPERATOR = f"{FULLNAME}-operator"
ROUTER = f"{FULLNAME}-router"
ADMIN_SECRET = f"{FULLNAME}-router-admin"
CRDS = sorted(
    doc["metadata"]["name"]
    for path in (REPO / "crds").glob("*.yaml")
    for doc in yaml.safe_load_all(path.read_text())
    if doc
)
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
#: Short grace periods, so that the upgrade and the uninstall finish quickly; and the pods run
#: this checkout's code (the launcher starts pods with a clean environment, where `inferscale`
#: is whatever the virtualenv's editable install points at).
INSTALL_VALUES = [
    "router.drainSeconds=1",
    "router.shutdownGraceSeconds=3",
    "operator.terminationGracePeriodSeconds=10",
    f"operator.extraEnv[0].name=PYTHONPATH,operator.extraEnv[0].value={REPO / 'operator'}",
    f"router.extraEnv[0].name=PYTHONPATH,router.extraEnv[0].value={REPO / 'operator'}",
]


@dataclass
class Release:
    """The installed chart: helm, the release's pods, its router Service."""

    cluster: Cluster
    helm_binary: str
    installed: bool = True
    notes: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5, trust_env=False))

    def helm(self, *args: str, timeout: float = 300) -> str:
        """Run helm against the cluster; fail with its output when it fails."""
        done = subprocess.run(
            [self.helm_binary, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"helm {' '.join(args)}:\n{done.stderr}\n{self.logs()}")
        return done.stdout

    def pods(self, component: str | None = None) -> list[Any]:
        selector = SELECTOR + (f",app.kubernetes.io/component={component}" if component else "")
        pods = self.cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        return [p for p in pods if not p.metadata.deletion_timestamp]

    def ready(self, component: str) -> list[Any]:
        return [p for p in self.pods(component) if pod_ready(p) and p.status.pod_ip]

    def admin_token(self) -> str:
        secret = self.cluster.core.read_namespaced_secret(ADMIN_SECRET, NAMESPACE)
        return base64.b64decode(secret.data["token"]).decode()

    def service_endpoints(self) -> list[str]:
        """``ip:port`` of every ready endpoint of the router Service, as kube-proxy would use."""
        service = self.cluster.core.read_namespaced_service(ROUTER, NAMESPACE)
        slices = client.DiscoveryV1Api(self.cluster.api).list_namespaced_endpoint_slice(
            NAMESPACE, label_selector=f"kubernetes.io/service-name={ROUTER}"
        )
        port_name = service.spec.ports[0].name
        out = []
        for endpoint_slice in slices.items:
            ports = [p.port for p in endpoint_slice.ports or [] if p.name == port_name]
            for endpoint in endpoint_slice.endpoints or []:
                if ports and endpoint.conditions and endpoint.conditions.ready:
                    out.extend(f"{address}:{ports[0]}" for address in endpoint.addresses)
        return sorted(out)

    def table(self, endpoint: str) -> dict[str, Any] | None:
        """The routing table a router holds, read with the chart's admin token."""
        return read_table(self.http, endpoint, self.admin_token())

    def client(self, endpoint: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://{endpoint}/v1",
            api_key="unused",  # the router has no client keys yet
            max_retries=0,
            timeout=30,
            http_client=httpx.Client(trust_env=False),
        )

    def logs(self) -> str:
        """The release's pod logs (tails), for failure messages."""
        local = self.cluster.local
        if local is None:
            return ""
        texts = []
        for folder in sorted((local.log_dir / "pods").glob(f"{NAMESPACE}_*")):
            for path in folder.glob("*.log"):
                texts.append(f"==> {folder.name} <==\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)


def _helm_binary(cluster: Cluster) -> str:
    local = cluster.require_local()
    binary = Path(local.assets_dir) / "helm"
    assert binary.exists(), f"{binary} missing: run tools/kube/build.sh"
    return str(binary)


def _remove_crds(cluster: Cluster) -> None:
    """Delete CRDs that other modules applied, so the chart installs them as on a new cluster.

    Objects that earlier modules left behind with a finalizer of an operator that is gone would
    keep their CRD terminating for ever: their finalizers are dropped first.
    """
    ext = client.ApiextensionsV1Api(cluster.api)
    custom = client.CustomObjectsApi(cluster.api)
    for crd in ext.list_custom_resource_definition().items:
        if crd.metadata.name not in CRDS:
            continue
        group, plural = crd.spec.group, crd.spec.names.plural
        version = crd.spec.versions[0].name
        with contextlib.suppress(ApiException):
            listed = custom.list_cluster_custom_object(group, version, plural)
            for obj in listed.get("items") or []:
                meta = obj["metadata"]
                if meta.get("finalizers"):
                    with contextlib.suppress(ApiException):
                        custom.patch_namespaced_custom_object(
                            group,
                            version,
                            meta["namespace"],
                            plural,
                            meta["name"],
                            {"metadata": {"finalizers": None}},
                        )
    for name in CRDS:
        with contextlib.suppress(ApiException):
            ext.delete_custom_resource_definition(name)

    def gone() -> bool:
        names = {c.metadata.name for c in ext.list_custom_resource_definition().items}
        return not names & set(CRDS)

    wait_for(gone, 60, "leftover CRDs to be deleted")


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """``helm install --wait`` of the chart; uninstalled afterwards if a test did not."""
    helm = _helm_binary(cluster)
    _remove_crds(cluster)
    with own_namespace(cluster, NAMESPACE):
        installed = Release(cluster, helm)
        args = ["install", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=180s"]
        for item in INSTALL_VALUES:
            args += ["--set", item]
        installed.notes = installed.helm(*args, timeout=240)
        try:
            yield installed
        finally:
            installed.http.close()
            if installed.installed:
                installed.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=120)


def test_install_runs_the_operator_and_two_routers_under_the_charts_accounts(
    cluster: Cluster, release: Release
) -> None:
    local = cluster.require_local()
    (operator,) = release.ready("operator")
    routers = release.ready("router")
    assert len(routers) == 2, "helm install --wait returned before two routers were Ready"
    assert operator.spec.service_account_name == OPERATOR
    assert {p.spec.service_account_name for p in routers} == {ROUTER}
    assert all(p.spec.automount_service_account_token is False for p in routers)
    launched = get_json(f"http://127.0.0.1:{local.launcher_port}/pods")
    for pod in [operator, *routers]:
        assert f"{NAMESPACE}/{pod.metadata.name}" in launched  # a real process
    # The operator authenticated with its ServiceAccount's token and holds the chart's Lease.
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(OPERATOR, NAMESPACE)
    assert (lease.spec.holder_identity or "").startswith(operator.metadata.name)
    # The routers turned Ready only with a table: the operator pushed one with the chart's token.
    for endpoint in release.service_endpoints():
        assert release.table(endpoint) is not None
    ext = client.ApiextensionsV1Api(cluster.api)
    for name in CRDS:
        crd = ext.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    assert f"port-forward service/{ROUTER}" in release.notes


@pytest.mark.parametrize(
    ("verb", "resource", "where", "allowed"),
    [
        ("create", "leases", NAMESPACE, "yes"),
        ("patch", "configmaps", NAMESPACE, "yes"),
        ("get", f"secrets/{ADMIN_SECRET}", NAMESPACE, "yes"),
        # Watching Secrets lets a rotated provider or client key reach the routers at once
        # (docs/access.md); writing them is narrowed to the routers' credentials Secret.
        ("list", "secrets", NAMESPACE, "yes"),
        ("patch", f"secrets/{ADMIN_SECRET}", NAMESPACE, "no"),
        ("patch", f"secrets/{FULLNAME}-router-credentials", NAMESPACE, "yes"),
        ("delete", "secrets", NAMESPACE, "no"),
        ("create", "configmaps", "default", "no"),
        ("create", "pods", NAMESPACE, "no"),
        ("patch", "inferencemodels.inferscale.io/status", "default", "yes"),
        ("create", "deployments.apps", "default", "yes"),
        ("delete", "inferencemodels.inferscale.io", "default", "no"),
    ],
)
def test_the_operators_account_has_exactly_the_charts_rules(
    cluster: Cluster, release: Release, verb: str, resource: str, where: str, allowed: str
) -> None:
    account = f"system:serviceaccount:{NAMESPACE}:{OPERATOR}"
    done = subprocess.run(
        [
            str(Path(cluster.require_local().assets_dir) / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            where,
            f"--as={account}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.strip() == allowed, done.stderr


def _chat(api: openai.OpenAI, served: str, stream: bool) -> str:
    messages = [{"role": "user", "content": "Say hello."}]
    if not stream:
        answer = api.chat.completions.create(model=served, messages=messages, max_tokens=8)
        assert answer.model == served and answer.choices[0].finish_reason
        return answer.choices[0].message.content or ""
    parts, finished = [], None
    with api.chat.completions.create(
        model=served, messages=messages, max_tokens=8, stream=True
    ) as chunks:
        for chunk in chunks:
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finished = choice.finish_reason or finished
    assert finished, "the stream ended without a finish reason"
    return "".join(parts)


def _served_everywhere(release: Release, served: str, endpoints: int) -> list[str]:
    """Wait until the Service has ``endpoints`` ready routers and each routes ``served``."""

    def routed() -> list[str] | None:
        found = release.service_endpoints()
        if len(found) != endpoints:
            return None
        for endpoint in found:
            table = release.table(endpoint) or {}
            model = (table.get("models") or {}).get(served) or {}
            if not any(e.get("ready", True) for e in model.get("endpoints") or []):
                return None
        return found

    try:
        result: list[str] = wait_for(routed, 60, f"{endpoints} routers routing {served}")
    except pytest.fail.Exception as error:
        pytest.fail(f"{error}\n{release.logs()}")
    return result


def test_a_sim_model_becomes_ready_and_serves_through_the_router_service(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    models = Models(cluster, namespace)
    models.create(sim_model("chart-sim", replicas=1))
    served = "chart-sim-served"
    wait_for(lambda: models.is_ready("chart-sim"), 90, "Ready=True on the model")
    endpoints = _served_everywhere(release, served, 2)
    router_ips = {p.status.pod_ip for p in release.ready("router")}
    assert {e.rsplit(":", 1)[0] for e in endpoints} == router_ips
    assert {e.rsplit(":", 1)[1] for e in endpoints} == {"8080"}  # targetPort http
    for endpoint in endpoints:
        with release.client(endpoint) as api:
            assert served in [m.id for m in api.models.list().data]
            assert _chat(api, served, stream=False)
            assert _chat(api, served, stream=True)
            with pytest.raises(openai.NotFoundError):
                api.chat.completions.create(
                    model="no-such-model", messages=[{"role": "user", "content": "hi"}]
                )


def test_upgrade_keeps_the_admin_token_and_the_routers_keep_serving(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    models = Models(cluster, namespace)
    models.create(sim_model("upgraded", replicas=1))
    wait_for(lambda: models.is_ready("upgraded"), 90, "Ready=True on the model")
    token = release.admin_token()
    secret_uid = cluster.core.read_namespaced_secret(ADMIN_SECRET, NAMESPACE).metadata.uid
    before = {p.metadata.name for p in release.pods("router")}
    release.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set=router.replicas=3",
        "--wait",
        "--timeout=180s",
        timeout=240,
    )
    assert release.admin_token() == token
    assert cluster.core.read_namespaced_secret(ADMIN_SECRET, NAMESPACE).metadata.uid == secret_uid
    # The new router was programmed with the same token, and every router serves.
    endpoints = _served_everywhere(release, "upgraded-served", 3)
    assert len({p.metadata.name for p in release.pods("router")} - before) == 1
    for endpoint in endpoints:
        with release.client(endpoint) as api:
            assert _chat(api, "upgraded-served", stream=False)
    # An upgrade with new values (not --reuse-values) finds the Secret too.
    release.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=180s")
    assert release.admin_token() == token


def _upgrade(release: Release, *sets: str) -> None:
    """``helm upgrade --reuse-values`` with ``sets``, waiting for the rollout."""
    args = ["upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values"]
    release.helm(*args, *(f"--set={s}" for s in sets), "--wait", "--timeout=180s", timeout=240)


def _redis_env(pod: Any) -> str | None:
    (container,) = pod.spec.containers
    names = [e.name for e in container.env or []]
    return "INFERSCALE_ROUTER_REDIS_URL" if "INFERSCALE_ROUTER_REDIS_URL" in names else None


def test_the_bundled_redis_runs_and_requires_its_password(
    cluster: Cluster, release: Release
) -> None:
    _upgrade(release, "redis.mode=bundled")
    name = f"{FULLNAME}-redis"
    wait_for(lambda: release.ready("redis"), 60, "the bundled Redis pod to be Ready")
    (pod,) = release.ready("redis")
    secret = cluster.core.read_namespaced_secret(name, NAMESPACE)
    password = base64.b64decode(secret.data["password"]).decode()
    ip = pod.status.pod_ip
    assert redis_command(ip, 6379, ("PING",)).startswith(b"-NOAUTH")
    assert redis_command(ip, 6379, ("PING",), password) == b"+PONG\r\n"
    assert redis_command(ip, 6379, ("CONFIG", "GET", "maxmemory-policy"), password).endswith(
        b"noeviction\r\n"
    )
    assert all(_redis_env(p) for p in release.ready("router"))
    # An upgrade keeps the generated password (the routers' URL with it).
    _upgrade(release, "redis.bundled.maxMemory=32mb")
    secret = cluster.core.read_namespaced_secret(name, NAMESPACE)
    assert base64.b64decode(secret.data["password"]).decode() == password


def test_the_routers_share_client_limits_through_an_external_redis(
    cluster: Cluster, release: Release, namespace: str, tmp_path: Path
) -> None:
    local = cluster.require_local()
    host = local.gateway_ip if local.network == "netns" else "127.0.0.1"
    with RedisServer(tmp_path, host=host, password=secrets.token_hex(16)) as redis:
        secret = {"metadata": {"name": "e2e-shared-redis"}, "stringData": {"url": redis.url}}
        cluster.core.create_namespaced_secret(NAMESPACE, secret)
        _upgrade(release, "redis.mode=external", "redis.existingSecret=e2e-shared-redis")
        assert not release.pods("redis"), "the bundled Redis is gone with mode external"
        models = Models(cluster, namespace)
        models.create(sim_model("limited", replicas=1))
        served = "limited-served"
        wait_for(lambda: models.is_ready("limited"), 90, "Ready=True on the model")
        # helm keeps the earlier upgrade's router.replicas (3): a limit shared by all of them.
        routers = cluster.apps.read_namespaced_deployment(ROUTER, NAMESPACE).spec.replicas
        endpoints = _served_everywhere(release, served, routers)
        key = "sk-shared-" + secrets.token_hex(16)
        cluster.core.create_namespaced_secret(
            namespace, {"metadata": {"name": "app-key"}, "stringData": {"api-key": key}}
        )
        limit = 6
        cluster.custom.create_namespaced_custom_object(
            "inferscale.io",
            "v1alpha1",
            namespace,
            "inferenceclients",
            {
                "apiVersion": "inferscale.io/v1alpha1",
                "kind": "InferenceClient",
                "metadata": {"name": "app"},
                "spec": {
                    "apiKeySecretRef": {"name": "app-key", "key": "api-key"},
                    "limits": {"requestsPerMinute": limit},
                },
            },
        )

        def status(endpoint: str) -> int:
            with release.client(endpoint) as base:
                try:
                    base.with_options(api_key=key).chat.completions.create(
                        model=served, messages=[{"role": "user", "content": "hi"}], max_tokens=2
                    )
                except openai.APIStatusError as error:
                    return error.status_code
            return 200

        wait_for(lambda: all(status(e) == 200 for e in endpoints), 30, "both routers know the key")
        redis.command("FLUSHALL")  # the probes above took from the bucket: start it full
        answers = [status(endpoints[i % len(endpoints)]) for i in range(2 * limit)]
        # One bucket for every router: a minute's allowance (plus at most one refilled
        # request while the loop runs), not one allowance per router.
        assert limit <= answers.count(200) <= limit + 1, answers
        assert set(answers) == {200, 429}, answers
        assert redis.command("DBSIZE") != b":0\r\n"  # the routers keep their counters there


def test_uninstall_leaves_no_workload_or_process_behind_and_keeps_the_crds(
    cluster: Cluster, release: Release
) -> None:
    local = cluster.require_local()
    names = [p.metadata.name for p in release.pods()]
    assert names
    release.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s", timeout=150)
    release.installed = False

    def nothing_left() -> bool:
        return not cluster.core.list_namespaced_pod(NAMESPACE).items

    wait_for(nothing_left, 90, "the release's pods to be gone")
    launched = get_json(f"http://127.0.0.1:{local.launcher_port}/pods")
    assert not [key for key in launched if key.startswith(f"{NAMESPACE}/")]
    apps, core = cluster.apps, cluster.core
    assert not apps.list_namespaced_deployment(NAMESPACE).items
    assert not apps.list_namespaced_replica_set(NAMESPACE).items
    assert not core.list_namespaced_service(NAMESPACE).items
    assert [c.metadata.name for c in core.list_namespaced_config_map(NAMESPACE).items] == [
        "kube-root-ca.crt"
    ]
    assert not [
        s.metadata.name
        for s in core.list_namespaced_secret(NAMESPACE).items
        if s.metadata.name.startswith(FULLNAME) or s.metadata.name.startswith("sh.helm")
    ]
    assert not client.CoordinationV1Api(cluster.api).list_namespaced_lease(NAMESPACE).items
    assert (
        not client.PolicyV1Api(cluster.api).list_namespaced_pod_disruption_budget(NAMESPACE).items
    )
    rbac = cluster.rbac
    assert OPERATOR not in {r.metadata.name for r in rbac.list_cluster_role().items}
    assert OPERATOR not in {b.metadata.name for b in rbac.list_cluster_role_binding().items}
    assert not rbac.list_namespaced_role(NAMESPACE).items
    assert not core.list_namespaced_service_account(NAMESPACE, label_selector=SELECTOR).items
    # crds.keep: the CRDs (and so anyone's InferenceModels) stay.
    ext = client.ApiextensionsV1Api(cluster.api)
    assert set(CRDS) <= {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert kubectl(cluster, "get", "crd", CRDS[0], "-o", "name").strip()
