"""``make dev`` and ``make dev-down`` for real, in the short mode that CI can afford.

``tools/dev/up.sh`` with ``DEV_SHORT=1`` does everything ``make dev`` does (the local cluster,
``helm upgrade --install`` of the chart, the sim example, the load test through a router with
``--expect-scaling --max-error-ratio 0``, the access instructions) with a 38 s load test and
shorter autoscaling windows. The test runs it twice, as a user who types ``make dev`` again
would (the second run must reuse the cluster and upgrade the release), checks the load test's
JSON summary and the printed ``openai`` snippet, then runs ``tools/dev/down.sh`` and checks that
no process, network namespace, port or state of the cluster is left.

The script brings up its own cluster, so it needs an identity apart from the session cluster's
(which may be up while this runs): the state directory ``<session dir>-dev``, the name
``<session name>-dev``, ports from the session's base + 40, and the pod range
``INFERSCALE_E2E_DEV_POD_CIDR`` (default 10.251.0.0/16). It uses no fixture of conftest's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from e2e.conftest import CLUSTER_NAME, PORT_BASE, REPO, STATE_DIR
from inferscale.cluster import network
from inferscale.cluster.config import ClusterConfig
from inferscale.cluster.control import down
from inferscale.cluster.process import ProcessRecord, port_free, read_records

pytestmark = pytest.mark.e2e

DEV_DIR = STATE_DIR.with_name(STATE_DIR.name + "-dev")
DEV_NAME = f"{CLUSTER_NAME}-dev"
DEV_PORT_BASE = PORT_BASE + 40
DEV_POD_CIDR = os.environ.get("INFERSCALE_E2E_DEV_POD_CIDR", "10.251.0.0/16")
MODEL = "default/sim-llama"
#: One run: cluster start, helm --wait, the model Ready, 38 s of load, the drain.
RUN_TIMEOUT = 420


def _env() -> dict[str, str]:
    # The chart's pods run the code of this checkout, whichever virtualenv runs the tests (the
    # launcher starts pods with a clean environment), as in test_chart.py.
    code = REPO / "operator"
    helm_args = " ".join(
        f"--set {part}.extraEnv[0].name=PYTHONPATH,{part}.extraEnv[0].value={code}"
        for part in ("operator", "router")
    )
    return {
        **os.environ,
        "INFERSCALE_CLUSTER_DIR": str(DEV_DIR),
        "DEV_CLUSTER_NAME": DEV_NAME,
        "DEV_PORT_BASE": str(DEV_PORT_BASE),
        "DEV_POD_CIDR": DEV_POD_CIDR,
        "DEV_SHORT": "1",
        "DEV_PYTHON": sys.executable,
        "DEV_HELM_ARGS": helm_args,
    }


def _run(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "tools" / "dev" / script)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"


def _summary() -> dict[str, Any]:
    path = DEV_DIR / "logs" / "dev-loadtest.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    path.unlink()  # the next run must write its own
    return doc


def _check_scaled_without_failures(doc: dict[str, Any], output: str) -> None:
    requests = doc["requests"]
    assert doc["passed"] and doc["scaled_up_and_down"], output
    assert requests["errors"] == requests["dropped"] == requests["cancelled"] == 0, output
    assert requests["ok"] == requests["sent"] > 150, output  # ~12/s for 15 s, 1/s for 3 s
    replicas = doc["replicas"][MODEL]
    assert replicas["max_desired"] >= 3 and replicas["min_desired"] == 1, replicas
    assert replicas["scale_ups"] >= 1 and replicas["scale_downs"] >= 1, replicas


def _pod_processes(config: ClusterConfig) -> list[ProcessRecord]:
    records = []
    for pid_file in config.pods_dir.glob("*/pids/*.json"):
        data = json.loads(pid_file.read_text())
        records.append(ProcessRecord(data["name"], int(data["pid"]), int(data["started"])))
    return records


def _run_snippet(stdout: str) -> str:
    """Run the ``openai`` snippet that up.sh printed, as a user would paste it."""
    match = re.search(r"python - <<'PY'\n(.*?)\n\s*PY\n", stdout, re.S)
    assert match, stdout
    code = "\n".join(line.removeprefix("  ") for line in match.group(1).splitlines())
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_dev_scales_the_sim_up_and_down_and_dev_down_leaves_nothing() -> None:
    expected = ClusterConfig(state_dir=DEV_DIR, name=DEV_NAME, pod_cidr=DEV_POD_CIDR)
    down(DEV_DIR, quiet=True, expected=expected)  # whatever a killed earlier run left
    config: ClusterConfig | None = None
    records: list[ProcessRecord] = []
    try:
        first = _run("up.sh", RUN_TIMEOUT)
        print(_output(first))  # shown with pytest -rP
        assert first.returncode == 0, _output(first)
        assert "starting the local cluster" in first.stderr
        config = ClusterConfig.load(DEV_DIR)
        assert config.scrape_interval == 2.0 and config.port_base == DEV_PORT_BASE
        _check_scaled_without_failures(_summary(), _output(first))
        assert 'eval "$(' in first.stdout and "cluster env)" in first.stdout
        assert _run_snippet(first.stdout).strip(), "the snippet printed no answer"

        # `make dev` again: the same cluster, the release upgraded, the load test rerun.
        second = _run("up.sh", RUN_TIMEOUT)
        assert second.returncode == 0, _output(second)
        assert "reusing the local cluster" in second.stderr, _output(second)
        assert "starting the local cluster" not in second.stderr
        _check_scaled_without_failures(_summary(), _output(second))
        components = read_records(DEV_DIR)
        assert len(components) == 7 and all(r.alive() for r in components)
        # The operator, two routers and at least the sim's one replica (pods that were scaled
        # away left their pid files behind).
        pods = [r for r in _pod_processes(config) if r.alive()]
        assert len(pods) >= 4, pods
        records = components + pods
    finally:
        stopped = _run("down.sh", 240)
    assert stopped.returncode == 0, _output(stopped)
    assert "nothing of the cluster is left running" in stopped.stderr
    assert config is not None
    assert not [r for r in records if r.alive()]
    assert not network.list_netns(config.netns_prefix)
    if config.network == "netns":
        bridge = network.ip("link", "show", config.bridge_name, check=False)
        assert bridge.returncode != 0, f"bridge {config.bridge_name} is still there"
    for port in range(config.port_base, config.port_base + 8):
        assert port_free("127.0.0.1", port), f"port {port} is still taken"
    assert sorted(p.name for p in DEV_DIR.iterdir()) == ["logs"]
    # A second dev-down finds nothing and still succeeds.
    again = _run("down.sh", 60)
    assert again.returncode == 0 and "nothing was running" in again.stdout, _output(again)
