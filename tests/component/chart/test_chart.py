"""The Helm chart, rendered by the real helm: lint, Kubernetes schemas, values schema, agreement.

Every object rendered with the default values and with each ``ci/*-values.yaml`` is validated
against the Kubernetes 1.36 schemas (strict: an unknown field fails). The chart must agree with
what is proven elsewhere: the RBAC with ``config/rbac`` (proven on a real API server), the
operator's environment with :class:`OperatorSettings`, the CRDs with ``crds/``, the images with
the launcher's map and the Dockerfiles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from inferscale import __version__
from inferscale.cli.chart import (
    CHART_OWNED_ROUTING,
    SETTINGS_GROUPS,
    build_values_schema,
    render_values_schema,
    values_comments,
)
from inferscale.cli.main import build_parser, crd_files
from inferscale.config import OperatorSettings, RoutingSettings
from inferscale.reconcile.engines import SIM
from inferscale.reconcile.labels import object_labels
from inferscale.reconcile.routing import build_table_configmap, is_router_pod
from inferscale.reconcile.settings import ReconcileSettings
from tests.component.chart.helm import (
    CHART,
    NAMESPACE,
    REPO,
    by_kind_name,
    render,
    run_helm,
)

KUBERNETES = "1.36.0"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = [None, *CI_VALUES]
VALUE_IDS = ["default", *(p.stem for p in CI_VALUES)]
FULL = CHART / "ci" / "full-values.yaml"
#: prometheus-operator's kinds: no schema offline; their shape is checked by hand below.
MONITORING = "monitoring.coreos.com/v1"


def rendered(values_file: Path | None, **kw: Any) -> list[dict[str, Any]]:
    return render(None, values_file, **kw) if values_file else render(None, **kw)


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workloads = ("Deployment", "StatefulSet")
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in workloads}


def container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (template,) = [
        t
        for t in pod_templates(docs).values()
        if t["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    (found,) = template["spec"]["containers"]
    result: dict[str, Any] = found
    return result


# --- lint and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_IDS)
def test_helm_lint_passes_strictly(values_file):
    args = ["lint", "--strict", str(CHART)]
    if values_file:
        args += ["-f", str(values_file)]
    done = run_helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_IDS)
def test_every_rendered_object_is_valid_kubernetes(values_file):
    docs = rendered(values_file)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == MONITORING:
            assert doc["kind"] in ("ServiceMonitor", "PodMonitor")
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "inferscale"
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            expected = "monitoring" if doc["kind"] == "ConfigMap" and values_file == FULL else None
            assert doc["metadata"]["namespace"] in (NAMESPACE, expected), doc["metadata"]


def test_the_validator_does_catch_a_misspelt_field():
    (deployment,) = [d for d in render() if d["kind"] == "Deployment"][:1]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


BAD_VALUES = [
    # (--set, what helm's error must name)
    ("router.replicas=-1", "'/router/replicas': minimum"),
    ("router.replica=3", "'/router': additional properties 'replica'"),
    ("operator.leaderElection.enabled=false,operator.replicas=2", "'/operator/replicas': maximum"),
    ("router.service.type=Ingress", "'/router/service/type'"),
    ("operator.settings.reconcile.preStopSeconds=900", "reconcile/preStopSeconds': maximum"),
    ("operator.settings.reconcile.preStopSecond=9", "additional properties 'preStopSecond'"),
    ("operator.settings.routing.namespace=other", "routing': additional properties 'namespace'"),
    ("operator.settings.reconcile.images.ollama=x", "images': additional properties 'ollama'"),
    ("metrics.serviceMonitor.interval=soon", "'/metrics/serviceMonitor/interval'"),
    ("router.podDisruptionBudget.minAvailable=half", "'/router/podDisruptionBudget/minAvailable'"),
    ("operator.image.digest=latest", "'/operator/image/digest'"),
    ("fullnameOverride=Not_A_Name", "'/fullnameOverride'"),
    ("operator.watchNamespaces[0]=Team A", "'/operator/watchNamespaces/0'"),
    ("redis.mode=sentinel", "'/redis/mode'"),
    ("redis.budgetsDuringOutage=open", "'/redis/budgetsDuringOutage'"),
    ("redis.bundled.maxMemory=lots", "'/redis/bundled/maxMemory'"),
    ("redis.existingSecret=Not A Name", "'/redis/existingSecret'"),
    (
        "operator.settings.autoscaler.defaultAcceleratorHourPrice=-1",
        "autoscaler/defaultAcceleratorHourPrice'",
    ),
    ("operator.settings.autoscaler.acceleratorHourPrices.gpu=0", "acceleratorHourPrices/gpu'"),
]


@pytest.mark.parametrize(("setting", "named"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_invalid_values_fail_at_the_schema_with_the_key_named(setting, named):
    done = run_helm("template", "x", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr
    assert named in done.stderr, done.stderr


def test_a_malformed_accelerator_price_key_fails_at_the_schema():
    prices = {"nvidia.com/gpu ": 3.0}  # a trailing space: no such resource or label
    values = {"operator": {"settings": {"autoscaler": {"acceleratorHourPrices": prices}}}}
    done = run_helm("template", "x", str(CHART), values=values)
    # helm names the key but not its path for a propertyNames failure.
    assert done.returncode != 0 and "invalid propertyName 'nvidia.com/gpu '" in done.stderr


def test_a_wrong_type_in_a_values_file_is_named_too():
    done = run_helm("template", "x", str(CHART), values={"router": {"drainSeconds": "5s"}})
    assert done.returncode != 0 and "'/router/drainSeconds'" in done.stderr, done.stderr


def test_values_schema_is_generated_from_values_yaml_and_the_settings():
    assert (CHART / "values.schema.json").read_text() == render_values_schema(CHART), (
        "values.schema.json is stale: run `make crds`"
    )


def _paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        out.append((*prefix, key))
        if isinstance(value, dict) and value and key not in ("labels",):
            out.extend(_paths(value, (*prefix, key)))
    return out


def test_every_value_has_a_comment_and_a_description():
    text = (CHART / "values.yaml").read_text()
    comments = values_comments(text)
    missing = [".".join(p) for p in _paths(yaml.safe_load(text)) if p not in comments]
    assert missing == []
    schema = json.loads((CHART / "values.schema.json").read_text())

    def undescribed(node: dict[str, Any], where: str) -> list[str]:
        found = []
        for key, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                found.append(f"{where}.{key}")
            found.extend(undescribed(sub, f"{where}.{key}"))
        return found

    assert undescribed(schema, "") == []


def test_a_value_without_a_comment_is_refused_by_the_generator():
    text = "# The router.\nrouter:\n  # The port.\n  port: 8080\n  replicas: 2\n"
    with pytest.raises(ValueError, match=r"router\.replicas has no comment"):
        build_values_schema(yaml.safe_load(text), values_comments(text))


def test_the_settings_schema_follows_the_operators_settings_models():
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = schema["properties"]["operator"]["properties"]["settings"]["properties"]
    assert set(settings["reconcile"]["properties"]) == {
        _camel(f) for f in ReconcileSettings.model_fields
    }
    assert set(settings["routing"]["properties"]) == {
        _camel(f) for f in RoutingSettings.model_fields if f not in CHART_OWNED_ROUTING
    }


def test_every_settings_group_of_the_operator_is_a_chart_value():
    # A new group in OperatorSettings (an autoscaler's, say) needs its place in SETTINGS_GROUPS
    # (inferscale/cli/chart.py) and a commented `operator.settings.<group>: {}` in values.yaml.
    groups = {
        name
        for name, info in OperatorSettings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    assert groups == set(SETTINGS_GROUPS)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["operator"]["settings"]) == groups


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


# --- what the chart must agree with ----------------------------------------------------------


def test_the_chart_crds_are_the_generated_ones():
    files = crd_files()
    copies = CHART / "files" / "crds"
    assert {p.name for p in copies.glob("*.yaml")} == set(files), "run `make crds`"
    for name, text in files.items():
        assert (copies / name).read_text() == text, f"{copies / name} is stale: run `make crds`"
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    by_name = {d["metadata"]["name"]: d for d in crds}
    for text in files.values():
        generated = yaml.safe_load(text)
        installed = by_name[generated["metadata"]["name"]]
        assert installed["spec"] == generated["spec"]
        assert installed["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_can_be_left_out_or_deleted_on_uninstall():
    assert not [d for d in render(sets=("crds.enabled=false",)) if "Definition" in d["kind"]]
    crds = [d for d in render(sets=("crds.keep=false",)) if d["kind"].endswith("Definition")]
    assert len(crds) == len(crd_files())
    assert all("helm.sh/resource-policy" not in d["metadata"]["annotations"] for d in crds)


def _rbac(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    out = {}
    for doc in docs:
        if doc["kind"] in kinds and doc["metadata"]["name"].startswith("inferscale-operator"):
            meta = doc["metadata"]
            kept: dict[str, Any] = {k: doc[k] for k in ("rules", "roleRef", "subjects") if k in doc}
            out[f"{doc['kind']}/{meta['name']}"] = {"namespace": meta.get("namespace"), **kept}
    return out


def test_the_chart_rbac_is_exactly_config_rbac():
    proven = _rbac(
        [d for d in yaml.safe_load_all((REPO / "config/rbac/operator.yaml").read_text()) if d]
    )
    assert _rbac(render()) == proven
    assert len(proven) == 7


def test_rbac_follows_the_names_of_a_renamed_release():
    objs = by_kind_name(render(None, FULL, namespace="llm-system"))
    binding = objs["ClusterRoleBinding/llm-operator"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "llm-controller", "namespace": "llm-system"}
    ]
    assert objs["ServiceAccount/llm-controller"]["metadata"]["namespace"] == "llm-system"
    secret_rule = objs["Role/llm-operator-routing"]["rules"][1]
    assert secret_rule["resourceNames"] == ["router-admin-token"]
    assert "RoleBinding/llm-operator-leader-election" in objs
    assert not [d for d in render(sets=("rbac.create=false",)) if "Role" in d["kind"]]


@pytest.mark.parametrize("values_file", [None, FULL], ids=["default", "full"])
def test_the_operator_finds_the_chart_routers_secret_and_configmap(values_file, monkeypatch):
    docs = rendered(values_file)
    objs = by_kind_name(docs)
    env = {e["name"]: e["value"] for e in container(docs, "operator")["env"] if "value" in e}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    settings = OperatorSettings()
    routing = settings.routing
    router_pods = [
        t for t in pod_templates(docs).values() if t["spec"]["containers"][0]["name"] == "router"
    ]
    (template,) = router_pods
    pod = {"metadata": {**template["metadata"], "namespace": NAMESPACE}}
    assert is_router_pod(pod, settings.router_namespace, routing.router_labels)
    (router,) = template["spec"]["containers"]
    assert router["ports"][0]["containerPort"] == routing.admin_port
    args = dict(a.removeprefix("--").split("=", 1) for a in router["args"])
    assert int(args["port"]) == routing.admin_port
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in router["volumeMounts"]}
    secret = volumes["admin-token"]["secret"]
    assert secret["secretName"] == routing.admin_token_secret
    assert secret["items"] == [{"key": routing.admin_token_key, "path": "token"}]
    assert args["admin-token-file"] == f"{mounts['admin-token']}/token"
    table = volumes["routing-table"]["configMap"]
    assert table["name"] == routing.configmap_name
    assert table["items"] == [{"key": routing.configmap_key, "path": "routing-table.json"}]
    assert args["table-file"] == f"{mounts['routing-table']}/routing-table.json"
    assert f"ConfigMap/{routing.configmap_name}" in objs
    if values_file is None:
        assert f"Secret/{routing.admin_token_secret}" in objs
    else:
        assert f"Secret/{routing.admin_token_secret}" not in objs  # existingSecret


def test_helm_and_the_operator_agree_on_the_routing_table_configmap():
    # Helm creates it (and sets managed-by: Helm); the operator applies the table into it. With
    # server-side apply, a label both set to different values fails every `helm upgrade`.
    chart = by_kind_name(render())["ConfigMap/inferscale-routing-table"]
    assert "data" not in chart
    operator = build_table_configmap(chart["metadata"]["name"], NAMESPACE, "k", "{}")
    for key, value in operator["metadata"]["labels"].items():
        assert chart["metadata"]["labels"][key] == value, key
    assert "app.kubernetes.io/managed-by" not in operator["metadata"]["labels"]


def test_operator_settings_values_become_the_operators_settings(monkeypatch):
    docs = render(None, FULL)
    for item in container(docs, "operator")["env"]:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
    settings = OperatorSettings()
    full = yaml.safe_load(FULL.read_text())["operator"]["settings"]
    reconcile = settings.reconcile.model_dump()
    for key, value in full["reconcile"].items():
        assert reconcile[_snake(key)] == value, key
    routing = settings.routing.model_dump()
    for key, value in full["routing"].items():
        assert routing[_snake(key)] == value, key
    autoscaler = settings.autoscaler.model_dump()
    for key, value in full["autoscaler"].items():
        assert autoscaler[_snake(key)] == value, key
    assert settings.autoscaler.price_book().by_key["nvidia.com/gpu"] == 2.5


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def test_a_null_setting_leaves_the_default():
    docs = render({"operator": {"settings": {"reconcile": {"shmSizeLimit": None}}}})
    names = {e["name"] for e in container(docs, "operator")["env"]}
    assert "INFERSCALE_RECONCILE__SHM_SIZE_LIMIT" not in names


def test_without_routers_the_operator_publishes_no_tables():
    docs = render(None, CHART / "ci" / "minimal-values.yaml")
    env = {e["name"]: e.get("value") for e in container(docs, "operator")["env"]}
    assert env["INFERSCALE_ROUTING__ENABLED"] == "false"
    assert not [d for d in docs if "router" in d["metadata"]["name"]]
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    }


# --- the operator and the routers ------------------------------------------------------------


def test_leader_election_when_there_can_be_two_operators():
    docs = render(sets=("operator.replicas=3",))
    objs = by_kind_name(docs)
    args = container(docs, "operator")["args"]
    assert "--lease-name=inferscale-operator" in args
    assert "--lease-namespace=$(POD_NAMESPACE)" in args
    assert objs["Deployment/inferscale-operator"]["spec"]["replicas"] == 3
    assert objs["Deployment/inferscale-operator"]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "Lease/inferscale-operator" in objs
    single = render(sets=("operator.leaderElection.enabled=false",))
    assert "--no-leader-election" in container(single, "operator")["args"]
    assert by_kind_name(single)["Deployment/inferscale-operator"]["spec"]["strategy"] == {
        "type": "Recreate"
    }
    assert "Lease/inferscale-operator" not in by_kind_name(single)


def test_the_operator_watches_its_own_namespace_when_limited_to_some():
    args = container(render(sets=("operator.watchNamespaces={a,b}",)), "operator")["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=a",
        "--namespace=b",
        f"--namespace={NAMESPACE}",
    ]
    assert not [a for a in container(render(), "operator")["args"] if "--namespace" in a]


def test_two_routers_behind_a_service_and_a_disruption_budget():
    objs = by_kind_name(render())
    deployment = objs["Deployment/inferscale-router"]
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = objs["Service/inferscale-router"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    pdb = objs["PodDisruptionBudget/inferscale-router"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "inferscale-router"
    assert objs["ServiceAccount/inferscale-router"]["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] == 5 + 30 + 5  # drain + grace + margin
    assert "PodDisruptionBudget/inferscale-router" not in by_kind_name(
        render(sets=("router.podDisruptionBudget.enabled=false",))
    )


def test_the_admin_token_is_generated_random_and_long():
    tokens = set()
    for _ in range(2):
        secret = by_kind_name(render())["Secret/inferscale-router-admin"]
        tokens.add(secret["data"]["token"])
    assert len(tokens) == 2  # helm template cannot look up: fresh each time, kept on upgrade
    import base64

    assert all(len(base64.b64decode(t)) == 48 for t in tokens)


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=VALUE_IDS)
def test_every_pod_is_restricted(values_file):
    for name, template in pod_templates(rendered(values_file)).items():
        spec = template["spec"]
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] != 0
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert "hostPath" not in json.dumps(spec) and "hostNetwork" not in spec


# --- monitoring, network policy, dashboard ---------------------------------------------------


def test_monitors_select_the_routers_and_every_engine_pod():
    objs = by_kind_name(render(None, FULL))
    monitor = objs["ServiceMonitor/llm-router"]
    service = objs["Service/llm-router"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pods = objs["PodMonitor/llm-engines"]["spec"]
    engine = object_labels("some-model", "vllm")
    assert pods["selector"]["matchLabels"].items() <= engine.items()
    assert pods["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert pods["podMetricsEndpoints"][0]["port"] == "http"  # reconcile/deployment.PORT_NAME
    default = by_kind_name(render())
    assert not [k for k in default if k.startswith(("ServiceMonitor", "PodMonitor"))]


def test_network_policies_let_the_operator_push_to_the_routers():
    objs = by_kind_name(render(None, FULL))
    router = objs["NetworkPolicy/llm-router"]["spec"]
    operator_labels = objs["Deployment/llm-operator"]["spec"]["template"]["metadata"]["labels"]
    (rule,) = router["ingress"]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    selectors = [p["podSelector"]["matchLabels"] for p in rule["from"] if "podSelector" in p]
    assert any(s.items() <= operator_labels.items() for s in selectors)
    assert len(rule["from"]) == 3  # the operator, routerFrom, metricsFrom
    assert "NetworkPolicy/llm-operator" in objs
    assert not [k for k in by_kind_name(render()) if k.startswith("NetworkPolicy")]


def _router_exposition() -> str:
    from inferscale.router.metrics import RouterMetrics

    metrics = RouterMetrics()
    metrics.count_request("m", "pod-a", 200)
    metrics.latency.observe(("m",), 0.2)
    metrics.ttft.observe(("m",), 0.05)
    for table in (metrics.tokens_in, metrics.tokens_out, metrics.retries):
        metrics.bump(table, "m")
    metrics.bump(metrics.ejections, "pod-a")
    metrics.held_total[("m", "served")] = 1
    return metrics.render([("m", "pod-a", 1)], [("m", 1)], table_version=3)


def _sim_exposition() -> str:
    from inferscale.sim.metrics import render_vllm
    from inferscale.sim.model import EngineParams, LatencyModel

    return render_vllm(LatencyModel(EngineParams()), "m")


def _series_labels(text: str) -> dict[str, set[str]]:
    """Metric name (histogram suffixes kept) -> the label names its samples carry."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ", line)
        if match:
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
            out.setdefault(match.group(1), set()).update(labels)
    return out


def test_the_dashboard_queries_metrics_the_router_and_engines_export():
    known = _series_labels(_router_exposition()) | _series_labels(_sim_exposition())
    dashboard = json.loads((CHART / "files" / "dashboards" / "inferscale.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    used = set()
    for panel in panels:
        assert panel["title"] and panel["description"] and panel["targets"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\b(inferscale_router_[a-z_]+|vllm:[a-z_:]+)", expr))
            assert names, expr
            for name in names:
                assert name in known, f"{panel['title']}: {name} is exported by nobody"
                used.add(name)
            grouped = set()
            for group in re.findall(r"by \(([^)]*)\)", expr):
                grouped |= {g.strip() for g in group.split(",")} - {"le"}
            selected = set(re.findall(r"([a-z_]+)=~?\"", expr))
            for label in grouped | selected:
                assert any(label in known[n] for n in names), f"{expr}: no label {label}"
    assert {
        "inferscale_router_time_to_first_token_seconds_bucket",
        "vllm:num_requests_waiting",
    } <= used
    configmap = by_kind_name(render())["ConfigMap/inferscale-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["inferscale.json"]) == dashboard


# --- images ----------------------------------------------------------------------------------


def _launcher_images() -> dict[str, list[str]]:
    text = (REPO / "operator" / "inferscale" / "cluster" / "images.yaml").read_text()
    return {k: v["command"] for k, v in yaml.safe_load(text)["images"].items()}


def _dockerfile(name: str) -> dict[str, Any]:
    text = (REPO / "images" / name / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert entrypoint, f"images/{name}/Dockerfile has no exec-form ENTRYPOINT"
    return {
        "entrypoint": json.loads(entrypoint.group(1)),
        "stages": len(re.findall(r"^FROM ", text, re.M)),
        "user": user[-1] if user else None,
    }


def _strip_tag(image: str) -> str:
    name = image.split("@", 1)[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def test_chart_images_are_the_launchers_and_the_dockerfiles():
    launcher = _launcher_images()
    images = {c["image"] for t in pod_templates(render()).values() for c in t["spec"]["containers"]}
    assert {_strip_tag(i) for i in images} == {
        "ghcr.io/inferscale/operator",
        "ghcr.io/inferscale/router",
        "docker.io/library/redis",  # redis.mode auto with two routers; pinned, not ours
    }
    ours = [i for i in images if i.startswith("ghcr.io/inferscale/")]
    assert ours and all(i.endswith(f":{__version__}") for i in ours)
    dockerfiles = sorted(p.parent.name for p in (REPO / "images").glob("*/Dockerfile"))
    # pause: the sandbox image of the local cluster's container node, no inferscale entry point.
    assert dockerfiles == ["operator", "pause", "router", "sim"]
    group = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    subcommands = set(group.choices or ())
    for name in ("operator", "router", "sim"):
        image = f"ghcr.io/inferscale/{name}"
        found = _dockerfile(name)
        assert found["entrypoint"] == launcher[image], name
        program, subcommand = found["entrypoint"]
        assert program == "inferscale" and subcommand in subcommands, found
        assert found["stages"] >= 2, f"{name}: build in one stage, run from another"
        assert found["user"] and found["user"].isdigit() and int(found["user"]) != 0
    # The engine image the operator itself puts into sim pods is mapped as well.
    assert _strip_tag(SIM.default_image) in launcher


def test_the_chart_version_follows_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_notes_tell_the_user_what_to_do_next():
    done = run_helm("install", "inferscale", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    for expected in (
        "rollout status deployment/inferscale-operator",
        "examples/sim-model.yaml",
        "port-forward service/inferscale-router 8080:80",
        "http://inferscale-router.inferscale-system.svc:80/v1",
        "docs/install.md",
    ):
        assert expected in notes, expected


# --- Redis for limits shared by the routers ----------------------------------------------------


def _router_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e for e in container(docs, "router").get("env") or []}


def _notes(*sets: str) -> str:
    args = ["install", "inferscale", str(CHART), "-n", NAMESPACE, "--dry-run=client"]
    for item in sets:
        args += ["--set", item]
    done = run_helm(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


# (values set, the Redis the routers use, a line the NOTES must hold, one they must not)
REDIS_CASES = [
    # The default: two routers, mode auto -> the bundled Redis, no warning.
    ((), "bundled", "Redis (redis.mode auto)", "WARNING"),
    (("router.replicas=3",), "bundled", "Redis (redis.mode auto)", "WARNING"),
    # One router shares nothing: no Redis, and the NOTES say how to scale without losing it.
    (("router.replicas=1",), "", "One router and redis.mode auto", "WARNING"),
    # Redis switched off with several routers: each limits on its own, and the NOTES warn.
    (
        ("redis.mode=none",),
        "",
        'WARNING: 2 routers and no Redis (redis.mode is "none")',
        "share client limits and",
    ),
    (
        ("redis.mode=",),
        "",
        'WARNING: 2 routers and no Redis (redis.mode is "none")',
        "share client limits and",
    ),
    (("redis.mode=none", "router.replicas=1"), "", "", "WARNING"),
    (("redis.mode=bundled", "router.replicas=1"), "bundled", "Redis (redis.mode bundled)", "WARN"),
    (
        ("redis.mode=external", "redis.existingSecret=shared-redis"),
        "external",
        "",
        "WARNING",
    ),
    # No routers: nothing to share, so no Redis whatever the mode.
    (("router.enabled=false",), "", "", "Redis (redis"),
    (("router.enabled=false", "redis.mode=bundled"), "", "", "Redis (redis"),
]


@pytest.mark.parametrize(("sets", "redis", "said", "unsaid"), REDIS_CASES)
def test_redis_is_on_by_default_with_several_routers_and_the_notes_say_when_it_is_not(
    sets: tuple[str, ...], redis: str, said: str, unsaid: str
):
    docs = render(sets=sets)
    bundled = [d for d in docs if d["metadata"]["name"].endswith("-redis")]
    assert {d["kind"] for d in bundled} == (
        {"Secret", "Service", "StatefulSet"} if redis == "bundled" else set()
    )
    if "router.enabled=false" not in sets:
        env = _router_env(docs)
        if redis:
            secret = "inferscale-redis" if redis == "bundled" else "shared-redis"
            ref = env["INFERSCALE_ROUTER_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret
        else:
            assert "INFERSCALE_ROUTER_REDIS_URL" not in env
    notes = _notes(*sets)
    assert said in notes
    assert unsaid not in notes


def test_bundled_redis_runs_restricted_with_a_password_the_routers_read_from_its_secret():
    objs = by_kind_name(render(sets=("redis.mode=bundled",)))
    secret = objs["Secret/inferscale-redis"]["stringData"]
    password = secret["password"]
    assert len(password) == 40 and password.isalnum()
    assert secret["url"] == f"redis://:{password}@inferscale-redis.{NAMESPACE}.svc:6379/0"
    conf = secret["redis.conf"].splitlines()
    assert f"requirepass {password}" in conf
    assert "maxmemory-policy noeviction" in conf  # a full Redis refuses; budgets never reset
    assert 'save ""' in conf and "appendonly no" in conf
    env = _router_env(list(objs.values()))
    assert env["INFERSCALE_ROUTER_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "inferscale-redis", "key": "url"}
    }
    assert env["INFERSCALE_ROUTER_BUDGETS_DURING_OUTAGE"]["value"] == "local"
    statefulset = objs["StatefulSet/inferscale-redis"]
    spec = statefulset["spec"]["template"]["spec"]
    (redis,) = spec["containers"]
    assert redis["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert spec["securityContext"]["runAsUser"] == 999
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "data", "mountPath": "/data"} in redis["volumeMounts"]
    assert "volumeClaimTemplates" not in statefulset["spec"]
    service = objs["Service/inferscale-redis"]
    assert (
        service["spec"]["selector"].items()
        <= statefulset["spec"]["selector"]["matchLabels"].items()
    )
    assert "Redis (redis.mode bundled)" in _notes("redis.mode=bundled")


def test_bundled_redis_persistence_is_a_claim_and_the_password_changes_per_fresh_render():
    sets = ("redis.mode=bundled", "redis.bundled.persistence.enabled=true")
    objs = by_kind_name(render(sets=sets))
    statefulset = objs["StatefulSet/inferscale-redis"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "appendonly yes" in objs["Secret/inferscale-redis"]["stringData"]["redis.conf"]
    volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in volumes
    # helm template cannot look up: fresh each time; an upgrade keeps it (e2e/test_chart.py).
    again = by_kind_name(render(sets=sets))["Secret/inferscale-redis"]["stringData"]
    assert again["password"] != objs["Secret/inferscale-redis"]["stringData"]["password"]


def test_external_redis_is_read_from_the_users_secret_and_required():
    done = run_helm("template", "x", str(CHART), "--set", "redis.mode=external")
    assert done.returncode != 0
    assert "set redis.existingSecret" in done.stderr, done.stderr
    sets = ("redis.mode=external", "redis.existingSecret=shared-redis", "redis.existingSecretKey=u")
    docs = render(sets=(*sets, "redis.budgetsDuringOutage=refuse"))
    env = _router_env(docs)
    assert env["INFERSCALE_ROUTER_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "shared-redis", "key": "u"}
    }
    assert env["INFERSCALE_ROUTER_BUDGETS_DURING_OUTAGE"]["value"] == "refuse"
    assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]


def test_the_bundled_redis_takes_connections_from_the_routers_only():
    objs = by_kind_name(render(None, FULL))
    policy = objs["NetworkPolicy/llm-redis"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"


def test_the_bundled_redis_image_runs_on_the_local_cluster():
    (template,) = [
        t for n, t in pod_templates(render(sets=("redis.mode=bundled",))).items() if "redis" in n
    ]
    (redis,) = template["spec"]["containers"]
    assert _strip_tag(redis["image"]) in _launcher_images()
