"""LoRA adapters on running replicas: what to load and unload, and the status it leads to (pure).

The engines load adapters at run time (``reconcile.engines`` only switches LoRA on), so the
operator compares, for each ready replica, the adapters the spec lists with the ones the
replica's ``/v1/models`` shows (entries with a ``parent`` are adapters, ``root`` their path)
and calls the engine's load and unload endpoints for the difference. The rules:

- Sources: ``hf://org/name`` is given to the engine as the hub id (vLLM downloads it);
  ``pvc://claim/path`` as the path under :data:`ADAPTER_MOUNT`, where the pod mounts each claim
  read-only; ``s3://`` is refused per adapter (the engines' load endpoints read a local path or
  the hub, and the operator has no download step for adapters yet).
- Unloads come before loads, so a replica never holds both the old and the new set.
- An adapter loaded under a spec name but from another path is unloaded and loaded again.
- At most ``slots`` loads per replica per pass: a 64-adapter spec does not fire 64 downloads at
  an engine at once; the next pass goes on where this one stopped.
- A replica whose listing could not be read gets no action (nothing is known of it).

Applying the plan and observing again gives an empty plan (idempotent). No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from inferscale.api.meta import ConditionStatus
from inferscale.api.v1alpha1.inference_model import (
    MAX_REPLICAS_LISTED,
    Adapter,
    AdapterPhase,
    AdapterStatus,
)

ADAPTER_MOUNT: Final = "/mnt/adapters"
"""Where each ``pvc://`` adapter's claim is mounted (read-only), at ``<mount>/<claim>``."""

ADAPTER_VOLUME_PREFIX: Final = "adapter-source-"
"""Pod volume names of the adapters' claims: the prefix and the claim's index, sorted."""

CONDITION_ADAPTERS_READY: Final = "AdaptersReady"
"""True when every adapter is loaded on every ready replica."""

S3_REFUSED: Final = (
    "s3:// adapter sources are not supported yet: the engines load adapters from a local path "
    "or the Hugging Face hub; use hf://org/name or pvc://claim/path"
)

MAX_MESSAGE: Final = 1024


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter of the spec with the path its engine is given, or why it cannot be loaded."""

    name: str
    path: str | None
    """What ``lora_path`` says: a hub id or a path in the pod; None when refused."""
    claim: str | None = None
    """The PVC the pod must mount (``pvc://`` only)."""
    error: str | None = None
    """Why the adapter cannot be loaded (its source is refused)."""


def resolve_adapter(adapter: Adapter) -> ResolvedAdapter:
    """``adapter``'s source as its engine takes it (``hf`` id, mounted path) or a refusal."""
    scheme, _, rest = adapter.source.partition("://")
    rest = rest.strip("/")
    if not rest:
        return ResolvedAdapter(adapter.name, None, error=f"source {adapter.source!r} names nothing")
    if scheme == "hf":
        return ResolvedAdapter(adapter.name, rest)
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        base = f"{ADAPTER_MOUNT}/{claim}"
        return ResolvedAdapter(adapter.name, f"{base}/{sub}" if sub else base, claim=claim)
    if scheme == "s3":
        return ResolvedAdapter(adapter.name, None, error=S3_REFUSED)
    return ResolvedAdapter(adapter.name, None, error=f"unknown source scheme {scheme}://")


def adapter_claims(adapters: Sequence[Adapter]) -> list[str]:
    """The PVCs that ``pvc://`` adapters name, sorted, each once (the pod mounts them)."""
    return sorted({r.claim for r in map(resolve_adapter, adapters) if r.claim is not None})


def adapter_volumes(
    adapters: Sequence[Adapter],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and read-only mounts for the adapters' claims (empty without ``pvc://``)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for i, claim in enumerate(adapter_claims(adapters)):
        # Indexed names: a claim name may be 253 characters, a volume name only 63.
        volume = f"{ADAPTER_VOLUME_PREFIX}{i}"
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": volume, "mountPath": f"{ADAPTER_MOUNT}/{claim}", "readOnly": True})
    return volumes, mounts


def parse_loaded(listing: object) -> dict[str, str]:
    """The adapters a ``/v1/models`` answer lists: name -> path (``root``, else ``""``).

    Raises:
        ValueError: the answer is not an OpenAI model list.
    """
    data = listing.get("data") if isinstance(listing, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("the /v1/models answer has no list under 'data'")
    loaded: dict[str, str] = {}
    for card in data:
        if not isinstance(card, Mapping) or not isinstance(card.get("id"), str):
            raise ValueError("a /v1/models entry has no string 'id'")
        if card.get("parent"):  # the base model's card has parent null
            root = card.get("root")
            loaded[card["id"]] = root if isinstance(root, str) else ""
    return loaded


@dataclass(frozen=True)
class ObservedReplica:
    """A ready replica and what its listing showed."""

    pod: str
    loaded: Mapping[str, str] | None
    """Adapter name -> path as listed; None when the listing could not be read."""
    error: str | None = None
    """Why the listing could not be read."""


@dataclass(frozen=True)
class AdapterAction:
    """One call to a replica's engine."""

    pod: str
    verb: Literal["load", "unload"]
    name: str
    path: str = ""
    """``lora_path`` of a load."""

    def describe(self) -> str:
        """How logs and Events say it."""
        if self.verb == "load":
            return f"load adapter {self.name} ({self.path}) on {self.pod}"
        return f"unload adapter {self.name} from {self.pod}"


def plan_adapters(
    desired: Sequence[ResolvedAdapter], replicas: Sequence[ObservedReplica], slots: int
) -> list[AdapterAction]:
    """The loads and unloads that bring each observed replica to ``desired`` (see the module)."""
    wanted = {a.name: a.path for a in desired if a.path is not None}
    refused = {a.name for a in desired if a.path is None}
    actions: list[AdapterAction] = []
    for replica in replicas:
        if replica.loaded is None:
            continue
        loads: list[AdapterAction] = []
        for name, path in sorted(replica.loaded.items()):
            want = wanted.get(name)
            if name in refused or want is None or (path and path != want):
                actions.append(AdapterAction(replica.pod, "unload", name))
        for a in desired:
            if a.path is None:
                continue
            have = replica.loaded.get(a.name)
            if have is None or (have and have != a.path):
                loads.append(AdapterAction(replica.pod, "load", a.name, a.path))
        actions.extend(loads[: max(slots, 1)])
    return actions


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def adapter_statuses(
    desired: Sequence[ResolvedAdapter],
    replicas: Sequence[ObservedReplica],
    errors: Mapping[str, str],
) -> list[AdapterStatus]:
    """One status per adapter of the spec, from the replicas as observed after the calls.

    Args:
        desired: the spec's adapters, resolved.
        replicas: every ready replica, with its listing after this pass's calls.
        errors: adapter name -> the last failure of this pass (an engine's refusal).
    """
    out: list[AdapterStatus] = []
    unreadable = [r for r in replicas if r.loaded is None]
    for a in desired:
        on = sorted(r.pod for r in replicas if r.loaded is not None and a.name in r.loaded)
        message = a.error or errors.get(a.name)
        if message is None and unreadable and len(on) < len(replicas):
            first = unreadable[0]
            message = f"replica {first.pod} could not be read: {first.error or 'no answer'}"
        phase: AdapterPhase
        if a.error is not None:
            phase = "Failed"
        elif not replicas:
            phase = "Pending"
        elif len(on) == len(replicas):
            phase = "Loaded"
        elif not on and a.name in errors:
            phase = "Failed"
        else:
            phase = "Loading"
        out.append(
            AdapterStatus(
                name=a.name,
                phase=phase,
                loaded_replicas=len(on),
                ready_replicas=len(replicas),
                loaded_on=on[:MAX_REPLICAS_LISTED],
                message=None if message is None else _clip(message),
            )
        )
    return out


def adapters_condition(statuses: Sequence[AdapterStatus]) -> tuple[ConditionStatus, str, str]:
    """AdaptersReady's (status, reason, message) for the adapters' statuses."""
    failed = [s for s in statuses if s.phase == "Failed"]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return "False", "AdapterFailed", _clip(f"adapter {first.name}: {first.message}{more}")
    waiting = [s for s in statuses if s.phase != "Loaded"]
    if waiting:
        names = ", ".join(s.name for s in waiting[:5])
        return "False", "AdaptersLoading", f"not yet on every ready replica: {names}"
    return "True", "AdaptersLoaded", f"{len(statuses)} adapter(s) loaded on every ready replica"
