"""The local cluster's settings and the layout of its state directory.

A ``ClusterConfig`` is decided once by ``inferscale cluster up`` (or the e2e fixture), written to
``<state>/cluster.json``, and read back by every later command and by the launcher process, so
``down``, ``status`` and ``logs`` need no flags beyond the state directory.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

NetworkMode = Literal["auto", "netns", "loopback"]

#: Node annotation that hands a node to KWOK (heartbeats, lease, and, outside launcher
#: pools, its pods' simulated status).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Node label naming the pool a node belongs to.
POOL_LABEL = "inferscale.io/node-pool"
#: Node label saying who runs the pods of a node: ``launcher`` (real processes), ``kwok`` or
#: ``containerd`` (the container node's kubelet).
RUNNER_LABEL = "inferscale.io/pod-runner"
#: ``1`` turns the container node on (``cluster up``, the e2e cluster, ``make dev``).
CONTAINER_NODE_ENV = "INFERSCALE_CONTAINER_NODE"


@dataclass(frozen=True)
class NodePool:
    """A group of identical simulated nodes, named ``<name>-0``, ``<name>-1``, ...

    ``runner="launcher"`` nodes have their pods run as local processes by the launcher;
    ``runner="kwok"`` nodes only pretend (KWOK marks their pods Running and Ready), which is
    what scale tests with hundreds of pods want.
    """

    name: str
    count: int = 2
    gpus: int = 4
    cpu: str = "16"
    memory: str = "64Gi"
    pods: int = 110
    gpu_resource: str = "nvidia.com/gpu"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    runner: Literal["launcher", "kwok"] = "launcher"

    def node_names(self) -> list[str]:
        """The names of this pool's nodes."""
        return [f"{self.name}-{i}" for i in range(self.count)]


def default_pools() -> list[NodePool]:
    """Two launcher nodes with 4 GPUs each: a small GPU pool whose pods really run."""
    return [
        NodePool(
            name="gpu",
            count=2,
            gpus=4,
            labels={"nvidia.com/gpu.product": "Simulated-GPU-80GB", "nvidia.com/gpu.count": "4"},
        )
    ]


@dataclass(frozen=True)
class ClusterConfig:
    """Everything that makes one local cluster distinct from another on the same machine.

    Two clusters (a developer's ``make cluster-up`` and an e2e run) can coexist when their
    ``name``, ``port_base`` and ``pod_cidr`` differ.
    """

    state_dir: Path
    name: str = "dev"
    port_base: int = 16443
    #: The pod range: the bridge takes its first address; node N's podCIDR is the (N+1)th /24.
    #: It must exist only on this machine.
    pod_cidr: str = "10.244.0.0/16"
    #: Addresses that KWOK-only pods get; they are never routed anywhere.
    kwok_pod_cidr: str = "10.245.0.0/16"
    service_cidr: str = "10.96.0.0/24"
    network: NetworkMode = "auto"
    pools: list[NodePool] = field(default_factory=default_pools)
    #: Prometheus scrape interval, seconds.
    scrape_interval: float = 15.0
    #: First restart delay after a container exits; doubles up to ``max_backoff`` (kubelet: 10 s
    #: and 300 s).
    initial_backoff: float = 10.0
    max_backoff: float = 300.0
    #: An extra image map (YAML, the format of images.yaml) overlaid on the built-in one.
    image_map: str = ""
    #: Add the container node (``cluster/containers.py``): a real kubelet whose pods run in
    #: containerd with runc, from the images ``make images`` builds. Needs netns mode and root.
    container_node: bool = False
    #: Where the binaries live (kube, kwok, kubectl, prometheus); filled in by ``up``.
    assets_dir: str = ""

    # ----- ports ---------------------------------------------------------------------------
    @property
    def apiserver_port(self) -> int:
        """The API server's secure port."""
        return self.port_base

    @property
    def etcd_port(self) -> int:
        """The etcd client port (plain HTTP on loopback)."""
        return self.port_base + 1

    @property
    def etcd_peer_port(self) -> int:
        """The etcd peer port (loopback; a one-member cluster)."""
        return self.port_base + 2

    @property
    def controller_manager_port(self) -> int:
        """kube-controller-manager's health port."""
        return self.port_base + 3

    @property
    def scheduler_port(self) -> int:
        """kube-scheduler's health port."""
        return self.port_base + 4

    @property
    def kwok_port(self) -> int:
        """KWOK's health and metrics port."""
        return self.port_base + 5

    @property
    def launcher_port(self) -> int:
        """The launcher's health port."""
        return self.port_base + 6

    @property
    def prometheus_port(self) -> int:
        """Prometheus's web and API port."""
        return self.port_base + 7

    # ----- addresses -----------------------------------------------------------------------
    @property
    def gateway_ip(self) -> str:
        """The bridge's address: the first address of the pod range (netns mode)."""
        return str(ipaddress.ip_network(self.pod_cidr)[1])

    @property
    def prometheus_url(self) -> str:
        """Prometheus' base URL: on the bridge in netns mode, else on loopback.

        On the bridge, pods (the operator's autoscaler) reach it as well as this machine does.
        """
        host = self.gateway_ip if self.network == "netns" else "127.0.0.1"
        return f"http://{host}:{self.prometheus_port}"

    def node_pod_cidr(self, index: int) -> str:
        """The podCIDR of the index-th launcher node: the (index+1)th /24 of the pod range."""
        net = ipaddress.ip_network(self.pod_cidr)
        subnets = net.subnets(new_prefix=24)
        for _ in range(index + 1):
            next(subnets)
        return str(next(subnets))

    def kwok_node_pod_cidr(self, index: int) -> str:
        """The podCIDR of the index-th KWOK-only node."""
        subnets = ipaddress.ip_network(self.kwok_pod_cidr).subnets(new_prefix=24)
        for _ in range(index):
            next(subnets)
        return str(next(subnets))

    @property
    def bridge_name(self) -> str:
        """The Linux bridge of the pod network (at most 15 characters)."""
        return f"isbr-{self.name}"[:15]

    @property
    def netns_prefix(self) -> str:
        """Prefix of every network namespace this cluster creates."""
        return f"is-{self.name}-"

    # ----- files ---------------------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        """CA, serving and client certificates, service-account keys."""
        return self.state_dir / "pki"

    @property
    def log_dir(self) -> Path:
        """One log file per component."""
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        """Per-pod state of the launcher: logs, mounted files, pids."""
        return self.state_dir / "pods"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def targets_dir(self) -> Path:
        """Prometheus file_sd target files, one per pod, kept by the launcher."""
        return self.state_dir / "prometheus" / "targets"

    def launcher_node_names(self) -> list[str]:
        """Every node whose pods the launcher runs."""
        return [n for p in self.pools if p.runner == "launcher" for n in p.node_names()]

    # ----- persistence ---------------------------------------------------------------------
    def to_json(self) -> str:
        """The config as JSON (what ``cluster.json`` holds)."""
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Rebuild a config from ``to_json``'s output."""
        data = dict(data)
        data["state_dir"] = Path(data["state_dir"])
        data["pools"] = [NodePool(**p) for p in data.get("pools", [])]
        return cls(**data)

    def save(self) -> None:
        """Write ``cluster.json`` into the state directory."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "cluster.json").write_text(self.to_json())

    @classmethod
    def load(cls, state_dir: Path) -> ClusterConfig:
        """Read ``cluster.json`` from a state directory.

        Raises:
            FileNotFoundError: no cluster was ever brought up there.
        """
        return cls.from_dict(json.loads((state_dir / "cluster.json").read_text()))
