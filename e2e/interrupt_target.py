"""Not collected on its own: test_lifecycle.py runs it in a nested pytest session and stops it."""

from __future__ import annotations

import time

import pytest

from e2e.conftest import Cluster, echo_pod, ready_pods, wait_for

pytestmark = pytest.mark.e2e


def test_hold_a_running_pod_until_interrupted(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, echo_pod("held"))
    wait_for(lambda: ready_pods(cluster, namespace, "app=held"), 60, "the pod Ready")
    print("HELD", flush=True)
    time.sleep(240)
