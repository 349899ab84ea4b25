"""1,000 InferenceModels on KWOK-only nodes: time until all are Ready, operator peak RSS and CPU.

Brings up a local cluster of its own (a distinct name, port base, pod range and state directory,
so it runs beside a developer's cluster and the e2e suite), applies the CRDs, starts the operator
as a local process with the admin kubeconfig (``--no-leader-election``), creates the models
(engine ``sim``, no GPU, one replica, pinned to the KWOK nodes, whose pods are Ready at once and
run nothing), and polls until every model reports ``Ready=True``. The operator's memory and CPU
come from ``/proc/<pid>``: peak RSS is ``VmHWM``; CPU seconds are ``utime + stime``. Prints
progress to stderr and one JSON line of results to stdout, then stops everything.

    .venv/bin/python bench/operator_scale/run_bench.py            # 1,000 models
    .venv/bin/python bench/operator_scale/run_bench.py --models 200 --keep   # leave it running
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.cluster.config import ClusterConfig, NodePool
from inferscale.cluster.control import down, up
from inferscale.reconcile.deployment import build_deployment
from inferscale.reconcile.pdb import build_pdb
from inferscale.reconcile.service import build_service
from inferscale.reconcile.settings import ReconcileSettings

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GROUP, VERSION, PLURAL = "inferscale.io", "v1alpha1", "inferencemodels"
NAMESPACE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    per_node = -(-args.models // args.kwok_nodes) + 10
    return ClusterConfig(
        state_dir=Path(args.dir).absolute(),
        name="opbench",
        port_base=args.port_base,
        pod_cidr="10.248.0.0/16",
        kwok_pod_cidr="10.249.0.0/16",
        # One ClusterIP per model: a /24 would run out at 254 Services.
        service_cidr="10.97.0.0/20",
        pools=[
            NodePool(name="gpu", count=1, gpus=0),
            NodePool(
                name="kwok",
                count=args.kwok_nodes,
                gpus=8,
                cpu="1000",
                memory="4000Gi",
                pods=per_node,
                runner="kwok",
            ),
        ],
    )


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": {
            "model": "hf://meta-llama/Llama-3.1-8B-Instruct",
            "engine": "sim",
            "resources": {"gpus": 0, "cpu": "10m", "memory": "16Mi"},
            "replicas": 1,
            "autoscaling": {"enabled": False},
            "scheduling": {"nodeSelector": {"inferscale.io/pod-runner": "kwok"}},
        },
    }


class ProcSampler:
    """Peak RSS and CPU seconds of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kib = 0
        self.cpu_seconds = 0.0

    def sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        fields = stat.rsplit(")", 1)[1].split()
        self.cpu_seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK


def ready_count(custom: client.CustomObjectsApi) -> tuple[int, int]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    ready = 0
    for item in items:
        for cond in (item.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready += 1
    return ready, len(items)


def children(name: str) -> list[dict[str, Any]]:
    """What the operator would create for ``model(name)``, built by its own pure builders."""
    spec = InferenceModelSpec.model_validate(model(name)["spec"])
    return [
        build_deployment(name, NAMESPACE, spec, ReconcileSettings(), replicas=1),
        build_service(name, NAMESPACE, spec),
        build_pdb(name, NAMESPACE, spec),
    ]


def ready_deployments(api: client.ApiClient) -> tuple[int, int]:
    """Deployments with their one replica ready, of all (from the API server's watch cache)."""
    items = client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE, resource_version="0").items
    return sum(1 for d in items if (d.status.ready_replicas or 0) >= 1), len(items)


def profile_env(args: argparse.Namespace, config: ClusterConfig) -> dict[str, str]:
    """With ``--profile-memory``: trace the operator's allocations (see memprofile/)."""
    if not args.profile_memory:
        return {}
    out = config.state_dir.parent / f"{config.state_dir.name}-memprofile.txt"
    log(f"tracing the operator's memory into {out} (slower, and RSS is not the target's)")
    path = os.pathsep.join(filter(None, [str(HERE / "memprofile"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "INFERSCALE_MEMPROFILE": str(out)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = cluster_config(args)
    log(f"starting cluster {config.name} in {config.state_dir} ({args.kwok_nodes} KWOK nodes)")
    started = up(config)
    kubeconfig = str(started.config.kubeconfig)
    kubectl = str(Path(started.config.assets_dir) / "kubectl")
    subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", str(REPO / "crds")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
        ],
        check=True,
        capture_output=True,
    )
    api = kube_config.new_client_from_config(config_file=kubeconfig)
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = args.writers
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    log_path = config.state_dir.parent / f"{config.state_dir.name}-operator.log"
    operator_log = log_path.open("w")
    # The baseline runs no operator: `sleep` stands in so that the sampling code stays one path.
    command = (
        ["sleep", str(args.timeout + 60)]
        if args.baseline
        else [
            sys.executable,
            "-m",
            "inferscale",
            "operator",
            "--no-leader-election",
            "--liveness",
            "",
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            kubeconfig,
        ]
    )
    operator = subprocess.Popen(
        command,
        stdout=operator_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "KUBECONFIG": kubeconfig, **profile_env(args, config)},
    )
    sampler = ProcSampler(operator.pid)
    apps, policy = client.AppsV1Api(api), client.PolicyV1Api(api)
    try:
        time.sleep(3)  # let kopf start its watches
        sampler.sample()
        idle_rss = sampler.peak_rss_kib
        log(f"operator pid {operator.pid} up, RSS {idle_rss / 1024:.0f} MiB; creating models")
        cpu_before = sampler.cpu_seconds
        began = time.monotonic()

        def create_children(i: int) -> None:
            for obj in children(f"m-{i:04d}"):
                create_one = {
                    "Deployment": apps.create_namespaced_deployment,
                    "Service": core.create_namespaced_service,
                    "PodDisruptionBudget": policy.create_namespaced_pod_disruption_budget,
                }[obj["kind"]]
                create_one(NAMESPACE, obj)

        def create(i: int) -> None:
            for _ in range(5):
                try:
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, model(f"m-{i:04d}")
                    )
                    return
                except ApiException as error:
                    if error.status == 409:
                        return
                    time.sleep(0.5)

        with ThreadPoolExecutor(args.writers) as pool:
            list(pool.map(create_children if args.baseline else create, range(args.models)))
        created_in = time.monotonic() - began
        log(f"{args.models} models created in {created_in:.1f} s")
        all_ready_in: float | None = None
        deadline = began + args.timeout
        next_report = 0.0
        ready = 0
        while time.monotonic() < deadline:
            sampler.sample()
            ready, total = ready_deployments(api) if args.baseline else ready_count(custom)
            elapsed = time.monotonic() - began
            if elapsed >= next_report:
                # Whether the models wait for their pods or for the operator to notice them.
                pods_ready = (
                    "" if args.baseline else f" (Deployments ready {ready_deployments(api)[0]})"
                )
                log(
                    f"t={elapsed:5.1f}s ready {ready}/{total}{pods_ready}, operator RSS peak "
                    f"{sampler.peak_rss_kib / 1024:.0f} MiB, CPU {sampler.cpu_seconds:.1f} s"
                )
                next_report = elapsed + 5
            if ready == args.models:
                all_ready_in = elapsed
                break
            if operator.poll() is not None:
                log(f"the operator exited with {operator.returncode}; see {log_path}")
                break
            time.sleep(0.5)
        sampler.sample()
        result = {
            "mode": "baseline: children created directly, no operator"
            if args.baseline
            else "operator",
            "models": args.models,
            "kwok_nodes": args.kwok_nodes,
            "created_in_s": round(created_in, 1),
            "all_ready_in_s": None if all_ready_in is None else round(all_ready_in, 1),
            "ready_at_end": ready,
            "operator_peak_rss_mib": round(sampler.peak_rss_kib / 1024, 1),
            "operator_idle_rss_mib": round(idle_rss / 1024, 1),
            "operator_cpu_s": round(sampler.cpu_seconds - cpu_before, 1),
            "cpus": os.cpu_count(),
        }
        if args.settle:
            log(f"watching the operator idle for {args.settle} s")
            cpu_ready = sampler.cpu_seconds
            time.sleep(args.settle)
            sampler.sample()
            result["operator_cpu_s_idle_after"] = round(sampler.cpu_seconds - cpu_ready, 1)
            result["operator_peak_rss_mib"] = round(sampler.peak_rss_kib / 1024, 1)
        return result
    finally:
        if operator.poll() is None:
            os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait()
        operator_log.close()
        api.close()
        if not args.keep:
            log("stopping the cluster")
            down(config.state_dir, quiet=True)


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--kwok-nodes", type=int, default=4)
    parser.add_argument("--port-base", type=int, default=20443)
    parser.add_argument("--dir", default=str(REPO / ".cluster" / "bench-operator"))
    parser.add_argument("--writers", type=int, default=8, help="threads creating models")
    parser.add_argument("--timeout", type=float, default=600, help="give up after (s)")
    parser.add_argument("--settle", type=float, default=0, help="then watch idle CPU for (s)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="no operator: create each model's Deployment, Service and PDB directly and time "
        "until every Deployment is ready (what the cluster alone needs)",
    )
    parser.add_argument(
        "--profile-memory",
        action="store_true",
        help="trace the operator's allocations into <dir>-memprofile.txt (slow)",
    )
    args = parser.parse_args()
    # SIGTERM (`timeout`, `kill`) must run the clean-up as Ctrl-C does, or the operator (in its
    # own session) outlives the bench and keeps loading the next run's cluster.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    down(Path(args.dir).absolute(), quiet=True)  # a leftover of a killed run
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
