"""KWOK's part of the cluster: its stage configuration and the simulated Node objects.

Ownership (DESIGN.md section 5, one owner per pod): KWOK keeps every simulated node alive
(initial status, heartbeats, the node lease) but plays its pod stages only for pods on
KWOK-only nodes. Pods on launcher nodes are excluded by a selector on ``.spec.nodeName``, so
the launcher alone writes their status and completes their deletion.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from inferscale.cluster.config import (
    KWOK_NODE_ANNOTATION,
    POOL_LABEL,
    RUNNER_LABEL,
    ClusterConfig,
    NodePool,
)

#: KWOK renews each node's lease; the node controller marks a node NotReady after 50 s without.
NODE_LEASE_SECONDS = 40


def stages(config: ClusterConfig) -> list[dict[str, Any]]:
    """KWOK's upstream stages with launcher nodes' pods excluded from every Pod stage."""
    text = resources.files("inferscale.cluster").joinpath("kwok-stages.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    launcher_nodes = config.launcher_node_names()
    for doc in docs:
        if doc["spec"]["resourceRef"]["kind"] == "Pod" and launcher_nodes:
            doc["spec"]["selector"]["matchExpressions"].append(
                {"key": ".spec.nodeName", "operator": "NotIn", "values": launcher_nodes}
            )
    return docs


def render_stages(config: ClusterConfig) -> str:
    """The ``--config`` file handed to ``kwok``."""
    return yaml.safe_dump_all(stages(config), sort_keys=False)


def node_object(
    config: ClusterConfig, pool: NodePool, name: str, pod_cidr: str, node_ip: str
) -> dict[str, Any]:
    """One simulated node: capacity with GPUs, labels, taints, its podCIDR and address.

    Nodes may be created with their status (the API server keeps it on create), which is how
    the capacity that the scheduler counts gets there before KWOK's first heartbeat.
    """
    resources_: dict[str, str] = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods)}
    if pool.gpus:
        resources_[pool.gpu_resource] = str(pool.gpus)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
        RUNNER_LABEL: pool.runner,
        **pool.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": list(pool.taints)},
        "status": {
            "capacity": resources_,
            "allocatable": resources_,
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def node_objects(config: ClusterConfig, launcher_node_ip: str) -> list[dict[str, Any]]:
    """Every node of every pool; launcher nodes take podCIDRs from the pod range in order.

    All nodes share one address (the host's side of the pod network): it is the hostIP that
    pods see and where the API server listens.
    """
    out = []
    launcher_index = kwok_index = 0
    for pool in config.pools:
        for name in pool.node_names():
            if pool.runner == "launcher":
                cidr = config.node_pod_cidr(launcher_index)
                launcher_index += 1
            else:
                cidr = config.kwok_node_pod_cidr(kwok_index)
                kwok_index += 1
            out.append(node_object(config, pool, name, cidr, launcher_node_ip))
    return out
