"""kopf glue: importing this package registers every handler.

Run it with ``inferscale operator`` or ``kopf run -m inferscale.controller``.

Handlers stay thin (read, build, apply, report); the decisions live in :mod:`inferscale.reconcile`
and the API calls in :mod:`inferscale.kube`.
"""

from inferscale.controller import (
    adapters,
    autoscaler,
    cache,
    credentials,
    inference_model,
    route_status,
    routing,
    startup,
)

__all__ = [
    "adapters",
    "autoscaler",
    "cache",
    "credentials",
    "inference_model",
    "route_status",
    "routing",
    "startup",
]
