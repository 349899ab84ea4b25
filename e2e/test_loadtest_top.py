"""``inferscale top`` and ``inferscale loadtest`` against the cluster, with the operator running.

A sim InferenceModel is served by a real process on its pod IP. ``top --once`` shows it Ready
with its replica counts; a load test against that pod sees the replicas go from 1 to 2 and back
when the model is scaled in the middle of the run, and reports both in its summary.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import Models, Operator, apply_crds, running_operator, sim_model
from inferscale.cli.main import main

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-loadtest-operator"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Operator]:
    cluster.require_local()
    apply_crds(cluster)
    with contextlib.suppress(ApiException):
        cluster.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
    try:
        with running_operator(cluster, OPERATOR_NAMESPACE, replicas=1) as running:
            yield running
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(OPERATOR_NAMESPACE)


def test_top_once_and_a_load_test_that_sees_scale_up_and_down(
    cluster: Cluster, namespace: str, operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    models = Models(cluster, namespace)
    models.create(sim_model("topm", replicas=1))
    wait_for(lambda: models.is_ready("topm"), 90, "the sim model Ready")
    (pod,) = models.ready_pods("topm")

    kubeconfig = str(cluster.kubeconfig)
    assert main(["top", "--once", "--kubeconfig", kubeconfig, "-n", namespace]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(namespace)).split()
    assert row[:5] == [namespace, "topm", "Ready", "1", "1"]

    def scale_up_then_down() -> None:
        time.sleep(1.5)
        models.patch_spec("topm", {"replicas": 2})
        wait_for(lambda: len(models.ready_pods("topm")) == 2, 30, "the second replica Ready")
        time.sleep(2.5)  # at least one read of the cluster sees 2/2
        models.patch_spec("topm", {"replicas": 1})

    scaler = threading.Thread(target=scale_up_then_down)
    scaler.start()
    code = main(
        ["loadtest", "--url", f"http://{pod.status.pod_ip}:8000", "--stages", "15s@5",
         "--kubeconfig", kubeconfig, "-n", namespace, "--json", "--quiet", "--max-tokens", "4",
         "--expect-scaling"]
    )  # fmt: skip
    scaler.join()
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["target"]["model"] == "topm-served" and doc["requests"]["ok"] > 20
    seen = doc["replicas"][f"{namespace}/topm"]
    assert (seen["min_desired"], seen["max_desired"]) == (1, 2)
    assert (seen["scale_ups"], seen["scale_downs"]) == (1, 1) and doc["scaled_up_and_down"]
    assert seen["max_ready"] == 2, doc["replicas"]
    up, down = doc["scale_events"]
    assert (up["from"], up["to"], down["from"], down["to"]) == (1, 2, 2, 1)
    assert 1 <= up["at_seconds"] < down["at_seconds"] <= 15
