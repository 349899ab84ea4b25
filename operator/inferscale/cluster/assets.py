"""Where the upstream binaries come from: a prebuilt directory, or ``tools/kube/build.sh``.

``INFERSCALE_KUBE_ASSETS`` (like envtest's ``KUBEBUILDER_ASSETS``) names a directory that holds
them all; otherwise, in a checkout, the build script builds or reuses its cached copy and
prints the directory. Nothing here downloads by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from inferscale.cluster.process import ClusterError

BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
    "kwok",
    "kubectl",
    "prometheus",
)
ASSETS_ENV = "INFERSCALE_KUBE_ASSETS"
#: The first build compiles ~2,400 Go packages; 2 cores need about 10 minutes, give it 60.
BUILD_TIMEOUT = 3600.0


#: Built only when asked (``build.sh kubelet``): the container node's (cluster/containers.py).
KUBELET = "kubelet"


def missing_in(directory: Path, kubelet: bool = False) -> list[str]:
    """The binaries that ``directory`` lacks (or holds without the execute bit)."""
    wanted = (*BINARIES, KUBELET) if kubelet else BINARIES
    return [b for b in wanted if not os.access(directory / b, os.X_OK)]


def build_script() -> Path | None:
    """``tools/kube/build.sh`` of the checkout this package runs from, if there is one."""
    script = Path(__file__).resolve().parents[3] / "tools" / "kube" / "build.sh"
    return script if script.is_file() else None


def find_assets(explicit: str | None = None, build: bool = True, kubelet: bool = False) -> Path:
    """The directory that holds every binary in ``BINARIES``.

    Args:
        explicit: a directory named on the command line; wins over everything else.
        build: run the build script (which returns at once when its cache is warm).
        kubelet: the kubelet is wanted too (a cluster with the container node).

    Raises:
        ClusterError: no complete directory was found and none could be built.
    """
    for candidate in (explicit, os.environ.get(ASSETS_ENV)):
        if candidate:
            directory = Path(candidate)
            missing = missing_in(directory, kubelet)
            if not missing:
                return directory
            if candidate == explicit:
                raise ClusterError("assets", f"{directory} lacks: {', '.join(missing)}")
    script = build_script()
    if script is None or not build:
        raise ClusterError(
            "assets",
            f"no binaries: set {ASSETS_ENV} to a directory holding {', '.join(BINARIES)}, "
            "or run from a checkout where tools/kube/build.sh can build them",
        )
    print(f"[cluster] binaries: running {script} (cached after the first build)", file=sys.stderr)
    try:
        result = subprocess.run(
            ["bash", str(script), *([KUBELET] if kubelet else [])],
            stdout=subprocess.PIPE,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ClusterError("assets", f"{script} ran past {BUILD_TIMEOUT:.0f}s") from error
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ClusterError("assets", f"{script} failed with exit status {result.returncode}")
    directory = Path(lines[-1])
    missing = missing_in(directory, kubelet)
    if missing:
        raise ClusterError("assets", f"{script} printed {directory}, which lacks {missing}")
    return directory
