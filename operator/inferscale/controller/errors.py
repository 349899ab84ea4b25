"""The one place that maps inferscale's errors to kopf's retry semantics.

- :class:`~inferscale.errors.SpecError` -> ``kopf.PermanentError``: retrying cannot help; the
  condition ``Ready=False`` (reason ``InvalidSpec``) says what to change, and the next spec edit
  triggers a new attempt.
- :class:`~inferscale.errors.DependencyNotReady` -> ``kopf.TemporaryError``: a Secret or PVC may
  appear any moment; retry after a delay, so the model recovers by itself once it is fixed.
- :class:`~inferscale.errors.Forbidden` -> ``kopf.PermanentError``: an RBAC gap is a deployment
  bug that retries would only hide; the log names the call that was refused.
- Any other :class:`~inferscale.errors.KubeApiError` -> ``kopf.TemporaryError``: the API server
  is briefly unavailable, a write raced another writer, and the like.
"""

from __future__ import annotations

import kopf

from inferscale.errors import (
    DependencyNotReady,
    Forbidden,
    InferscaleError,
    KubeApiError,
    SpecError,
)

DEPENDENCY_RETRY_SECONDS = 15
"""How soon a model waiting for a Secret or PVC is looked at again."""

API_RETRY_SECONDS = 5
"""How soon a call that the API server failed is retried."""


def to_kopf(error: InferscaleError) -> kopf.PermanentError | kopf.TemporaryError:
    """The kopf error that gives ``error`` the right retry behaviour."""
    if isinstance(error, SpecError | Forbidden):
        return kopf.PermanentError(str(error))
    if isinstance(error, DependencyNotReady):
        return kopf.TemporaryError(str(error), delay=DEPENDENCY_RETRY_SECONDS)
    if isinstance(error, KubeApiError):
        return kopf.TemporaryError(str(error), delay=API_RETRY_SECONDS)
    return kopf.TemporaryError(str(error), delay=API_RETRY_SECONDS)
