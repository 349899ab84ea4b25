"""spec.cache.preload on the local cluster: a Job fills the weight cache, replicas start from it.

The sims run the H100 preset's start-up with its cold start scaled to 12 s from the network, so
a filled cache starts a replica in about 5.6 s (``docs/sim.md``, start-up phases). The cache is a
host directory under the cluster's state directory (the launcher's pods share the machine).
"""

from __future__ import annotations

import contextlib
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import STATE_DIR, Cluster, wait_for
from e2e.operator_support import (
    Models,
    Operator,
    apply_crds,
    own_namespace,
    running_operator,
    sim_model,
)

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-preload"
NETWORK_START_SECONDS = 12
"""The sims' cold start from the network; from a filled cache it is 0.47 of it."""
WEIGHTS_BYTES = 16_060_000_000
"""What the H100 preset's preload reports (Llama-3.1-8B in BF16)."""


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Operator]:
    """CRDs, RBAC and one operator replica in a namespace of its own."""
    cluster.require_local()
    apply_crds(cluster)
    with (
        own_namespace(cluster, OPERATOR_NAMESPACE),
        running_operator(cluster, OPERATOR_NAMESPACE, replicas=1) as running,
    ):
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[Models]:
    yield Models(cluster, namespace)


@pytest.fixture
def cache_dir(namespace: str) -> Iterator[Path]:
    """A host directory for the test's weight cache (the launcher creates it on first mount)."""
    path = STATE_DIR / "weights" / namespace
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _model(name: str, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    body = sim_model(name, replicas=1)
    body["spec"]["args"] = [
        "--preset", "llama-3.1-8b-h100", "--startup-delay-seconds", str(NETWORK_START_SECONDS),
    ]  # fmt: skip
    if cache is not None:
        body["spec"]["cache"] = cache
    return body


def _jobs(cluster: Cluster, namespace: str, model: str) -> list[Any]:
    return list(
        client.BatchV1Api(cluster.api)
        .list_namespaced_job(namespace, label_selector=f"inferscale.io/model={model}")
        .items
    )


def _status(models: Models, name: str) -> dict[str, Any]:
    return (models.get(name) or {}).get("status") or {}


def _wait_cached(
    models: Models, operator: Operator, name: str, want: tuple[str, str], timeout: float
) -> None:
    """Wait for the model's Cached condition to have ``want`` (key, value); fail with the logs."""
    key, value = want
    try:
        wait_for(
            lambda: (models.condition(name, "Cached") or {}).get(key) == value,
            timeout,
            f"Cached {key}={value}",
        )
    except pytest.fail.Exception:
        pytest.fail(f"{name}: {_status(models, name)}\n--- operator logs ---\n{operator.logs()}")


def _timeline(cluster: Cluster, namespace: str) -> list[str]:
    """Each pod's creation, start and readiness, and the Events: why a start was slow."""
    out = []
    for pod in cluster.core.list_namespaced_pod(namespace).items:
        ready = [c.last_transition_time for c in pod.status.conditions or [] if c.type == "Ready"]
        started = [
            cs.state.running.started_at
            for cs in pod.status.container_statuses or []
            if cs.state and cs.state.running
        ]
        out.append(f"{pod.metadata.name}: created {pod.metadata.creation_timestamp}, "
                   f"started {started}, ready {ready}")  # fmt: skip
    for event in cluster.core.list_namespaced_event(namespace).items:
        out.append(f"{event.last_timestamp} {event.involved_object.name} {event.reason}: "
                   f"{event.message}")  # fmt: skip
    return out


def _start_to_ready(models: Models, name: str) -> float:
    """Seconds from the replica's container start to its Ready condition."""
    (pod,) = models.ready_pods(name)
    (status,) = pod.status.container_statuses
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    return float((ready.last_transition_time - status.state.running.started_at).total_seconds())


def _metrics(models: Models, name: str) -> str:
    (pod,) = models.ready_pods(name)
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def test_a_preload_job_fills_the_cache_and_the_replica_starts_from_it_faster(
    cluster: Cluster, models: Models, operator: Operator, cache_dir: Path
):
    models.create(_model("cached", {"hostPath": str(cache_dir), "preload": True}))
    # Until the Job is done, no replica exists: nothing downloads twice, nothing crash-loops.
    wait_for(lambda: _jobs(cluster, models.namespace, "cached"), 30, "the preload Job")
    assert not models.children("cached")["Pod"]
    _wait_cached(models, operator, "cached", ("status", "True"), 90)
    (job,) = _jobs(cluster, models.namespace, "cached")
    assert job.status.succeeded == 1
    cache = _status(models, "cached")["cache"]
    assert cache["bytes"] == WEIGHTS_BYTES and cache["seconds"] > 0, cache
    assert cache["job"] == job.metadata.name
    assert (cache_dir / "inferscale-sim" / "manifest.json").is_file()

    # The same model without a cache, for the comparison.
    models.create(_model("network"))
    for name in ("cached", "network"):
        wait_for(lambda n=name: models.is_ready(n), 90, f"{name} Ready")
        wait_for(
            lambda n=name: _status(models, n).get("timeToReadySeconds") is not None,
            30,
            f"{name}'s time to ready",
        )
    assert 'phase="weight_load",source="cache"' in _metrics(models, "cached")
    assert 'phase="weight_load",source="network"' in _metrics(models, "network")
    cached = _start_to_ready(models, "cached")
    network = _start_to_ready(models, "network")
    # 5.6 s of phases against 12 s, from the process's start (the launcher's own delay before
    # it starts a pod, which a busy machine stretches, is left out); seconds-rounded times.
    assert cached + 3 <= network, (cached, network, _timeline(cluster, models.namespace))
    measured = {n: _status(models, n)["timeToReadySeconds"] for n in ("cached", "network")}
    print(
        f"\nprocess start to Ready: {cached:.0f} s from the cache, {network:.0f} s from the "
        f"network; status.timeToReadySeconds (pod creation to Ready): {measured}"
    )


def test_a_cache_size_gets_a_claim_of_the_operators_that_the_job_fills(
    cluster: Cluster, models: Models, operator: Operator, cache_dir: Path
):
    # The local cluster has no provisioner: a static volume of the class the model asks for.
    storage_class = f"weights-{models.namespace}"[:63]
    cache_dir.mkdir(parents=True)
    volume = client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=storage_class),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"},
            access_modes=["ReadWriteMany"],
            storage_class_name=storage_class,
            host_path=client.V1HostPathVolumeSource(path=str(cache_dir)),
        ),
    )
    cluster.core.create_persistent_volume(volume)
    try:
        cache = {"size": "1Gi", "storageClassName": storage_class, "preload": True}
        models.create(_model("claimed", cache))
        _wait_cached(models, operator, "claimed", ("status", "True"), 90)
        claim = cluster.core.read_namespaced_persistent_volume_claim(
            "claimed-weights", models.namespace
        )
        assert claim.status.phase == "Bound" and claim.spec.volume_name == storage_class
        assert claim.metadata.owner_references[0].name == "claimed"
        assert (cache_dir / "inferscale-sim" / "manifest.json").is_file()
        wait_for(lambda: models.is_ready("claimed"), 90, "claimed Ready")
        assert 'phase="weight_load",source="cache"' in _metrics(models, "claimed")
    finally:
        models.delete("claimed")
        with contextlib.suppress(ApiException):
            cluster.core.delete_persistent_volume(storage_class)


def test_an_unwritable_cache_fails_the_job_with_its_reason_and_no_replica_starts(
    cluster: Cluster, models: Models, operator: Operator, cache_dir: Path
):
    # A file where the preload needs its directory: even root cannot write there.
    cache_dir.mkdir(parents=True)
    (cache_dir / "inferscale-sim").write_text("not a directory")
    models.create(_model("broken", {"hostPath": str(cache_dir), "preload": True}))
    _wait_cached(models, operator, "broken", ("reason", "PreloadFailed"), 150)
    cached = models.condition("broken", "Cached") or {}
    assert "cannot fill the weight cache" in cached["message"], cached
    degraded = models.condition("broken", "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "PreloadFailed")
    # The replicas were held at zero throughout: no pod, so no crash loop.
    children = models.children("broken")
    assert children["Deployment"][0].spec.replicas == 0
    assert children["Pod"] == []


def test_a_preload_without_a_shared_volume_is_refused_by_the_api_server(
    cluster: Cluster, models: Models
):
    with pytest.raises(ApiException) as refused:
        models.create(_model("nowhere", {"preload": True}))
    assert refused.value.status == 422
    assert "cache.preload needs a shared volume" in str(refused.value.body)
    with contextlib.suppress(ApiException):
        models.delete("nowhere")
