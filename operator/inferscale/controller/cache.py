"""What the operator knows of its children without asking the API server: kopf indices.

Every reconcile needs a model's Deployment, Service, PodDisruptionBudget and Pods. Listing them
per reconcile costs the API server a filtered scan of the namespace each time, which sinks a
thousand-model cluster (measured by ``bench/operator_scale``). kopf's indices keep them in memory
from the watch streams the operator already has, like controller-runtime's informer caches.

A watch lags a write by a moment: right after the operator applies an object, its index may not
show it yet. :class:`ChildCache` therefore remembers what it applied until the index catches up,
so the next reconcile neither re-creates it nor announces it twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from inferscale.api.meta import LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY

JsonDict = dict[str, Any]
ModelKey = tuple[str, str]
ObjectKey = tuple[str, str, str]

CHILD_LABELS: dict[str, Any] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT}
"""What marks an object as a model's child (pods carry the same labels from the template)."""


def _key_of(body: Mapping[str, Any], labels: Mapping[str, str]) -> ModelKey:
    return (str(body["metadata"]["namespace"]), labels[LABEL_MODEL])


def _snapshot(body: Mapping[str, Any]) -> JsonDict:
    # A Body is a live view that kopf replaces on the next event; the index keeps a copy, less
    # managedFields, which server-side apply makes the largest part of every object and which
    # nothing here reads (memory with a thousand models, see bench/operator_scale).
    snapshot = copy.deepcopy(dict(body))
    snapshot.get("metadata", {}).pop("managedFields", None)
    return snapshot


@kopf.index("inferscale.io", "v1alpha1", "inferencemodels")
def models(body: kopf.Body, **_: Any) -> Any:
    """InferenceModels by (namespace, name): a reconcile reads its model from here."""
    meta = body["metadata"]
    return {(str(meta["namespace"]), str(meta["name"])): _snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=CHILD_LABELS)
def model_deployments(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Deployments by (namespace, model)."""
    return {_key_of(body, labels): _snapshot(body)}


@kopf.index("", "v1", "services", labels=CHILD_LABELS)
def model_services(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Services by (namespace, model)."""
    return {_key_of(body, labels): _snapshot(body)}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS)
def model_pdbs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """PodDisruptionBudgets by (namespace, model)."""
    return {_key_of(body, labels): _snapshot(body)}


@kopf.index("", "v1", "pods", labels=CHILD_LABELS)
def model_pods(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Pods by (namespace, model)."""
    return {_key_of(body, labels): _snapshot(body)}


INDEX_NAMES = ("models", "model_deployments", "model_services", "model_pdbs", "model_pods")
"""The keyword names under which kopf passes these indices to every handler."""


def _object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta["namespace"]), str(meta["name"]))


def _older(seen: Mapping[str, Any], applied: Mapping[str, Any]) -> bool:
    """Whether the watched copy predates our write (etcd revisions are integers in practice)."""
    try:
        return int(seen["metadata"]["resourceVersion"]) < int(
            applied["metadata"]["resourceVersion"]
        )
    except (KeyError, TypeError, ValueError):
        return False  # not comparable: trust the watch


@dataclass
class ChildCache:
    """A model's children and pods from kopf's indices, plus the applies they do not show yet."""

    indices: Mapping[str, Any]
    """The four kopf indices by name (see :data:`INDEX_NAMES`)."""

    recent: dict[ObjectKey, JsonDict] = field(default_factory=dict)
    """Objects this operator applied that their index has not shown yet."""

    def _values(self, index: str, key: ModelKey) -> list[JsonDict]:
        store: Iterable[JsonDict] | None = self.indices[index].get(key)
        return [copy.deepcopy(v) for v in store] if store is not None else []

    def children(self, namespace: str, model: str) -> list[JsonDict]:
        """The model's Deployment, Service and PDB as last seen (or as last applied)."""
        key = (namespace, model)
        seen = [
            obj
            for index in ("model_deployments", "model_services", "model_pdbs")
            for obj in self._values(index, key)
        ]
        out: list[JsonDict] = []
        for obj in seen:
            mine = self.recent.get(_object_key(obj))
            if mine is not None and _older(obj, mine):
                out.append(copy.deepcopy(mine))  # the watch has not shown our write yet
                continue
            self.recent.pop(_object_key(obj), None)  # the watch caught up: trust it again
            out.append(obj)
        seen_keys = {_object_key(o) for o in seen}
        out.extend(
            copy.deepcopy(obj)
            for key, obj in self.recent.items()
            if key not in seen_keys
            and key[1] == namespace
            and obj["metadata"].get("labels", {}).get(LABEL_MODEL) == model
        )
        return out

    def model(self, namespace: str, name: str) -> JsonDict | None:
        """The InferenceModel as last seen, or as last written by us if that is newer."""
        found = self._values("models", (namespace, name))
        mine = self.recent.get(("InferenceModel", namespace, name))
        if not found:
            return None  # deleted (a write of ours cannot resurrect it)
        if mine is not None and _older(found[0], mine):
            return copy.deepcopy(mine)
        self.recent.pop(("InferenceModel", namespace, name), None)
        return found[0]

    def pods(self, namespace: str, model: str) -> list[JsonDict]:
        """The model's pods as last seen."""
        return self._values("model_pods", (namespace, model))

    def applied(self, obj: JsonDict) -> None:
        """Remember an object the API server just stored, until its index shows it."""
        self.recent[_object_key(obj)] = _snapshot(obj)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object the operator deleted."""
        self.recent.pop((kind, namespace, name), None)
