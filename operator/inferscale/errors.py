"""The project's error hierarchy; boundaries translate these, nothing else invents its own.

::

    InferscaleError
     ├── SpecError            a manifest that can never work as written (refuse, say why)
     ├── DependencyNotReady   something the object needs is missing for now (retry later)
     ├── MetricsUnavailable   signals are missing or stale (the autoscaler holds)
     ├── RouterSyncError      a routing table could not be delivered to a router
     └── KubeApiError         the Kubernetes API answered with an error (status, reason, message)
          ├── NotFound        404
          ├── Conflict        409 (already exists, or a field-manager conflict)
          └── Forbidden       403: RBAC refused the call

Only ``controller/errors.py`` maps them to kopf's errors; only ``kube/`` wraps the Kubernetes
client's exceptions. This module imports nothing from either, so pure cores may raise these.
"""


class InferscaleError(Exception):
    """Base class of every error inferscale raises on purpose."""


class SpecError(InferscaleError):
    """A spec that the API server accepted but that cannot work as written."""


class DependencyNotReady(InferscaleError):
    """Something the object depends on (a Secret, a PVC, a CRD) is not there yet."""


class MetricsUnavailable(InferscaleError):
    """The autoscaler's signals are missing, stale or malformed."""


class RouterSyncError(InferscaleError):
    """A routing table could not be pushed to, or accepted by, a router."""


class KubeApiError(InferscaleError):
    """The Kubernetes API refused a call; ``status``/``reason`` are the API server's own."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeApiError):
    """The object (or its namespace, or its kind) does not exist."""


class Conflict(KubeApiError):
    """The object already exists, changed meanwhile, or another field manager owns a field."""


class Forbidden(KubeApiError):
    """RBAC does not allow the call: a missing permission, never retried silently."""
