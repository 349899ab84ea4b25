"""Pure pieces of running a pod the kubelet's way: argv, environment, probes' targets, status.

No I/O here: the launcher looks objects up and hands them in, so these rules are unit-tested
without a cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTP]i|[numkMGTP]?)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
}


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, others stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(one, text)


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``) as a number.

    Raises:
        ValueError: not a quantity.
    """
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    if suffix not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return Decimal(number) * _SUFFIX[suffix]


def container_argv(
    entrypoint: list[str], container: dict[str, Any], env: dict[str, str]
) -> list[str]:
    """The container runtime's rule: ``command`` replaces the entrypoint, ``args`` follow it."""
    command = container.get("command")
    args = container.get("args") or []
    base = list(command) if command else list(entrypoint)
    return [expand(a, env) for a in base] + [expand(a, env) for a in args]


def field_ref(pod: dict[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``.

    Raises:
        ValueError: a field path the downward API does not offer.
    """
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ValueError(f"unsupported fieldRef {path}")


def resource_ref(
    container: dict[str, Any], ref: dict[str, Any], node_allocatable: dict[str, str]
) -> str:
    """The value of a ``resourceFieldRef``: limits default to the node's allocatable, as kubelet's.

    The value is rounded up to a whole number of divisors, as the kubelet does.
    """
    resource = ref["resource"]
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = node_allocatable.get(name)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe checks: an HTTP GET, a TCP connect, or something the launcher cannot run."""

    kind: str  # "http", "tcp" or "unsupported"
    port: int = 0
    path: str = "/"
    scheme: str = "http"
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports.

    Raises:
        ValueError: a port name the container does not declare.
    """
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container {container.get('name')} has no port named {port}")


def probe_target(container: dict[str, Any], probe: dict[str, Any]) -> ProbeTarget:
    """The target of a readiness, liveness or startup probe."""
    if "httpGet" in probe:
        http = probe["httpGet"]
        return ProbeTarget(
            "http",
            resolve_port(container, http["port"]),
            http.get("path") or "/",
            str(http.get("scheme") or "HTTP").lower(),
            http.get("host") or "",
            tuple((h["name"], h["value"]) for h in http.get("httpHeaders") or []),
        )
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"]
        return ProbeTarget("tcp", resolve_port(container, tcp["port"]), host=tcp.get("host") or "")
    return ProbeTarget("unsupported")


@dataclass(frozen=True)
class PreStop:
    """A container's ``lifecycle.preStop`` hook: what runs between deletion and SIGTERM."""

    kind: str
    """``sleep``, ``exec``, ``http``, or ``invalid`` (a hook the launcher reports and skips)."""
    seconds: float = 0.0
    command: tuple[str, ...] = ()
    target: ProbeTarget | None = None
    problem: str = ""


def pre_stop_hook(container: dict[str, Any]) -> PreStop | None:
    """The container's preStop hook, or None when it has none.

    Kubernetes runs the hook inside the pod's termination grace period and sends SIGTERM only
    once it returns (or once the grace period runs out); the launcher does the same with the
    hook read here.
    """
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not isinstance(hook, dict) or not hook:
        return None
    if "sleep" in hook:
        seconds = (hook.get("sleep") or {}).get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return PreStop("invalid", problem=f"sleep.seconds must be >= 0, not {seconds!r}")
        return PreStop("sleep", seconds=float(seconds))
    if "exec" in hook:
        command = (hook.get("exec") or {}).get("command") or []
        if not command or not all(isinstance(part, str) for part in command):
            return PreStop("invalid", problem="exec.command must be a non-empty list of strings")
        return PreStop("exec", command=tuple(command))
    if "httpGet" in hook:
        try:
            return PreStop("http", target=probe_target(container, hook))
        except (KeyError, TypeError, ValueError) as error:
            return PreStop("invalid", problem=f"httpGet: {error}")
    return PreStop("invalid", problem=f"unsupported handler {sorted(hook)}")


def sigterm_grace(grace: float, hook_seconds: float) -> float:
    """How long SIGTERM may take once the preStop hook ran for ``hook_seconds``.

    The hook counts against the grace period; a hook that used all of it still leaves the
    two seconds the kubelet grants (its one-time extension) before SIGKILL.
    """
    return max(grace - hook_seconds, 2.0)


@dataclass(frozen=True)
class ProbeTiming:
    """A probe's timing fields with the API's defaults."""

    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: dict[str, Any]) -> ProbeTiming:
        """Read the fields, defaulting as the API server does."""
        return cls(
            float(probe.get("initialDelaySeconds") or 0),
            float(probe.get("periodSeconds") or 10),
            float(probe.get("timeoutSeconds") or 1),
            int(probe.get("successThreshold") or 1),
            int(probe.get("failureThreshold") or 3),
        )


def pod_phase(restart_policy: str, states: list[dict[str, Any]], all_started: bool) -> str:
    """The pod phase from its containers' states, by the kubelet's rules (no init containers).

    Args:
        restart_policy: ``Always``, ``OnFailure`` or ``Never``.
        states: each container's current ``state`` (one key: waiting, running or terminated).
        all_started: every container has run at least once.
    """
    if not all_started:
        return "Pending"
    terminated = [s["terminated"] for s in states if "terminated" in s]
    if len(terminated) == len(states) and states:
        if restart_policy == "Always":
            return "Running"
        if all(t.get("exitCode") == 0 for t in terminated):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
    return "Running"


def restart_wanted(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with ``exit_code`` is started again."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def backoff(restarts: int, initial: float, maximum: float) -> float:
    """Seconds to wait before restart number ``restarts + 1`` (doubling, capped)."""
    return float(min(maximum, initial * 2 ** max(0, restarts)))


def exit_reason(exit_code: int) -> str:
    """The ``terminated.reason`` a kubelet reports for an exit code."""
    return "Completed" if exit_code == 0 else "Error"
