"""The container node's configuration files and its clean-up helpers, without running anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tomllib
from pathlib import Path

import pytest

from inferscale.cluster import containers
from inferscale.cluster.config import ClusterConfig, NodePool


def _config(tmp_path: Path, **overrides: object) -> ClusterConfig:
    settings: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "name": "t",
        "port_base": 20000,
        "pod_cidr": "10.250.0.0/16",
        "pools": [NodePool(name="gpu", count=2)],
        "container_node": True,
    }
    settings.update(overrides)
    return ClusterConfig(**settings)  # type: ignore[arg-type]


def test_the_node_takes_the_pod_range_after_the_launcher_nodes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert [config.node_pod_cidr(i) for i in range(2)] == ["10.250.1.0/24", "10.250.2.0/24"]
    assert containers.node_pod_cidr(config) == "10.250.3.0/24"
    cni = containers.render_cni_config(config, containers.Paths(config, cache=tmp_path))
    (bridge,) = cni["plugins"]
    assert bridge["bridge"] == config.bridge_name and bridge["isGateway"] is False
    (range_,) = bridge["ipam"]["ranges"][0]
    assert (range_["rangeStart"], range_["rangeEnd"]) == ("10.250.3.2", "10.250.3.254")
    assert range_["gateway"] == config.gateway_ip == "10.250.0.1"
    assert bridge["ipam"]["dataDir"].startswith(str(config.state_dir))


def test_containerd_runs_runc_on_cgroupfs_with_everything_under_our_folders(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    paths = containers.Paths(config, cache=tmp_path / "cache")
    parsed = tomllib.loads(containers.render_containerd_config(paths))
    assert parsed["root"] == str(tmp_path / "cache" / "containerd" / "t")
    assert parsed["state"].startswith(str(config.state_dir))
    assert parsed["grpc"]["address"] == str(paths.socket)
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == containers.PAUSE_IMAGE
    assert cri["restrict_oom_score_adj"] is True  # this host withholds CAP_SYS_RESOURCE
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(config.state_dir))
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)


def test_the_kubelet_accepts_cgroup_v1_and_keeps_its_images(tmp_path: Path) -> None:
    config = _config(tmp_path)
    paths = containers.Paths(config, cache=tmp_path)
    kubelet = containers.render_kubelet_config(config, paths, tmp_path / "ca.crt")
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["cgroupRoot"] == "/inferscale-t"
    assert kubelet["imageGCHighThresholdPercent"] == 100
    assert (kubelet["port"], kubelet["healthzPort"]) == (20008, 20009)
    assert kubelet["registerWithTaints"] == [containers.TAINT]
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{paths.socket}"
    argv = containers.kubelet_argv(config, paths, tmp_path)
    assert f"--hostname-override={containers.NODE_NAME}" in argv
    assert (
        "--node-labels=inferscale.io/node-pool=containers,inferscale.io/pod-runner=containerd"
        in argv
    )


def test_the_service_rule_only_matches_this_nodes_pods(tmp_path: Path) -> None:
    rule = containers.service_dnat_rule(_config(tmp_path))
    assert rule[rule.index("-s") + 1] == "10.250.3.0/24"
    assert rule[rule.index("-d") + 1] == "10.96.0.1/32"
    assert rule[rule.index("--to-destination") + 1] == "10.250.0.1:20000"


def test_write_files_lays_out_every_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    paths = containers.Paths(config, cache=tmp_path / "cache")
    containers.write_files(config, paths, tmp_path / "ca.crt")
    assert json.loads(paths.kubelet_config.read_text())["kind"] == "KubeletConfiguration"
    assert (paths.cni_conf_dir / "10-inferscale.conflist").is_file()
    assert "attempts:1" in paths.resolv_conf.read_text()


def test_unmount_under_picks_only_our_mounts_deepest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = tmp_path / "state" / "containers"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"1 0 0:1 / {ours}/kubelet rw - tmpfs tmpfs rw\n"
        f"2 1 0:2 / {ours}/kubelet/pods/a/volumes/x\\040y rw - tmpfs tmpfs rw\n"
        f"3 0 0:3 / {tmp_path}/other rw - tmpfs tmpfs rw\n"
        f"4 0 0:4 / {ours} rw - tmpfs tmpfs rw\n"
    )
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> object:
        calls.append(argv)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(containers.subprocess, "run", fake_run)
    done = containers.unmount_under([ours], mountinfo)
    assert done == [f"{ours}/kubelet/pods/a/volumes/x y", f"{ours}/kubelet"]
    assert all(argv[:2] == ["umount", "-l"] for argv in calls)


def test_shims_are_found_by_their_socket_only(tmp_path: Path) -> None:
    config = _config(tmp_path)
    paths = containers.Paths(config, cache=tmp_path)
    proc = tmp_path / "proc"
    for pid, argv in {
        "10": ["/usr/bin/containerd-shim-runc-v2", "-address", str(paths.socket)],
        "11": ["/usr/bin/containerd-shim-runc-v2", "-address", "/run/containerd/other.sock"],
        "12": ["/bin/sleep", str(paths.socket)],
        "self": ["ignored"],
    }.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert containers.shim_pids(paths, proc) == [10]


def test_prepare_cgroups_fills_an_empty_cpuset(tmp_path: Path) -> None:
    config = _config(tmp_path)
    root = tmp_path / "cgroup"
    (root / "cpuset").mkdir(parents=True)
    (root / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (root / "memory").mkdir()
    mine = root / "cpuset" / "inferscale-t"
    mine.mkdir()
    (mine / "cpuset.cpus").write_text("\n")  # the kernel makes it empty
    containers.prepare_cgroups(config, root)
    assert (mine / "cpuset.cpus").read_text() == "0-1\n"
    assert (root / "memory" / "inferscale-t").is_dir()


def test_missing_prerequisites_names_the_kubelet(tmp_path: Path) -> None:
    missing = containers.missing_prerequisites(tmp_path)
    assert any("tools/kube/build.sh kubelet" in m for m in missing)
    (tmp_path / "kubelet").write_text("#!/bin/sh\n")
    (tmp_path / "kubelet").chmod(0o755)
    assert not any("kubelet" in m for m in containers.missing_prerequisites(tmp_path))
    if os.geteuid() != 0:
        assert any(m.startswith("root") for m in containers.missing_prerequisites())


def test_kill_cgroup_kills_whats_left_and_removes_the_cgroups(tmp_path: Path) -> None:
    config = _config(tmp_path)
    root = tmp_path / "cgroup"
    pod = root / "pids" / "inferscale-t" / "kubepods" / "pod1"
    pod.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        (pod / "cgroup.procs").write_text(f"{child.pid}\n")
        assert containers.kill_cgroup(config, root) == [child.pid]
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    # A real cgroup folder holds only kernel files and goes with rmdir; here the fake's
    # cgroup.procs keeps the deepest one, and nothing above it may be removed either.
    assert pod.is_dir()
    (pod / "cgroup.procs").unlink()
    containers.kill_cgroup(config, root)
    assert not (root / "pids" / "inferscale-t").exists()
