"""The operator in the cluster, under its own ServiceAccount, turning InferenceModels into replicas.

One operator Deployment (two replicas, leader election) serves the whole module; each test has a
namespace of its own. Sims are small (no GPU, 100m CPU, 1 s cold start); tests that only need
pods to exist put them on the KWOK node. Tests that kill operator processes run last.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import Cluster, get_json, wait_for
from e2e.operator_support import (
    CHILD_KINDS,
    GROUP,
    KWOK_SCHEDULING,
    PLURAL,
    VERSION,
    Models,
    Operator,
    apply_crds,
    example_sim_model,
    kubectl,
    running_operator,
    sim_model,
)

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-operator"
LEASE_SECONDS = 15
"""The Lease duration of the operator's leader election (``LeaderElector.lease_seconds``)."""


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Operator]:
    """CRDs, RBAC and a two-replica operator Deployment in a namespace of its own."""
    cluster.require_local()
    apply_crds(cluster)
    with contextlib.suppress(ApiException):
        cluster.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
    wait_for(
        lambda: _has_sa(cluster, OPERATOR_NAMESPACE), 30, "the operator namespace's default SA"
    )
    try:
        with running_operator(cluster, OPERATOR_NAMESPACE, replicas=2) as running:
            yield running
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(OPERATOR_NAMESPACE)


def _has_sa(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.core.read_namespaced_service_account("default", namespace)
    except ApiException:
        return False
    return True


@pytest.fixture
def models(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[Models]:
    """The test namespace's models; on failure the operator's log tail is in the report."""
    yield Models(cluster, namespace)


def _fail_with_logs(operator: Operator, message: str) -> None:
    pytest.fail(f"{message}\n--- operator logs ---\n{operator.logs()}")


def _count_children(models: Models, name: str) -> dict[str, int]:
    return {kind: len(items) for kind, items in models.children(name).items()}


def _deployment(cluster: Cluster, namespace: str, name: str) -> Any:
    try:
        return cluster.apps.read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_example_sim_model_serves_v1_models_on_its_pod_ips(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    body = example_sim_model()
    name = body["metadata"]["name"]
    served = body["spec"]["servedName"]
    models.create(body)
    pods = wait_for(
        lambda: len(models.ready_pods(name)) == 2 and models.ready_pods(name), 90, "2 Ready sims"
    )
    local = cluster.require_local()
    launched = get_json(f"http://127.0.0.1:{local.launcher_port}/pods")
    for pod in pods:
        # A real process, launched by the launcher, answering on its own pod IP.
        assert f"{namespace}/{pod.metadata.name}" in launched
        answer = get_json(f"http://{pod.status.pod_ip}:8000/v1/models")
        assert [m["id"] for m in answer["data"]] == [served]
    wait_for(lambda: models.is_ready(name), 30, "Ready=True on the model")
    # Ready=True comes with the first ready replica; under load the status can show one ready
    # pod a moment after the second is: wait for it to catch up rather than race it.
    model = wait_for(
        lambda: (m := models.get(name)) and m["status"].get("readyReplicas") == 2 and m,
        30,
        "status.readyReplicas 2",
    )
    status = model["status"]
    assert status["readyReplicas"] == 2 and status["desiredReplicas"] == 2
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert status["servedName"] == served
    assert models.condition(name, "Ready")["reason"] == "AllReplicasReady"  # type: ignore[index]
    assert models.condition(name, "Degraded")["status"] == "False"  # type: ignore[index]
    counts = _count_children(models, name)
    assert {k: counts[k] for k in CHILD_KINDS} == dict.fromkeys(CHILD_KINDS, 1)
    for kind, items in models.children(name).items():
        if kind in CHILD_KINDS:
            (owner,) = items[0].metadata.owner_references
            assert (owner.kind, owner.name, owner.controller) == ("InferenceModel", name, True)
            assert owner.uid == model["metadata"]["uid"]
    created = [e for e in models.events(name) if e.reason == "Created"]
    assert {k for e in created for k in CHILD_KINDS if k in e.message} == set(CHILD_KINDS)


def test_an_arg_change_rolls_out_with_a_ready_replica_throughout(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    name = "rolling"
    models.create(sim_model(name, replicas=2))
    wait_for(lambda: len(models.ready_pods(name)) == 2, 90, "2 Ready sims")
    before = {p.metadata.name for p in models.ready_pods(name)}
    models.patch_spec(name, {"args": ["--startup-delay-seconds", "1", "--seed", "7"]})

    def rolled_out() -> bool:
        d = _deployment(cluster, namespace, name)
        args = d.spec.template.spec.containers[0].args or []
        st = d.status
        return bool(
            "--seed" in args
            and (st.observed_generation or 0) >= d.metadata.generation
            and st.updated_replicas == 2
            and st.ready_replicas == 2
            and st.replicas == 2
        )

    lowest_pods = lowest_deployment = 2
    deadline = time.monotonic() + 120
    while not rolled_out():
        if time.monotonic() > deadline:
            pytest.fail("the rollout did not finish in 120 s")
        lowest_pods = min(lowest_pods, len(models.ready_pods(name)))
        ready = _deployment(cluster, namespace, name).status.ready_replicas or 0
        lowest_deployment = min(lowest_deployment, ready)
        time.sleep(0.1)
    assert lowest_pods >= 1, "a moment with no Ready pod during the rollout"
    assert lowest_deployment >= 1, "a moment with readyReplicas 0 during the rollout"
    after = models.ready_pods(name)
    assert before.isdisjoint(p.metadata.name for p in after), "pods were not replaced"
    for pod in after:
        assert "--seed" in pod.spec.containers[0].args
    assert len(models.children(name)["ReplicaSet"]) == 2
    wait_for(
        lambda: models.condition(name, "Progressing")["reason"] == "RolloutComplete",  # type: ignore[index]
        30,
        "Progressing=False RolloutComplete",
    )
    assert "Updated" in models.event_reasons(name)


def test_kubectl_scale_sets_the_replicas_when_autoscaling_is_off(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    name = "scaled"
    models.create(sim_model(name, replicas=1, scheduling=KWOK_SCHEDULING))
    wait_for(lambda: len(models.ready_pods(name)) == 1, 60, "1 Ready replica")
    kubectl(cluster, "scale", "-n", namespace, f"inferencemodel/{name}", "--replicas=3")
    wait_for(lambda: len(models.ready_pods(name)) == 3, 60, "3 Ready replicas")
    assert _deployment(cluster, namespace, name).spec.replicas == 3

    def scale_status() -> Any:
        scale = cluster.custom.get_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return scale["status"].get("replicas") == 3 and scale

    scale = wait_for(scale_status, 30, "the scale subresource to report 3 replicas")
    assert scale["status"]["selector"]  # what HPA and KEDA select pods with
    # The scale subresource through the API, as HPA or KEDA would write it.
    cluster.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 1}}
    )
    wait_for(
        lambda: _deployment(cluster, namespace, name).spec.replicas == 1,
        30,
        "the Deployment scaled to 1",
    )
    wait_for(lambda: len(models.ready_pods(name)) == 1, 60, "1 Ready replica")


def test_deleted_or_hand_edited_children_come_back(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    name = "repaired"
    models.create(sim_model(name, replicas=1, scheduling=KWOK_SCHEDULING))
    wait_for(lambda: models.is_ready(name), 60, "the model Ready")
    original = _deployment(cluster, namespace, name)
    image = original.spec.template.spec.containers[0].image
    service_uid = cluster.core.read_namespaced_service(name, namespace).metadata.uid

    cluster.apps.delete_namespaced_deployment(name, namespace)
    back = wait_for(
        lambda: (
            (d := _deployment(cluster, namespace, name))
            and d.metadata.uid != original.metadata.uid
            and d
        ),
        30,
        "the Deployment recreated",
    )
    assert back.spec.template.spec.containers[0].image == image

    cluster.core.delete_namespaced_service(name, namespace)

    def new_service() -> bool:
        try:
            return bool(
                cluster.core.read_namespaced_service(name, namespace).metadata.uid != service_uid
            )
        except ApiException:
            return False

    wait_for(new_service, 30, "the Service recreated")

    def created(kind: str) -> int:
        return sum(
            e.count or 1
            for e in models.events(name)
            if e.reason == "Created" and e.message.startswith(f"create {kind} ")
        )

    wait_for(
        lambda: created("Deployment") >= 2 and created("Service") >= 2,
        30,
        "Created Events for the recreated Deployment and Service",
    )

    cluster.apps.patch_namespaced_deployment(
        name,
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "engine", "image": "registry.example.invalid/hacked:1"}
                        ]
                    }
                }
            }
        },
    )
    wait_for(
        lambda: (
            _deployment(cluster, namespace, name).spec.template.spec.containers[0].image == image
        ),
        30,
        "the hand-edited image restored",
    )
    wait_for(lambda: models.is_ready(name), 60, "the model Ready again")
    counts = _count_children(models, name)
    assert {k: counts[k] for k in CHILD_KINDS} == dict.fromkeys(CHILD_KINDS, 1)


def test_deleting_the_model_removes_everything_it_owned(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    local = cluster.require_local()
    name = "doomed"
    models.create(sim_model(name, replicas=1))
    pods = wait_for(lambda: models.ready_pods(name), 90, "a Ready sim")
    key = f"{namespace}/{pods[0].metadata.name}"
    assert key in get_json(f"http://127.0.0.1:{local.launcher_port}/pods")
    models.delete(name)
    wait_for(
        lambda: all(n == 0 for n in _count_children(models, name).values()),
        60,
        "every child, ReplicaSet and Pod of the model gone",
    )
    # The process stopped too, not only the API objects.
    wait_for(
        lambda: key not in get_json(f"http://127.0.0.1:{local.launcher_port}/pods"),
        30,
        "the sim process stopped",
    )


def test_more_gpus_than_any_node_has_is_reported_unschedulable(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    name = "too-big"
    models.create(sim_model(name, replicas=1, resources={"gpus": 16, "cpu": "100m"}))

    def unschedulable() -> Any:
        cond = models.condition(name, "Ready")
        return cond and cond["status"] == "False" and cond["reason"] == "Unschedulable" and cond

    ready = wait_for(unschedulable, 60, "Ready=False Unschedulable")
    assert "16 nvidia.com/gpu" in ready["message"], ready
    assert "Insufficient nvidia.com/gpu" in ready["message"], ready
    degraded = models.condition(name, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "Unschedulable" and "nvidia.com/gpu" in degraded["message"]


def test_a_missing_secret_is_reported_creates_nothing_and_recovers(
    cluster: Cluster, namespace: str, models: Models
) -> None:
    name = "gated"
    body = sim_model(
        name,
        replicas=1,
        engine="vllm",
        args=[],
        hfTokenSecretRef={"name": "hf-token", "key": "token"},
        resources={"gpus": 1, "cpu": "100m"},
        scheduling=KWOK_SCHEDULING,
    )
    models.create(body)

    def missing() -> Any:
        cond = models.condition(name, "Ready")
        return cond and cond["reason"] == "MissingDependency" and cond

    ready = wait_for(missing, 30, "Ready=False MissingDependency")
    assert ready["status"] == "False"
    assert 'Secret "hf-token"' in ready["message"], ready
    wait_for(
        lambda: "MissingDependency" in models.event_reasons(name), 30, "a MissingDependency Event"
    )
    (warning,) = [e for e in models.events(name) if e.reason == "MissingDependency"]
    assert warning.type == "Warning" and "hf-token" in warning.message
    time.sleep(2)  # a retry or two later: still nothing half-made
    assert all(n == 0 for n in _count_children(models, name).values())

    cluster.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "hf-token"}, "stringData": {"token": "hf_not_a_real_token"}},
    )
    # No edit of the model: the operator's retry finds the Secret by itself.
    wait_for(lambda: models.is_ready(name), 60, "the model Ready once the Secret exists")
    counts = _count_children(models, name)
    assert {k: counts[k] for k in CHILD_KINDS} == dict.fromkeys(CHILD_KINDS, 1)
    env = _deployment(cluster, namespace, name).spec.template.spec.containers[0].env
    refs = [
        e.value_from.secret_key_ref for e in env if e.value_from and e.value_from.secret_key_ref
    ]
    assert [(r.name, r.key) for r in refs] == [("hf-token", "token")]


def test_an_operator_killed_mid_reconcile_restarts_without_duplicates(
    cluster: Cluster, namespace: str, models: Models, operator: Operator
) -> None:
    leader = operator.wait_leader()
    restarts = leader.status.container_statuses[0].restart_count
    holder = operator.lease_holder()
    names = [f"burst-{i}" for i in range(5)]
    for i, name in enumerate(names):
        models.create(sim_model(name, replicas=2, scheduling=KWOK_SCHEDULING))
        if i == 1:
            operator.kill_process(leader)  # while the first models are being reconciled
    # The killed process comes back (the launcher restarts it) and some replica leads again.
    wait_for(
        lambda: (
            (
                p := next(
                    (p for p in operator.pods() if p.metadata.name == leader.metadata.name), None
                )
            )
            and p.status.container_statuses[0].restart_count > restarts
        ),
        60,
        "the killed operator container restarted",
    )
    wait_for(lambda: operator.lease_holder() not in (None, holder), 60, "a new Lease holder")
    for name in names:
        wait_for(lambda n=name: models.is_ready(n), 90, f"{name} Ready after the restart")
    time.sleep(2)  # let any late duplicate show itself
    for name in names:
        counts = _count_children(models, name)
        assert {k: counts[k] for k in CHILD_KINDS} == dict.fromkeys(CHILD_KINDS, 1), (name, counts)
        assert counts["ReplicaSet"] == 1, (name, counts)  # one template, one ReplicaSet
        assert counts["Pod"] == 2, (name, counts)
    holder = operator.lease_holder()
    assert holder is not None
    assert [p for p in operator.pods() if holder.rsplit("-", 1)[0] == p.metadata.name]


def test_two_replicas_one_leader_and_the_standby_takes_over(
    cluster: Cluster, namespace: str, models: Models, operator: Operator
) -> None:
    wait_for(lambda: len(operator.ready_pods()) == 2, 60, "2 Ready operator pods")
    leader = operator.wait_leader()
    holder = operator.lease_holder()
    assert holder is not None
    # Exactly one holds the Lease; the other only waits (and is Ready: it answers /healthz).
    holders = [p for p in operator.pods() if holder.rsplit("-", 1)[0] == p.metadata.name]
    assert [p.metadata.name for p in holders] == [leader.metadata.name]
    cluster.core.delete_namespaced_pod(leader.metadata.name, operator.namespace)
    deleted = time.monotonic()
    # SIGTERM releases the Lease, so another replica (the standby, polling every 5 s, or the
    # Deployment's replacement pod, trying as it starts) takes it over well before it expires.
    new_leader = wait_for(
        lambda: (p := operator.leader_pod()) and p.metadata.name != leader.metadata.name and p,
        45,
        "another replica holding the Lease",
    )
    took = time.monotonic() - deleted
    assert took < LEASE_SECONDS, f"takeover after {took:.1f} s: the Lease was not released"
    assert new_leader.metadata.name in {p.metadata.name for p in operator.pods()}
    # ... and keeps reconciling.
    models.create(sim_model("after-failover", replicas=1, scheduling=KWOK_SCHEDULING))
    try:
        wait_for(
            lambda: models.is_ready("after-failover"), 60, "a model reconciled by the new leader"
        )
    except pytest.fail.Exception:
        _fail_with_logs(operator, "the new leader did not reconcile")
    wait_for(lambda: len(operator.ready_pods()) == 2, 60, "a replacement standby Ready")
