"""Starting and stopping the local cluster: bad input is reported, crashes are cleaned up.

These tests start their own (second) clusters or fake components in temporary state
directories, apart from the session's cluster, so they need no kubeconfig.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes import config as kube_config

from e2e.conftest import e2e_config, echo_pod, pod_ready, wait_for
from inferscale.cluster import network
from inferscale.cluster.assets import BINARIES, find_assets
from inferscale.cluster.config import NodePool
from inferscale.cluster.control import down, up
from inferscale.cluster.process import ClusterError, read_records, start_time

pytestmark = pytest.mark.e2e

#: Apart from the session cluster (17443, 10.246/16) and `make cluster-up` (16443, 10.244/16).
CRASH_PORTS = 18443


def _fake_assets(folder: Path, etcd_script: str) -> Path:
    folder.mkdir()
    for name in BINARIES:
        path = folder / name
        path.write_text("#!/bin/sh\nexec sleep 600\n")
        path.chmod(0o755)
    (folder / "etcd").write_text(f"#!/bin/sh\n{etcd_script}\n")
    return folder


def test_a_port_in_use_is_reported(tmp_path: Path) -> None:
    config = e2e_config(tmp_path / "state", name="busy", port_base=CRASH_PORTS, network="loopback")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.apiserver_port))
        squatter.listen()
        with pytest.raises(ClusterError) as error:
            up(config)
    assert error.value.component == "kube-apiserver"
    assert f"127.0.0.1:{config.apiserver_port} is already in use" in str(error.value)
    assert not read_records(config.state_dir)


def test_a_missing_binary_is_reported(tmp_path: Path) -> None:
    assets = _fake_assets(tmp_path / "assets", "exit 1")
    (assets / "kwok").unlink()
    with pytest.raises(ClusterError) as error:
        find_assets(str(assets))
    assert "lacks: kwok" in str(error.value)


def test_a_stale_state_directory_is_reported(tmp_path: Path) -> None:
    config = e2e_config(tmp_path / "state", name="stale", port_base=CRASH_PORTS, network="loopback")
    (config.state_dir / "etcd" / "member").mkdir(parents=True)
    with pytest.raises(ClusterError) as error:
        up(config)
    assert "stale state" in str(error.value) and "inferscale cluster down" in str(error.value)
    down(config.state_dir, quiet=True)
    assert not (config.state_dir / "etcd").exists()


def test_a_failed_start_names_the_component_and_shows_its_log(tmp_path: Path) -> None:
    assets = _fake_assets(
        tmp_path / "assets", 'echo "fatal: simulated etcd failure: data dir is locked" >&2\nexit 1'
    )
    config = e2e_config(
        tmp_path / "state", name="broken", port_base=CRASH_PORTS, network="loopback"
    )
    with pytest.raises(ClusterError) as error:
        up(config, assets=str(assets))
    assert error.value.component == "etcd"
    assert "exited during start-up" in str(error.value)
    assert "simulated etcd failure: data dir is locked" in str(error.value)
    # What was started is stopped again; the log stays for the post-mortem.
    assert not read_records(config.state_dir)
    assert (config.state_dir / "logs" / "etcd.log").exists()


def test_down_after_a_crash_still_cleans_up(tmp_path: Path) -> None:
    config = e2e_config(
        tmp_path / "state",
        name="crash",
        port_base=CRASH_PORTS,
        pod_cidr="10.248.0.0/16",
        kwok_pod_cidr="10.249.0.0/16",
        pools=[NodePool(name="solo", count=1, gpus=1)],
    )
    started = up(config)
    try:
        api = kube_config.new_client_from_config(config_file=str(started.config.kubeconfig))
        core = client.CoreV1Api(api)
        core.create_namespaced_pod("default", echo_pod("survivor"))
        pod = wait_for(
            lambda: (
                (p := core.read_namespaced_pod("survivor", "default")).status.pod_ip
                and pod_ready(p)
                and p
            ),
            60,
            "the pod Ready",
        )
        api.close()
        namespaces = network.list_netns(started.config.netns_prefix)
        assert len(namespaces) == 1
        pod_pids = network.netns_pids(namespaces[0])
        assert pod_pids, "the pod's process runs in its namespace"
        # The crash: every component dies at once, the launcher without stopping its pods.
        for record in read_records(config.state_dir):
            os.killpg(record.pid, signal.SIGKILL)
        assert network.netns_pids(namespaces[0]) == pod_pids, "the orphaned pod still runs"
    finally:
        # Also the CLI's `down`, in another process, as a user would run it after a crash.
        result = subprocess.run(
            [sys.executable, "-m", "inferscale", "cluster", "down", "--dir", str(config.state_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "deleted network namespace" in result.stdout
    assert not network.list_netns(started.config.netns_prefix)
    # Gone, or a zombie waiting for whoever inherited it to reap it.
    assert all(start_time(pid) is None for pid in pod_pids)
    assert network.ip("link", "show", started.config.bridge_name, check=False).returncode != 0
    assert not Path("/etc/netns", namespaces[0]).exists()
    assert sorted(p.name for p in config.state_dir.iterdir()) == ["logs"]
    assert pod.status.pod_ip.startswith("10.248.")


def test_leftovers_outside_a_missing_state_directory_are_named_and_removed(tmp_path: Path) -> None:
    """A killed run, then a fresh checkout: the namespaces and bridge outlive the directory."""
    if not network.netns_supported():
        pytest.skip("network namespaces are not available here")
    config = e2e_config(tmp_path / "fresh", name="orphan", pod_cidr="10.250.0.0/16")
    leftover = f"{config.netns_prefix}0123456789ab"
    network.ip("netns", "add", leftover)
    network.setup_bridge(config)
    try:
        with pytest.raises(ClusterError) as error:
            up(config)
        assert leftover in str(error.value)
        assert f"--name {config.name}" in str(error.value), "the message says how to clean up"
        result = subprocess.run(
            [sys.executable, "-m", "inferscale", "cluster", "down"]
            + ["--dir", str(config.state_dir), "--name", config.name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"deleted network namespace {leftover}" in result.stdout
        assert f"deleted bridge {config.bridge_name}" in result.stdout
        assert not network.list_netns(config.netns_prefix)
    finally:
        network.ip("netns", "del", leftover, check=False)
        network.ip("link", "del", config.bridge_name, check=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_test_run_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "INFERSCALE_E2E_CLUSTER_DIR": str(state),
        "INFERSCALE_E2E_CLUSTER_NAME": "intr",
        "INFERSCALE_E2E_PORT_BASE": str(CRASH_PORTS + 20),
        "INFERSCALE_E2E_POD_CIDR": "10.250.0.0/16",
    }
    env.pop("INFERSCALE_E2E_KUBECONFIG", None)
    target = Path(__file__).with_name("interrupt_target.py")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(target), "-q", "-s", "-p", "no:cacheprovider"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert run.stdout is not None
        deadline = time.monotonic() + 120
        seen = []
        for line in run.stdout:
            seen.append(line)
            if "HELD" in line or time.monotonic() > deadline:
                break
        assert any("HELD" in line for line in seen), "".join(seen)
        namespaces = network.list_netns("is-intr-")
        assert len(namespaces) == 1
        records = read_records(state)
        assert records and all(r.alive() for r in records)
        run.send_signal(sig)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert not network.list_netns("is-intr-"), output
    assert not any(r.alive() for r in records), output
    assert network.ip("link", "show", "isbr-intr", check=False).returncode != 0
    assert sorted(p.name for p in state.iterdir()) == ["logs"], output
