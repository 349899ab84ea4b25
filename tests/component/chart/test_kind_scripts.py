"""The kind scripts (e2e/kind/): they need Docker, so here they are only read and checked.

``bash -n`` always; ``shellcheck`` where it is installed (``apt-get install shellcheck``; CI
installs it). Beyond syntax: every file they use exists, and the values they install the chart
with name the images they build and the Prometheus they install.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.component.chart.helm import CHART, REPO

KIND = REPO / "e2e" / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))


def _default(name: str) -> str:
    """The default of ``NAME=${NAME:-default}`` in common.sh."""
    text = (KIND / "common.sh").read_text()
    match = re.search(rf"^{name}=\$\{{{name}:-([^}}]*)\}}$", text, re.M)
    assert match, f"common.sh has no default for {name}"
    return match.group(1)


def test_the_scripts_are_there_and_executable():
    assert {p.name for p in SCRIPTS} == {"common.sh", "up.sh", "demo.sh", "down.sh"}
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
    targets = [*SCRIPTS, REPO / "tools" / "kube" / "build.sh"]
    done = subprocess.run(
        [shellcheck, "--external-sources", *map(str, targets)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_files_they_use_exist():
    text = "\n".join(p.read_text() for p in SCRIPTS)
    for path in re.findall(r"\$REPO/([\w./-]+)", text):
        if "$" not in path:
            assert (REPO / path).exists(), path
    for image in re.search(r"^IMAGES=\((.*)\)$", text, re.M).group(1).split():  # type: ignore[union-attr]
        assert (REPO / "images" / image / "Dockerfile").is_file()


def test_the_kind_values_match_what_up_sh_builds_and_installs():
    values = yaml.safe_load((CHART / "ci" / "kind-values.yaml").read_text())
    tag, prometheus = _default("TAG"), _default("PROMETHEUS_RELEASE")
    for component in ("operator", "router"):
        assert values[component]["image"]["tag"] == tag
        assert values[component]["image"]["pullPolicy"] == "Never"  # loaded, never pulled
    assert values["operator"]["settings"]["reconcile"]["images"]["sim"].endswith(f"/sim:{tag}")
    for monitor in ("serviceMonitor", "podMonitor"):
        assert values["metrics"][monitor] == {
            "enabled": True,
            "labels": {"release": prometheus},
        }
    config = yaml.safe_load((KIND / "kind-config.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert workers and all(w["labels"]["inferscale.io/node-pool"] == "gpu" for w in workers)
    assert "-l inferscale.io/node-pool=gpu" in (KIND / "up.sh").read_text()


def test_the_demo_runs_the_load_test_against_the_router():
    text = (KIND / "demo.sh").read_text()
    assert re.search(
        r'loadtest --url "http://127\.0\.0\.1:\$LOCAL_PORT/v1" --rate "\$RATE" --duration', text
    )
    assert 'port-forward "service/$RELEASE-router"' in text
