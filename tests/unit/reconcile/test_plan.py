"""The planner's decisions, as a table (KubeAI's Test_calculatePodPlan)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inferscale.reconcile.deployment import build_deployment
from inferscale.reconcile.pdb import build_pdb
from inferscale.reconcile.plan import ObjectRef, calculate_plan, first_difference
from inferscale.reconcile.service import build_service
from inferscale.reconcile.settings import ReconcileSettings
from tests.factories import make_model

SPEC = make_model("sim")


def desired() -> list[dict[str, Any]]:
    return [
        build_deployment("m", "ns", SPEC, ReconcileSettings()),
        build_service("m", "ns", SPEC),
        build_pdb("m", "ns", SPEC),
    ]


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: defaults, status and bookkeeping added."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        uid="u-1",
        resourceVersion="42",
        generation=3,
        ownerReferences=[{"kind": "InferenceModel", "name": "m"}],
        managedFields=[{"manager": "inferscale"}],
    )
    out["metadata"]["labels"]["extra/by-hand"] = "x"
    out["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "3"}
    if out["kind"] == "Deployment":
        tpl = out["spec"]["template"]["spec"]
        tpl["dnsPolicy"] = "ClusterFirst"
        tpl["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
        tpl["containers"][0]["startupProbe"]["successThreshold"] = 1
        out["status"] = {"replicas": 1}
    if out["kind"] == "Service":
        out["spec"]["clusterIP"] = "10.0.0.7"
    return out


def edit(obj: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    cur: Any = out
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return out


def managed(kind: str, name: str, by_us: bool = True) -> dict[str, Any]:
    labels = {"inferscale.io/model": "m"}
    if by_us:
        labels["app.kubernetes.io/managed-by"] = "inferscale"
    api = {"ConfigMap": "v1", "HorizontalPodAutoscaler": "autoscaling/v2"}[kind]
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
    }


def observed_all() -> list[dict[str, Any]]:
    return [as_served(o) for o in desired()]


DEP_ARGS = ["spec", "template", "spec", "containers", 0, "args"]

CASES = [
    # (name, observed, apply kinds, delete refs, details)
    (
        "nothing exists: create all",
        [],
        ["Deployment", "Service", "PodDisruptionBudget"],
        [],
        [
            "create Deployment ns/m",
            "create Service ns/m",
            "create PodDisruptionBudget ns/m",
        ],
    ),
    ("everything as desired, server fields ignored", observed_all(), [], [], []),
    (
        "one child deleted by hand comes back",
        [as_served(o) for o in desired() if o["kind"] != "Service"],
        ["Service"],
        [],
        ["create Service ns/m"],
    ),
    (
        "args edited by hand",
        [edit(as_served(desired()[0]), DEP_ARGS, ["--evil"])] + observed_all()[1:],
        ["Deployment"],
        [],
        ["update Deployment ns/m: spec.template.spec.containers[0].args differs"],
    ),
    (
        "replicas changed by hand",
        [edit(as_served(desired()[0]), ["spec", "replicas"], 7)] + observed_all()[1:],
        ["Deployment"],
        [],
        ["update Deployment ns/m: spec.replicas differs"],
    ),
    (
        "our label removed",
        [
            observed_all()[0],
            edit(as_served(desired()[1]), ["metadata", "labels"], {}),
            observed_all()[2],
        ],
        ["Service"],
        [],
        ["update Service ns/m: metadata.labels.inferscale.io/model differs"],
    ),
    (
        "immutable selector changed: delete, then create",
        [
            edit(
                as_served(desired()[0]),
                ["spec", "selector"],
                {"matchLabels": {"old": "selector"}},
            )
        ]
        + observed_all()[1:],
        ["Deployment"],
        [ObjectRef("Deployment", "ns", "m", "apps/v1")],
        [
            "recreate Deployment ns/m: spec.selector changed and cannot be updated in place",
        ],
    ),
    (
        "a leftover child of ours is deleted",
        observed_all() + [managed("HorizontalPodAutoscaler", "m")],
        [],
        [ObjectRef("HorizontalPodAutoscaler", "ns", "m", "autoscaling/v2")],
        ["delete HorizontalPodAutoscaler ns/m: no longer desired"],
    ),
    (
        "something a person labelled is kept",
        observed_all() + [managed("ConfigMap", "notes", by_us=False)],
        [],
        [],
        ["keep ConfigMap ns/notes: not desired, but not managed by inferscale"],
    ),
]


@pytest.mark.parametrize(
    ("observed", "apply", "delete", "details"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_calculate_plan(observed, apply, delete, details):
    plan = calculate_plan(desired(), observed)
    assert [o["kind"] for o in plan.to_apply] == apply
    assert list(plan.to_delete) == delete
    assert list(plan.details) == details
    assert plan.empty == (not apply and not delete)


def test_applied_objects_are_the_desired_ones():
    want = desired()
    plan = calculate_plan(want, [])
    assert list(plan.to_apply) == want


def test_object_ref_prints_kind_and_place():
    assert str(ObjectRef("Deployment", "ns", "m", "apps/v1")) == "Deployment ns/m"
    assert str(ObjectRef("Namespace", None, "ns", "v1")) == "Namespace ns"


DIFFS = [
    ({"a": 1}, {"a": 1, "b": 2}, None),
    ({"a": 1}, {"a": 2}, "a"),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2]}}, None),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1]}}, "a.b"),
    ({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]}, None),
    ({"a": [{"x": 1}]}, {"a": [{"x": 3}]}, "a[0].x"),
    ({"a": {}}, {"a": {"z": 1}}, None),
    ({"a": {"b": 1}}, {"a": "str"}, "a"),
    ({"a": 1}, {}, "a"),
    (1, 2, "."),
]


@pytest.mark.parametrize(("want", "have", "path"), DIFFS)
def test_first_difference(want, have, path):
    assert first_difference(want, have) == path
