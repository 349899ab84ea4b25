"""What the operator really asked the API server, read from the local cluster's audit log.

The local cluster's API server logs every request of a ServiceAccount outside kube-system at the
Metadata level (``inferscale.cluster.control.AUDIT_POLICY``: who, which verb on which object,
the answer's code; never a body). The operator runs in the e2e tests under its own
ServiceAccount (``inferscale-operator`` from config/rbac, ``RELEASE-inferscale-operator`` from
the chart), so its requests in that log are exactly the calls its roles must allow.

At the end of a session, every such request must be one of the calls that
``e2e/test_rbac_least_privilege.py`` lists (``CALLS``): that list is then the whole of what the
operator needs, and the test's proof that each rule of the roles is needed (removing it denies
a listed call) rests on observed calls, not on reading the code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from inferscale.cluster.control import AUDIT_LOG

OPERATOR_USER = re.compile(r"^system:serviceaccount:([^:]+):(?:.+-)?inferscale-operator$")
"""The operator's ServiceAccount, from config/rbac or from the chart (group 1: its namespace)."""


@dataclass(frozen=True)
class Request:
    """One request of the operator, as the audit log has it (namespace: where it went)."""

    verb: str
    group: str
    resource: str
    """With its subresource, as RBAC names it: ``inferencemodels/status``."""
    namespace: str | None
    home: str
    """The operator's own namespace (its ServiceAccount's)."""
    name: str | None
    code: int
    denied: bool = False
    """Refused by authorization (RBAC), not by admission (a terminating namespace's 403)."""

    def label(self) -> str:
        where = "cluster" if self.namespace is None else self.namespace
        group = self.group or "core"
        return f"{self.verb} {self.resource}.{group} in {where}: {self.code}"


def audit_files(log_dir: Path) -> list[Path]:
    """The audit log and its rotated backups, oldest first."""
    current = log_dir / AUDIT_LOG
    backups = sorted(log_dir.glob(f"{current.stem}-*{current.suffix}"))
    return [*backups, *([current] if current.exists() else [])]


def _denied(event: dict[str, Any]) -> bool:
    """The authorizer's decision, or (an apply that creates is authorized for create only
    after the patch was allowed) a 403 that says what the user cannot do."""
    annotations = event.get("annotations") or {}
    if annotations.get("authorization.k8s.io/decision") == "forbid":
        return True
    status = event.get("responseStatus") or {}
    return status.get("code") == 403 and " cannot " in str(status.get("message", ""))


def _received(event: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event["requestReceivedTimestamp"]))
    except (KeyError, ValueError):
        return None


def operator_requests(lines: Iterable[str], since: datetime | None = None) -> Iterator[Request]:
    """The operator's resource requests among audit events (JSON lines), from ``since`` on
    (an aware time; the log outlives a session's cluster)."""
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by rotation
        match = OPERATOR_USER.match(str((event.get("user") or {}).get("username", "")))
        ref = event.get("objectRef")
        if match is None or not ref or not ref.get("resource"):
            continue  # another user, or discovery (/apis, /version): not RBAC resources
        received = _received(event)
        if since is not None and received is not None and received < since:
            continue
        sub = ref.get("subresource")
        request = Request(
            verb=str(event.get("verb", "")),
            group=str(ref.get("apiGroup") or ""),
            resource=f"{ref['resource']}/{sub}" if sub else str(ref["resource"]),
            namespace=ref.get("namespace") or None,
            home=match.group(1),
            name=ref.get("name") or None,
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            denied=_denied(event),
        )
        yield request
        if request.verb == "patch" and request.code == 201:
            # A server-side apply that made the object: the server authorized a create too.
            yield replace(request, verb="create")


def read_operator_requests(log_dir: Path, since: datetime | None = None) -> list[Request]:
    """Every operator request in the audit log, from ``since`` on."""
    out: list[Request] = []
    for path in audit_files(log_dir):
        with path.open(encoding="utf-8", errors="replace") as lines:
            out.extend(operator_requests(lines, since))
    return out
