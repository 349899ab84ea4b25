"""Operator start-up and shutdown: kopf's settings and the shared :class:`Runtime`.

kopf keeps its own bookkeeping (handler progress, the last handled spec) in annotations under
our own prefix, never in ``status``, so the status stays ours and readable; only warnings are
turned into Events automatically, because the handlers post their own Events for every change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from inferscale.api.meta import GROUP
from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import KopfLogger, Runtime, cancel_pending
from inferscale.kube.client import KubernetesApi


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, built from the body less what the build throws away.

    kopf builds an "essence" of every watched object on every watch event (pods and
    Deployments too, which have no handler that reads it) by deep-copying the whole body and then
    dropping ``status`` and all metadata but labels and annotations. ``managedFields`` and
    ``status`` are most of a pod or Deployment: copying them was 7 % of the operator's CPU at a
    thousand models (``bench/operator_scale``). The essence is the same: ``status`` is kept
    whenever a handler asks for one of its fields.
    """

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        """The essence of ``body``, as :class:`kopf.AnnotationsDiffBaseStorage` builds it."""
        extra = list(extra_fields or ())
        wants_status = any(_first_key(f) == "status" for f in extra)
        meta: Mapping[str, Any] = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        lean["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        if wants_status and "status" in body:
            lean["status"] = body["status"]
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=extra)


def _first_key(field: Any) -> str:
    """The top-level key of a kopf field spec: ``"status.x"``, ``("status", "x")``."""
    if isinstance(field, str):
        return field.split(".", 1)[0]
    return str(field[0]) if isinstance(field, tuple | list) and field else ""


@kopf.on.startup()
async def operator_startup(
    settings: kopf.OperatorSettings, memo: Any, logger: KopfLogger, **_: Any
) -> None:
    """Configure kopf and, unless a caller (the CLI, a test) provided one, build the runtime."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    if "runtime" not in memo:
        memo["runtime"] = Runtime(api=KubernetesApi.from_environment(), settings=OperatorSettings())
    logger.info("inferscale operator started")


@kopf.on.login()
def operator_login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log kopf in with the very credentials of our own client.

    kopf's default login reads ``$KUBECONFIG`` through the ``kubernetes`` library, whose default
    path is fixed when that library is first imported; ``inferscale operator --kubeconfig FILE``
    sets the variable later, so kopf found no credentials (or another cluster's) while our
    client used FILE. Taking kopf's credentials from the runtime's client keeps both on the same
    cluster as the same user. A runtime without a real client (tests) falls back to kopf's own.
    """
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime) or not isinstance(runtime.api, KubernetesApi):
        return kopf.login_via_client(**kwargs)
    conn = runtime.api.connection()
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_path,
        insecure=conn.insecure,
        scheme=conn.scheme,
        token=conn.token,
        certificate_path=conn.certificate_path,
        private_key_path=conn.private_key_path,
    )


@kopf.on.cleanup()
async def operator_cleanup(memo: Any, **_: Any) -> None:
    """Cancel coalesced reconciles that have not started yet."""
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        await cancel_pending(runtime)
