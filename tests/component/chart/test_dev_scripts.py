"""The ``make dev`` scripts (tools/dev/), read and checked without a cluster.

e2e/test_dev.py runs them for real; here: syntax and shellcheck, the demo model they apply is a
valid InferenceModel with the names they wait for, the load test's stages parse to the
durations they promise, the router port is the chart's, and a missing interpreter is reported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferscale.api.validation import parse_object
from inferscale.loadtest.arrivals import parse_stages, schedule_seconds
from tests.component.chart.helm import CHART, REPO

DEV = REPO / "tools" / "dev"
SCRIPTS = sorted(DEV.glob("*.sh"))


def _settings(short: bool) -> dict[str, str]:
    """The variables common.sh sets, as the scripts see them."""
    names = ["MODEL", "SERVED", "ROUTER_PORT", "STAGES", "MODEL_PATCH", "LOADTEST_JSON"]
    script = f"source {DEV / 'common.sh'}\n" + "".join(
        f'printf "%s\\0" "${name}"\n' for name in names
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "DEV_PYTHON": sys.executable, "DEV_SHORT": str(int(short))},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(zip(names, done.stdout.split("\0")[:-1], strict=True))


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as ``kubectl patch --type merge`` applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def test_the_scripts_are_there_and_executable():
    assert {p.name for p in SCRIPTS} == {"common.sh", "up.sh", "down.sh"}
    for script in SCRIPTS:
        if script.name != "common.sh":
            assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses_them(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_shellcheck_finds_nothing():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run(
        [shellcheck, "--external-sources", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("short", "seconds"), [(False, 130), (True, 38)])
def test_the_demo_model_is_valid_and_named_as_the_scripts_expect(short, seconds):
    settings = _settings(short)
    (example,) = [d for d in yaml.safe_load_all((REPO / "examples/sim-model.yaml").read_text())]
    model = _merge_patch(example, json.loads(settings["MODEL_PATCH"]))
    parse_object(model)  # raises on anything the API server or the operator would refuse
    spec = model["spec"]
    assert (model["metadata"]["name"], spec["servedName"]) == (
        settings["MODEL"],
        settings["SERVED"],
    )
    assert spec["engine"] == "sim" and spec["minReplicas"] == 1 and spec["maxReplicas"] >= 3
    scaling = spec["autoscaling"]
    assert scaling["enabled"] and "scaleToZeroDelaySeconds" not in scaling
    # The busy stage (12/s of ~1 s requests) wants 3 or more replicas at the target, and the
    # quiet stage outlasts the scale-down: stable window + delay, with room to spare.
    stages = parse_stages(settings["STAGES"])
    assert schedule_seconds(stages) == seconds
    busy, quiet = max(s.start_rate for s in stages), stages[-1]
    assert busy / scaling["targetInFlightPerReplica"] >= 3 and quiet.start_rate == 0
    assert quiet.seconds >= scaling["stableWindowSeconds"] + scaling["scaleDownDelaySeconds"] + 5


def test_the_router_port_is_the_charts():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(_settings(False)["ROUTER_PORT"]) == values["router"]["port"]


def test_the_makefile_runs_them():
    text = (REPO / "Makefile").read_text()
    assert "bash tools/dev/up.sh" in text and "bash tools/dev/down.sh" in text


def test_a_missing_interpreter_is_reported(tmp_path: Path):
    for script in ("up.sh", "down.sh"):
        done = subprocess.run(
            ["bash", str(DEV / script)],
            env={"PATH": "/usr/bin:/bin", "DEV_PYTHON": str(tmp_path / "no-python")},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 1 and "run `make install`" in done.stderr, done.stderr


def test_without_root_it_says_so_before_starting_anything(tmp_path: Path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "id").write_text("#!/bin/sh\necho 1000\n")  # a user who is not root
    (fake_bin / "id").chmod(0o755)
    state = tmp_path / "state"
    done = subprocess.run(
        ["bash", str(DEV / "up.sh")],
        env={
            "PATH": f"{fake_bin}:/usr/bin:/bin",
            "DEV_PYTHON": sys.executable,
            "INFERSCALE_CLUSTER_DIR": str(state),
            "PYTHONPATH": str(REPO / "operator"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "make dev needs root" in done.stderr, done.stderr
    assert not state.exists() or not any(state.iterdir())  # no cluster was started
