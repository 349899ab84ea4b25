"""``OperatorSettings``: the operator's defaults, read once at start-up and passed explicitly.

Settings come from ``INFERSCALE_*`` environment variables (nested groups with ``__``, for example
``INFERSCALE_RECONCILE__PRE_STOP_SECONDS=10``), then from the defaults below. Only ``cli`` and
``controller`` build an :class:`OperatorSettings`; everything below them receives the group it
needs (the pure builders in :mod:`inferscale.reconcile` take a :class:`ReconcileSettings`) and
never reads ``os.environ`` itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferscale.api.v1alpha1.inference_model import Engine


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

    max_surge: int | str = 1
    """Deployment ``maxSurge``: extra replicas a rolling update may start (a number or a
    percentage). Default 1, so a rollout never removes capacity first; it needs one spare
    replica's GPUs."""

    max_unavailable: int | str = 0
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


class OperatorSettings(BaseSettings):
    """Every setting of the operator process, grouped as kopf groups its own."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSCALE_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    """Defaults of the Deployments, Services and PodDisruptionBudgets built per model."""
