"""Run the images of images/ with podman under the chart's own security settings.

The settings come from ``charts/inferscale/values.yaml`` (``podSecurityContext`` and
``securityContext``) and become podman flags the way a kubelet would apply them: the user and
group, a read-only root filesystem with a writable ``/tmp`` (the chart's emptyDir), every
capability dropped, no privilege escalation, and the runtime's default seccomp profile. Ports are
published on 127.0.0.1 only. podman reads ``tools/images/containers.conf`` (runc, ulimits).

Every container started here is removed when its context manager exits, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

import inferscale

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "tools" / "images" / "containers.conf"
VALUES = REPO / "charts" / "inferscale" / "values.yaml"
IMAGES = ("operator", "router", "sim")


def image_ref(name: str) -> str:
    """The tag ``make images`` gives image ``name`` (the chart's and the sim engine's name)."""
    return f"ghcr.io/inferscale/{name}:{inferscale.__version__}"


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run podman with the repository's containers.conf; fail with its stderr when ``check``."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done


def missing_images() -> str | None:
    """Why the image tests cannot run here (no podman, an image not built), or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (bash tools/images/ci.sh installs it and builds the images)"
    absent = [
        image_ref(n)
        for n in IMAGES
        if podman("image", "exists", image_ref(n), check=False).returncode
    ]
    if absent:
        return f"images not built: {', '.join(absent)} (run `make images`)"
    return None


@dataclass(frozen=True)
class Security:
    """The chart's pod and container security settings, as the kubelet would apply them."""

    user: int
    group: int
    run_as_non_root: bool
    read_only_root: bool
    drop: tuple[str, ...]
    allow_privilege_escalation: bool
    seccomp: str
    tmp_size: str

    def podman_flags(self) -> list[str]:
        flags = [f"--user={self.user}:{self.group}", f"--cap-drop={','.join(self.drop)}"]
        if self.read_only_root:
            # podman's --read-only adds writable tmpfs mounts of its own; the chart only has /tmp.
            flags += ["--read-only", "--read-only-tmpfs=false"]
        flags.append(f"--tmpfs=/tmp:rw,size={self.tmp_size.removesuffix('i')}")
        if not self.allow_privilege_escalation:
            flags.append("--security-opt=no-new-privileges")
        # podman's default profile is the runtime default; anything else would need a file.
        assert self.seccomp == "RuntimeDefault", f"seccomp {self.seccomp} is not modelled here"
        return flags


def chart_security(values_file: Path = VALUES) -> Security:
    """The security settings of the chart's default values."""
    values: dict[str, Any] = yaml.safe_load(values_file.read_text())
    pod, container = values["podSecurityContext"], values["securityContext"]
    return Security(
        user=int(pod["runAsUser"]),
        group=int(pod["runAsGroup"]),
        run_as_non_root=bool(pod["runAsNonRoot"]),
        read_only_root=bool(container["readOnlyRootFilesystem"]),
        drop=tuple(container["capabilities"]["drop"]),
        allow_privilege_escalation=bool(container["allowPrivilegeEscalation"]),
        seccomp=pod["seccompProfile"]["type"],
        tmp_size=str(values["tmpSizeLimit"]),
    )


def image_user(image: str) -> str:
    """The image's configured user (``USER``), as runAsNonRoot sees it."""
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    return str(config.get("User") or "")


def assert_non_root_user(image: str) -> None:
    """runAsNonRoot without runAsUser: the image's user must be a numeric UID other than 0.

    The kubelet cannot look names up in the image, so a name fails too (the way it refuses).
    """
    user = image_user(image).split(":", 1)[0]
    assert user.isdigit() and int(user) != 0, f"{image} runs as user {user or 'root'!r}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def container(
    image: str,
    args: Sequence[str] = (),
    *,
    security: Security,
    options: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``image`` detached under ``security``; yield its name; remove it afterwards."""
    name = f"inferscale-test-{uuid.uuid4().hex[:10]}"
    podman(
        "run", "--detach", f"--name={name}", "--pids-limit=512", "--memory=1g",
        *security.podman_flags(), *options, image, *args,
    )  # fmt: skip
    try:
        yield name
    finally:
        podman("rm", "--force", "--time=2", name, check=False, timeout=60)


def logs(name: str) -> str:
    """The container's output so far (last 4 KB), for failure messages."""
    done = podman("logs", name, check=False, timeout=30)
    return (done.stdout + done.stderr)[-4000:]


def running(name: str) -> bool:
    state = podman("inspect", "--format={{.State.Running}}", name, check=False, timeout=30)
    return state.stdout.strip() == "true"


def wait_http(name: str, url: str, timeout: float = 60.0) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail at once with the logs if the container stopped."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
            last = answer.status_code
        except httpx.HTTPError as error:
            last = error
        if not running(name):
            raise AssertionError(f"container {name} stopped; last answer {last!r}:\n{logs(name)}")
        time.sleep(0.5)
    raise AssertionError(f"{url} not 200 after {timeout:.0f}s (last {last!r}):\n{logs(name)}")


@contextlib.contextmanager
def derived_image(base: str, dockerfile_lines: Sequence[str], tmp: Path) -> Iterator[str]:
    """An image ``FROM base`` plus some lines (a deliberately broken variant); removed after."""
    tag = f"localhost/inferscale-test/broken-{uuid.uuid4().hex[:10]}"
    (tmp / "Containerfile").write_text("\n".join([f"FROM {base}", *dockerfile_lines]) + "\n")
    podman("build", "--quiet", "--network=none", "--tag", tag, str(tmp), timeout=300)
    try:
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False, timeout=60)
