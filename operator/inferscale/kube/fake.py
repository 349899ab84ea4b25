"""FakeKubeApi: an in-memory :class:`~inferscale.kube.client.KubeApi` for component tests.

It keeps objects by (apiVersion, kind, namespace, name), records every call, fills in the
metadata the API server would (uid, resourceVersion, generation that grows on spec changes), and
can be told to fail the next call of a method, so error paths are testable without a cluster.
Apply merges maps and replaces lists, close enough to server-side apply for a single manager.
Label selectors support equality terms (``a=b,c=d``), which is all the operator uses.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from inferscale.errors import Conflict, KubeApiError, NotFound
from inferscale.kube.client import resource_type

JsonDict = dict[str, Any]
Key = tuple[str, str, str | None, str]


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or "!" in key:
            raise ValueError(f"FakeKubeApi supports only equality selectors, not {term!r}")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class FakeKubeApi:
    """In-memory objects and a record of calls."""

    def __init__(self) -> None:
        """Start empty."""
        self.objects: dict[Key, JsonDict] = {}
        self.managers: dict[Key, str] = {}
        self.calls: list[tuple[str, str, str | None, str]] = []
        self._failures: dict[str, list[KubeApiError]] = defaultdict(list)
        self._version = 0

    def fail_next(self, method: str, error: KubeApiError) -> None:
        """Make the next call of ``method`` (apply, get, list, delete, patch_status) raise."""
        self._failures[method].append(error)

    def _enter(self, method: str, kind: str, namespace: str | None, name: str) -> None:
        self.calls.append((method, kind, namespace, name))
        if self._failures[method]:
            raise self._failures[method].pop(0)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def put(self, obj: JsonDict) -> JsonDict:
        """Store an object as if another client created it (no call is recorded)."""
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("uid", f"uid-{self._next_version()}")
        stored["metadata"]["resourceVersion"] = self._next_version()
        stored["metadata"].setdefault("generation", 1)
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def apply(
        self, obj: JsonDict, *, force: bool = True, field_manager: str = "inferscale"
    ) -> JsonDict:
        """Create, or merge into the existing object; a changed spec bumps the generation.

        A ``resourceVersion`` in ``obj`` must match the stored one (else Conflict), and without
        ``force`` a field another manager set to a different value is a Conflict, as on a real
        API server.
        """
        resource_type(obj["apiVersion"], obj["kind"])  # unknown kinds fail as in the real client
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        self._enter("apply", obj["kind"], meta.get("namespace"), meta["name"])
        existing = self.objects.get(key)
        wanted_version = meta.get("resourceVersion")
        if wanted_version is not None and (
            existing is None or existing["metadata"]["resourceVersion"] != wanted_version
        ):
            raise Conflict(
                409, "Conflict", f"{obj['kind']} {meta['name']}: resourceVersion is stale"
            )
        if existing is None:
            stored = self.put(obj)
            self.managers[key] = field_manager
            return stored
        if not force and self.managers.get(key, field_manager) != field_manager:
            if _merge(existing, obj).get("spec") != existing.get("spec"):
                raise Conflict(
                    409, "Conflict", f"{obj['kind']} {meta['name']}: owned by another manager"
                )
        self.managers[key] = field_manager
        applied = {k: v for k, v in obj.items() if k != "status"}
        merged = _merge(existing, applied)
        if merged.get("spec") != existing.get("spec"):
            merged["metadata"]["generation"] = existing["metadata"].get("generation", 1) + 1
        merged["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = merged
        return copy.deepcopy(merged)

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JsonDict:
        """Read one object or raise NotFound."""
        self._enter("get", kind, namespace, name)
        try:
            return copy.deepcopy(self.objects[(api_version, kind, namespace, name)])
        except KeyError:
            raise NotFound(404, "NotFound", f'{kind} "{name}" not found') from None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[JsonDict]:
        """Objects of a kind in a namespace (or all), filtered by an equality selector."""
        self._enter("list", kind, namespace, label_selector or "")
        _matches({}, label_selector)  # refuse selectors it cannot evaluate, even with no objects
        return [
            copy.deepcopy(obj)
            for (v, k, ns, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
            if (v, k) == (api_version, kind)
            and (namespace is None or ns == namespace)
            and _matches(obj["metadata"].get("labels") or {}, label_selector)
        ]

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Remove an object; False when it was not there."""
        self._enter("delete", kind, namespace, name)
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge ``status`` into the object's status."""
        self._enter("patch_status", kind, namespace, name)
        key = (api_version, kind, namespace, name)
        if key not in self.objects:
            raise NotFound(404, "NotFound", f'{kind} "{name}" not found')
        obj = self.objects[key]
        obj["status"] = _merge(obj.get("status") or {}, status)
        obj["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(obj)
