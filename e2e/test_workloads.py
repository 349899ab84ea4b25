"""Pods that really run: Deployments, scaling with SIGTERM, GPU scheduling, RBAC, Prometheus."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from e2e.conftest import (
    SIMULATED_TAINT,
    Cluster,
    echo_deployment,
    echo_pod,
    get_json,
    ready_pods,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _pod_conditions(pod: Any) -> dict[str, Any]:
    return {c.type: c for c in pod.status.conditions or []}


def test_three_replicas_answer_on_their_pod_ips(cluster: Cluster, namespace: str) -> None:
    local = cluster.require_local()
    cluster.apps.create_namespaced_deployment(namespace, echo_deployment("echo", 3))
    cluster.core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    pods = wait_for(
        lambda: (
            len(ready_pods(cluster, namespace, "app=echo")) == 3
            and ready_pods(cluster, namespace, "app=echo")
        ),
        90,
        "3 Ready pods",
    )
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 3
    for pod in pods:
        # The process bound 0.0.0.0:8080 in its own network namespace and answers on the pod IP.
        answer = get_json(f"http://{pod.status.pod_ip}:8080/")
        assert answer["pod"] == pod.metadata.name
        assert answer["ip"] == pod.status.pod_ip  # the downward API's status.podIP
        assert answer["hostname"] == pod.metadata.name
        status = pod.status.container_statuses[0]
        assert status.ready and status.state.running and status.restart_count == 0
        assert pod.status.host_ip == local.gateway_ip
    deployment = cluster.apps.read_namespaced_deployment("echo", namespace)
    assert deployment.status.ready_replicas == 3
    # Pods reach each other across nodes, on the bridge.
    first, second = pods[0], pods[1]
    fetched = get_json(
        f"http://{first.status.pod_ip}:8080/fetch?url=http://{second.status.pod_ip}:8080/"
    )
    assert fetched["status"] == 200 and second.metadata.name in fetched["body"]

    # The endpointslice controller accepted the pod addresses (they are not loopback).
    def slice_ips() -> set[str]:
        slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=echo"
        )
        return {a for s in slices.items for e in s.endpoints or [] for a in e.addresses}

    wait_for(lambda: slice_ips() == ips, 30, "an EndpointSlice with the 3 pod IPs")


def test_scaling_to_one_stops_two_processes_with_sigterm(cluster: Cluster, namespace: str) -> None:
    cluster.require_local()
    grace = 20
    cluster.apps.create_namespaced_deployment(namespace, echo_deployment("web", 3, grace=grace))
    pods = wait_for(
        lambda: (
            len(ready_pods(cluster, namespace, "app=web")) == 3
            and ready_pods(cluster, namespace, "app=web")
        ),
        90,
        "3 Ready pods",
    )
    version = cluster.core.list_namespaced_pod(namespace).metadata.resource_version
    final: dict[str, Any] = {}
    deleted: set[str] = set()

    def observe() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector="app=web",
            resource_version=version,
            timeout_seconds=60,
        ):
            pod = event["object"]
            if pod.metadata.deletion_timestamp:
                final[pod.metadata.name] = pod
            if event["type"] == "DELETED":
                deleted.add(pod.metadata.name)
                if len(deleted) == 2:
                    stream.stop()

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    time.sleep(0.3)
    began = time.monotonic()
    cluster.apps.patch_namespaced_deployment_scale(
        namespace=namespace, name="web", body={"spec": {"replicas": 1}}
    )
    watcher.join(timeout=60)
    took = time.monotonic() - began
    assert len(deleted) == 2, f"pods deleted: {deleted}"
    assert took < grace, f"two pods took {took:.1f}s to stop, more than the grace period"
    for name in deleted:
        pod = final[name]
        state = pod.status.container_statuses[0].state.terminated
        assert state is not None, pod.status
        assert "SIGTERM" in state.message and "SIGKILL" not in state.message, state.message
        assert state.exit_code == 0 and state.reason == "Completed"
        assert state.finished_at <= pod.metadata.deletion_timestamp
    gone_ips = [p.status.pod_ip for p in pods if p.metadata.name in deleted]
    for ip in gone_ips:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{ip}:8080/", timeout=1.0)
    survivors = ready_pods(cluster, namespace, "app=web")
    assert len(survivors) == 1
    assert (
        get_json(f"http://{survivors[0].status.pod_ip}:8080/")["pod"] == survivors[0].metadata.name
    )


def test_a_pod_asking_for_more_gpus_than_any_node_has_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    nodes = cluster.core.list_node().items
    most = max(int(n.status.allocatable.get("nvidia.com/gpu", "0")) for n in nodes)
    assert most > 0, "no node advertises nvidia.com/gpu"
    greedy = echo_pod("greedy", tolerations=[{"operator": "Exists"}])
    greedy["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": str(most + 1)}}
    cluster.core.create_namespaced_pod(namespace, greedy)

    def unschedulable() -> Any:
        pod = cluster.core.read_namespaced_pod("greedy", namespace)
        scheduled = _pod_conditions(pod).get("PodScheduled")
        return scheduled is not None and scheduled.reason == "Unschedulable" and (pod, scheduled)

    pod, condition = wait_for(unschedulable, 60, "PodScheduled=False, Unschedulable")
    assert condition.status == "False"
    assert "Insufficient nvidia.com/gpu" in condition.message
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_a_pod_that_fits_gets_its_gpus(cluster: Cluster, namespace: str) -> None:
    cluster.require_local()
    pod = echo_pod("fits")
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "4"}}
    cluster.core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: ready_pods(cluster, namespace, "app=fits"), 60, "the 4-GPU pod Ready")
    node = cluster.core.read_namespaced_pod("fits", namespace).spec.node_name
    assert node.startswith("gpu-")


@pytest.mark.parametrize("allowed", [False, True], ids=["no-role", "with-role"])
def test_rbac_is_real_for_a_pods_service_account(
    cluster: Cluster, namespace: str, allowed: bool
) -> None:
    cluster.require_local()
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})
    if allowed:
        cluster.rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            },
        )
        cluster.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "worker-reads-pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": namespace}],
            },
        )
    cluster.core.create_namespaced_pod(namespace, echo_pod("caller", serviceAccountName="worker"))
    pod = wait_for(
        lambda: ready_pods(cluster, namespace, "app=caller"), 60, "the caller pod Ready"
    )[0]
    # The process uses the mounted token and CA and KUBERNETES_SERVICE_HOST, like in-cluster config.
    path = f"/api/v1/namespaces/{namespace}/pods"
    answer = get_json(f"http://{pod.status.pod_ip}:8080/kube?path={path}")
    if allowed:
        assert answer["status"] == 200, answer
    else:
        assert answer["status"] == 403, answer
        assert f"system:serviceaccount:{namespace}:worker" in answer["body"]


def test_prometheus_scrapes_the_pods(cluster: Cluster, namespace: str) -> None:
    cluster.require_local()
    cluster.apps.create_namespaced_deployment(namespace, echo_deployment("scraped", 2))
    pods = wait_for(
        lambda: (
            len(ready_pods(cluster, namespace, "app=scraped")) == 2
            and ready_pods(cluster, namespace, "app=scraped")
        ),
        90,
        "2 Ready pods",
    )
    query = f'testserver_requests_total{{namespace="{namespace}"}}'

    def scraped() -> Any:
        result = get_json(f"{cluster.prometheus}/api/v1/query?query={query}")["data"]["result"]
        return len(result) == 2 and result

    result = wait_for(scraped, 30, "Prometheus to answer for both pods", interval=1.0)
    assert {r["metric"]["pod"] for r in result} == {p.metadata.name for p in pods}
    assert all(r["metric"]["app"] == "scraped" and float(r["value"][1]) >= 1 for r in result)


def _container_status(cluster: Cluster, namespace: str, name: str) -> Any:
    pod = cluster.core.read_namespaced_pod(name, namespace)
    statuses = pod.status.container_statuses or []
    return statuses[0] if statuses else None


def test_an_unmapped_image_is_reported_as_err_image_pull(cluster: Cluster, namespace: str) -> None:
    cluster.require_local()
    pod = echo_pod("unmapped")
    pod["spec"]["containers"][0]["image"] = "registry.example.invalid/nothing:1.0"
    cluster.core.create_namespaced_pod(namespace, pod)
    status = wait_for(
        lambda: (s := _container_status(cluster, namespace, "unmapped")) and s.state.waiting and s,
        30,
        "a waiting container",
    )
    assert status.state.waiting.reason == "ErrImagePull"
    assert "registry.example.invalid/nothing:1.0" in status.state.waiting.message
    assert cluster.core.read_namespaced_pod("unmapped", namespace).status.phase == "Pending"
    # KWOK does not touch it: it stays not Ready.
    time.sleep(2)
    assert not ready_pods(cluster, namespace, "app=unmapped")


def test_a_probe_that_never_passes_keeps_the_pod_unready(cluster: Cluster, namespace: str) -> None:
    cluster.require_local()
    pod = echo_pod("never", args=["--never-ready"])
    pod["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": 1,
    }
    cluster.core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: (s := _container_status(cluster, namespace, "never")) and s.state.running,
        30,
        "the container running",
    )
    time.sleep(4)
    current = cluster.core.read_namespaced_pod("never", namespace)
    assert current.status.phase == "Running"
    assert _pod_conditions(current)["Ready"].status == "False"
    assert not current.status.container_statuses[0].ready


def test_a_process_that_exits_at_once_is_restarted_with_back_off(
    cluster: Cluster, namespace: str
) -> None:
    cluster.require_local()
    cluster.core.create_namespaced_pod(
        namespace, echo_pod("crasher", args=["--exit-after", "0", "--exit-code", "3"])
    )
    status = wait_for(
        lambda: (
            (s := _container_status(cluster, namespace, "crasher"))
            and s.restart_count >= 1
            and s.state.waiting
            and s
        ),
        60,
        "a restart and CrashLoopBackOff",
    )
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 3
    assert status.last_state.terminated.reason == "Error"
    # A pod that must not restart ends Failed.
    cluster.core.create_namespaced_pod(
        namespace,
        echo_pod("once", args=["--exit-after", "0", "--exit-code", "3"], restartPolicy="Never"),
    )
    wait_for(
        lambda: cluster.core.read_namespaced_pod("once", namespace).status.phase == "Failed",
        30,
        "phase Failed",
    )


def test_pods_on_kwok_only_nodes_are_kwoks(cluster: Cluster, namespace: str) -> None:
    """One owner per pod: KWOK plays the pods of its own nodes; the launcher runs nothing there."""
    local = cluster.require_local()
    pod = echo_pod(
        "simulated",
        nodeSelector={"inferscale.io/pod-runner": "kwok"},
        tolerations=[{**SIMULATED_TAINT, "operator": "Equal"}],
    )
    pod["spec"]["containers"][0]["image"] = "registry.example.invalid/never-pulled:1"
    cluster.core.create_namespaced_pod(namespace, pod)
    ready = wait_for(lambda: ready_pods(cluster, namespace, "app=simulated"), 30, "KWOK's Ready")
    ip = ready[0].status.pod_ip
    assert ip.startswith(local.kwok_pod_cidr.split(".0.0/")[0] + ".")
    launcher = get_json(f"http://127.0.0.1:{local.launcher_port}/pods")
    assert f"{namespace}/simulated" not in launcher


def test_cli_status_and_logs(cluster: Cluster, namespace: str) -> None:
    local = cluster.require_local()
    cluster.core.create_namespaced_pod(namespace, echo_pod("talker"))
    wait_for(lambda: ready_pods(cluster, namespace, "app=talker"), 60, "the pod Ready")
    cli = [sys.executable, "-m", "inferscale", "cluster", "--dir", str(local.state_dir)]
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert '"gpu-0": "True"' in status.stdout
    logs = subprocess.run(
        [*cli, "logs", "talker", "-n", namespace], capture_output=True, text=True, timeout=60
    )
    assert logs.returncode == 0 and "serving on 0.0.0.0:8080" in logs.stdout
    env = subprocess.run([*cli, "env"], capture_output=True, text=True, timeout=60)
    assert f"export KUBECONFIG={local.kubeconfig}" in env.stdout


def test_a_pre_stop_hook_runs_before_sigterm_and_the_pod_serves_meanwhile(
    cluster: Cluster, namespace: str
) -> None:
    """As a kubelet: deletion runs preStop (the pod still serves), then SIGTERM, in the grace."""
    cluster.require_local()
    pause = 2
    sleeping = echo_pod("sleeps")
    sleeping["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": pause}}}
    failing = echo_pod("fails")
    failing["spec"]["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["sh", "-c", "exit 3"]}}
    }
    for body in (sleeping, failing):
        cluster.core.create_namespaced_pod(namespace, body)
    wait_for(lambda: len(ready_pods(cluster, namespace, "app in (sleeps,fails)")) == 2, 60, "pods")
    ip = cluster.core.read_namespaced_pod("sleeps", namespace).status.pod_ip
    began = time.monotonic()
    cluster.core.delete_namespaced_pod("sleeps", namespace)
    cluster.core.delete_namespaced_pod("fails", namespace)
    served_for = 0.0
    while time.monotonic() - began < pause + 5:
        try:
            httpx.get(f"http://{ip}:8080/", timeout=0.5).raise_for_status()
            served_for = time.monotonic() - began
        except httpx.HTTPError:
            break
        time.sleep(0.1)
    # It answered through the hook's pause, and stopped soon after SIGTERM (well within 5 s).
    assert pause - 0.5 <= served_for < pause + 3, served_for

    def reasons() -> set[str]:
        events = cluster.core.list_namespaced_event(namespace).items
        return {e.reason for e in events if e.involved_object.name == "fails"}

    wait_for(lambda: "FailedPreStopHook" in reasons(), 20, "a FailedPreStopHook Event")
    # A failed hook delays nothing and prevents nothing: the pod still goes.
    wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, 30, "both pods deleted")
