"""``ReconcileSettings``: the defaults of the objects the operator builds for an InferenceModel.

A plain pydantic model, so the pure builders of :mod:`inferscale.reconcile` can take it without
importing the settings loader (:mod:`inferscale.config`, pydantic-settings), which reads the
environment and embeds this group as ``OperatorSettings.reconcile``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from inferscale.api.v1alpha1.inference_model import Engine


def _int_or_percent(value: Any) -> Any:
    """``"1"`` (an environment variable is always text) -> ``1``; ``"25%"`` stays text.

    Kubernetes refuses the string ``"1"`` where it takes an int-or-string: a string must be a
    percentage.
    """
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


IntOrPercent = Annotated[int | str, BeforeValidator(_int_or_percent)]
"""A Deployment rollout bound: a number of pods, or a percentage such as ``"25%"``."""


class ReconcileSettings(BaseModel):
    """Defaults of the objects the operator builds for an InferenceModel."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    images: dict[Engine, str] = Field(default_factory=dict)
    """Per-engine image overrides (``{"vllm": "registry.local/vllm:v0.11.0"}``); an engine not
    named here uses the image pinned in ``reconcile/engines.py``. ``spec.image`` wins over
    both."""

    pre_stop_seconds: int = Field(default=5, ge=0, le=300)
    """Seconds a stopping pod waits before the engine gets SIGTERM, so routers and Services
    drop it first and no new request lands on a draining replica. Default 5."""

    max_surge: IntOrPercent = 1
    """Deployment ``maxSurge``: extra replicas a rolling update may start (a number or a
    percentage). Default 1, so a rollout never removes capacity first; it needs one spare
    replica's GPUs."""

    max_unavailable: IntOrPercent = 0
    """Deployment ``maxUnavailable`` during a rolling update. Default 0: never fewer ready
    replicas than desired while the new ones load. Raise it where no spare GPU exists."""

    shm_size_limit: str | None = None
    """``sizeLimit`` of the memory-backed ``/dev/shm`` volume, for example ``16Gi``; it counts
    against the container's memory. Default none (bounded by the memory limit)."""

    progress_deadline_margin_seconds: int = Field(default=600, ge=0)
    """Added to ``spec.serving.startupTimeoutSeconds`` to form the Deployment's
    ``progressDeadlineSeconds``, so a slow but healthy model load is not reported as a failed
    rollout. Default 600 s."""

    revision_history_limit: int = Field(default=3, ge=0)
    """Old ReplicaSets kept for ``kubectl rollout undo``. Default 3."""

    run_as_user: int = Field(default=1000, ge=1)
    """UID of engines that run as non-root (the sim image's ``USER 1000``). Default 1000."""

    engine_run_as_user: int | None = Field(default=None, ge=1)
    """UID (and GID) that the engines whose images run as root (vLLM, SGLang, TGI, TensorRT-LLM,
    llama.cpp) run as instead, unless ``spec.security.runAsUser`` says otherwise. Default none:
    the image's user."""

    engine_read_only_root_filesystem: bool = False
    """Mount those engines' root filesystems read-only, unless
    ``spec.security.readOnlyRootFilesystem`` says otherwise; they write to their volumes
    (``/tmp``, ``HOME``, the model cache). Default false."""
