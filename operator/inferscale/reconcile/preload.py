"""The weight cache's preload Job and what its outcome means for the replicas (pure).

With ``spec.cache.preload`` the operator runs one Job that downloads the weights into the cache
volume (``cache.pvcName`` or ``cache.hostPath``) before any replica starts:

- the sim: ``inferscale sim ... --weights-cache /models --preload``: the engine's own args, so
  the "download" follows the same preset (its bytes at its network bandwidth, ``docs/sim.md``);
- vLLM and SGLang: ``hf download`` (``huggingface-cli download`` in older images) of the hub id
  into ``HF_HOME`` on the cache, in the engine's own image, with the model's HF token.

The Job's container writes ``{"bytes": N}`` to its termination-message file, which the status
reads back from the Job's pod. The Job's name carries a hash of everything its pod runs, so a
changed model or image gets a new Job (a Job's template is immutable) and the old one is
deleted as no longer desired. Its pod carries :data:`~inferscale.api.meta.LABEL_PRELOAD_OF`,
never the model label, so it is never counted as a replica.

:func:`cache_view` turns the Job (and its pods) into the ``Cached`` condition, and
:func:`serving_replicas` holds the replicas at zero until the cache is filled: a replica that
starts before would download the weights itself, and one that starts after a failed Job would
crash-loop on a cache it cannot read. No clock, no client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from inferscale.api.meta import LABEL_MANAGED_BY, LABEL_PRELOAD_OF, MANAGED_BY
from inferscale.api.v1alpha1.inference_model import CacheStatus, InferenceModelSpec
from inferscale.errors import SpecError
from inferscale.reconcile.engines import (
    ENGINES,
    HF_HOME,
    MODEL_CACHE_MOUNT,
    engine_command,
    parse_model_source,
)
from inferscale.reconcile.labels import object_labels
from inferscale.reconcile.settings import ReconcileSettings
from inferscale.reconcile.status import CacheView, termination_cause

CONTAINER_NAME: Final = "preload"
RESULT_VOLUME: Final = "preload-result"
RESULT_DIR: Final = "/preload"
RESULT_PATH: Final = f"{RESULT_DIR}/result"
"""The preload container's termination-message file: ``{"bytes": N}`` on success."""
BACKOFF_LIMIT: Final = 2
"""Pod failures a preload Job retries before it is failed (a transient network error)."""
SIM_PRELOAD_FLAG: Final = "--preload"
"""The sim's flag that fills the cache and exits instead of serving."""
SIM_REPORT_FLAG: Final = "--preload-report"
"""The sim's flag naming the file its preload writes ``{"bytes": N}`` to."""
CLAIM_SUFFIX: Final = "-weights"
"""The name of the claim the operator creates for a model's cache: the model's name plus this."""
PRELOAD_ENGINES: Final = ("vllm", "sglang", "sim")
"""Engines whose images can run the preload: the two with ``hf`` in them, and the sim."""
JOB_NAME_PREFIX_CHARS: Final = 44
"""Model-name characters kept in the Job's name: the Job controller copies the name into a
label of its pod, and ``<prefix>-preload-<8 hex>`` stays within a label's 63."""

# Runs in the engine image: newer huggingface_hub ships `hf`, older only `huggingface-cli`. $0 is
# the hub id, $1 the model's folder in the hub cache, whose size is what was cached (a shared
# cache holds other models too).
_HF_SCRIPT: Final = (
    "set -e; "
    'if command -v hf >/dev/null 2>&1; then hf download "$0"; '
    'else huggingface-cli download "$0"; fi; '
    f'printf \'{{"bytes": %s}}\' "$(du -sb "$HF_HOME/hub/$1" | cut -f1)" > {RESULT_PATH}'
)


def hub_folder(repo_id: str) -> str:
    """The hub cache's folder of a model: ``models--org--name``."""
    return "models--" + repo_id.replace("/", "--")


def preload_wanted(spec: InferenceModelSpec) -> bool:
    """Whether the model asks for a preloaded cache."""
    return spec.cache.preload


def cache_claim_name(model_name: str) -> str:
    """The claim the operator creates for the cache when ``cache.size`` is set."""
    return f"{model_name}{CLAIM_SUFFIX}"


def build_cache_claims(
    model_name: str, namespace: str, spec: InferenceModelSpec
) -> list[dict[str, Any]]:
    """The PersistentVolumeClaim for the cache: one when ``cache.size`` asks for it, else none.

    It is never recreated: a claim's class and access modes cannot change, and its size can
    only grow (the API server refuses the rest, and the reconcile reports it).
    """
    if spec.cache.size is None:
        return []
    claim_spec: dict[str, Any] = {
        "accessModes": [spec.cache.access_mode],
        "resources": {"requests": {"storage": str(spec.cache.size)}},
    }
    if spec.cache.storage_class_name is not None:
        claim_spec["storageClassName"] = spec.cache.storage_class_name
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": cache_claim_name(model_name),
                "namespace": namespace,
                "labels": object_labels(model_name, spec.engine),
            },
            "spec": claim_spec,
        }
    ]


def cache_volume(model_name: str, spec: InferenceModelSpec, name: str) -> dict[str, Any]:
    """The model-cache volume: a claim (named or the operator's), a host path, or an emptyDir."""
    claim = spec.cache.pvc_name
    if claim is None and spec.cache.size is not None:
        claim = cache_claim_name(model_name)
    if claim is not None:
        return {"name": name, "persistentVolumeClaim": {"claimName": claim}}
    if spec.cache.host_path is not None:
        return {
            "name": name,
            "hostPath": {"path": spec.cache.host_path, "type": "DirectoryOrCreate"},
        }
    empty: dict[str, Any] = {}
    if spec.cache.size_limit is not None:
        empty["sizeLimit"] = str(spec.cache.size_limit)
    return {"name": name, "emptyDir": empty}


def _command(spec: InferenceModelSpec, served: str) -> tuple[list[str], list[str]]:
    """The preload container's command and args.

    Raises:
        SpecError: the engine or the model source cannot be preloaded.
    """
    if spec.engine not in PRELOAD_ENGINES:
        raise SpecError(
            f"cache.preload: the {spec.engine} image cannot download weights ahead "
            f"(supported: {', '.join(PRELOAD_ENGINES)}); fill the cache another way and "
            "turn preload off"
        )
    if spec.engine == "sim":
        # The engine's args already name the cache (``--weights-cache``): the same preset, the
        # same model, the same directory; ``--preload`` fills it and exits.
        engine = engine_command(spec, served)
        return list(engine.command), [*engine.args, SIM_PRELOAD_FLAG, SIM_REPORT_FLAG, RESULT_PATH]
    source = parse_model_source(spec.model)
    if source.scheme != "hf":
        raise SpecError(f"cache.preload downloads hf:// models, not {source.scheme}://")
    return ["/bin/sh", "-c", _HF_SCRIPT, source.path, hub_folder(source.path)], []


def _env(spec: InferenceModelSpec) -> list[dict[str, Any]]:
    if spec.engine == "sim":
        return []
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": HF_HOME}]
    ref = spec.hf_token_secret_ref
    if ref is not None:
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    return env


def preload_job_name(model_name: str, pod_spec: Mapping[str, Any]) -> str:
    """``<model>-preload-<hash>``: the hash of what the Job's pod runs, so a change is a new Job."""
    digest = hashlib.sha256(json.dumps(pod_spec, sort_keys=True).encode()).hexdigest()[:8]
    return f"{model_name[:JOB_NAME_PREFIX_CHARS].rstrip('-')}-preload-{digest}"


def build_preload_job(
    model_name: str,
    namespace: str,
    spec: InferenceModelSpec,
    served: str,
    settings: ReconcileSettings,
    security: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> dict[str, Any] | None:
    """The Job that fills the cache, or ``None`` without ``cache.preload``.

    ``security`` is the engine's (pod, container) security contexts, so the Job writes the
    cache as the user the replicas read it as.

    Raises:
        SpecError: the engine or the model source cannot be preloaded.
    """
    if not preload_wanted(spec):
        return None
    profile = ENGINES[spec.engine]
    command, args = _command(spec, served)
    pod_security, container_security = security
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or settings.images.get(spec.engine) or profile.default_image,
        "command": command,
        "args": args,
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT},
            {"name": RESULT_VOLUME, "mountPath": RESULT_DIR},
        ],
        "terminationMessagePath": RESULT_PATH,
        # A failed download says why in its log; its tail becomes the message, and the condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security,
    }
    env = _env(spec)
    if env:
        container["env"] = env
    if not args:
        del container["args"]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            cache_volume(model_name, spec, "model-cache"),
            {"name": RESULT_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}},
        ],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if pod_security:
        pod_spec["securityContext"] = pod_security
    pod_spec.update(spec.scheduling.pod_fields())
    pod_labels = {LABEL_PRELOAD_OF: model_name, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": preload_job_name(model_name, pod_spec),
            "namespace": namespace,
            "labels": {**object_labels(model_name, spec.engine), **pod_labels},
        },
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            # A download that hangs fails the Job (PreloadFailed) instead of holding the
            # replicas at zero for ever: it gets as long as a replica gets to load.
            "activeDeadlineSeconds": spec.serving.startup_timeout_seconds,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def _seconds(start: object, end: object) -> float | None:
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        began = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((ended - began).total_seconds(), 0.0)


def _terminated(pods: Sequence[Mapping[str, Any]], job_name: str) -> list[Mapping[str, Any]]:
    """The terminated states of the Job's pods, newest pod last."""
    mine = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job_name
        or ((p.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/job-name")
        == job_name
    ]
    mine.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    out = []
    for pod in mine:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if isinstance(terminated, Mapping):
                out.append(terminated)
    return out


def reported_bytes(message: object) -> int | None:
    """The ``bytes`` a preload container reported, or ``None`` when the message is not that."""
    if not isinstance(message, str):
        return None
    try:
        value = json.loads(message).get("bytes")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job completed or failed for good."""
    conditions = _conditions(job)
    return any(
        (conditions.get(kind) or {}).get("status") == "True" for kind in ("Complete", "Failed")
    )


def cache_view(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    previous: CacheStatus | None = None,
) -> CacheView:
    """The Cached condition from the preload Job (``None``: not created yet) and its pods.

    ``previous`` is the last status' cache block: once a Job's pods are gone (garbage
    collected), the bytes it reported are kept from there.
    """
    if job is None:
        return CacheView("False", "Preloading", "creating the preload Job", None)
    name = str((job.get("metadata") or {}).get("name", "?"))
    conditions = _conditions(job)
    st = job.get("status") or {}
    ends = _terminated(pods, name)
    if (conditions.get("Complete") or {}).get("status") == "True":
        found = next((b for t in reversed(ends) if (b := reported_bytes(t.get("message")))), None)
        if found is None and previous is not None and previous.job == name:
            found = previous.bytes
        seconds = _seconds(st.get("startTime"), st.get("completionTime"))
        cache = CacheStatus(
            job=name, bytes=found, seconds=seconds, completed_at=st.get("completionTime")
        )
        size = f"{found} bytes" if found is not None else "the weights"
        took = f" in {seconds:.0f} s" if seconds is not None else ""
        return CacheView("True", "Preloaded", f"Job {name} cached {size}{took}", cache)
    failed = conditions.get("Failed") or {}
    if failed.get("status") == "True":
        why = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or 'the Job failed'}"
        last = next((str(t.get("message")) for t in reversed(ends) if t.get("message")), "")
        cause = termination_cause(last)
        message = f"Job {name} failed ({why})" + (f"; last pod: {cause}" if cause else "")
        return CacheView("False", "PreloadFailed", message, CacheStatus(job=name))
    failures = int(st.get("failed") or 0)
    retried = f" ({failures} failed pods so far)" if failures else ""
    return CacheView(
        "False",
        "Preloading",
        f"Job {name} is downloading the weights{retried}",
        CacheStatus(job=name),
    )


def serving_replicas(wanted: int, view: CacheView | None) -> int:
    """The replicas to run: ``wanted``, or zero while a preloaded cache is not filled."""
    return wanted if view is None or view.filled else 0
