"""The Deployment of an InferenceModel's serving replicas (pure: spec + settings -> dict).

No clock, no environment, no client, and no owner reference (the handler adds it with
``kopf.adopt``). Rules that are not obvious from the output:

- List items are unique by their merge key (env ``name``, volume ``name``): server-side apply
  refuses duplicates, so ``spec.env`` replaces a derived variable of the same name in place.
- ``terminationGracePeriodSeconds`` is ``serving.terminationGracePeriodSeconds`` plus the
  ``preStop`` pause, because the grace period also counts the pause.
- ``progressDeadlineSeconds`` outlasts the startup probe, so a model that is still loading is
  not reported as a failed rollout.
- Service links are off: with many models in a namespace their environment variables would
  crowd every engine's environment, and engines never read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Final

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.reconcile.adapters import adapter_claims, adapter_volumes
from inferscale.reconcile.engines import (
    ENGINES,
    HF_HOME,
    MODEL_CACHE_MOUNT,
    MODEL_SOURCE_MOUNT,
    EngineCommand,
    EngineProfile,
    engine_command,
    parse_model_source,
)
from inferscale.reconcile.labels import (
    check_model_name,
    object_labels,
    selector_labels,
)
from inferscale.reconcile.preload import build_preload_job, cache_volume, preload_wanted
from inferscale.reconcile.settings import ReconcileSettings

CONTAINER_NAME: Final = "engine"
PORT_NAME: Final = "http"
SHM_VOLUME: Final = "dshm"
MODEL_CACHE_VOLUME: Final = "model-cache"
MODEL_SOURCE_VOLUME: Final = "model-source"
TMP_VOLUME: Final = "tmp"
TMP_SIZE_LIMIT: Final = "64Mi"
"""The writable ``/tmp`` of an engine whose root filesystem is read-only (as the chart's pods)."""
HOME_VOLUME: Final = "home"
HOME_MOUNT: Final = "/home/inferscale"
"""``HOME`` of a vendor engine that runs as another user or on a read-only root: its caches
(``~/.cache``: vLLM's compile cache, FlashInfer's JIT, Hugging Face's xet; ``~/.triton``;
``~/.config``) land in an emptyDir instead of ``/root``, which that user could not write."""


@dataclass(frozen=True)
class Posture:
    """Who the engine runs as and whether its root filesystem is read-only."""

    user: int | None
    """A non-root UID (and GID) to run as; None keeps the image's user (root in vendor images)."""
    read_only: bool
    """The root filesystem is mounted read-only; writes go to the pod's volumes."""


def posture(
    spec: InferenceModelSpec, profile: EngineProfile, settings: ReconcileSettings
) -> Posture:
    """``spec.security`` first, then the operator's settings, then the engine's own default."""
    wanted = spec.security
    default_user = settings.run_as_user if profile.non_root else settings.engine_run_as_user
    user = wanted.run_as_user or default_user
    read_only = wanted.read_only_root_filesystem
    if read_only is None:
        read_only = profile.read_only_root or (
            not profile.non_root and settings.engine_read_only_root_filesystem
        )
    return Posture(user, read_only)


def _needs_home(profile: EngineProfile, stance: Posture) -> bool:
    """A vendor image's caches need a writable HOME once it runs as another user or read-only."""
    return not profile.non_root and (stance.user is not None or stance.read_only)


ANNOTATION_SCRAPE: Final = "prometheus.io/scrape"
ANNOTATION_PORT: Final = "prometheus.io/port"
ANNOTATION_PATH: Final = "prometheus.io/path"

STARTUP_PERIOD_SECONDS: Final = 1
"""The start-up probe asks ``/health`` every second: a replica that finished loading serves
(and ends a cold start's hold queue) within a second, not a period later. The probe is a cheap
GET; ``failureThreshold`` stretches to ``startupTimeoutSeconds``."""
READINESS_PERIOD_SECONDS: Final = 5
LIVENESS_PERIOD_SECONDS: Final = 15


@dataclass(frozen=True)
class Dependency:
    """An object the Deployment's pods need that the operator does not create."""

    kind: str
    """``Secret`` or ``PersistentVolumeClaim``."""
    name: str
    field: str
    """The spec field that names it, for the condition's message."""


def served_name(model_name: str, spec: InferenceModelSpec) -> str:
    """The name clients send as ``model``: ``spec.servedName`` or the object's name."""
    return spec.served_name or model_name


def desired_replicas(spec: InferenceModelSpec, current: int | None = None) -> int:
    """The replica count to build with.

    With autoscaling off, ``spec.replicas`` (which ``kubectl scale`` writes) or else
    ``minReplicas``. With it on, the autoscaler's ``current`` count is kept, clamped to the
    bounds; before the autoscaler has decided anything, the start is the same as with it off.
    """
    start = spec.replicas if spec.replicas is not None else spec.min_replicas
    if not spec.autoscaling.enabled or current is None:
        return start
    return min(max(current, spec.min_replicas), spec.max_replicas)


def dependencies(spec: InferenceModelSpec) -> list[Dependency]:
    """The Secrets and PVCs the pods mount, for the handler to check before applying."""
    profile = ENGINES[spec.engine]
    out: list[Dependency] = []
    if profile.serves_adapters:
        out.extend(
            Dependency("PersistentVolumeClaim", claim, "adapters")
            for claim in adapter_claims(spec.adapters)
        )
    cache = (
        [Dependency("PersistentVolumeClaim", spec.cache.pvc_name, "cache.pvcName")]
        if spec.cache.pvc_name is not None
        else []
    )
    if not profile.needs_weights:
        # The sim mounts the cache only to read a preload's manifest.
        return out + cache if preload_wanted(spec) else out
    if spec.hf_token_secret_ref is not None:
        out.append(Dependency("Secret", spec.hf_token_secret_ref.name, "hfTokenSecretRef"))
    out.extend(cache)
    source = parse_model_source(spec.model)
    if source.claim is not None:
        out.append(Dependency("PersistentVolumeClaim", source.claim, "model"))
    return out


def _quantity(value: int | str) -> str:
    # The API server returns quantities as strings; emitting strings keeps drift checks quiet.
    return str(value)


def _resources(spec: InferenceModelSpec) -> dict[str, Any]:
    amounts: dict[str, str] = {}
    if spec.resources.cpu is not None:
        amounts["cpu"] = _quantity(spec.resources.cpu)
    if spec.resources.memory is not None:
        amounts["memory"] = _quantity(spec.resources.memory)
    if spec.resources.gpus > 0:
        amounts[spec.resources.gpu_resource_name] = str(spec.resources.gpus)
    # Requests equal limits: GPUs must, and a replica that bursts past its CPU or memory
    # request would be the first evicted under node pressure.
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _env(
    spec: InferenceModelSpec,
    profile: EngineProfile,
    extra: tuple[tuple[str, str], ...],
    stance: Posture,
) -> list[dict[str, Any]]:
    env: dict[str, dict[str, Any]] = {}
    if _needs_home(profile, stance):
        env["HOME"] = {"name": "HOME", "value": HOME_MOUNT}
    if profile.needs_weights:
        env["HF_HOME"] = {"name": "HF_HOME", "value": HF_HOME}
        if preload_wanted(spec):
            # The cache is mounted read-only and filled: the hub client must not try to
            # download (or write its lock files) there.
            env["HF_HUB_OFFLINE"] = {"name": "HF_HUB_OFFLINE", "value": "1"}
        if spec.hf_token_secret_ref is not None:
            ref = spec.hf_token_secret_ref
            env["HF_TOKEN"] = {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
    for name, value in extra:
        env[name] = {"name": name, "value": value}
    for var in spec.env:
        env[var.name] = var.to_wire()
    return list(env.values())


def _probe(profile: EngineProfile, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": profile.health_path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _volumes(
    model_name: str,
    spec: InferenceModelSpec,
    profile: EngineProfile,
    settings: ReconcileSettings,
    stance: Posture,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if stance.read_only:
        # Vendor engines write more than the sim there (torch's inductor cache, TensorRT-LLM's
        # options file): only the sim's /tmp is bounded.
        tmp = {"sizeLimit": TMP_SIZE_LIMIT} if profile.non_root else {}
        volumes.append({"name": TMP_VOLUME, "emptyDir": tmp})
        mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    if _needs_home(profile, stance):
        volumes.append({"name": HOME_VOLUME, "emptyDir": {}})
        mounts.append({"name": HOME_VOLUME, "mountPath": HOME_MOUNT})
    if profile.needs_shm:
        shm: dict[str, Any] = {"medium": "Memory"}
        if settings.shm_size_limit is not None:
            shm["sizeLimit"] = settings.shm_size_limit
        volumes.append({"name": SHM_VOLUME, "emptyDir": shm})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    preloaded = preload_wanted(spec)
    if profile.needs_weights or preloaded:
        volumes.append(cache_volume(model_name, spec, MODEL_CACHE_VOLUME))
        mount: dict[str, Any] = {"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_MOUNT}
        if preloaded:
            mount["readOnly"] = True  # the preload Job filled it; replicas only read
        mounts.append(mount)
    if profile.needs_weights:
        source = parse_model_source(spec.model)
        if source.claim is not None:
            volumes.append(
                {
                    "name": MODEL_SOURCE_VOLUME,
                    "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
                }
            )
            mounts.append(
                {"name": MODEL_SOURCE_VOLUME, "mountPath": MODEL_SOURCE_MOUNT, "readOnly": True}
            )
    if profile.serves_adapters:
        more_volumes, more_mounts = adapter_volumes(spec.adapters)
        volumes.extend(more_volumes)
        mounts.extend(more_mounts)
    return volumes, mounts


def _security(profile: EngineProfile, stance: Posture) -> tuple[dict[str, Any], dict[str, Any]]:
    container: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if stance.read_only:
        container["readOnlyRootFilesystem"] = True
    pod: dict[str, Any] = {}
    if stance.user is not None:
        container["capabilities"] = {"drop": ["ALL"]}
        container["runAsNonRoot"] = True
        pod = {
            "runAsNonRoot": True,
            "runAsUser": stance.user,
            "runAsGroup": stance.user,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        if not profile.non_root:
            # The model cache (a PVC the image's root wrote before, or an emptyDir) and the
            # home volume become writable by the engine's group.
            pod["fsGroup"] = stance.user
    return pod, container


def _container(
    spec: InferenceModelSpec,
    profile: EngineProfile,
    command: EngineCommand,
    settings: ReconcileSettings,
    mounts: list[dict[str, Any]],
    security: dict[str, Any],
    stance: Posture,
) -> dict[str, Any]:
    """The engine container: image, command, port, probes, mounts and security context."""
    startup = spec.serving.startup_timeout_seconds
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or settings.images.get(spec.engine) or profile.default_image,
        "command": list(command.command),
        "args": list(command.args),
        "ports": [{"name": PORT_NAME, "containerPort": profile.port, "protocol": "TCP"}],
        "env": _env(spec, profile, command.env, stance),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # The startup probe owns the (long) model load; liveness and readiness start after it.
        "startupProbe": _probe(
            profile, STARTUP_PERIOD_SECONDS, 5, math.ceil(startup / STARTUP_PERIOD_SECONDS)
        ),
        "readinessProbe": _probe(profile, READINESS_PERIOD_SECONDS, 3, 3),
        # A busy engine answers /health late; a minute of failures, not one slow reply, restarts.
        "livenessProbe": _probe(profile, LIVENESS_PERIOD_SECONDS, 10, 4),
        "securityContext": security,
        # An engine that dies at start (a model that does not load) prints why in its log; the
        # log's tail becomes the termination message, and so the InferenceModel's condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.pre_stop_seconds > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.pre_stop_seconds}}}
    if not container["env"]:
        del container["env"]
    if not mounts:
        del container["volumeMounts"]
    return container


def _pod_spec(
    spec: InferenceModelSpec,
    settings: ReconcileSettings,
    container: dict[str, Any],
    security: dict[str, Any],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod template's spec: the container, grace period, volumes and scheduling."""
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": (
            spec.serving.termination_grace_period_seconds + settings.pre_stop_seconds
        ),
        "enableServiceLinks": False,
        # Engines never call the Kubernetes API; no token in the pod is one less secret to leak.
        "automountServiceAccountToken": False,
    }
    if security:
        pod_spec["securityContext"] = security
    if volumes:
        pod_spec["volumes"] = volumes
    pod_spec.update(spec.scheduling.pod_fields())
    return pod_spec


def build_deployment(
    model_name: str,
    namespace: str,
    spec: InferenceModelSpec,
    settings: ReconcileSettings,
    *,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment that runs ``spec.engine`` for the model, with ``replicas`` pods.

    ``replicas`` defaults to :func:`desired_replicas` with no autoscaler decision yet.

    Raises:
        SpecError: the name cannot name the children, or the engine cannot serve the spec
            (:class:`~inferscale.reconcile.engines.UnsupportedSpec` lists every reason).
    """
    check_model_name(model_name)
    profile = ENGINES[spec.engine]
    command = engine_command(spec, served_name(model_name, spec))
    labels = object_labels(model_name, spec.engine)
    stance = posture(spec, profile, settings)
    volumes, mounts = _volumes(model_name, spec, profile, settings, stance)
    pod_security, container_security = _security(profile, stance)
    startup = spec.serving.startup_timeout_seconds

    container = _container(spec, profile, command, settings, mounts, container_security, stance)
    pod_spec = _pod_spec(spec, settings, container, pod_security, volumes)

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": model_name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": desired_replicas(spec) if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(model_name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": settings.max_surge,
                    "maxUnavailable": settings.max_unavailable,
                },
            },
            "progressDeadlineSeconds": startup + settings.progress_deadline_margin_seconds,
            "revisionHistoryLimit": settings.revision_history_limit,
            "template": {
                "metadata": {
                    # A copy: the handler's kopf.adopt edits the top-level labels in place.
                    "labels": dict(labels),
                    "annotations": {
                        ANNOTATION_SCRAPE: "true",
                        ANNOTATION_PORT: str(profile.port),
                        ANNOTATION_PATH: profile.metrics_path,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_preload(
    model_name: str, namespace: str, spec: InferenceModelSpec, settings: ReconcileSettings
) -> dict[str, Any] | None:
    """The model's preload Job (``reconcile/preload.py``), run as the engine's own user.

    Raises:
        SpecError: the engine or the model source cannot be preloaded.
    """
    profile = ENGINES[spec.engine]
    # The engine's user, so the files it reads are its own; but a vendor image keeps a writable
    # root: its download tool's scratch files are not the engine's, and the Job gets no /tmp or
    # HOME volume. (The sim's Job stays read-only, as before.)
    stance = posture(spec, profile, settings)
    if not profile.non_root:
        stance = replace(stance, read_only=False)
    return build_preload_job(
        model_name,
        namespace,
        spec,
        served_name(model_name, spec),
        settings,
        _security(profile, stance),
    )
