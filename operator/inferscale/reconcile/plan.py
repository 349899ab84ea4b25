"""Plan, then execute: desired children vs observed children -> what to apply and delete (pure).

As KubeAI's ``podPlan``: :func:`calculate_plan` decides and explains; ``kube/`` executes,
deleting before applying, and treats NotFound and AlreadyExists as success. The plan's
``details`` are the lines the controller logs and turns into Events, so each says what changes
and why.

Drift is judged on the fields the operator sets: a desired object differs from the observed one
when any value it sets is missing or different there. Fields the API server or other managers
add are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from inferscale.api.meta import LABEL_MANAGED_BY, MANAGED_BY

IMMUTABLE_FIELDS: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    # A Deployment's selector cannot change; the only way to a new one is delete and create.
    "Deployment": (("spec", "selector"),),
}
"""Per kind, the fields the API server refuses to change in place."""


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: enough to delete it or name it in a log line."""

    kind: str
    namespace: str | None
    name: str
    api_version: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        """The reference of a whole object dict."""
        meta = obj.get("metadata") or {}
        return cls(
            kind=str(obj.get("kind", "")),
            namespace=meta.get("namespace"),
            name=str(meta.get("name", "")),
            api_version=str(obj.get("apiVersion", "")),
        )

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True)
class Plan:
    """What to do, in order: delete ``to_delete``, then apply ``to_apply``."""

    to_apply: tuple[dict[str, Any], ...]
    to_delete: tuple[ObjectRef, ...]
    details: tuple[str, ...]
    """One line per decision, for logs and Events."""

    @property
    def empty(self) -> bool:
        """Nothing to do: every child is as desired."""
        return not self.to_apply and not self.to_delete


def first_difference(want: Any, have: Any, path: str = "") -> str | None:
    """The path of the first value ``want`` sets that ``have`` lacks or holds differently.

    Maps compare key by key (extra keys in ``have`` are fine); lists compare item by item and
    must have the same length, since the operator owns whole lists it sets.
    """
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return path or "."
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in have:
                return sub
            found = first_difference(value, have[key], sub)
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return path or "."
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            found = first_difference(w, h, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if want == have else (path or ".")


def _get(obj: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    cur: Any = obj
    for key in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY


def calculate_plan(
    desired: Sequence[dict[str, Any]], observed: Sequence[Mapping[str, Any]]
) -> Plan:
    """Compare the children the builders want with the children that exist.

    ``observed`` is what the controller listed by the model's label. An observed object that
    is not desired is deleted only when it carries ``app.kubernetes.io/managed-by: inferscale``:
    something a person labelled by hand is reported, never removed.
    """
    by_ref = {_key(o): o for o in observed}
    to_apply: list[dict[str, Any]] = []
    to_delete: list[ObjectRef] = []
    details: list[str] = []
    wanted: set[tuple[str, str | None, str]] = set()
    for obj in desired:
        ref = ObjectRef.of(obj)
        key = _key(obj)
        wanted.add(key)
        have = by_ref.get(key)
        if have is None:
            to_apply.append(obj)
            details.append(f"create {ref}")
            continue
        immutable = next(
            (
                ".".join(keys)
                for keys in IMMUTABLE_FIELDS.get(ref.kind, ())
                if first_difference(_get(obj, keys), _get(have, keys)) is not None
            ),
            None,
        )
        if immutable is not None:
            to_delete.append(ObjectRef.of(have))
            to_apply.append(obj)
            details.append(f"recreate {ref}: {immutable} changed and cannot be updated in place")
            continue
        diff = first_difference(obj, have)
        if diff is not None:
            to_apply.append(obj)
            details.append(f"update {ref}: {diff} differs")
    for key, have in sorted(by_ref.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])):
        if key in wanted:
            continue
        ref = ObjectRef.of(have)
        if _managed(have):
            to_delete.append(ref)
            details.append(f"delete {ref}: no longer desired")
        else:
            details.append(f"keep {ref}: not desired, but not managed by inferscale")
    return Plan(tuple(to_apply), tuple(to_delete), tuple(details))


def _key(obj: Mapping[str, Any]) -> tuple[str, str | None, str]:
    ref = ObjectRef.of(obj)
    return (ref.kind, ref.namespace, ref.name)
