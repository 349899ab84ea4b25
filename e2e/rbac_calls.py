"""The API calls the operator makes, each with where it is made, and which requests they cover.

``CALLS`` is what ``e2e/test_rbac_least_privilege.py`` proves the roles need, unit by unit. It is
checked against what the operator really asks: at the end of every e2e session, each request of
the operator's ServiceAccount in the API server's audit log must be one of these calls
(:func:`unlisted`; the log is read by :mod:`e2e.audit`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from e2e.audit import Request

MODELS = "default"
"""A namespace of InferenceModels (the ClusterRole's rules apply in any)."""
HOME = "inferscale-system"
"""The operator's own namespace (its Roles), as config/rbac names it."""
ADMIN_SECRET = "inferscale-router-admin"
CREDENTIALS_SECRET = "inferscale-router-credentials"


@dataclass(frozen=True)
class Call:
    """One API call the operator makes: ``resource`` may carry a subresource (``x/status``)."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    where: str
    name: str | None = None


def _ours(verb: str, plural: str, where: str) -> Call:
    return Call(verb, "inferscale.io", plural, MODELS, where)


KINDS = ("inferencemodels", "inferenceroutes", "inferenceproviders", "inferenceclients")
CALLS: tuple[Call, ...] = (
    *(
        _ours(v, p, "kopf: the handlers' and indices' list and watch")
        for p in KINDS
        for v in ("list", "watch")
    ),  # fmt: skip
    _ours("get", "inferencemodels", "controller/inference_model.py, autoscaler.py: api.get"),
    _ours("patch", "inferencemodels", "kopf: progress and finalizer annotations of a handler"),
    _ours("patch", "inferencemodels/status", "controller/inference_model.py: patch_status"),
    _ours("patch", "inferenceroutes/status", "controller/route_status.py: patch_status"),
    _ours("patch", "inferenceproviders/status", "controller/route_status.py: patch_status"),
    _ours("patch", "inferenceclients/status", "controller/credentials.py: patch_status"),
    _ours(
        "update",
        "inferencemodels/finalizers",
        "an authorization check, not a request: OwnerReferencesPermissionEnforcement (on in "
        "OpenShift) asks it for each child created with blockOwnerDeletion",
    ),
    *(
        Call(
            v,
            g,
            r,
            MODELS,
            "controller/inference_model.py: children applied, listed, pruned; kopf: their indices",
        )
        for g, r in (
            ("apps", "deployments"),
            ("", "services"),
            ("policy", "poddisruptionbudgets"),
            ("batch", "jobs"),
            ("", "persistentvolumeclaims"),
        )
        for v in ("list", "watch", "create", "patch", "delete")
    ),  # fmt: skip
    Call("get", "apps", "deployments", MODELS, "controller/inference_model.py: api.get Deployment"),
    *(Call(v, "", "pods", MODELS, "kopf: pod indices and events") for v in ("list", "watch")),
    Call("get", "", "persistentvolumeclaims", MODELS, "inference_model.py: mount existence"),
    Call("get", "", "secrets", MODELS, "controller/credentials.py: a key Secret"),
    *(Call(v, "", "secrets", MODELS, "kopf: the key Secrets' events") for v in ("list", "watch")),
    Call("create", "", "events", MODELS, "kopf and the handlers: an Event per change"),
    *(
        Call(v, "apiextensions.k8s.io", "customresourcedefinitions", None, "kopf: discovery")
        for v in ("list", "watch")
    ),  # fmt: skip
    *(Call(v, "", "namespaces", None, "kopf: namespace patterns") for v in ("list", "watch")),
    *(
        Call(v, "coordination.k8s.io", "leases", HOME, "kube/lease.py: leader election")
        for v in ("get", "create", "patch")
    ),  # fmt: skip
    *(
        Call(v, "", "configmaps", HOME, "controller/publishing.py: the routing table's store")
        for v in ("get", "create", "patch")
    ),  # fmt: skip
    Call("get", "", "secrets", HOME, "controller/publishing.py: the admin token", ADMIN_SECRET),
    Call("create", "", "secrets", HOME, "controller/publishing.py: the credentials store"),
    *(
        Call(
            v,
            "",
            "secrets",
            HOME,
            "controller/credentials.py: the credentials store",
            CREDENTIALS_SECRET,
        )
        for v in ("get", "patch")
    ),  # fmt: skip
)


def covers(call: Call, request: Request) -> bool:
    """Whether ``request`` is ``call``: same verb and resource, and a namespace of its kind
    (``HOME``: the operator's own; ``MODELS``: any, or all at once: a cluster-wide list)."""
    if (call.verb, call.group, call.resource) != (request.verb, request.group, request.resource):
        return False
    if call.namespace is None:
        return request.namespace is None
    if call.namespace == MODELS:
        return True  # the ClusterRole's rules apply in every namespace and across them all
    return request.namespace == request.home


def unlisted(requests: Iterable[Request]) -> list[str]:
    """Each distinct request that no call covers, with a count.

    A listed call is allowed by the whole roles (the offline test checks it), so RBAC refuses
    one only when the roles are gone, as in the middle of ``helm uninstall``: not a finding.
    """
    counts: dict[str, int] = {}
    for request in requests:
        if not any(covers(call, request) for call in CALLS):
            label = request.label() + (" (refused by RBAC)" if request.denied else "")
            counts[label] = counts.get(label, 0) + 1
    return [f"{label} x{n}" for label, n in sorted(counts.items())]
