"""The fault suite's cluster scenarios: faults of Kubernetes itself, every request counted.

The process scenarios (``scenarios.py``) break routers and engines run by hand. These break
what only a cluster has, on the local control plane of DESIGN.md section 5: the operator
(two replicas, leader election), the API server and etcd, Prometheus, and the rollouts the
operator drives. The routers and sims are pods of the cluster (config/router, InferenceModels),
the load goes to the routers' pod IPs, and every request lands in a :class:`~.ledger.Row`
with the same outcomes as the process scenarios, so both tables read alike.

Each scenario gets a fresh model in its own namespace from :class:`ClusterFaults`, starts
the load, injects its fault at a third of the load's duration, and then checks what the
operator must still do afterwards (scale, reconcile) besides the requests' bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import Cluster, wait_for
from e2e.faults.ledger import Row
from e2e.faults.load import Entry, Load
from e2e.faults.scenarios import Scenario, Size, no_failures
from e2e.operator_support import CHILD_KINDS, Models, sim_model
from e2e.router_support import ROUTER_PORT, Routers, wait_routable
from inferscale.cluster.control import restart

#: A cluster fault's load: long enough for a rollout (each old pod's 5 s preStop pause and
#: the new pod's start) to happen inside it.
CLUSTER_SHORT = Size(rate=6, duration=24)
CLUSTER_LONG = Size(rate=10, duration=180)
"""Three minutes: Prometheus stays down for two of them, as the issue's scenario asks."""


@dataclass
class ClusterFaults:
    """What the cluster scenarios share: the cluster, the routers, the operator, a namespace."""

    cluster: Cluster
    routers: Routers
    models: Models

    def serve(self, body: dict[str, Any], replicas: int) -> str:
        """Create the model ``body``; once ``replicas`` pods are routable, its served name."""
        self.models.create(body)
        name, served = body["metadata"]["name"], body["spec"]["servedName"]
        wait_routable(self.routers, self.models, name, served, replicas)
        return str(served)

    def load(self, served: str, size: Size) -> Load:
        """The open-loop load over every Ready router's pod IP."""
        entries = [
            Entry(f"http://{pod.status.pod_ip}:{ROUTER_PORT}", f"router-{i}")
            for i, pod in enumerate(self.routers.ready_pods())
        ]
        return Load(entries, size.shape(served))

    def run(
        self,
        name: str,
        replicas: int,
        size: Size,
        fault: Callable[[], list[str]],
        body: dict[str, Any] | None = None,
    ) -> Row:
        """Serve a model (a sim of ``replicas`` unless ``body``), load it, call ``fault`` at a
        third of the load; the row's notes are the fault's checks."""
        served = self.serve(body or sim_model(name, replicas=replicas), replicas)
        load = self.load(served, size)
        with load.running():
            load.wait_until(size.fault_at)
            fault_at = load.now()
            notes = fault()
        return Row(name, load.records, fault_at, notes=notes)

    def replicas_ready(self, name: str, want: int, timeout: float) -> bool:
        return _waits(lambda: len(self.models.ready_pods(name)) == want, timeout)

    def children_once(self, name: str) -> list[str]:
        """A problem per child kind the model has not exactly one of (a duplicate or orphan)."""
        counts = {kind: len(items) for kind, items in self.models.children(name).items()}
        return [
            f"{kind}: {counts.get(kind, 0)} objects"
            for kind in CHILD_KINDS
            if counts.get(kind) != 1
        ]


def failed_checks(row: Row) -> list[str]:
    """The fault's own checks that failed (noted as ``FAILED: ...`` by the scenario)."""
    return [n for n in row.notes if n.startswith("FAILED")]


def zero_failures_and_checks(row: Row) -> list[str]:
    return no_failures(row) + failed_checks(row)


def _check(ok: bool, what: str) -> str:
    return what if ok else f"FAILED: {what}"


def scale_down(ctx: ClusterFaults, size: Size) -> Row:
    name = "scale-down"

    def fault() -> list[str]:
        ctx.models.patch_spec(name, {"replicas": 2})
        return [_check(ctx.replicas_ready(name, 2, 30), "3 -> 2 replicas, the third drained")]

    return ctx.run(name, 3, size, fault)


def rolling_update(ctx: ClusterFaults, size: Size) -> Row:
    name = "rolling"

    def fault() -> list[str]:
        before = {p.metadata.name for p in ctx.models.ready_pods(name)}
        ctx.models.patch_spec(name, {"args": ["--startup-delay-seconds", "1", "--seed", "7"]})

        def replaced() -> bool:
            pods = ctx.models.ready_pods(name)
            return len(pods) == 2 and before.isdisjoint(p.metadata.name for p in pods)

        done = _waits(replaced, 2 * size.duration / 3)
        return [_check(done, "both replicas replaced, with the new arguments, within the load")]

    return ctx.run(name, 2, size, fault)


def operator_killed(ctx: ClusterFaults, size: Size) -> Row:
    """SIGKILL the leading operator, then ask for a scale-up: the other replica must do it."""
    name = "leader-killed"
    operator = ctx.routers.operator

    def fault() -> list[str]:
        holder = operator.lease_holder()
        operator.kill_process(operator.wait_leader())
        ctx.models.patch_spec(name, {"replicas": 3})
        notes = [
            _check(
                _waits(lambda: operator.lease_holder() not in (None, holder), 60),
                "a new leader took the Lease",
            ),
            _check(ctx.replicas_ready(name, 3, 60), "the scale-up asked during the failover done"),
        ]
        problems = ctx.children_once(name)
        found = f" ({', '.join(problems)})" if problems else ""
        notes.append(_check(not problems, f"no duplicated or orphaned objects{found}"))
        return notes

    return ctx.run(name, 2, size, fault)


def control_plane_restarted(ctx: ClusterFaults, size: Size) -> Row:
    """etcd, then the API server, each down 2 s: serving goes on, the operator resumes."""
    name = "apiserver-restart"
    local = ctx.cluster.require_local()

    def fault() -> list[str]:
        began = time.monotonic()
        restart(local.state_dir, "etcd", down_seconds=2)
        restart(local.state_dir, "kube-apiserver", down_seconds=2)
        back = time.monotonic() - began
        ctx.models.patch_spec(name, {"replicas": 3})
        resumed = ctx.replicas_ready(name, 3, 90)
        return [
            f"etcd and the API server down and back in {back:.1f} s",
            _check(resumed, "the operator resumed on its own (a scale-up after it done)"),
        ]

    return ctx.run(name, 2, size, fault)


def prometheus_down(ctx: ClusterFaults, size: Size) -> Row:
    """Prometheus stopped from a third of the load to its end: the autoscaler holds, resumes."""
    name = "prometheus-down"
    local = ctx.cluster.require_local()
    down_seconds = size.duration - size.fault_at

    def fault() -> list[str]:
        before = len(ctx.models.ready_pods(name))
        outage = threading.Thread(
            target=restart, args=(local.state_dir, "prometheus", down_seconds), daemon=True
        )
        outage.start()
        lowest, reasons = before, set()
        while outage.is_alive():
            lowest = min(lowest, len(ctx.models.ready_pods(name)))
            reasons.add(_scaling_reason(ctx.models, name))
            time.sleep(0.5)
        resumed = _waits(lambda: _scaling_reason(ctx.models, name) == "ValidSignals", 60)
        return [
            _check(lowest >= before, f"held: {before} Ready replicas, never fewer ({lowest})"),
            _check("SignalsUnavailable" in reasons, "ScalingActive=False SignalsUnavailable seen"),
            _check(resumed, "ScalingActive=True again once Prometheus was back"),
        ]

    return ctx.run(name, 1, size, fault, body=_autoscaled(name))


def _autoscaled(name: str) -> dict[str, Any]:
    """A sim scaled by inferscale between 0 and 4 (starting at 1), quick to decide.

    Scale to zero is on (30 s without load) so that an autoscaler reading "no signal" as "no
    load" would take the last replica away while Prometheus is down: the hold is what keeps it.
    """
    return sim_model(
        name,
        replicas=1,
        minReplicas=0,
        maxReplicas=4,
        autoscaling={
            "enabled": True,
            "targetInFlightPerReplica": 4,
            "stableWindowSeconds": 10,
            "panicWindowSeconds": 4,
            "scaleDownDelaySeconds": 5,
            "scaleToZeroDelaySeconds": 30,
        },
    )


def _scaling_reason(models: Models, name: str) -> str:
    condition = models.condition(name, "ScalingActive") or {}
    return str(condition.get("reason", ""))


def _waits(check: Callable[[], object], timeout: float) -> bool:
    """``wait_for`` as a yes or no: a fault's check is noted in its row, not raised mid-load."""
    try:
        wait_for(check, timeout, "the check")
    except pytest.fail.Exception:
        return False
    return True


def cluster_scenarios(ctx: ClusterFaults) -> list[Scenario]:
    """The cluster scenarios, bound to ``ctx`` so they run like the process ones."""

    def bind(run: Callable[[ClusterFaults, Size], Row]) -> Callable[[Size, Path], Row]:
        return lambda size, _dir: run(ctx, size)

    everything = "no failure of any kind, nothing lost"
    return [
        Scenario(
            "scale-down (cluster)",
            "InferenceModel 3 -> 2 replicas under load, long streams on the removed pod",
            f"{everything}; the removed pod drains (preStop) before SIGTERM",
            bind(scale_down),
            zero_failures_and_checks,
        ),
        Scenario(
            "rolling update",
            "new engine arguments on a 2-replica InferenceModel under load",
            everything,
            bind(rolling_update),
            zero_failures_and_checks,
        ),
        Scenario(
            "operator leader killed",
            "SIGKILL the leading one of 2 operator replicas, then a scale-up is asked",
            f"{everything}; the standby leads and scales; no duplicated or orphaned objects",
            bind(operator_killed),
            zero_failures_and_checks,
        ),
        Scenario(
            "API server and etcd restarted",
            "etcd, then kube-apiserver, each stopped for 2 s and started again",
            f"{everything}; the operator resumes on its own",
            bind(control_plane_restarted),
            zero_failures_and_checks,
        ),
        Scenario(
            "Prometheus down",
            "Prometheus stopped for the last two thirds of the load, an autoscaled model (0 to 4)",
            f"{everything}; the autoscaler holds (never fewer replicas), says why, and resumes",
            bind(prometheus_down),
            zero_failures_and_checks,
        ),
    ]
