"""config/router and config/rbac agree with the operator's routing defaults, and are valid objects.

The operator finds routers, their Secret and the ConfigMap by the names in ``RoutingSettings``;
the manifests name them too. A rename on one side only would leave routers unprogrammed, so this
catches it before a cluster does.
"""

from pathlib import Path

import kubernetes_validate
import yaml

from inferscale.config import DEFAULT_ROUTER_NAMESPACE, AccessSettings, RoutingSettings
from inferscale.router.settings import RouterSettings

REPO = Path(__file__).resolve().parents[3]
DEFAULTS = RoutingSettings()
ACCESS = AccessSettings()


def docs(path: str) -> dict[str, dict]:
    out = {}
    for doc in yaml.safe_load_all((REPO / path).read_text()):
        if doc:
            kubernetes_validate.validate(doc, "1.36.0", strict=True)
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def test_the_router_manifest_matches_the_operators_settings():
    objs = docs("config/router/router.yaml")
    deployment = objs["Deployment/inferscale-router"]
    assert deployment["metadata"]["namespace"] == DEFAULT_ROUTER_NAMESPACE
    pod = deployment["spec"]["template"]
    assert DEFAULTS.router_labels.items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["runAsNonRoot"]
    (container,) = spec["containers"]
    assert container["image"].startswith("ghcr.io/inferscale/router")
    assert container["ports"][0]["containerPort"] == DEFAULTS.admin_port == RouterSettings().port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    table = volumes["routing-table"]["configMap"]
    assert table["name"] == DEFAULTS.configmap_name and table["optional"] is True
    (item,) = table["items"]
    assert item["key"] == DEFAULTS.configmap_key
    assert args["table-file"] == f"{mounts['routing-table']}/{item['path']}"
    token = volumes["admin-token"]["secret"]
    assert token["secretName"] == DEFAULTS.admin_token_secret
    (item,) = token["items"]
    assert item["key"] == DEFAULTS.admin_token_key
    assert args["admin-token-file"] == f"{mounts['admin-token']}/{item['path']}"
    credentials = volumes["credentials"]["secret"]
    assert credentials["secretName"] == ACCESS.credentials_secret
    assert credentials["optional"] is True
    (item,) = credentials["items"]
    assert item["key"] == ACCESS.credentials_key
    assert args["credentials-file"] == f"{mounts['credentials']}/{item['path']}"
    assert not any("subPath" in m for m in container["volumeMounts"])  # updates must arrive
    service = objs["Service/inferscale-router"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_the_operators_role_allows_exactly_what_routing_does():
    objs = docs("config/rbac/operator.yaml")
    role = objs["Role/inferscale-operator-routing"]
    assert role["metadata"]["namespace"] == DEFAULT_ROUTER_NAMESPACE
    rules = {
        (tuple(r["resources"]), tuple(r.get("resourceNames", ()))): r["verbs"]
        for r in role["rules"]
    }
    assert rules == {
        (("configmaps",), ()): ["get", "create", "patch"],
        (("secrets",), (DEFAULTS.admin_token_secret,)): ["get"],
        (("secrets",), ()): ["create"],
        (("secrets",), (ACCESS.credentials_secret,)): ["get", "patch"],
    }
    binding = objs["RoleBinding/inferscale-operator-routing"]
    assert binding["roleRef"]["name"] == "inferscale-operator-routing"
    cluster = objs["ClusterRole/inferscale-operator"]
    watched = {
        res
        for r in cluster["rules"]
        if {"list", "watch"} <= set(r["verbs"])
        for res in r["resources"]
    }
    assert {"pods", "inferenceroutes", "inferencemodels", "inferenceclients", "secrets"} <= watched
    status = {res for r in cluster["rules"] if "patch" in r["verbs"] for res in r["resources"]}
    assert "inferenceclients/status" in status
