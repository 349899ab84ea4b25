"""What the operator knows of its children without asking the API server: kopf indices.

Every reconcile needs a model's Deployment, Service, PodDisruptionBudget and Pods. Listing them
per reconcile costs the API server a filtered scan of the namespace each time, which sinks a
thousand-model cluster (measured by ``bench/operator_scale``). kopf's indices keep them in memory
from the watch streams the operator already has, like controller-runtime's informer caches.

A watch lags a write by a moment: right after the operator applies an object, its index may not
show it yet. :class:`ChildCache` therefore remembers what it applied until the index catches up,
so the next reconcile neither re-creates it nor announces it twice.

Deployments, Services and PodDisruptionBudgets, which only a reconcile of their own model reads,
are kept as compact JSON bytes and parsed when read: a parsed Deployment takes four times the
memory of its JSON, and a read needed a fresh copy anyway. Models and pods stay parsed, because
the autoscaler and the routing compiler read all of them in place, every round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import orjson

from inferscale.api.meta import LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY

JsonDict = dict[str, Any]
ModelKey = tuple[str, str]
ObjectKey = tuple[str, str, str]

CHILD_LABELS: dict[str, Any] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT}
"""What marks an object as a model's child (pods carry the same labels from the template)."""


def _key_of(body: Mapping[str, Any], labels: Mapping[str, str]) -> ModelKey:
    return (str(body["metadata"]["namespace"]), labels[LABEL_MODEL])


def json_copy(obj: Mapping[str, Any]) -> JsonDict:
    """A deep copy of a JSON-shaped mapping.

    An orjson round trip is many times faster than ``copy.deepcopy``, which was the largest
    single cost of a reconcile at a thousand models (``py-spy`` on ``bench/operator_scale``).
    """
    copied: JsonDict = orjson.loads(orjson.dumps(dict(obj)))
    return copied


def index_objects(index: Mapping[Any, Iterable[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Every object of a kopf index (key -> store of objects) in one list.

    Taken without awaiting, so the list is one moment's view even while events update the index.
    """
    return [obj for store in index.values() for obj in store]


def _without_managed_fields(body: Mapping[str, Any]) -> JsonDict:
    # managedFields, which server-side apply makes the largest part of every object, is read by
    # nothing here (memory with a thousand models, see bench/operator_scale). A shallow copy:
    # the caller serialises or deep-copies it at once.
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def _snapshot(body: Mapping[str, Any]) -> JsonDict:
    # A Body is a live view that kopf replaces on the next event; the index keeps a copy.
    return json_copy(_without_managed_fields(body))


def freeze(body: Mapping[str, Any]) -> bytes:
    """A snapshot of ``body`` (less managedFields) as compact JSON: :func:`thaw` reads it."""
    # orjson returns its growing buffer as is: 8 KB held for a 3 KB Deployment. The copy
    # through a memoryview is exact-size, and a snapshot is kept for long.
    return bytes(memoryview(orjson.dumps(_without_managed_fields(body))))


def thaw(value: bytes | Mapping[str, Any]) -> JsonDict:
    """A private, mutable copy of a snapshot, frozen or not."""
    if isinstance(value, bytes):
        thawed: JsonDict = orjson.loads(value)
        return thawed
    return json_copy(value)


POD_METADATA_KEPT = (
    "name",
    "namespace",
    "uid",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
    "resourceVersion",
)
"""What a pod snapshot keeps of its metadata: what status and the routing table read."""


def _pod_snapshot(body: Mapping[str, Any]) -> JsonDict:
    # Status and the routing table read a pod's identity, labels, times, node and status only.
    # Its spec (containers, volumes, probes, tolerations) is most of its size and is the
    # Deployment's template, which the Deployment's own snapshot already holds.
    meta = body.get("metadata") or {}
    snapshot: JsonDict = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in POD_METADATA_KEPT if k in meta},
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": body.get("status") or {},
    }
    return json_copy(snapshot)


# The index functions are ``async`` although they never await: kopf runs a sync handler in a
# worker thread (a hand-off, a context copy and a shielded task for every watch event, for
# each of the five), and a copy of one object takes microseconds (bench/operator_scale).


@kopf.index("inferscale.io", "v1alpha1", "inferencemodels")
async def models(body: kopf.Body, **_: Any) -> Any:
    """InferenceModels by (namespace, name): a reconcile reads its model from here."""
    meta = body["metadata"]
    return {(str(meta["namespace"]), str(meta["name"])): _snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=CHILD_LABELS)
async def model_deployments(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Deployments by (namespace, model), frozen."""
    return {_key_of(body, labels): freeze(body)}


@kopf.index("", "v1", "services", labels=CHILD_LABELS)
async def model_services(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Services by (namespace, model), frozen."""
    return {_key_of(body, labels): freeze(body)}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS)
async def model_pdbs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """PodDisruptionBudgets by (namespace, model), frozen."""
    return {_key_of(body, labels): freeze(body)}


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
async def model_jobs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Preload Jobs (``spec.cache.preload``) by (namespace, model), frozen."""
    return {_key_of(body, labels): freeze(body)}


@kopf.index("", "v1", "persistentvolumeclaims", labels=CHILD_LABELS)
async def model_claims(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Weight-cache claims the operator created (``spec.cache.size``) by (namespace, model)."""
    return {_key_of(body, labels): freeze(body)}


@kopf.index("", "v1", "pods", labels=CHILD_LABELS)
async def model_pods(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> Any:
    """Pods by (namespace, model), slimmed to what status and routing read (no spec)."""
    return {_key_of(body, labels): _pod_snapshot(body)}


INDEX_NAMES = (
    "models",
    "model_deployments",
    "model_services",
    "model_pdbs",
    "model_jobs",
    "model_claims",
    "model_pods",
)
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


def _model_of(obj: Mapping[str, Any]) -> ModelKey:
    """The model an object belongs to: its model label, or its own name for a model."""
    meta = obj["metadata"]
    if obj.get("kind") == "InferenceModel":
        return (str(meta["namespace"]), str(meta["name"]))
    return (str(meta["namespace"]), str((meta.get("labels") or {}).get(LABEL_MODEL, "")))


@dataclass
class ChildCache:
    """A model's children and pods from kopf's indices, plus the applies they do not show yet."""

    indices: Mapping[str, Any]
    """The kopf indices by name (see :data:`INDEX_NAMES`)."""

    recent: dict[ModelKey, dict[ObjectKey, bytes]] = field(default_factory=dict)
    """Objects this operator applied that their index has not shown yet, per model and frozen:
    a lookup reads only its own model's writes (scanning them all made every reconcile
    O(models)), and the last writes of a steady model stay here until its next run."""

    def _values(self, index: str, key: ModelKey) -> list[JsonDict]:
        store: Iterable[bytes | JsonDict] | None = self.indices[index].get(key)
        return [thaw(v) for v in store] if store is not None else []

    def _forget(self, model: ModelKey, key: ObjectKey) -> None:
        mine = self.recent.get(model)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self.recent[model]

    def children(self, namespace: str, model: str) -> list[JsonDict]:
        """The model's children (Deployment, Service, PDB, Job, claim) as last seen or applied."""
        key = (namespace, model)
        seen = [
            obj
            for index in (
                "model_deployments",
                "model_services",
                "model_pdbs",
                "model_jobs",
                "model_claims",
            )
            for obj in self._values(index, key)
        ]
        mine = self.recent.get(key, {})
        out: list[JsonDict] = []
        for obj in seen:
            frozen = mine.get(_object_key(obj))
            applied = thaw(frozen) if frozen is not None else None
            if applied is not None and _older(obj, applied):
                out.append(applied)  # the watch has not shown our write yet
                continue
            self._forget(key, _object_key(obj))  # the watch caught up: trust it again
            out.append(obj)
        seen_keys = {_object_key(o) for o in seen}
        out.extend(
            thaw(frozen)
            for object_key, frozen in self.recent.get(key, {}).items()
            if object_key not in seen_keys and object_key[0] != "InferenceModel"
        )
        return out

    def model(self, namespace: str, name: str) -> JsonDict | None:
        """The InferenceModel as last seen, or as last written by us if that is newer."""
        key = (namespace, name)
        found = self._values("models", key)
        object_key = ("InferenceModel", namespace, name)
        frozen = self.recent.get(key, {}).get(object_key)
        if not found:
            return None  # deleted (a write of ours cannot resurrect it)
        mine = thaw(frozen) if frozen is not None else None
        if mine is not None and _older(found[0], mine):
            return mine
        self._forget(key, object_key)
        return found[0]

    def model_keys(self) -> set[ModelKey]:
        """(namespace, name) of every model in the index."""
        return {key for key, store in self.indices["models"].items() if store}

    def pods(self, namespace: str, model: str) -> list[JsonDict]:
        """The model's pods as last seen."""
        return self._values("model_pods", (namespace, model))

    def pod_counts(self, namespace: str, model: str) -> tuple[int, int]:
        """(ready, starting) among the model's pods that are not being deleted.

        Read in place, without the copies :meth:`pods` makes: the autoscaler asks for every
        model every round.
        """
        store: Iterable[JsonDict] | None = self.indices["model_pods"].get((namespace, model))
        return count_pods(store or ())

    def applied(self, obj: JsonDict) -> None:
        """Remember an object the API server just stored, until its index shows it."""
        self.recent.setdefault(_model_of(obj), {})[_object_key(obj)] = freeze(obj)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object the operator deleted."""
        for model in [m for m, mine in self.recent.items() if (kind, namespace, name) in mine]:
            self._forget(model, (kind, namespace, name))

    def forget_model(self, namespace: str, name: str) -> None:
        """Drop every write remembered for a model that is gone."""
        self.recent.pop((namespace, name), None)


def count_pods(pods: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(ready, starting) among pods that are not being deleted."""
    ready = starting = 0
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready += 1
        else:
            starting += 1
    return ready, starting
