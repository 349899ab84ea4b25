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

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.client.exceptions import ApiException

from e2e.conftest import Cluster, wait_for
from e2e.faults.ledger import Row
from e2e.faults.load import Entry, Load
from e2e.faults.scenarios import Scenario, Size, no_failures, streams_cut_cleanly
from e2e.operator_support import CHILD_KINDS, Models, sim_model
from e2e.router_support import ROUTER_PORT, Routers, endpoints, wait_routable
from inferscale.cluster.control import lose_node, restart, restore_node

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


def node_lost(ctx: ClusterFaults, size: Size) -> Row:
    """One of the two launcher nodes lost under a 3-replica model: its machine gone.

    The node's pods die at once (SIGKILL, no preStop) with their addresses, its heartbeat
    stops, and its Node is deleted as a cloud's node lifecycle deletes the Node of a machine
    that is gone; the pod garbage collector then force-deletes its pods and the Deployment
    replaces them on the other node. Until then the routing table still lists the dead
    replicas (their pods still say Ready): the routers must route around them. The load goes
    through the routers of the other node (a router on the lost node is the ``router killed``
    scenario: nothing here stands in front of the routers as a Service would).
    """
    name, replicas = "node-lost", 3
    local = ctx.cluster.require_local()
    served = ctx.serve(sim_model(name, replicas=replicas), replicas)
    node, notes = _node_to_lose(ctx, name, local.launcher_node_names())
    entries = [
        Entry(f"http://{pod.status.pod_ip}:{ROUTER_PORT}", f"router-{i}")
        for i, pod in enumerate(ctx.routers.ready_pods())
        if pod.spec.node_name != node
    ]
    load = Load(entries, size.shape(served))

    def replaced() -> bool:
        pods = ctx.models.ready_pods(name)
        want = {p.metadata.name: True for p in pods}
        return (
            len(pods) == replicas
            and all(p.spec.node_name != node for p in pods)
            and all(endpoints(ctx.routers.table(p), served) == want for p in live(ctx, node))
        )

    try:
        with load.running():
            load.wait_until(size.fault_at)
            fault_at = load.now()
            killed = lose_node(local.state_dir, node)
            ctx.cluster.core.delete_node(node)
            # Timed from the loss, also while the load runs (a long load outlasts it).
            back = _Timed(replaced, REPLACED_WITHIN)
            ours = [k for k in killed if k.startswith(f"{ctx.models.namespace}/{name}-")]
            notes.append(
                f"{node} lost: {len(ours)} of {replicas} replicas and {len(killed) - len(ours)} "
                "other pods killed"
            )
        took = back.wait()
        what = f"{replicas} replicas Ready and routed again"
        late = f"FAILED: {what} within {REPLACED_WITHIN:g} s"
        notes.append(late if took is None else f"{what}, {took:.0f} s after the loss")
    finally:
        restore_node(local.state_dir, node)
    return Row(name, load.records, fault_at, notes=notes)


REPLACED_WITHIN = 150.0
"""The pod garbage collector's 20 s checks and 40 s quarantine, a new pod's start, a table push."""


class _Timed:
    """Polls ``check`` in a thread until it holds or ``timeout`` passes; ``wait`` says when."""

    def __init__(self, check: Callable[[], bool], timeout: float) -> None:
        self.began = time.monotonic()
        self.took: float | None = None
        self._thread = threading.Thread(target=self._poll, args=(check, timeout), daemon=True)
        self._thread.start()

    def _poll(self, check: Callable[[], bool], timeout: float) -> None:
        while time.monotonic() - self.began < timeout:
            with contextlib.suppress(ApiException, httpx.HTTPError):
                if check():
                    self.took = time.monotonic() - self.began
                    return
            time.sleep(0.5)

    def wait(self) -> float | None:
        """Seconds from the start until ``check`` held; None if it never did in time."""
        self._thread.join()
        return self.took


def live(ctx: ClusterFaults, lost: str) -> list[Any]:
    """The Ready routers that are not on the lost node."""
    return [p for p in ctx.routers.ready_pods() if p.spec.node_name != lost]


def _node_to_lose(ctx: ClusterFaults, name: str, nodes: list[str]) -> tuple[str, list[str]]:
    """The launcher node to lose: one with some of the model's replicas but not all, and the
    fewest routers (a router must be left to send the load through)."""
    replicas = Counter(p.spec.node_name for p in ctx.models.ready_pods(name))
    routers = Counter(p.spec.node_name for p in ctx.routers.ready_pods())
    candidates = [
        n
        for n in nodes
        if 0 < replicas[n] < sum(replicas.values()) and routers[n] < routers.total()
    ]
    if not candidates:
        pytest.fail(f"no node to lose: replicas {dict(replicas)}, routers {dict(routers)}")
    node = min(candidates, key=lambda n: (routers[n], replicas[n]))
    leader = ctx.routers.operator.lease_holder() or ""
    on_node = [p.metadata.name for p in ctx.routers.operator.pods() if p.spec.node_name == node]
    where = "the leader" if leader in on_node else "a standby" if on_node else "none"
    return node, [
        f"on {node}: {replicas[node]} of the replicas, {routers[node]} of "
        f"{routers.total()} routers, operator replicas: {where}"
    ]


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
        Scenario(
            "node lost",
            "one of 2 nodes lost under a 3-replica model: its pods killed (no preStop), its "
            "heartbeat stopped, its Node deleted",
            "no failure before a first byte (retried on a live replica); a stream cut on the "
            "lost node ends with an SSE error; nothing lost; the replicas replaced and routed",
            bind(node_lost),
            lambda row: streams_cut_cleanly(row) + failed_checks(row),
        ),
    ]
