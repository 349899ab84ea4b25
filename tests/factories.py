"""Factories for tests: a valid object from a few overrides (as GIE's ``MakePod`` wrappers).

Overrides use the wire (camelCase) names and merge deeply into a minimal valid object, so a test
names only what it is about: ``make_model("tgi", optimization={"quantization": "awq"})``.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.loadtest.status import ModelStatus

DEFAULT_SOURCE = "hf://meta-llama/Llama-3.1-8B-Instruct"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def model_spec_dict(engine: str = "vllm", **overrides: Any) -> dict[str, Any]:
    """The wire form of a minimal valid InferenceModel spec with ``overrides`` merged in."""
    return deep_merge({"model": DEFAULT_SOURCE, "engine": engine}, overrides)


def make_model(engine: str = "vllm", **overrides: Any) -> InferenceModelSpec:
    """A validated ``InferenceModelSpec`` for ``engine`` with ``overrides`` (camelCase keys)."""
    return InferenceModelSpec.model_validate(model_spec_dict(engine, **overrides))


def make_pod(
    name: str = "m-abc-1",
    *,
    ready: bool = False,
    phase: str = "Pending",
    created: str = "2025-01-01T00:00:00Z",
    ready_at: str | None = None,
    unschedulable: str | None = None,
    waiting: tuple[str, str] | None = None,
    running: bool = False,
    last_terminated: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A pod as the API server reports it, in the states status tests care about."""
    conditions: list[dict[str, Any]] = []
    if unschedulable is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastTransitionTime": ready_at or created,
        }
    )
    state: dict[str, Any] = {}
    if waiting is not None:
        state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
    elif running or ready:
        state["running"] = {"startedAt": created}
    container: dict[str, Any] = {"name": "engine", "ready": ready, "state": state}
    if last_terminated is not None:
        container["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137}}
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T01:00:00Z"
    status: dict[str, Any] = {"phase": "Running" if (running or ready) else phase}
    status["conditions"] = conditions
    if unschedulable is None:
        status["containerStatuses"] = [container]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def make_deployment_status(
    *,
    replicas: int = 1,
    ready: int = 0,
    updated: int | None = None,
    generation: int = 1,
    observed_generation: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An observed Deployment reduced to what status computation reads."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "status": {
            "observedGeneration": generation
            if observed_generation is None
            else observed_generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "conditions": conditions or [],
        },
    }


def make_model_status(
    name: str = "m",
    namespace: str = "default",
    *,
    desired: int | None = 1,
    ready: int | None = 1,
    reason: str | None = None,
    served_name: str | None = None,
) -> ModelStatus:
    """A :class:`~inferscale.loadtest.status.ModelStatus` as the load test and top read it."""
    return ModelStatus(
        namespace=namespace,
        name=name,
        served_name=served_name or name,
        desired=desired,
        ready=ready,
        replicas=ready,
        in_flight=None,
        held=None,
        ready_condition="True",
        last_scale_time=None,
        last_scale_reason=reason,
    )


# -- objects as the API server returns them (routing, credentials, status tests) -----------

NS = "team"
"""The namespace of the models, routes, providers and clients these builders make."""

ROUTER_NS = "sys"
"""The routers' namespace."""


def model(
    name: str = "llama",
    engine: str = "vllm",
    namespace: str = NS,
    created: str = "2025-01-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    """An InferenceModel object; ``spec`` overrides merge into a minimal valid spec."""
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": model_spec_dict(engine, **spec),
    }


def route(
    name: str = "llama",
    backends: list[dict[str, Any]] | None = None,
    namespace: str = NS,
    created: str = "2025-01-02T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    """An InferenceRoute object; by default one backend, the InferenceModel ``llama``."""
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceRoute",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"backends": backends or [{"inferenceModel": "llama"}], **spec},
    }


def pod(
    name: str,
    model_name: str = "llama",
    ip: str | None = "10.0.0.1",
    ready: bool = True,
    namespace: str = NS,
    deleting: bool = False,
    phase: str = "Running",
    **labels: str,
) -> dict[str, Any]:
    """An engine pod of ``model_name``, Running and Ready with an IP unless told otherwise."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "labels": {
            "inferscale.io/model": model_name,
            "app.kubernetes.io/component": "engine",
            "app.kubernetes.io/managed-by": "inferscale",
            **labels,
        },
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T01:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def provider(
    name: str = "openai",
    type: str = "openai",
    namespace: str = NS,
    models: list[dict[str, Any]] | None = None,
    secret: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An InferenceProvider offering gpt-4o-mini (priced) unless ``models`` says otherwise.

    Its key is in the Secret ``secret`` (default ``<name>-key``), key ``api-key``.
    """
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": type,
            "apiKeySecretRef": {"name": secret or f"{name}-key", "key": "api-key"},
            "models": models
            or [
                {
                    "name": "gpt-4o-mini",
                    "inputPricePerMillionTokens": 0.15,
                    "outputPricePerMillionTokens": 0.6,
                }
            ],
            **spec,
        },
    }


def router_pod(name: str, ip: str | None = "10.9.0.1", **kw: Any) -> dict[str, Any]:
    """A router pod in the routers' namespace (its process restarted twice)."""
    body = pod(name, ip=ip, namespace=ROUTER_NS, **kw)
    body["metadata"]["labels"] = {"app.kubernetes.io/name": "inferscale-router"}
    body["status"]["containerStatuses"] = [{"name": "router", "restartCount": 2}]
    return body


def client(
    name: str = "app",
    secret: str = "app-key",
    key: str = "api-key",
    namespace: str = "team",
    created: str = "2025-01-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    """An InferenceClient whose key is in the Secret ``secret``, key ``key``."""
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceClient",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": created,
            "generation": 3,
        },
        "spec": {"apiKeySecretRef": {"name": secret, "key": key}, **spec},
    }


def key_secret(name: str, value: str, namespace: str = NS, key: str = "api-key") -> dict[str, Any]:
    """A Secret holding one API key (``value``) under ``key``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }
