"""Run the chart through the real ``helm`` binary: render, lint, and the errors it reports.

helm is the one that ``tools/kube/build.sh`` caches beside the local cluster's binaries
(``INFERSCALE_KUBE_ASSETS`` or the build cache), else one on ``PATH``. CI builds it first, so
there a missing helm is a failure; elsewhere the chart tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferscale.cluster.assets import ASSETS_ENV, find_assets
from inferscale.cluster.process import ClusterError

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "inferscale"
RELEASE = "inferscale"
NAMESPACE = "inferscale-system"


@cache
def helm_binary() -> str | None:
    """The helm to use, or None."""
    candidates = []
    if os.environ.get(ASSETS_ENV):
        candidates.append(Path(os.environ[ASSETS_ENV]) / "helm")
    try:
        candidates.append(find_assets(build=True) / "helm")
    except ClusterError:
        pass
    for path in candidates:
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which("helm")


def require_helm() -> str:
    """The helm binary; skip (or, in CI, fail) when there is none."""
    found = helm_binary()
    if found:
        return found
    message = "no helm: run `bash tools/kube/build.sh` (it caches helm with the cluster binaries)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Result:
    """What one helm command did."""

    returncode: int
    stdout: str
    stderr: str


def run_helm(*args: str, values: dict[str, Any] | None = None) -> Result:
    """``helm ARGS``; ``values`` are passed as one more values file (JSON is YAML)."""
    argv = [require_helm(), *args]
    stdin = None
    if values is not None:
        argv += ["-f", "-"]
        stdin = json.dumps(values)
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )
    return Result(done.returncode, done.stdout, done.stderr)


def render(
    values: dict[str, Any] | None = None,
    *files: Path,
    sets: tuple[str, ...] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders; fails the test with helm's error otherwise."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in files:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    done = run_helm(*args, values=values)
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Kind/name`` -> object."""
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}
