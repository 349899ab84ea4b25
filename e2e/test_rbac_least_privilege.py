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
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.audit import operator_requests
from e2e.conftest import Cluster, load_yaml
from e2e.rbac_calls import CALLS, HOME, Call, unlisted

ROLES_FILE = Path(__file__).resolve().parents[1] / "config" / "rbac" / "operator.yaml"
NARROW = "the cluster-wide secrets get covers it; this rule keeps the need if that is narrowed"
CLUSTER, ROUTING = "inferscale-operator", "inferscale-operator-routing"
KEPT: dict[tuple[str, str, str, str], str] = {
    # (role, group, resource, verb) of a unit no call above needs, and why it stays; the same
    # words are in the chart's template beside the rule. The 18 units once kept because no
    # call was found (get and patch of routes, providers and clients; get of the status
    # subresources, services, pods, PodDisruptionBudgets, namespaces and CRDs; patch of core
    # Events; events.k8s.io) are gone: the audit log of the e2e runs showed no such request.
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


def test_audit_requests_are_matched_to_calls():
    def event(user: str, verb: str, ref: dict[str, str], code: int = 200, why: str = "") -> str:
        return json.dumps({"user": {"username": user}, "verb": verb, "objectRef": ref,
                           "responseStatus": {"code": code, "message": why}})  # fmt: skip

    sa = "system:serviceaccount:ops:e2e-chart-inferscale-operator"
    lines = [
        event(sa, "patch", {"resource": "inferencemodels", "subresource": "status",
                            "apiGroup": "inferscale.io", "namespace": "models", "name": "m"}),
        event(sa, "patch", {"resource": "configmaps", "namespace": "ops", "name": "t"}, 201),
        event(sa, "get", {"resource": "configmaps", "namespace": "models", "name": "x"}),
        event(sa, "list", {"resource": "namespaces"}, 403, "User x cannot list resource"),
        event(sa, "get", {"resource": "nodes", "name": "n"}, 403, "User x cannot get resource"),
        event(sa, "patch", {"resource": "services", "namespace": "gone", "name": "s"}, 403,
              "unable to create new content in namespace gone because it is being terminated"),
        event("system:serviceaccount:ops:worker", "delete", {"resource": "nodes"}),
        event(sa, "get", {}),  # discovery: no resource
        "not json",
    ]  # fmt: skip
    requests = list(operator_requests(lines))
    assert [r.home for r in requests] == ["ops"] * 7
    assert [r.denied for r in requests][4:7] == [True, True, False]
    assert [r.verb for r in requests][1:3] == ["patch", "create"]  # an apply that created
    assert unlisted(requests) == [
        "get configmaps.core in models: 200 x1",  # a Role's call, in the wrong namespace
        "get nodes.core in cluster: 403 (refused by RBAC) x1",
    ]
