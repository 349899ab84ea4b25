"""The autoscaler on the local cluster: scale from zero, a load step, back down, to zero.

The operator runs as in test_routing (its own namespace, config/rbac, two routers) and reads
the engines' load from the cluster's Prometheus, which scrapes every pod every 2 s, and the
routers' held and in-flight counts. One sim model with ``minReplicas: 0`` and a 4 s cold start
goes through the life the issue describes, while a load generator (threads of the official
``openai`` SDK, no SDK retries) counts every failed request:

1. a burst arrives at zero replicas: the routers hold it, the autoscaler scales from zero, and
   the first replica is Ready within the sim's start-up delay plus 3 s of the first request;
2. a load step beyond capacity gets a scale-up decision within 5 s;
3. the load stops: replicas fall back and then reach zero after the idle delay;

and not one request fails through all of it. Every step's figure is printed.

A second model shows the cost-aware mode's CostAware condition on a real object: priced from
its spill route's provider, its accelerator price and the engines' token counters in the
cluster's Prometheus, PriceMissing (with a Warning Event) once the price is removed, and
priced again by the operator's own accelerator price once it asks for the nodes that price
names; with the autoscaler's status.learnedFloor and ScalingLimited kept by the API server.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from e2e.conftest import Cluster, get_json, pod_ready
from e2e.keda_support import keda_query
from e2e.operator_support import Models, sim_model
from e2e.router_support import (
    Routers,
    endpoints,
    fast_autoscaler_env,
    routers_running,
    wait_routers,
)
from inferscale.api.meta import GROUP, VERSION
from inferscale.autoscaler.signals import build_queries

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-autoscaling"
STARTUP_DELAY = 4.0
"""The sim's cold start (seconds): long enough that holding is visible, short for CI."""
TARGET = 4
"""Requests in flight per replica the model's autoscaling aims at."""
POLL = 0.1

PRICES = '{"kubernetes.io/os=linux": 0.5}'
"""The operator-wide accelerator price: a node label every local node has (kubelet sets it),
so a model that asks for it in its nodeSelector is priced without a price of its own."""


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    env = {**fast_autoscaler_env(cluster), "INFERSCALE_AUTOSCALER__ACCELERATOR_HOUR_PRICES": PRICES}
    with routers_running(cluster, OPERATOR_NAMESPACE, env) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def autoscaled_model(name: str) -> dict[str, Any]:
    """A sim that starts in 4 s and answers in ~1 s (64 tokens), scaled by inferscale."""
    body = sim_model(
        name,
        replicas=0,
        args=[
            "--startup-delay-seconds",
            str(STARTUP_DELAY),
            "--decode-seconds-per-seq",
            "0.0005",
            "--step-base-seconds",
            "0.015",
            "--default-max-tokens",
            "64",
        ],
        minReplicas=0,
        maxReplicas=4,
        autoscaling={
            "enabled": True,
            "targetInFlightPerReplica": TARGET,
            "stableWindowSeconds": 20,
            "panicWindowSeconds": 6,
            "maxScaleUpStep": 2,
            "scaleDownDelaySeconds": 10,
            "scaleToZeroDelaySeconds": 15,
        },
        serving={"terminationGracePeriodSeconds": 10, "startupTimeoutSeconds": 60},
    )
    del body["spec"]["replicas"]
    return body


@dataclass
class OpenLoad:
    """``workers`` threads that each send one request after another until stopped."""

    routers: Routers
    served: str
    workers: int
    sent: int = 0
    done: int = 0
    first_sent_at: float | None = None
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def loop(self, index: int) -> None:
        pods = self.routers.ready_pods()
        with self.routers.client(pods[index % len(pods)]) as client:
            client = client.with_options(timeout=120)
            while not self.stop.is_set():
                with self.lock:
                    self.sent += 1
                    if self.first_sent_at is None:
                        self.first_sent_at = time.monotonic()
                try:
                    answer = client.chat.completions.create(
                        model=self.served,
                        messages=[{"role": "user", "content": f"count to {index}"}],
                    )
                    assert answer.choices[0].finish_reason
                except (openai.OpenAIError, AssertionError) as error:
                    with self.lock:
                        self.errors.append(f"{type(error).__name__}: {error}")
                else:
                    with self.lock:
                        self.done += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[OpenLoad]:
        threads = [
            threading.Thread(target=self.loop, args=(i,), daemon=True) for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(150)


def _status(models: Models, name: str) -> dict[str, Any]:
    return (models.get(name) or {}).get("status") or {}


def _wait(routers: Routers, check: Any, timeout: float, what: str) -> Any:
    return wait_routers(routers, check, timeout, what)


def test_scale_from_zero_up_down_and_to_zero_without_a_failed_request(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    name = "elastic"
    served = f"{name}-served"
    models.create(autoscaled_model(name))
    # At zero: the model is in every router's table with no endpoint, so requests are held.
    _wait(
        routers,
        lambda: all(
            served in ((t or {}).get("models") or {}) and endpoints(t, served) == {}
            for t in routers.tables()
        ),
        30,
        f"every router to know {served} at zero replicas",
    )
    assert _status(models, name).get("desiredReplicas") == 0

    # 1. A burst at zero: held, then served by the first replica.
    burst = OpenLoad(routers, served, workers=3)
    with burst.running():
        ready_at = _wait(
            routers,
            lambda: models.ready_pods(name) and time.monotonic(),
            STARTUP_DELAY + 30,
            "the first replica to turn Ready",
        )
        assert burst.first_sent_at is not None
        from_zero = ready_at - burst.first_sent_at
        _wait(routers, lambda: burst.done >= 6, 60, "the held burst to be answered")
    sent_wall = time.time() - (time.monotonic() - burst.first_sent_at)
    print(
        f"\nfirst request -> first replica Ready: {from_zero:.1f} s (sent "
        f"{time.strftime('%H:%M:%S', time.gmtime(sent_wall))}, decided "
        f"{_status(models, name).get('lastScaleTime')}, pod created "
        f"{models.ready_pods(name)[0].metadata.creation_timestamp})"
    )
    assert from_zero <= STARTUP_DELAY + 3, f"scale from zero took {from_zero:.1f} s"
    scaled = [e.message for e in models.events(name) if e.reason == "ScaledUp"]
    assert any(m.startswith("scaled 0 -> ") for m in scaled), scaled

    # 2. A step to 4x one replica's target: a scale-up decision within 5 s.
    _wait(
        routers,
        lambda: (
            len(models.ready_pods(name)) >= 1
            and all(len(endpoints(t, served)) >= 1 for t in routers.tables())
        ),
        30,
        "the model routable",
    )
    before = int(_status(models, name).get("desiredReplicas") or 0)
    step = OpenLoad(routers, served, workers=TARGET * 4)
    with step.running():
        step_at = time.monotonic()
        decided_at = _wait(
            routers,
            lambda: (
                int(_status(models, name).get("desiredReplicas") or 0) > before and time.monotonic()
            ),
            30,
            f"a scale-up above {before} replicas",
        )
        reaction = decided_at - step_at
        reason = _status(models, name).get("lastScaleReason") or ""
        _wait(
            routers,
            lambda: len(models.ready_pods(name)) >= 2,
            STARTUP_DELAY + 30,
            "the added replicas to turn Ready",
        )
        time.sleep(3)  # traffic over the grown set
        peak = len(models.ready_pods(name))
    print(f"load step -> scale-up decision: {reaction:.1f} s ({reason}); peak {peak} ready")
    assert reaction <= 5, f"the scale-up decision took {reaction:.1f} s"
    assert "in flight" in reason and "target 4 per replica" in reason, reason

    # 3. Load stops: down, then to zero after the idle delay.
    idle_at = time.monotonic()
    _wait(
        routers,
        lambda: int(_status(models, name).get("desiredReplicas") or 0) < peak,
        90,
        "a scale-down after the load stopped",
    )
    _wait(
        routers,
        lambda: (
            _status(models, name).get("desiredReplicas") == 0
            and not any(pod_ready(p) for p in models.ready_pods(name))
        ),
        120,
        "the model to scale to zero",
    )
    to_zero = time.monotonic() - idle_at
    print(f"load stopped -> zero replicas: {to_zero:.0f} s")
    # Never before the idle delay: the last request ended at most a request's time earlier.
    assert to_zero >= 15 - 2, f"scaled to zero {to_zero:.0f} s after the load stopped"

    reasons = models.event_reasons(name)
    assert {"ScaledUp", "ScaledDown"} <= reasons, reasons
    total_errors = burst.errors + step.errors
    print(f"requests: {burst.done + step.done} answered, {len(total_errors)} failed")
    assert total_errors == [], total_errors[:5]


def _prometheus_value(cluster: Cluster, query: str) -> float | None:
    """The query's single value now, or None when it returns no series."""
    params = urllib.parse.urlencode({"query": query})
    result = get_json(f"{cluster.prometheus}/api/v1/query?{params}")["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_the_keda_example_query_sees_a_request_held_at_zero_replicas(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    name = "keda-driven"
    served = f"{name}-served"
    models.create(sim_model(name, replicas=0))  # autoscaling off: KEDA's to drive
    _wait(
        routers,
        lambda: all(served in ((t or {}).get("models") or {}) for t in routers.tables()),
        30,
        f"every router to know {served} at zero replicas",
    )
    query = keda_query(namespace, name, served)
    engines_only = query.split(" + (sum(inferscale_router_held_requests")[0]
    held = OpenLoad(routers, served, workers=1)
    with held.running():
        # Held by a router, scraped by Prometheus: the example's query sees the demand.
        _wait(
            routers,
            lambda: (_prometheus_value(cluster, query) or 0) >= 1,
            30,
            "the KEDA query to count the held request",
        )
        assert not models.ready_pods(name)
        assert _prometheus_value(cluster, engines_only) == 0  # the engines alone: no demand
        # KEDA would now activate the model through the scale subresource.
        cluster.custom.patch_namespaced_custom_object_scale(
            "inferscale.io",
            "v1alpha1",
            namespace,
            "inferencemodels",
            name,
            {"spec": {"replicas": 1}},
        )
        _wait(routers, lambda: held.done >= 1, 60, "the held request to be answered")
    assert held.errors == []


def _cost_aware(models: Models, name: str) -> dict[str, Any]:
    return models.condition(name, "CostAware") or {}


def test_the_cost_aware_mode_is_priced_from_the_route_provider_and_traffic(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    """The CostAware condition on a real object: a spill route to a priced provider, the
    accelerator's price, and the engines' token counters in the cluster's Prometheus."""
    name = "priced"
    served = f"{name}-served"
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hosted-key"},
            "stringData": {"api-key": "unused"},
        },
    )
    # Nothing listens there, and nothing spills: the threshold is far above the load and a
    # cold start does not spill. The mode needs only the provider's prices.
    provider: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceProvider",
        "metadata": {"name": "hosted"},
        "spec": {
            "type": "openai-compatible",
            "baseURL": "http://127.0.0.1:9/v1",
            "apiKeySecretRef": {"name": "hosted-key", "key": "api-key"},
            "models": [
                {
                    "name": "small",
                    "inputPricePerMillionTokens": 0.15,
                    "outputPricePerMillionTokens": 0.60,
                }
            ],
        },
    }
    route: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceRoute",
        "metadata": {"name": name},
        "spec": {
            "modelName": served,
            "backends": [
                {"inferenceModel": name, "role": "primary"},
                {"provider": {"name": "hosted", "model": "small"}, "role": "spillover"},
            ],
            "spillover": {"inFlightPerReplica": 1000, "onColdStart": False},
            "spend": {"maxPerHour": 2},
        },
    }
    for plural, obj in (("inferenceproviders", provider), ("inferenceroutes", route)):
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
    body = autoscaled_model(name)
    body["spec"]["minReplicas"] = 1
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "targetInFlightPerReplica": TARGET,
        "acceleratorHourPrice": 0.8,
    }
    models.create(body)
    # Before any traffic: priced, but the throughput is not known yet.
    first = _wait(
        routers, lambda: _cost_aware(models, name).get("reason"), 60, "a CostAware condition"
    )
    print(f"\nCostAware before traffic: {first}: {_cost_aware(models, name).get('message')}")
    assert first in ("ThroughputUnknown", "SpillPriced")
    _wait(
        routers,
        lambda: (
            models.ready_pods(name)
            and all(len(endpoints(t, served)) >= 1 for t in routers.tables())
        ),
        60,
        "the model routable",
    )
    load = OpenLoad(routers, served, workers=2)
    with load.running():
        # The throughput is read once a minute over a 10-minute window.
        try:
            _wait(
                routers,
                lambda: _cost_aware(models, name).get("reason") == "SpillPriced",
                150,
                "CostAware=True SpillPriced",
            )
        finally:
            queries = build_queries("inferscale_io_model", "namespace")
            for query in (queries.prompt_rate, queries.output_rate, queries.mean_in_flight):
                params = urllib.parse.urlencode({"query": query})
                print(query, "->", get_json(f"{cluster.prometheus}/api/v1/query?{params}"))
    cost = _cost_aware(models, name)
    print(f"CostAware with traffic: {cost['status']} {cost['reason']}: {cost['message']}")
    assert cost["status"] == "True"
    assert "a replica-hour costs 0.8" in cost["message"] and "spend cap 2" in cost["message"]
    assert "SpillPriced" in models.event_reasons(name)
    # The price goes: the ordinary policy, a Warning naming the field.
    models.patch_spec(name, {"autoscaling": {"acceleratorHourPrice": None}})
    _wait(
        routers,
        lambda: _cost_aware(models, name).get("reason") == "PriceMissing",
        30,
        "CostAware=False PriceMissing",
    )
    cost = _cost_aware(models, name)
    assert "spec.autoscaling.acceleratorHourPrice is not set" in cost["message"]
    warned = [e for e in models.events(name) if e.reason == "PriceMissing"]
    assert warned and warned[0].type == "Warning"
    # The operator's own price, for models on nodes labelled kubernetes.io/os=linux: the model
    # asks for such nodes and is priced again, the condition naming the setting.
    models.patch_spec(name, {"scheduling": {"nodeSelector": {"kubernetes.io/os": "linux"}}})
    # The last usable throughput is kept: no traffic is needed for the price to come back.
    _wait(
        routers,
        lambda: _cost_aware(models, name).get("reason") == "SpillPriced",
        60,
        "CostAware=True SpillPriced from the operator's price",
    )
    cost = _cost_aware(models, name)
    print(f"CostAware from the operator's price: {cost['message']}")
    assert "a replica-hour costs 0.5 (0.5 per accelerator from operator setting " in cost["message"]
    assert "autoscaler.acceleratorHourPrices[kubernetes.io/os=linux]" in cost["message"]
    # The API server kept the autoscaler's floor fields (the CRD has them) and says why.
    st = _status(models, name)
    limited = models.condition(name, "ScalingLimited")
    print(f"learnedFloor {st.get('learnedFloor')}, ScalingLimited {limited}")
    assert isinstance(st.get("learnedFloor"), int) and limited is not None
    assert load.errors == [], load.errors[:5]
