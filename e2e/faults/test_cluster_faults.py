"""The fault suite's cluster scenarios on the local cluster, each with its bound asserted.

CI runs the short form. ``INFERSCALE_FAULTS_SIZE=long`` runs the long one, and
``INFERSCALE_FAULTS_WRITE=docs/reliability.md`` puts the rows between that file's
``cluster-faults`` markers when every scenario has run (the table is never typed by hand).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import REPO, Cluster
from e2e.faults.__main__ import machine, table, update_rows, write_table
from e2e.faults.cluster import CLUSTER_LONG, CLUSTER_SHORT, ClusterFaults, cluster_scenarios
from e2e.faults.ledger import Row
from e2e.faults.scenarios import Scenario
from e2e.operator_support import Models, own_namespace
from e2e.router_support import fast_autoscaler_env, routers_running

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-cluster-faults"
NAMES = [
    "scale-down (cluster)",
    "rolling update",
    "operator leader killed",
    "API server and etcd restarted",
    "Prometheus down",
    "node lost",
]
BEGIN, END = "<!-- cluster-faults:begin -->", "<!-- cluster-faults:end -->"
SIZE = CLUSTER_LONG if os.environ.get("INFERSCALE_FAULTS_SIZE") == "long" else CLUSTER_SHORT
ROWS: list[tuple[Scenario, Row, list[str]]] = []


def _id(name: str) -> str:
    return name.split(" (")[0].replace(" ", "-")


@pytest.fixture(scope="module")
def scenarios(cluster: Cluster) -> Iterator[dict[str, Scenario]]:
    """Two routers, two operator replicas (leader election) deciding scale every second."""
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with (
        routers_running(
            cluster, OPERATOR_NAMESPACE, fast_autoscaler_env(cluster), operator_replicas=2
        ) as routers,
        own_namespace(cluster, "e2e-cluster-faults-models") as namespace,
    ):
        ctx = ClusterFaults(cluster, routers, Models(cluster, namespace))
        yield {s.name: s for s in cluster_scenarios(ctx)}
    target = os.environ.get("INFERSCALE_FAULTS_WRITE")
    if target and ROWS:
        _write(REPO / target, began, whole=len(ROWS) == len(NAMES))


@pytest.mark.parametrize("name", NAMES, ids=[_id(n) for n in NAMES])
def test_cluster_fault_keeps_its_bound(
    scenarios: dict[str, Scenario], name: str, tmp_path: Path
) -> None:
    scenario = scenarios[name]
    row = scenario.run(SIZE, tmp_path)
    row.scenario = name
    row.recoveries = [row.recovery_text]
    print(row.describe())
    assert len(row.records) == int(SIZE.rate * SIZE.duration), "a request was not recorded"
    problems = scenario.bound(row)
    ROWS.append((scenario, row, problems))
    assert not problems, f"{name}: {problems}\n{row.describe()}"


def _write(path: Path, began: str, whole: bool) -> None:
    """The whole table when every scenario ran, else only the rows of those that did."""
    selected = "" if whole else f" -k '{' or '.join(_ids(ROWS))}'"
    head = (
        f"`INFERSCALE_FAULTS_SIZE={os.environ.get('INFERSCALE_FAULTS_SIZE', 'short')} "
        f"INFERSCALE_FAULTS_WRITE=docs/reliability.md pytest e2e/faults/test_cluster_faults.py"
        f"{selected}` on {began}; {SIZE.rate:g} requests/s for {SIZE.duration:g} s per scenario, "
        f"fault at {SIZE.fault_at:g} s; machine: {machine()}."
    )
    if whole:
        write_table(path, head + "\n\n" + table(ROWS), BEGIN, END)
    else:
        update_rows(path, head, table(ROWS), BEGIN, END)


def _ids(rows: list[tuple[Scenario, Row, list[str]]]) -> list[str]:
    return [_id(scenario.name) for scenario, _, _ in rows]
