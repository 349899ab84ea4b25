"""Prometheus for the local cluster: its configuration and the file_sd targets of pods.

Debian's Prometheus 2.42 has no Kubernetes service discovery, so the launcher writes one
``<targets>/<namespace>_<pod>.json`` per running pod that declares a metrics port, and
Prometheus re-reads the folder every second. A pod declares one by a container port named
``metrics`` (or ``http-metrics``), or by the usual annotations ``prometheus.io/scrape: "true"``
with ``prometheus.io/port`` (and optionally ``prometheus.io/path``). Targets carry the labels
that kubernetes_sd relabelling usually yields: ``namespace``, ``pod``, ``container``, ``node``
and the pod's own labels.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from inferscale.cluster.config import ClusterConfig

METRICS_PORT_NAMES = ("metrics", "http-metrics")
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED = {"namespace", "pod", "container", "node", "job", "instance"}


def render_config(config: ClusterConfig) -> str:
    """The prometheus.yml of the cluster."""
    interval = f"{config.scrape_interval:g}s"
    doc = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "pods",
                "scrape_timeout": f"{min(config.scrape_interval, 10.0):g}s",
                "file_sd_configs": [
                    {"files": [str(config.targets_dir / "*.json")], "refresh_interval": "1s"}
                ],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [config.prometheus_url.removeprefix("http://")]}],
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def metrics_endpoints(pod: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(container, port, path) of every metrics endpoint the pod declares."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    containers = pod.get("spec", {}).get("containers") or []
    out: list[tuple[str, int, str]] = []
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") in METRICS_PORT_NAMES:
                out.append((container["name"], int(port["containerPort"]), "/metrics"))
    if annotations.get("prometheus.io/scrape") == "true" and "prometheus.io/port" in annotations:
        port_value = int(annotations["prometheus.io/port"])
        path = annotations.get("prometheus.io/path", "/metrics")
        owner = next(
            (
                c["name"]
                for c in containers
                for p in c.get("ports") or []
                if int(p.get("containerPort", 0)) == port_value
            ),
            containers[0]["name"] if containers else "",
        )
        if all(e[1] != port_value for e in out):
            out.append((owner, port_value, path))
    return out


def target_group(pod: dict[str, Any], pod_ip: str) -> list[dict[str, Any]]:
    """The file_sd entries for one pod (empty when it declares no metrics port)."""
    meta = pod.get("metadata", {})
    pod_labels = {
        _LABEL_CHARS.sub("_", key): value
        for key, value in (meta.get("labels") or {}).items()
        if _LABEL_CHARS.sub("_", key) not in _RESERVED
    }
    groups = []
    for container, port, path in metrics_endpoints(pod):
        groups.append(
            {
                "targets": [f"{pod_ip}:{port}"],
                "labels": {
                    **pod_labels,
                    "namespace": meta.get("namespace", ""),
                    "pod": meta.get("name", ""),
                    "container": container,
                    "node": pod.get("spec", {}).get("nodeName", ""),
                    "__metrics_path__": path,
                },
            }
        )
    return groups


def target_file(config: ClusterConfig, namespace: str, name: str) -> Path:
    """Where a pod's targets are written."""
    return config.targets_dir / f"{namespace}_{name}.json"


def write_targets(config: ClusterConfig, pod: dict[str, Any], pod_ip: str) -> None:
    """Write (atomically) or remove a pod's target file."""
    meta = pod["metadata"]
    path = target_file(config, meta["namespace"], meta["name"])
    groups = target_group(pod, pod_ip)
    if not groups:
        remove_targets(config, meta["namespace"], meta["name"])
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1))
    os.replace(tmp, path)


def remove_targets(config: ClusterConfig, namespace: str, name: str) -> None:
    """Forget a pod's targets."""
    target_file(config, namespace, name).unlink(missing_ok=True)
