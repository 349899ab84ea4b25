"""The local cluster's pure rules: config, image map, kubelet-like pod rules, KWOK, Prometheus."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferscale.cluster import kwok, pods, prometheus
from inferscale.cluster.config import ClusterConfig, NodePool
from inferscale.cluster.control import AUDIT_POLICY, lose_node, restart, restore_node
from inferscale.cluster.images import ImageMap, UnmappedImage, strip_tag
from inferscale.cluster.process import ClusterError


def make_config(**overrides) -> ClusterConfig:
    return ClusterConfig(state_dir=Path("/nonexistent/state"), **overrides)


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = ClusterConfig(
        state_dir=tmp_path, name="x", pools=[NodePool(name="a", count=1, labels={"k": "v"})]
    )
    config.save()
    assert ClusterConfig.load(tmp_path) == config


def test_node_pod_cidrs_skip_the_bridge_subnet() -> None:
    config = make_config(pod_cidr="10.246.0.0/16")
    assert config.gateway_ip == "10.246.0.1"
    assert [config.node_pod_cidr(i) for i in range(3)] == [
        "10.246.1.0/24",
        "10.246.2.0/24",
        "10.246.3.0/24",
    ]
    assert config.kwok_node_pod_cidr(0) == "10.245.0.0/24"
    assert len(make_config(name="a-very-long-cluster-name").bridge_name) <= 15


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("ghcr.io/inferscale/sim", "ghcr.io/inferscale/sim"),
        ("ghcr.io/inferscale/sim:0.1.0", "ghcr.io/inferscale/sim"),
        ("registry:5000/a/b:1.2@sha256:abc", "registry:5000/a/b"),
        ("registry:5000/a/b", "registry:5000/a/b"),
    ],
)
def test_strip_tag(image: str, name: str) -> None:
    assert strip_tag(image) == name


def test_image_map_covers_the_project_images_and_refuses_others() -> None:
    images = ImageMap.load()
    assert images.entrypoint("ghcr.io/inferscale/sim:1.0") == ["inferscale", "sim"]
    assert images.entrypoint("ghcr.io/inferscale/router") == ["inferscale", "router"]
    assert images.entrypoint("ghcr.io/inferscale/operator:dev") == ["inferscale", "operator"]
    assert (
        images.entrypoint("inferscale.io/testing/http-echo")[-1] == "inferscale.cluster.testserver"
    )
    with pytest.raises(UnmappedImage):
        images.entrypoint("docker.io/library/nginx:1.27")


def test_an_extra_image_map_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "images.yaml"
    extra.write_text(yaml.safe_dump({"images": {"nginx:1.27": {"command": ["sleep", "1"]}}}))
    assert ImageMap.load(extra).entrypoint("nginx:1.27") == ["sleep", "1"]


def test_a_file_inside_an_image_stands_for_a_local_command(tmp_path: Path) -> None:
    images = ImageMap.load()
    image = "ghcr.io/ggml-org/llama.cpp:server-b11206"
    assert images.entrypoint(image) == ["llama-server"]
    assert images.local_argv(image, ["/app/llama-server", "--port", "8080"]) == [
        "llama-server",
        "--port",
        "8080",
    ]
    # Other words, other images and unmapped images pass through unchanged.
    assert images.local_argv(image, ["/bin/sh", "-c", "x"]) == ["/bin/sh", "-c", "x"]
    assert images.local_argv("ghcr.io/inferscale/sim", ["/app/llama-server"]) == [
        "/app/llama-server"
    ]
    assert images.local_argv("nginx", ["/app/llama-server"]) == ["/app/llama-server"]
    assert images.local_argv(image, []) == []
    extra = tmp_path / "images.yaml"
    built = {"command": ["/opt/llama/llama-server"], "paths": {"/app/llama-server": "/opt/x"}}
    extra.write_text(yaml.safe_dump({"images": {"ghcr.io/ggml-org/llama.cpp": built}}))
    overlaid = ImageMap.load(extra)
    assert overlaid.entrypoint(image) == ["/opt/llama/llama-server"]
    assert overlaid.local_argv(image, ["/app/llama-server"]) == ["/opt/x"]


def test_command_replaces_the_entrypoint_and_args_follow_with_expansion() -> None:
    env = {"PORT": "9000"}
    assert pods.container_argv(["inferscale", "sim"], {"args": ["--port", "$(PORT)"]}, env) == [
        "inferscale",
        "sim",
        "--port",
        "9000",
    ]
    container = {"command": ["python", "-m", "x"], "args": ["$$(PORT)", "$(MISSING)"]}
    assert pods.container_argv(["ignored"], container, env) == [
        "python",
        "-m",
        "x",
        "$(PORT)",
        "$(MISSING)",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2Gi", Decimal(2**31)), ("1e3", Decimal(1000)), ("4", Decimal(4))],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert pods.parse_quantity(text) == value


def test_field_and_resource_refs() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "a"}},
        "spec": {"nodeName": "gpu-0", "serviceAccountName": "sa"},
        "status": {"podIP": "10.0.0.2", "hostIP": "10.0.0.1"},
    }
    assert pods.field_ref(pod, "metadata.labels['app']") == "a"
    assert pods.field_ref(pod, "status.podIP") == "10.0.0.2"
    assert pods.field_ref(pod, "spec.serviceAccountName") == "sa"
    with pytest.raises(ValueError):
        pods.field_ref(pod, "spec.containers")
    container = {"resources": {"limits": {"memory": "1Gi"}}}
    assert (
        pods.resource_ref(container, {"resource": "limits.memory", "divisor": "1Mi"}, {}) == "1024"
    )
    assert pods.resource_ref(container, {"resource": "limits.cpu"}, {"cpu": "16"}) == "16"


def test_probe_targets_resolve_named_ports() -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    target = pods.probe_target(container, {"httpGet": {"path": "/healthz", "port": "http"}})
    assert (target.kind, target.port, target.path) == ("http", 8080, "/healthz")
    assert pods.probe_target(container, {"tcpSocket": {"port": 81}}).port == 81
    assert pods.probe_target(container, {"exec": {"command": ["true"]}}).kind == "unsupported"
    with pytest.raises(ValueError):
        pods.resolve_port(container, "grpc")
    timing = pods.ProbeTiming.of({})
    assert (timing.period, timing.timeout, timing.failure_threshold) == (10, 1, 3)


@pytest.mark.parametrize(
    ("policy", "codes", "phase"),
    [
        ("Always", [0], "Running"),
        ("Never", [0], "Succeeded"),
        ("Never", [1], "Failed"),
        ("OnFailure", [0, 0], "Succeeded"),
        ("OnFailure", [1], "Running"),
    ],
)
def test_pod_phase_of_terminated_containers(policy: str, codes: list[int], phase: str) -> None:
    states = [{"terminated": {"exitCode": c}} for c in codes]
    assert pods.pod_phase(policy, states, all_started=True) == phase


def test_restart_rules_and_back_off() -> None:
    assert pods.restart_wanted("Always", 0) and pods.restart_wanted("OnFailure", 2)
    assert not pods.restart_wanted("OnFailure", 0) and not pods.restart_wanted("Never", 1)
    assert [pods.backoff(n, 10, 300) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert pods.pod_phase("Always", [{"waiting": {}}], all_started=False) == "Pending"


def test_kwok_pod_stages_leave_launcher_nodes_alone() -> None:
    config = make_config(
        pools=[NodePool(name="gpu", count=2), NodePool(name="sim", count=1, runner="kwok")]
    )
    stages = kwok.stages(config)
    pod_stages = [s for s in stages if s["spec"]["resourceRef"]["kind"] == "Pod"]
    assert {s["metadata"]["name"] for s in pod_stages} == {
        "pod-ready",
        "pod-complete",
        "pod-delete",
    }
    for stage in pod_stages:
        assert {
            "key": ".spec.nodeName",
            "operator": "NotIn",
            "values": ["gpu-0", "gpu-1"],
        } in stage["spec"]["selector"]["matchExpressions"]
    node_stages = [s for s in stages if s["spec"]["resourceRef"]["kind"] == "Node"]
    assert len(node_stages) == 2


def test_nodes_advertise_gpus_labels_taints_and_pod_cidrs() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    config = make_config(
        pools=[
            NodePool(name="gpu", count=2, gpus=8, labels={"tier": "a"}),
            NodePool(name="sim", count=1, gpus=0, runner="kwok", taints=[taint]),
        ]
    )
    nodes = {n["metadata"]["name"]: n for n in kwok.node_objects(config, "10.244.0.1")}
    assert set(nodes) == {"gpu-0", "gpu-1", "sim-0"}
    assert nodes["gpu-1"]["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert nodes["gpu-1"]["spec"]["podCIDR"] == "10.244.2.0/24"
    assert nodes["gpu-0"]["metadata"]["labels"]["tier"] == "a"
    assert nodes["gpu-0"]["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert "nvidia.com/gpu" not in nodes["sim-0"]["status"]["capacity"]
    assert nodes["sim-0"]["spec"]["taints"] == [taint]
    assert nodes["sim-0"]["spec"]["podCIDR"] == "10.245.0.0/24"


def test_prometheus_targets_from_ports_and_annotations(tmp_path: Path) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "labels": {"app.kubernetes.io/name": "x"}},
        "spec": {
            "nodeName": "gpu-0",
            "containers": [{"name": "c", "ports": [{"name": "metrics", "containerPort": 9090}]}],
        },
    }
    groups = prometheus.target_group(pod, "10.244.1.2")
    assert groups[0]["targets"] == ["10.244.1.2:9090"]
    assert groups[0]["labels"]["app_kubernetes_io_name"] == "x"
    assert groups[0]["labels"]["pod"] == "p" and groups[0]["labels"]["node"] == "gpu-0"
    annotated = {
        "metadata": {
            "name": "q",
            "namespace": "n",
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8000",
                "prometheus.io/path": "/m",
            },
        },
        "spec": {"containers": [{"name": "d"}]},
    }
    assert prometheus.metrics_endpoints(annotated) == [("d", 8000, "/m")]
    config = make_config(scrape_interval=2).__class__(state_dir=tmp_path, scrape_interval=2)
    prometheus.write_targets(config, pod, "10.244.1.2")
    assert prometheus.target_file(config, "n", "p").exists()
    prometheus.remove_targets(config, "n", "p")
    assert not prometheus.target_file(config, "n", "p").exists()
    rendered = yaml.safe_load(prometheus.render_config(config))
    assert rendered["global"]["scrape_interval"] == "2s"


def test_pod_addresses_go_round_so_a_released_one_is_reused_last() -> None:
    import httpx

    from inferscale.cluster.launcher import Launcher

    config = make_config(
        pod_cidr="10.246.0.0/16",
        network="netns",
        pools=[NodePool(name="n", count=1, runner="launcher")],
    )
    launcher = Launcher(config, httpx.AsyncClient())
    (node,) = launcher.nodes
    pod = {"spec": {"nodeName": node}}
    first, second = launcher.allocate_ip(pod), launcher.allocate_ip(pod)
    assert (first, second) == ("10.246.1.2", "10.246.1.3")
    launcher.release_ip(pod, first)
    # A fresh address, not the one given back a moment ago (stale neighbour caches).
    assert launcher.allocate_ip(pod) == "10.246.1.4"
    launcher.release_ip(pod, second)
    taken = [launcher.allocate_ip(pod) for _ in range(252)]  # every free address
    assert taken[-2:] == [first, second]  # the released ones last, the oldest release first
    assert len(set(taken)) == 252


def test_pre_stop_hooks_are_read_as_a_kubelet_reads_them() -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8000}]}
    assert pods.pre_stop_hook(container) is None
    assert pods.pre_stop_hook({**container, "lifecycle": {"postStart": {}}}) is None
    sleep = pods.pre_stop_hook({**container, "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}})
    assert sleep == pods.PreStop("sleep", seconds=5.0)
    run = pods.pre_stop_hook(
        {**container, "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "true"]}}}}
    )
    assert run == pods.PreStop("exec", command=("sh", "-c", "true"))
    http = pods.pre_stop_hook(
        {**container, "lifecycle": {"preStop": {"httpGet": {"port": "http", "path": "/drain"}}}}
    )
    assert http is not None and http.target == pods.ProbeTarget("http", 8000, "/drain", "http")


@pytest.mark.parametrize(
    ("hook", "problem"),
    [
        ({"sleep": {"seconds": -1}}, "sleep.seconds"),
        ({"sleep": {"seconds": "5"}}, "sleep.seconds"),
        ({"sleep": {"seconds": True}}, "sleep.seconds"),
        ({"exec": {"command": []}}, "exec.command"),
        ({"exec": {"command": ["ok", 3]}}, "exec.command"),
        ({"httpGet": {"port": "no-such-port"}}, "httpGet"),
        ({"tcpSocket": {"port": 80}}, "unsupported handler"),
    ],
)
def test_a_bad_pre_stop_hook_is_reported_not_raised(hook: dict[str, Any], problem: str) -> None:
    found = pods.pre_stop_hook({"name": "c", "lifecycle": {"preStop": hook}})
    assert found is not None and found.kind == "invalid" and problem in found.problem


def test_the_hook_counts_against_the_grace_period_with_the_kubelets_two_second_extension() -> None:
    assert pods.sigterm_grace(30, 5) == 25
    assert pods.sigterm_grace(30, 29.5) == 2.0
    assert pods.sigterm_grace(10, 40) == 2.0


def test_restart_refuses_what_it_cannot_bring_back_and_a_cluster_that_is_not_running(
    tmp_path: Path,
) -> None:
    with pytest.raises(ClusterError, match="restart supports etcd"):
        restart(tmp_path, "launcher")
    with pytest.raises(ClusterError, match="not running"):
        restart(tmp_path, "etcd")


def test_losing_or_restoring_a_node_needs_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no cluster"):
        lose_node(tmp_path, "gpu-0")
    with pytest.raises(ClusterError, match="no cluster"):
        restore_node(tmp_path, "gpu-0")


def test_the_audit_policy_logs_workloads_service_accounts_at_metadata_level_only() -> None:
    policy = yaml.safe_load(AUDIT_POLICY)
    levels = [(rule["level"], rule.get("userGroups")) for rule in policy["rules"]]
    assert levels == [
        ("None", ["system:serviceaccounts:kube-system"]),
        ("Metadata", ["system:serviceaccounts"]),
        ("None", None),
    ]
