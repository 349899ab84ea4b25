"""InferenceModel handlers: children and status on create, update, resume, drift and child events.

One reconcile for every trigger (STYLE 9.2.1): parse the spec, check what it depends on, build the
children with the pure builders, plan against what exists, execute the plan, write the status
(only when it changed) and post an Event for each change. Child Deployments and Pods are watched,
so a deleted or hand-edited child comes back within moments and the status follows the pods;
one slow loop over all models catches anything a missed watch event would leave behind.

Runs of the same model are serialised by a per-model lock, because kopf's handler for the model
and a child event can fire together, and bursts of child events are coalesced into one run. Runs
of different models share a fixed number of slots: a thousand models created at once wait for a
slot holding only their names, not a thousand half-done runs each holding its built children and
its queued API calls (``bench/operator_scale``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from inferscale.api.meta import (
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_PRELOAD_OF,
    MANAGED_BY,
    VERSION,
)
from inferscale.api.v1alpha1.inference_model import (
    KIND,
    PLURAL,
    InferenceModelSpec,
    InferenceModelStatus,
)
from inferscale.api.validation import describe_errors
from inferscale.config import OperatorSettings
from inferscale.controller.cache import INDEX_NAMES, ChildCache
from inferscale.controller.errors import to_kopf
from inferscale.errors import DependencyNotReady, InferscaleError, NotFound, SpecError
from inferscale.kube.client import KubeApi
from inferscale.reconcile.deployment import (
    build_deployment,
    build_preload,
    dependencies,
    desired_replicas,
)
from inferscale.reconcile.pdb import build_pdb
from inferscale.reconcile.plan import Plan, calculate_plan
from inferscale.reconcile.preload import (
    build_cache_claims,
    cache_view,
    job_finished,
    serving_replicas,
)
from inferscale.reconcile.service import build_service
from inferscale.reconcile.status import CacheView, Problem, compute_status, status_patch

log = logging.getLogger(__name__)

API_VERSION = f"{GROUP}/{VERSION}"
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "Job"),
    ("v1", "PersistentVolumeClaim"),
)
"""The kinds of object the operator creates for a model, all selected by the model label."""

DRIFT_INTERVAL_SECONDS = 120
"""How often every model is reconciled even without an event (a missed watch, a lost update)."""

DRIFT_TICK_SECONDS = 10
"""How often the drift loop looks for models that nothing reconciled within the interval."""

RECONCILE_SLOTS = 32
"""Reconciles of different models that run at once: twice the API threads
(:data:`inferscale.kube.client.API_THREADS`), so the threads stay busy while a run between two
calls computes, and no more, because a run beyond that would only wait for a thread."""

COALESCE_SECONDS = 0.2
"""Child events within this window after the first one lead to a single reconcile."""

KopfLogger = logging.Logger | logging.LoggerAdapter[Any]
"""The logger kopf passes to handlers."""

EventPoster = Callable[[str, str, str], None]
"""Posts an Event on the model: (type ``Normal``/``Warning``, reason, message)."""

_EVENT_REASONS = {
    "create": "Created",
    "update": "Updated",
    "recreate": "Recreated",
    "delete": "Deleted",
}


def now_rfc3339() -> str:
    """The current time as the API server writes it (second precision, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Runtime:
    """What handlers share, kept in kopf's ``memo``: the API, the settings, the locks."""

    api: KubeApi
    settings: OperatorSettings
    cache: ChildCache | None = None
    """Children from kopf's indices; without it (tests, tools) they are listed from the API."""
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    pending: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    reconciled_at: dict[tuple[str, str], float] = field(default_factory=dict)
    """When each model's last reconcile succeeded (``time.monotonic()``): the drift check skips
    models that events kept current, so a thousand models do not all reconcile again at once."""
    autoscaled: dict[tuple[str, str], int] = field(default_factory=dict)
    """Replica counts the autoscaler decided that a reconcile has not written yet (the status'
    ``desiredReplicas`` holds them afterwards, also across an operator restart)."""
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_SLOTS))
    """Held by every run while it reads, builds, applies and writes status (see the module)."""
    drift_checked_at: dict[tuple[str, str], float] = field(default_factory=dict)
    """When the drift loop first saw each model, or last queued a run for it (monotonic)."""
    drift_task: asyncio.Task[None] | None = None

    def forget(self, namespace: str, name: str) -> None:
        """Drop what the runtime keeps for a model that is gone, or churn would grow it."""
        self.locks.pop((namespace, name), None)
        self.reconciled_at.pop((namespace, name), None)
        self.autoscaled.pop((namespace, name), None)
        self.drift_checked_at.pop((namespace, name), None)
        if self.cache is not None:
            self.cache.forget_model(namespace, name)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The lock that serialises reconciles of one model."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())


def _previous_status(body: Mapping[str, Any]) -> InferenceModelStatus | None:
    # A status written by an older or foreign writer must not stop the reconcile: start afresh.
    try:
        return InferenceModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None


async def _missing_dependencies(
    api: KubeApi, namespace: str, spec: InferenceModelSpec
) -> list[str]:
    missing = []
    for dep in dependencies(spec):
        try:
            await api.get("v1", dep.kind, namespace, dep.name)
        except NotFound:
            missing.append(f'{dep.kind} "{dep.name}" (spec.{dep.field}) does not exist')
    return missing


def _owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def bind_cache(runtime: Runtime, handler_kwargs: Mapping[str, Any]) -> None:
    """Give the runtime kopf's indices, which kopf passes to every handler as keyword args.

    The drift loop starts with them, because it finds the models in the models index.
    """
    if runtime.cache is None and all(name in handler_kwargs for name in INDEX_NAMES):
        runtime.cache = ChildCache({name: handler_kwargs[name] for name in INDEX_NAMES})
    if runtime.cache is not None and runtime.drift_task is None:
        runtime.drift_task = asyncio.get_running_loop().create_task(
            drift_loop(runtime), name="drift"
        )


async def _observed_children(runtime: Runtime, namespace: str, name: str) -> list[dict[str, Any]]:
    if runtime.cache is not None:
        return runtime.cache.children(namespace, name)
    api = runtime.api
    selector = f"{LABEL_MODEL}={name}"
    found: list[dict[str, Any]] = []
    for api_version, kind in CHILD_KINDS:
        found.extend(await api.list(api_version, kind, namespace, selector))
    return found


async def execute_plan(api: KubeApi, plan: Plan, cache: ChildCache | None = None) -> None:
    """Delete first, then apply (a recreated object needs its old self gone)."""
    for ref in plan.to_delete:
        await api.delete(ref.api_version, ref.kind, ref.namespace, ref.name)
        if cache is not None and ref.namespace is not None:
            cache.deleted(ref.kind, ref.namespace, ref.name)
    for obj in plan.to_apply:
        stored = await api.apply(obj)
        if cache is not None:
            cache.applied(stored)


async def write_status(
    runtime: Runtime,
    body: Mapping[str, Any],
    spec: InferenceModelSpec | None,
    *,
    replicas: int,
    now: str,
    problem: Problem | None = None,
    cache: CacheView | None = None,
) -> None:
    """Compute the status from the Deployment and pods, and patch it if it changed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = _previous_status(body)
    api = runtime.api
    deployment: dict[str, Any] | None
    if runtime.cache is not None:
        deployment = next(
            (c for c in runtime.cache.children(namespace, name) if c.get("kind") == "Deployment"),
            None,
        )
        pods = runtime.cache.pods(namespace, name)
    else:
        try:
            deployment = await api.get("apps/v1", "Deployment", namespace, name)
        except NotFound:
            deployment = None
        pods = await api.list("v1", "Pod", namespace, f"{LABEL_MODEL}={name}")
    if spec is None:
        # The spec did not parse: compute the status from an all-defaults spec, which only
        # shapes the replica counts (zero) while ``problem`` decides every condition.
        spec = InferenceModelSpec.model_construct(model="", engine="sim")
    status = compute_status(
        model_name=name,
        spec=spec,
        generation=meta.get("generation"),
        desired_replicas=replicas,
        deployment=deployment,
        pods=pods,
        now=now,
        previous=previous,
        problem=problem,
        cache=cache,
    )
    patch = status_patch(body.get("status"), status)
    if patch is not None:
        stored = await api.patch_status(API_VERSION, KIND, namespace, name, patch)
        if runtime.cache is not None:
            runtime.cache.applied(stored)


async def reconcile_model(
    runtime: Runtime,
    body: Mapping[str, Any],
    *,
    post_event: EventPoster,
    now: Callable[[], str] = now_rfc3339,
) -> None:
    """Bring one model's children and status to its spec.

    Raises:
        SpecError: the spec cannot work as written (reported in status and an Event).
        DependencyNotReady: a Secret or PVC it names is missing (reported; retried later).
        KubeApiError: the API server refused or failed a call.
    """
    api, settings = runtime.api, runtime.settings
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = _previous_status(body)
    current = runtime.autoscaled.get((namespace, name))
    if current is None and previous is not None:
        current = previous.desired_replicas
    try:
        spec = InferenceModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = "; ".join(describe_errors(error))
        await write_status(
            runtime, body, None, replicas=0, now=now(), problem=Problem("InvalidSpec", message)
        )
        post_event("Warning", "InvalidSpec", message)
        raise SpecError(message) from error
    replicas = desired_replicas(spec, current)
    try:
        desired = [
            build_deployment(name, namespace, spec, settings.reconcile, replicas=replicas),
            build_service(name, namespace, spec),
            build_pdb(name, namespace, spec),
            *build_cache_claims(name, namespace, spec),
        ]
        job = build_preload(name, namespace, spec, settings.reconcile)
    except SpecError as error:
        await write_status(
            runtime,
            body,
            spec,
            replicas=replicas,
            now=now(),
            problem=Problem("InvalidSpec", str(error)),
        )
        post_event("Warning", "InvalidSpec", str(error))
        raise
    missing = await _missing_dependencies(api, namespace, spec)
    if missing:
        message = "; ".join(missing)
        problem = Problem("MissingDependency", message)
        await write_status(runtime, body, spec, replicas=replicas, now=now(), problem=problem)
        post_event("Warning", "MissingDependency", message)
        raise DependencyNotReady(message)
    observed = await _observed_children(runtime, namespace, name)
    view = None
    if job is not None:
        desired.append(job)
        view = await _preload_view(runtime, namespace, name, job, observed, previous)
        # Replicas wait for the cache: none starts before the weights are in it.
        desired[0]["spec"]["replicas"] = serving_replicas(replicas, view)
    owner = _owner_reference(body)
    for obj in desired:
        obj["metadata"]["ownerReferences"] = [owner]
    plan = calculate_plan(desired, observed)
    await execute_plan(api, plan, runtime.cache)
    for detail in plan.details:
        verb = detail.split(" ", 1)[0]
        if verb in _EVENT_REASONS:
            post_event("Normal", _EVENT_REASONS[verb], detail)
        else:
            # "keep" lines repeat on every run; they are logged, not posted as Events.
            log.info("%s/%s: %s", namespace, name, detail)
    await write_status(runtime, body, spec, replicas=replicas, now=now(), cache=view)


async def _preload_view(
    runtime: Runtime,
    namespace: str,
    name: str,
    job: Mapping[str, Any],
    observed: list[dict[str, Any]],
    previous: InferenceModelStatus | None,
) -> CacheView:
    """The preload Job's outcome; its pods are read only once it finished and said nothing yet.

    Its pods carry no model label (they are no replicas), so no index holds them: a finished
    Job's pods are listed by :data:`LABEL_PRELOAD_OF`, which only happens until the bytes they
    reported are in the status.
    """
    job_name = job["metadata"]["name"]
    found = next(
        (c for c in observed if c.get("kind") == "Job" and c["metadata"]["name"] == job_name),
        None,
    )
    before = previous.cache if previous is not None else None
    known = before is not None and before.job == job_name and before.bytes is not None
    pods: list[dict[str, Any]] = []
    if found is not None and job_finished(found) and not known:
        pods = await runtime.api.list("v1", "Pod", namespace, f"{LABEL_PRELOAD_OF}={name}")
    return cache_view(found, pods, before)


async def _current_model(runtime: Runtime, namespace: str, name: str) -> dict[str, Any] | None:
    """The model as it is now: from the index when there is one, else from the API."""
    if runtime.cache is not None:
        return runtime.cache.model(namespace, name)
    try:
        return await runtime.api.get(API_VERSION, KIND, namespace, name)
    except NotFound:
        return None


async def _run_reconcile(
    runtime: Runtime, body: Mapping[str, Any], post_event: EventPoster
) -> None:
    meta = body["metadata"]
    async with runtime.lock(meta["namespace"], meta["name"]), runtime.slots:
        await _reconcile_locked(runtime, meta["namespace"], meta["name"], post_event)


async def _reconcile_locked(
    runtime: Runtime, namespace: str, name: str, post_event: EventPoster | None
) -> None:
    """Reconcile the model as it is now; the caller holds its lock and a slot.

    ``post_event`` None posts Events on the model read here.
    """
    # Read under the lock: the body a handler got may be older than the last write.
    fresh = await _current_model(runtime, namespace, name)
    if fresh is None:
        runtime.forget(namespace, name)
        return
    if (fresh.get("metadata") or {}).get("deletionTimestamp"):
        return
    if post_event is None:
        post_event = event_poster(kopf.Body(cast(kopf.RawBody, fresh)))
    await reconcile_model(runtime, fresh, post_event=post_event)
    runtime.reconciled_at[(namespace, name)] = time.monotonic()


def event_poster(body: kopf.Body) -> EventPoster:
    def post(type_: str, reason: str, message: str) -> None:
        # kopf.event, not kopf.info: info() is filtered by posting.level, which we keep at
        # WARNING so that kopf's own "handler succeeded" log lines do not become Events.
        kopf.event(body, type=type_, reason=reason, message=message)

    return post


async def _handle(runtime: Runtime, body: kopf.Body, logger: KopfLogger) -> None:
    try:
        await _run_reconcile(runtime, body, event_poster(body))
    except InferscaleError as error:
        logger.warning("reconcile of %s failed: %s", body["metadata"]["name"], error)
        raise to_kopf(error) from error


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def inference_model_reconcile(
    body: kopf.Body, memo: Any, logger: KopfLogger, **_: Any
) -> None:
    """Create, update or resume: reconcile the model."""
    bind_cache(memo["runtime"], _)
    await _handle(memo["runtime"], body, logger)


def check_drift(runtime: Runtime, now: float, logger: KopfLogger = log) -> list[tuple[str, str]]:
    """Queue a run for every model that nothing reconciled within the interval; return them.

    The safety net for a model nothing happened to: a missed watch event, a lost update. A
    model reconciled within the last interval (its children's events keep it current), or one
    with a run under way or queued, is skipped; a model seen for the first time waits one
    interval, as the runs that its creation or the operator's start triggered cover it. A run
    that fails counts as an attempt, so a broken spec is retried (and reported) once an
    interval, not on every tick. One loop for all models replaces a kopf timer per model,
    which kept each model's full body and two tasks alive (``bench/operator_scale``).
    """
    if runtime.cache is None:
        return []
    known = runtime.cache.model_keys()
    for key in [k for k in runtime.drift_checked_at if k not in known]:
        del runtime.drift_checked_at[key]  # deleted without a run that noticed
    due = []
    for key in known:
        checked = runtime.drift_checked_at.get(key)
        reconciled = runtime.reconciled_at.get(key)
        if checked is None and reconciled is None:
            runtime.drift_checked_at[key] = now
            continue
        last = max(t for t in (checked, reconciled) if t is not None)
        if now - last < DRIFT_INTERVAL_SECONDS:
            continue
        if runtime.lock(*key).locked() or key in runtime.pending:
            continue  # a run is under way or queued: it reads everything the net would
        runtime.drift_checked_at[key] = now
        schedule_reconcile(runtime, *key, logger, delay=0)
        due.append(key)
    return due


async def drift_loop(runtime: Runtime, tick: float = DRIFT_TICK_SECONDS) -> None:
    """Every ``tick`` seconds, :func:`check_drift` (stopped by :func:`cancel_pending`)."""
    while True:
        await asyncio.sleep(tick)
        try:
            queued = check_drift(runtime, time.monotonic())
        except Exception:
            # A bug must not end the safety net for good: log it and look again next tick.
            log.exception("drift check failed")
            continue
        if queued:
            log.info("drift check: reconciling %d models nothing reconciled lately", len(queued))


def schedule_reconcile(
    runtime: Runtime,
    namespace: str,
    name: str,
    logger: KopfLogger,
    delay: float | None = None,
) -> None:
    """Reconcile a model soon: one run for a burst of child events, one queued at most.

    A queued run stays in ``pending`` until it holds the model's lock and a slot and is about
    to read the model and its children, so every event before that moment is covered by it.
    Without this, each event during a slow reconcile queued one more full run behind the lock:
    a thousand models created at once piled up 3,400 redundant runs (``bench/operator_scale``).
    """
    key = (namespace, name)
    if key in runtime.pending:
        return

    async def later() -> None:
        try:
            await asyncio.sleep(COALESCE_SECONDS if delay is None else delay)
            async with runtime.lock(namespace, name), runtime.slots:
                runtime.pending.pop(key, None)  # events from here on queue the next run
                await _reconcile_locked(runtime, namespace, name, None)
        except InferscaleError as error:
            # kopf's own handler for the model retries with back-off; this is only a nudge.
            logger.info("reconcile of %s/%s after a child event: %s", namespace, name, error)
        except Exception:
            # A bug must not vanish into a task nobody awaits; the drift check retries.
            logger.exception("reconcile of %s/%s after a child event failed", namespace, name)
        finally:
            if runtime.pending.get(key) is asyncio.current_task():
                del runtime.pending[key]  # cancelled or failed before it took the lock

    runtime.pending[key] = asyncio.get_running_loop().create_task(later())


@kopf.on.event(
    "apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT}
)
@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT})
@kopf.on.event(
    "batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT}
)
@kopf.on.event(
    "", "v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT}
)
@kopf.on.event(
    "policy",
    "v1",
    "poddisruptionbudgets",
    labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: kopf.PRESENT},
)
async def inference_model_child_event(
    body: kopf.Body, memo: Any, logger: KopfLogger, **_: Any
) -> None:
    """A child changed (or vanished): restore it and refresh the owner's status."""
    meta = body.get("metadata") or {}
    model = (meta.get("labels") or {}).get(LABEL_MODEL)
    namespace = meta.get("namespace")
    if model and namespace:
        bind_cache(memo["runtime"], _)
        schedule_reconcile(memo["runtime"], namespace, model, logger)


async def cancel_pending(runtime: Runtime) -> None:
    """Stop the drift loop and the coalesced reconciles that have not started (shutdown)."""
    tasks = [t for t in runtime.pending.values() if not t.done()]
    if runtime.drift_task is not None:
        tasks.append(runtime.drift_task)
        runtime.drift_task = None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
