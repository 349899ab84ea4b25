"""``cluster down`` removes the mount points its launcher created, but none another cluster uses.

Two local clusters on one machine create the same host directories as mount points (every
pod's token goes to /var/run/secrets/kubernetes.io/serviceaccount). A pod's bind mounts live in
its own mount namespace, so the host directory is empty; removing it anyway detaches the mount
in the other cluster's running pod (Linux >= 3.18), whose token file then vanishes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from inferscale.cluster.control import CREATED_MOUNTPOINTS, _remove_mountpoints, mounted_anywhere


def _fake_process(proc: Path, pid: int, namespace: str, mount_points: list[str]) -> None:
    folder = proc / str(pid)
    (folder / "ns").mkdir(parents=True)
    (folder / "ns" / "mnt").symlink_to(namespace)
    lines = [f"{n} 1 0:{n} / {point} rw - tmpfs tmpfs rw" for n, point in enumerate(mount_points)]
    (folder / "mountinfo").write_text("\n".join(lines) + "\n")


def test_mount_points_of_every_namespace_are_found_and_unescaped(tmp_path):
    proc = tmp_path / "proc"
    _fake_process(proc, 1, "mnt:[1]", ["/", "/proc"])
    _fake_process(proc, 20, "mnt:[2]", ["/", "/var/run/secrets/with\\040space"])
    _fake_process(proc, 21, "mnt:[2]", ["/", "/var/run/secrets/with\\040space"])  # same ns
    (proc / "self").mkdir()  # not a pid
    (proc / "30").mkdir()  # vanished meanwhile: no ns link
    assert mounted_anywhere(proc) == {"/", "/proc", "/var/run/secrets/with space"}
    assert mounted_anywhere(tmp_path / "missing") == set()


def test_a_mount_point_in_use_elsewhere_stays_and_a_free_one_goes(tmp_path):
    host = tmp_path / "host"
    used, free = host / "secrets" / "used", host / "secrets" / "free"
    used.mkdir(parents=True)
    free.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    created = [str(host / "secrets"), str(used), str(free)]
    (state / CREATED_MOUNTPOINTS).write_text(json.dumps(created))
    proc = tmp_path / "proc"
    _fake_process(proc, 7, "mnt:[9]", ["/", str(used)])
    assert _remove_mountpoints(state, proc) == [f"removed mount point {free}"]
    assert used.is_dir() and not free.exists()
    # Once nothing mounts there any more, the next down removes it and its empty parent.
    shutil.rmtree(proc)
    assert _remove_mountpoints(state, proc) == [
        f"removed mount point {used}",
        f"removed mount point {host / 'secrets'}",
    ]


def test_a_mount_point_behind_a_symlink_is_recognised_by_its_real_path(tmp_path):
    # /var/run -> /run: the launcher records /var/run/secrets/..., mountinfo says /run/secrets/...
    real = tmp_path / "run"
    (real / "secrets").mkdir(parents=True)
    link = tmp_path / "var-run"
    link.symlink_to(real)
    state = tmp_path / "state"
    state.mkdir()
    (state / CREATED_MOUNTPOINTS).write_text(json.dumps([str(link / "secrets")]))
    proc = tmp_path / "proc"
    _fake_process(proc, 7, "mnt:[9]", ["/", str(real / "secrets")])
    assert _remove_mountpoints(state, proc) == []
    assert (real / "secrets").is_dir()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_a_real_bind_mount_in_another_namespace_survives_cluster_down(tmp_path):
    source, target = tmp_path / "volume", tmp_path / "mountpoint"
    source.mkdir()
    (source / "token").write_text("secret")
    target.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / CREATED_MOUNTPOINTS).write_text(json.dumps([str(target)]))
    # Another cluster's pod: its own mount namespace, the volume bind-mounted on the host path.
    pod = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount --bind "{source}" "{target}" && echo ready && read _ && cat "{target}/token"'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert pod.stdout is not None and pod.stdout.readline().strip() == "ready"
        assert _remove_mountpoints(state) == []
        assert target.is_dir()
        out, _ = pod.communicate("\n", timeout=10)
        assert out.strip() == "secret", "the pod lost its mounted file"
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait(5)
    deadline = time.monotonic() + 5
    while str(target) in mounted_anywhere() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _remove_mountpoints(state) == [f"removed mount point {target}"]
