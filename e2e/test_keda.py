"""KEDA itself drives an InferenceModel through its scale subresource (opt-in: INFERSCALE_KEDA=1).

docs/autoscaling.md promises that with ``spec.autoscaling.enabled: false`` KEDA can scale a
model from zero, with the query of ``examples/interop/keda-scaledobject.yaml``, which counts the
requests the routers hold for a model with no ready replica. Here KEDA's operator, built from
its Go module at a pinned version (tools/keda/build.sh), runs beside the local cluster as its
own ServiceAccount with KEDA's published roles (e2e/keda_support.py), and the example
ScaledObject, pointed at the cluster's Prometheus with a 1 s polling interval and a short
cooldown, drives a sim model:

1. no demand: KEDA leaves the model at zero;
2. one request arrives: a router holds it, Prometheus scrapes the held count, KEDA's Prometheus
   trigger activates the model (0 -> 1) through the scale subresource, the replica turns Ready
   and the held request is answered;
3. six clients keep ~2 s requests in flight: the HPA that KEDA made reads KEDA's metric through
   the external metrics API (KEDA's metrics API server behind the API server's aggregation
   layer) and scales the model to 3 replicas (2 requests per replica here), without one failed
   request;
4. the requests stop: the HPA goes back to one replica at once (its scale-down window set to
   0), and KEDA to zero after the cooldown.

Skipped, with the reason, without ``INFERSCALE_KEDA=1``: the first build of KEDA takes 15 to 30
minutes on 2 cores (28 min on the shared CI machine, 2026-12-05).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import Cluster, wait_for
from e2e.keda_support import (
    KEDA_ENV,
    KEDA_GROUP,
    KEDA_OPT_IN,
    KEDA_VERSION,
    Keda,
    keda_dir,
    keda_running,
    keda_skip_reason,
    metrics_server_running,
    scaled_object,
)
from e2e.operator_support import Models, sim_model
from e2e.router_support import Load, Routers, routers_running, wait_routers

# Decided before the session's cluster starts: without the variable nothing is built or run.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get(KEDA_ENV) != "1", reason=KEDA_OPT_IN),
]

OPERATOR_NAMESPACE = "e2e-inferscale-keda"
KEDA_NAMESPACE = "e2e-keda-system"
POLLING_SECONDS = 1
COOLDOWN_SECONDS = 10
SCALED_OBJECTS = "scaledobjects"
THRESHOLD = 2
"""Requests per replica the test's ScaledObject aims at (the example's 16, made small)."""
LOAD_THREADS = 6
"""Clients that each keep one ~2 s request in flight: 6 / 2 -> 3 replicas."""


@pytest.fixture(scope="module")
def keda(cluster: Cluster) -> Iterator[Keda]:
    reason = keda_skip_reason(cluster)
    if reason:
        pytest.skip(reason)
    assets = keda_dir()
    with (
        keda_running(cluster, assets, KEDA_NAMESPACE) as running,
        metrics_server_running(cluster, assets, running),
    ):
        yield running


@pytest.fixture(scope="module")
def routers(cluster: Cluster, keda: Keda) -> Iterator[Routers]:
    with routers_running(cluster, OPERATOR_NAMESPACE) as running:
        yield running


class HeldRequest:
    """One chat request sent from a thread, with when it was sent and answered."""

    def __init__(self, routers: Routers, served: str) -> None:
        self.routers, self.served = routers, served
        self.sent_at = self.answered_at = 0.0
        self.error: str | None = None
        self.thread = threading.Thread(target=self.send, daemon=True)

    def send(self) -> None:
        with self.routers.client(self.routers.ready_pods()[0]) as api:
            self.sent_at = time.monotonic()
            try:
                answer = api.with_options(timeout=120).chat.completions.create(
                    model=self.served, messages=[{"role": "user", "content": "hello"}]
                )
                assert answer.choices[0].finish_reason
            except (openai.OpenAIError, AssertionError) as error:
                self.error = f"{type(error).__name__}: {error}"
            self.answered_at = time.monotonic()


def _replicas(models: Models, name: str) -> int:
    return int(((models.get(name) or {}).get("spec") or {}).get("replicas") or 0)


def _scale_writers(models: Models, name: str) -> set[str]:
    """Field managers that wrote the model through its scale subresource."""
    fields = ((models.get(name) or {}).get("metadata") or {}).get("managedFields") or []
    return {f["manager"] for f in fields if f.get("subresource") == "scale"}


def _scaled_object(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
            KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def _condition(obj: dict[str, Any] | None, type_: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ScaledObject"
    ).items
    return {e.reason for e in events}


def _hpa_scaling_active(cluster: Cluster, namespace: str, name: str) -> str | None:
    """The ScalingActive condition of the HPA that KEDA made for ``name``, as one line."""
    try:
        hpa = client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(
            f"keda-hpa-{name}", namespace
        )
    except ApiException:
        return None
    for cond in hpa.status.conditions or []:
        if cond.type == "ScalingActive":
            return f"{cond.status} {cond.reason}: {cond.message}"
    return None


def _model(name: str) -> dict[str, Any]:
    """A sim with autoscaling off (KEDA's to drive) whose 8-token answers take about 2 s."""
    return sim_model(
        name,
        replicas=0,
        args=["--startup-delay-seconds", "1", "--step-base-seconds", "0.25"],
    )


def test_keda_scales_a_model_from_zero_on_a_held_request_and_back_to_zero(
    cluster: Cluster, namespace: str, keda: Keda, routers: Routers
) -> None:
    models = Models(cluster, namespace)
    name = "keda-scaled"
    served = f"{name}-served"
    models.create(_model(name))
    wait_routers(
        routers,
        lambda: all(served in ((t or {}).get("models") or {}) for t in routers.tables()),
        30,
        f"every router to know {served} at zero replicas",
    )
    body = scaled_object(
        namespace,
        name,
        served,
        cluster.prometheus,
        pollingInterval=POLLING_SECONDS,
        cooldownPeriod=COOLDOWN_SECONDS,
        # The HPA that KEDA makes scales down at once instead of after 5 minutes.
        advanced={
            "horizontalPodAutoscalerConfig": {
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
            }
        },
    )
    body["spec"]["triggers"][0]["metadata"]["threshold"] = str(THRESHOLD)
    cluster.custom.create_namespaced_custom_object(
        KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, body
    )
    try:
        wait_for(
            lambda: _condition(_scaled_object(cluster, namespace, name), "Ready") == "True",
            60,
            f"KEDA to accept the ScaledObject\n{keda.logs()}",
        )
        _from_zero(cluster, namespace, keda, routers, models, name, served)
        peak = _one_to_n(cluster, namespace, routers, models, name, served)
        _back_to_zero(cluster, namespace, keda, models, name, peak)
    finally:
        cluster.custom.delete_namespaced_custom_object(
            KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, name
        )
        wait_for(
            lambda: _scaled_object(cluster, namespace, name) is None,
            30,
            "KEDA to remove its finalizer from the deleted ScaledObject",
        )


def _from_zero(
    cluster: Cluster,
    namespace: str,
    keda: Keda,
    routers: Routers,
    models: Models,
    name: str,
    served: str,
) -> None:
    """No demand: zero. One request held at zero replicas: KEDA activates the model."""
    time.sleep(3 * POLLING_SECONDS + 2)
    assert _replicas(models, name) == 0 and not models.ready_pods(name)
    held = HeldRequest(routers, served)
    held.thread.start()
    scaled_at = wait_for(
        lambda: _replicas(models, name) >= 1 and time.monotonic(),
        60,
        f"KEDA to scale {name} from zero\n{keda.logs()}",
    )
    ready_at = wait_for(
        lambda: models.ready_pods(name) and time.monotonic(), 60, "the replica to turn Ready"
    )
    held.thread.join(120)
    assert held.error is None, held.error
    writers = _scale_writers(models, name)
    print(
        f"\nKEDA from zero: request sent -> spec.replicas 1 {scaled_at - held.sent_at:.1f} s, "
        f"-> replica Ready {ready_at - held.sent_at:.1f} s, -> answered "
        f"{held.answered_at - held.sent_at:.1f} s (scale subresource written by {sorted(writers)})"
    )
    assert _replicas(models, name) == 1
    assert any("keda" in w.lower() for w in writers), writers
    assert "KEDAScaleTargetActivated" in _event_reasons(cluster, namespace, name)


def _one_to_n(
    cluster: Cluster, namespace: str, routers: Routers, models: Models, name: str, served: str
) -> int:
    """1 -> N: the HPA that KEDA made, on KEDA's metric through the external metrics API."""
    with Load(routers, served, threads=LOAD_THREADS).running() as load:
        started = time.monotonic()
        peak = wait_for(
            lambda: (n := _replicas(models, name)) > 1 and n,
            90,
            f"KEDA's HPA to scale {name} past one replica "
            f"(ScalingActive: {_hpa_scaling_active(cluster, namespace, name)})",
        )
        decided = time.monotonic() - started
        wait_for(lambda: len(models.ready_pods(name)) >= peak, 60, f"{peak} Ready replicas")
        time.sleep(3)  # traffic over the grown set
        peak = max(peak, _replicas(models, name))
    hpa = _hpa_scaling_active(cluster, namespace, name)
    print(
        f"KEDA 1 -> {peak}: {LOAD_THREADS} clients -> HPA decision {decided:.1f} s; "
        f"{load.done} requests answered, {len(load.errors)} failed; ScalingActive {hpa}"
    )
    assert load.errors == [], load.errors[:3]
    return peak


def _back_to_zero(
    cluster: Cluster, namespace: str, keda: Keda, models: Models, name: str, peak: int
) -> None:
    """No more requests: the HPA goes back to one replica, KEDA to zero after the cooldown."""
    idle_at = time.monotonic()
    one_at = wait_for(
        lambda: _replicas(models, name) <= 1 and time.monotonic(),
        90,
        f"KEDA's HPA to scale {name} down from {peak}",
    )
    zero_at = wait_for(
        lambda: _replicas(models, name) == 0 and time.monotonic(),
        COOLDOWN_SECONDS + 90,
        f"KEDA to scale {name} back to zero\n{keda.logs()}",
    )
    wait_for(lambda: not models.ready_pods(name), 30, "the replicas to go")
    print(
        f"KEDA back down: last request -> {peak} -> 1 {one_at - idle_at:.1f} s, "
        f"-> 0 {zero_at - idle_at:.1f} s (cooldown {COOLDOWN_SECONDS} s)"
    )
    assert zero_at - idle_at >= COOLDOWN_SECONDS - 1
    assert "KEDAScaleTargetDeactivated" in _event_reasons(cluster, namespace, name)
