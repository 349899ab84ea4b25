"""An InferenceModel's status as the load test and ``inferscale top`` show it.

Pure. The status is read field by field rather than through the strict API model
(:class:`~inferscale.api.v1alpha1.inference_model.InferenceModelStatus` forbids unknown fields):
a viewer must show what it can of an object written by an older or newer operator, and a field of
the wrong type reads as unknown instead of hiding the whole model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One InferenceModel's replica counts, load signals and last scaling decision."""

    namespace: str
    name: str
    served_name: str
    desired: int | None
    ready: int | None
    replicas: int | None
    in_flight: float | None
    held: int | None
    ready_condition: str | None
    """``True``, or the Ready condition's reason when it is not (``Loading``, ``Unschedulable``)."""
    last_scale_time: str | None
    last_scale_reason: str | None

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def model_status(obj: dict[str, Any]) -> ModelStatus:
    """Read an InferenceModel object (as the API returns it); missing fields are None."""
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    signals = _mapping(status.get("signals"))
    name = str(meta.get("name") or "?")
    ready_condition = None
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            state = condition.get("status")
            ready_condition = "True" if state == "True" else _text(condition.get("reason"))
    return ModelStatus(
        namespace=str(meta.get("namespace") or ""),
        name=name,
        served_name=_text(status.get("servedName")) or _text(spec.get("servedName")) or name,
        desired=_int(status.get("desiredReplicas")),
        ready=_int(status.get("readyReplicas")),
        replicas=_int(status.get("replicas")),
        in_flight=_number(signals.get("inFlight")),
        held=_int(signals.get("held")),
        ready_condition=ready_condition,
        last_scale_time=_text(status.get("lastScaleTime")),
        last_scale_reason=_text(status.get("lastScaleReason")),
    )
