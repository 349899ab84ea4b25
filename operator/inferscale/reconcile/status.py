"""Observed Deployment and pods -> ``InferenceModelStatus`` with conditions people understand.

Pure: the caller passes the objects it read and ``now`` (RFC 3339); nothing here reads a clock.
Conditions follow the API conventions: ``Ready``, ``Progressing`` and ``Degraded``, each with a
one-word reason and a sentence for people, for example ``Unschedulable`` with ``each replica
needs 2 nvidia.com/gpu; scheduler: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.``.
A condition keeps its ``lastTransitionTime`` while its status stays the same, so an unchanged
world gives an identical status and :func:`status_patch` returns ``None`` (write nothing).

Meaning of the conditions:

- ``Ready``: at least one replica serves, or the model is scaled to zero (the router holds
  requests and starts one). False names the reason no replica serves.
- ``Progressing``: the replicas are still moving toward the spec (rollout, scale, loading).
- ``Degraded``: something needs a person: a replica cannot be scheduled, pulled, configured
  or kept running, the rollout missed its deadline, or the spec cannot be served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from inferscale.api.meta import (
    CONDITION_CACHED,
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    ConditionStatus,
    make_condition,
)
from inferscale.api.v1alpha1.inference_model import (
    CacheStatus,
    InferenceModelSpec,
    InferenceModelStatus,
)
from inferscale.reconcile.labels import selector_string

FAILING_WAITING_REASONS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container waiting reasons that will not fix themselves: a person must act."""

CAUSE_CHARS: Final = 300
"""Longest cause quoted from a termination message into a condition."""
_FAILURE_WORDS: Final = re.compile(r"error|fail|cannot|can't|unable|invalid", re.IGNORECASE)

# Which issue a condition reports when pods disagree: the most actionable first.
_PRIORITY: Final = {
    "CreateContainerConfigError": 0,
    "InvalidImageName": 1,
    "ErrImagePull": 2,
    "ImagePullBackOff": 2,
    "CrashLoopBackOff": 3,
    "CreateContainerError": 4,
    "RunContainerError": 4,
    "PodFailed": 5,
    "Unschedulable": 6,
    "Loading": 7,
    "Starting": 8,
}


@dataclass(frozen=True)
class Problem:
    """Why the operator did not apply the spec: ``InvalidSpec``, a missing Secret or PVC.

    It makes ``Ready`` False and ``Degraded`` True with these words.
    """

    reason: str
    message: str


@dataclass(frozen=True)
class CacheView:
    """What the preload Job says (``reconcile/preload.py``).

    The Cached condition, the status block, and whether the replicas may start.
    """

    status: ConditionStatus
    reason: str
    """``Preloaded``, ``Preloading`` or ``PreloadFailed``."""
    message: str
    cache: CacheStatus | None
    """Job, bytes and time taken (once it finished)."""

    @property
    def filled(self) -> bool:
        """The weights are in the cache: replicas may start."""
        return self.status == "True"

    @property
    def failed(self) -> bool:
        """The Job gave up: a person must act (the replicas stay at zero)."""
        return self.reason == "PreloadFailed"


@dataclass(frozen=True)
class PodIssue:
    """What keeps one pod from serving."""

    reason: str
    message: str
    failing: bool
    """Needs a person (Degraded); otherwise the pod is merely on its way (loading, starting)."""


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    items = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in items if isinstance(c, Mapping)}


def termination_cause(message: str) -> str:
    """The line of a container's termination message that says why it failed.

    With ``FallbackToLogsOnError`` the message is the log's tail. Engines print the root cause
    as the first error line and the consequence as the last ("invalid magic characters" ...
    "exiting due to model loading error"; a Python traceback ends in its exception): the first
    and the last line that mention an error or a failure, else the last line, at most
    :data:`CAUSE_CHARS` characters.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    failing = [line for line in lines if _FAILURE_WORDS.search(line)]
    picked = [failing[0], failing[-1]] if len(failing) > 1 else (failing or lines[-1:])
    cause = " ... ".join(picked)
    return cause if len(cause) <= CAUSE_CHARS else cause[: CAUSE_CHARS - 3] + "..."


def diagnose_pod(pod: Mapping[str, Any], spec: InferenceModelSpec) -> PodIssue | None:
    """The issue of one pod, or ``None`` when it is ready or terminating."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    name = meta.get("name", "?")
    status = pod.get("status") or {}
    conditions = _conditions(pod)
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FAILING_WAITING_REASONS:
            detail = waiting.get("message") or ""
            terminated = (cs.get("lastState") or {}).get("terminated") or {}
            last = terminated.get("reason")
            if last and reason == "CrashLoopBackOff":
                cause = termination_cause(str(terminated.get("message") or ""))
                last += f" ({cause})" if cause else ""
                detail = f"last exit: {last}" + (f"; {detail}" if detail else "")
            message = f"pod {name}: {reason}" + (f": {detail}" if detail else "")
            return PodIssue(reason, message, failing=True)
    if status.get("phase") == "Failed":
        why = status.get("message") or status.get("reason") or "the pod failed"
        return PodIssue("PodFailed", f"pod {name}: {why}", failing=True)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        need = (
            f"each replica needs {spec.resources.gpus} {spec.resources.gpu_resource_name}; "
            if spec.resources.gpus
            else ""
        )
        return PodIssue(
            "Unschedulable",
            f"{need}scheduler: {scheduled.get('message') or 'no node fits the pod'}",
            failing=True,
        )
    running = any((cs.get("state") or {}).get("running") for cs in statuses)
    if running:
        return PodIssue("Loading", f"pod {name} is loading the model", failing=False)
    return PodIssue("Starting", f"pod {name} is starting", failing=False)


def worst_issue(pods: Sequence[Mapping[str, Any]], spec: InferenceModelSpec) -> PodIssue | None:
    """The most actionable issue among the pods, with how many pods share its reason."""
    issues = [i for i in (diagnose_pod(p, spec) for p in pods) if i is not None]
    if not issues:
        return None
    worst = min(issues, key=lambda i: _PRIORITY.get(i.reason, 99))
    same = sum(1 for i in issues if i.reason == worst.reason)
    if same > 1 and worst.reason == "Unschedulable":
        return PodIssue(worst.reason, f"{same} replicas pending: {worst.message}", worst.failing)
    return worst


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def time_to_ready(pods: Sequence[Mapping[str, Any]]) -> float | None:
    """Creation to Ready of the replica that became ready last, in seconds."""
    best: tuple[datetime, float] | None = None
    for pod in pods:
        ready = _conditions(pod).get("Ready") or {}
        if ready.get("status") != "True":
            continue
        became = _parse_time(ready.get("lastTransitionTime"))
        created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        if became is None or created is None:
            continue
        if best is None or became > best[0]:
            best = (became, max((became - created).total_seconds(), 0.0))
    return None if best is None else best[1]


@dataclass(frozen=True)
class _Verdict:
    ready: tuple[ConditionStatus, str, str]
    progressing: tuple[ConditionStatus, str, str]
    degraded: tuple[ConditionStatus, str, str]


_OK: Final[tuple[ConditionStatus, str, str]] = ("False", "AsExpected", "")


def _verdict(
    spec: InferenceModelSpec,
    desired: int,
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    problem: Problem | None,
    cache: CacheView | None = None,
) -> _Verdict:
    if problem is not None:
        bad: tuple[ConditionStatus, str, str] = ("False", problem.reason, problem.message)
        return _Verdict(bad, bad, ("True", problem.reason, problem.message))
    if cache is not None and cache.failed:
        # The replicas are held at zero and will stay there: a person must act.
        failed: tuple[ConditionStatus, str, str] = ("False", cache.reason, cache.message)
        return _Verdict(failed, failed, ("True", cache.reason, cache.message))
    if cache is not None and not cache.filled:
        waiting: tuple[ConditionStatus, str, str] = ("False", cache.reason, cache.message)
        return _Verdict(waiting, ("True", cache.reason, cache.message), _OK)
    if deployment is None:
        creating: tuple[ConditionStatus, str, str] = (
            "False",
            "Creating",
            "the serving Deployment does not exist yet",
        )
        return _Verdict(creating, ("True", "Creating", creating[2]), _OK)

    st = deployment.get("status") or {}
    current = int(st.get("replicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    seen = int(st.get("observedGeneration") or 0)
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    dep_conditions = _conditions(deployment)
    progress = dep_conditions.get("Progressing") or {}
    failure = dep_conditions.get("ReplicaFailure") or {}
    issue = worst_issue(pods, spec)

    if desired == 0:
        if current == 0:
            idle = "no replicas run; the router holds the next request and starts one"
            return _Verdict(("True", "ScaledToZero", idle), ("False", "ScaledToZero", idle), _OK)
        down = f"scaling down to zero: {current} replicas left"
        return _Verdict(("True", "ScalingDown", down), ("True", "ScalingDown", down), _OK)

    counts = f"{ready}/{desired} replicas ready"
    if ready >= desired:
        ready_c: tuple[ConditionStatus, str, str] = ("True", "AllReplicasReady", counts)
    elif ready > 0:
        ready_c = ("True", "PartiallyReady", counts)
    elif issue is not None:
        ready_c = ("False", issue.reason, f"{counts}: {issue.message}")
    else:
        ready_c = ("False", "NoReplicasReady", counts)

    rolled_out = seen >= generation and updated == desired and current == desired
    progressing = _progressing(desired, current, ready, updated, rolled_out, progress, issue)

    if issue is not None and issue.failing:
        degraded: tuple[ConditionStatus, str, str] = ("True", issue.reason, issue.message)
    elif progressing[1] == "ProgressDeadlineExceeded":
        degraded = ("True", "ProgressDeadlineExceeded", progressing[2])
    elif failure.get("status") == "True":
        degraded = ("True", "ReplicaFailure", str(failure.get("message") or "pods not created"))
    else:
        degraded = _OK
    return _Verdict(ready_c, progressing, degraded)


def _progressing(
    desired: int,
    current: int,
    ready: int,
    updated: int,
    rolled_out: bool,
    progress: Mapping[str, Any],
    issue: PodIssue | None,
) -> tuple[ConditionStatus, str, str]:
    """``Progressing``: a missed deadline, a finished rollout, or what the rollout is doing."""
    if progress.get("status") == "False" and progress.get("reason") == "ProgressDeadlineExceeded":
        deadline = progress.get("message") or "the rollout missed its progress deadline"
        return ("False", "ProgressDeadlineExceeded", deadline)
    if rolled_out and ready >= desired:
        return ("False", "RolloutComplete", f"{desired} replicas run the current spec")
    if updated < min(current, desired) or current > max(updated, desired):
        reason = "RollingUpdate"
    elif current < desired:
        reason = "ScalingUp"
    elif current > desired:
        reason = "ScalingDown"
    elif issue is not None:
        reason = issue.reason
    else:
        reason = "WaitingForReady"
    detail = f"{updated}/{desired} replicas updated, {ready} ready"
    if issue is not None:
        detail += f"; {issue.message}"
    return ("True", reason, detail)


def compute_status(
    *,
    model_name: str,
    spec: InferenceModelSpec,
    generation: int | None,
    desired_replicas: int,
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: str,
    previous: InferenceModelStatus | None = None,
    problem: Problem | None = None,
    cache: CacheView | None = None,
) -> InferenceModelStatus:
    """The status to write for what was observed.

    ``pods`` are the model's pods (selected by its labels). ``problem`` is set when the
    operator refused to apply the spec. ``cache`` is the preload Job's outcome with
    ``cache.preload`` (the Cached condition; replicas wait for it). The autoscaler's fields
    (``lastScaleTime``, ``lastScaleReason``, ``signals``, ``autoscalerState``,
    ``learnedFloor`` and its conditions) and the adapter loader's (``adapters``, ``AdaptersReady``)
    are carried over from ``previous`` untouched.
    """
    before = previous or InferenceModelStatus()
    verdict = _verdict(spec, desired_replicas, deployment, pods, problem, cache)
    mine: list[tuple[str, tuple[ConditionStatus, str, str]]] = [
        (CONDITION_READY, verdict.ready),
        (CONDITION_PROGRESSING, verdict.progressing),
        (CONDITION_DEGRADED, verdict.degraded),
    ]
    if cache is not None:
        mine.append((CONDITION_CACHED, (cache.status, cache.reason, cache.message)))
    conditions = [
        make_condition(type_, *values, now=now, generation=generation, previous=before.conditions)
        for type_, values in mine
    ]
    # Conditions of other writers (the autoscaler's ScalingActive) are theirs to keep; Cached
    # is ours, and goes when preload is turned off.
    owned = {CONDITION_READY, CONDITION_PROGRESSING, CONDITION_DEGRADED, CONDITION_CACHED}
    conditions.extend(c for c in before.conditions if c.type not in owned)
    st = (deployment or {}).get("status") or {}
    ttr = time_to_ready(pods)
    return InferenceModelStatus(
        observed_generation=generation,
        replicas=int(st.get("replicas") or 0),
        ready_replicas=int(st.get("readyReplicas") or 0),
        desired_replicas=desired_replicas,
        selector=selector_string(model_name),
        served_name=spec.served_name or model_name,
        conditions=conditions,
        last_scale_time=before.last_scale_time,
        last_scale_reason=before.last_scale_reason,
        signals=before.signals,
        time_to_ready_seconds=ttr if ttr is not None else before.time_to_ready_seconds,
        autoscaler_state=before.autoscaler_state,
        learned_floor=before.learned_floor,
        adapters=before.adapters,
        cache=cache.cache if cache is not None else None,
    )


_STATUS_KEYS: Final = frozenset(
    info.alias or name for name, info in InferenceModelStatus.model_fields.items()
)


def status_patch(
    observed: Mapping[str, Any] | None, new: InferenceModelStatus
) -> dict[str, Any] | None:
    """The merge patch of ``status`` that turns ``observed`` into ``new``; ``None`` if equal.

    Only the keys this status model owns are compared, so other writers' keys are left alone;
    a key that ``new`` drops is patched to ``None`` (JSON merge patch deletes it).
    """
    want = new.to_wire()
    have = {k: v for k, v in (observed or {}).items() if k in _STATUS_KEYS}
    if want == have:
        return None
    patch: dict[str, Any] = dict(want)
    for key in have:
        if key not in want:
            patch[key] = None
    return patch


def status_changed(observed: Mapping[str, Any] | None, new: InferenceModelStatus) -> bool:
    """Whether writing ``new`` would change the stored status (write only when it does)."""
    return status_patch(observed, new) is not None
