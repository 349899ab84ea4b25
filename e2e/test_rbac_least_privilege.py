"""Least privilege of the operator's RBAC: every rule is needed by a call the operator makes.

``CALLS`` lists the API calls the operator makes (each with where in the code or in kopf it is
made). The roles are ``config/rbac/operator.yaml``, the chart's very rules
(``tests/component/chart`` keeps the two equal). A role's rules are cut into units, one verb on
one resource of one API group in one rule; removing a unit must deny at least one call that the
whole roles allow, or the unit is in ``KEPT``, which says why it stays (the chart says it too).

The offline test computes that with the RBAC matching rules (apiGroups, resources with their
subresource, verbs, resourceNames). The end-to-end test asks the real API server the same
question: it creates, for each unit, a copy of the roles without it bound to a user of its own,
and checks with SubjectAccessReviews that the whole roles allow every call and that each copy
denies what the offline test said it would. One batch of objects and reviews: seconds.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.conftest import Cluster, load_yaml

ROLES_FILE = Path(__file__).resolve().parents[1] / "config" / "rbac" / "operator.yaml"
MODELS = "default"
"""A namespace of InferenceModels (the ClusterRole's rules apply in any)."""
HOME = "inferscale-system"
"""The operator's own namespace (its Roles), as config/rbac names it."""
ADMIN_SECRET = "inferscale-router-admin"
CREDENTIALS_SECRET = "inferscale-router-credentials"


@dataclass(frozen=True)
class Call:
    """One API call the operator makes: ``resource`` may carry a subresource (``x/status``)."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    where: str
    name: str | None = None


def _ours(verb: str, plural: str, where: str) -> Call:
    return Call(verb, "inferscale.io", plural, MODELS, where)


_KINDS = ("inferencemodels", "inferenceroutes", "inferenceproviders", "inferenceclients")
CALLS: tuple[Call, ...] = (
    *(
        _ours(v, p, "kopf: the handlers' and indices' list and watch")
        for p in _KINDS
        for v in ("list", "watch")
    ),  # fmt: skip
    _ours("get", "inferencemodels", "controller/inference_model.py, autoscaler.py: api.get"),
    _ours("patch", "inferencemodels", "kopf: progress and finalizer annotations of a handler"),
    _ours("patch", "inferencemodels/status", "controller/inference_model.py: patch_status"),
    _ours("patch", "inferenceroutes/status", "controller/route_status.py: patch_status"),
    _ours("patch", "inferenceproviders/status", "controller/route_status.py: patch_status"),
    _ours("patch", "inferenceclients/status", "controller/credentials.py: patch_status"),
    *(
        Call(
            v,
            g,
            r,
            MODELS,
            "controller/inference_model.py: children applied, listed, pruned; kopf: their indices",
        )
        for g, r in (
            ("apps", "deployments"),
            ("", "services"),
            ("policy", "poddisruptionbudgets"),
            ("batch", "jobs"),
            ("", "persistentvolumeclaims"),
        )
        for v in ("list", "watch", "create", "patch", "delete")
    ),  # fmt: skip
    Call("get", "apps", "deployments", MODELS, "controller/inference_model.py: api.get Deployment"),
    *(Call(v, "", "pods", MODELS, "kopf: pod indices and events") for v in ("list", "watch")),
    Call("get", "", "persistentvolumeclaims", MODELS, "inference_model.py: mount existence"),
    Call("get", "", "secrets", MODELS, "controller/credentials.py: a key Secret"),
    *(Call(v, "", "secrets", MODELS, "kopf: the key Secrets' events") for v in ("list", "watch")),
    Call("create", "", "events", MODELS, "kopf and the handlers: an Event per change"),
    *(
        Call(v, "apiextensions.k8s.io", "customresourcedefinitions", None, "kopf: discovery")
        for v in ("list", "watch")
    ),  # fmt: skip
    *(Call(v, "", "namespaces", None, "kopf: namespace patterns") for v in ("list", "watch")),
    *(
        Call(v, "coordination.k8s.io", "leases", HOME, "kube/lease.py: leader election")
        for v in ("get", "create", "patch")
    ),  # fmt: skip
    *(
        Call(v, "", "configmaps", HOME, "controller/publishing.py: the routing table's store")
        for v in ("get", "create", "patch")
    ),  # fmt: skip
    Call("get", "", "secrets", HOME, "controller/publishing.py: the admin token", ADMIN_SECRET),
    Call("create", "", "secrets", HOME, "controller/publishing.py: the credentials store"),
    *(
        Call(
            v,
            "",
            "secrets",
            HOME,
            "controller/credentials.py: the credentials store",
            CREDENTIALS_SECRET,
        )
        for v in ("get", "patch")
    ),  # fmt: skip
)

UNPROVEN = "no call in the code or in kopf needs it; kept until an e2e run without it"
NARROW = "the cluster-wide secrets get covers it; this rule keeps the need if that is narrowed"
CLUSTER, ROUTING = "inferscale-operator", "inferscale-operator-routing"
KEPT: dict[tuple[str, str, str, str], str] = {
    # (role, group, resource, verb) of a unit no call above needs, and why it stays; the same
    # words are in the chart's template beside the rule.
    **{(CLUSTER, "inferscale.io", r, v): UNPROVEN for r in _KINDS[1:] for v in ("get", "patch")},
    **{(CLUSTER, "inferscale.io", f"{r}/status", "get"): UNPROVEN for r in _KINDS},
    **{(CLUSTER, "", r, "get"): UNPROVEN for r in ("services", "pods", "namespaces")},
    (CLUSTER, "policy", "poddisruptionbudgets", "get"): UNPROVEN,
    (CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", "get"): UNPROVEN,
    (CLUSTER, "", "events", "patch"): UNPROVEN,
    (CLUSTER, "events.k8s.io", "events", "create"): UNPROVEN,
    (CLUSTER, "events.k8s.io", "events", "patch"): UNPROVEN,
    (ROUTING, "", "secrets", "get"): NARROW,
}


@dataclass(frozen=True)
class Unit:
    """One verb on one resource of one API group in one rule of one role."""

    role: int
    role_name: str
    rule: int
    group: str
    resource: str
    verb: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.role_name, self.group, self.resource, self.verb)

    def label(self) -> str:
        return f"role {self.role} rule {self.rule}: {self.verb} {self.resource}.{self.group}"


def roles() -> list[dict[str, Any]]:
    """The ClusterRole and the Roles, in file order."""
    return [d for d in load_yaml(ROLES_FILE) if d.get("kind") in ("ClusterRole", "Role")]


def units(docs: list[dict[str, Any]]) -> list[Unit]:
    return [
        Unit(i, doc["metadata"]["name"], j, group, resource, verb)
        for i, doc in enumerate(docs)
        for j, rule in enumerate(doc["rules"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def without(docs: list[dict[str, Any]], unit: Unit) -> list[dict[str, Any]]:
    """The roles less ``unit`` (the rule split so that its other units stay)."""
    out = copy.deepcopy(docs)
    rule = out[unit.role]["rules"][unit.rule]
    rest = [dict(rule, apiGroups=[g]) for g in rule["apiGroups"] if g != unit.group]
    same = dict(rule, apiGroups=[unit.group])
    rest += [dict(same, resources=[r]) for r in rule["resources"] if r != unit.resource]
    verbs = [v for v in rule["verbs"] if v != unit.verb]
    if verbs:
        rest.append(dict(same, resources=[unit.resource], verbs=verbs))
    out[unit.role]["rules"][unit.rule : unit.rule + 1] = rest
    return out


def allows(docs: list[dict[str, Any]], call: Call) -> bool:
    """RBAC's answer for ``call`` under ``docs`` (a Role only in its own namespace)."""
    for doc in docs:
        if doc["kind"] == "Role" and doc["metadata"].get("namespace", HOME) != call.namespace:
            continue
        for rule in doc["rules"]:
            names = rule.get("resourceNames")
            if (
                call.group in rule["apiGroups"]
                and call.resource in rule["resources"]
                and call.verb in rule["verbs"]
                and (not names or call.name in names)
            ):
                return True
    return False


def denied_without(docs: list[dict[str, Any]], unit: Unit) -> list[Call]:
    """The calls the whole roles allow that the roles less ``unit`` deny."""
    less = without(docs, unit)
    return [c for c in CALLS if allows(docs, c) and not allows(less, c)]


def test_the_whole_roles_allow_every_call_and_each_unit_is_needed_or_kept():
    docs = roles()
    assert [c for c in CALLS if not allows(docs, c)] == []
    unneeded = [u for u in units(docs) if not denied_without(docs, u) and u.key not in KEPT]
    assert unneeded == [], "\n".join(u.label() for u in unneeded)
    stale = set(KEPT) - {u.key for u in units(docs)}
    assert not stale, f"KEPT names units the roles no longer have: {stale}"


# -- against the real API server -------------------------------------------------------------


def _name(i: int) -> str:
    return f"e2e-rbac-probe-{i}"


def _create(cluster: Cluster, docs: list[dict[str, Any]], user: str, home: str) -> list[Any]:
    """``docs`` as objects on the server, bound to ``user``; returns what to delete."""
    rbac, made = cluster.rbac, []
    for k, doc in enumerate(docs):
        name = f"{user}-{k}"
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": doc["kind"], "name": name}
        subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        meta = {"name": name}
        if doc["kind"] == "ClusterRole":
            rbac.create_cluster_role({"metadata": meta, "rules": doc["rules"]})
            rbac.create_cluster_role_binding(
                {"metadata": meta, "roleRef": ref, "subjects": subject}
            )
            made += [("cluster_role", name), ("cluster_role_binding", name)]
        else:
            rbac.create_namespaced_role(home, {"metadata": meta, "rules": doc["rules"]})
            rbac.create_namespaced_role_binding(
                home, {"metadata": meta, "roleRef": ref, "subjects": subject}
            )
            made += [("namespaced_role", name), ("namespaced_role_binding", name)]
    return made


def _review(cluster: Cluster, user: str, call: Call, home: str) -> bool:
    resource, _, sub = call.resource.partition("/")
    namespace = home if call.namespace == HOME else call.namespace
    attrs = {"verb": call.verb, "group": call.group, "resource": resource,
             "subresource": sub or None, "namespace": namespace, "name": call.name}  # fmt: skip
    review = client.AuthorizationV1Api(cluster.api).create_subject_access_review(
        {"spec": {"user": user, "resourceAttributes": attrs}}
    )
    return bool(review.status.allowed)


@pytest.fixture
def probes(cluster: Cluster, namespace: str) -> Iterator[dict[str, Any]]:
    """Whole roles for user ``-whole``, and each unit's copy for a user of its own."""
    docs = roles()
    made: list[tuple[str, str]] = []
    try:
        whole = _name(0) + "-whole"
        made += _create(cluster, docs, whole, namespace)
        variants = {}
        for i, unit in enumerate(units(docs), 1):
            if unit.key in KEPT:
                continue
            made += _create(cluster, without(docs, unit), _name(i), namespace)
            variants[_name(i)] = unit
        yield {"docs": docs, "whole": whole, "variants": variants, "home": namespace}
    finally:
        for kind, name in reversed(made):
            with contextlib.suppress(ApiException):
                if kind.startswith("namespaced"):
                    getattr(cluster.rbac, f"delete_{kind}")(name, namespace)
                else:
                    getattr(cluster.rbac, f"delete_{kind}")(name)


def test_the_api_server_denies_a_needed_call_without_each_unit(cluster: Cluster, probes):
    docs, home = probes["docs"], probes["home"]
    deadline = time.monotonic() + 30  # the authorizer sees new RBAC objects within moments
    while True:
        missing = [c for c in CALLS if not _review(cluster, probes["whole"], c, home)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert missing == [], missing
    wrong = []
    for user, unit in probes["variants"].items():
        expected = denied_without(docs, unit)
        if all(_review(cluster, user, c, home) for c in expected):
            wrong.append(f"{unit.label()}: the server still allows {expected}")
    assert wrong == [], "\n".join(wrong)


def test_kept_reasons_are_in_the_chart():
    chart = (ROLES_FILE.parents[2] / "charts/inferscale/templates/operator-rbac.yaml").read_text()
    for reason in KEPT.values():
        assert re.sub(r"\s+", " ", reason) in re.sub(r"\s*#\s*|\s+", " ", chart), reason
