"""Model selection on the cluster: a route `auto` over two sim models with different prices.

The operator compiles the InferenceRoute's ``selection`` into every router's table; requests
for ``auto`` go to the cheap model when the difficulty model scores them easy and to the
strong one when it scores them hard, and the answer names the model that served (its
``model`` field and the ``x-inferscale-model`` header). Waits are bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from tests.unit.router.test_selection import EASY, HARD

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import Models, sim_model
from e2e.router_support import Routers, routers_running, wait_routable, wait_routers

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-selection"
GROUP, VERSION = "inferscale.io", "v1alpha1"


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    with routers_running(cluster, OPERATOR_NAMESPACE) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


def selecting_route(cheap: str, strong: str, name: str = "auto") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceRoute",
        "metadata": {"name": name},
        "spec": {
            "selection": {
                "strongShare": 0.4,
                "candidates": [
                    {"model": cheap, "outputPricePerMillionTokens": 0.6},
                    {"model": strong, "outputPricePerMillionTokens": 15, "tier": 1},
                ],
            }
        },
    }


def route_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    obj = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceroutes", "auto"
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def test_auto_sends_easy_prompts_to_the_cheap_model_and_hard_ones_to_the_strong(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    models.create(sim_model("small"))
    models.create(sim_model("big"))
    wait_routable(routers, models, "small", "small-served", 1)
    wait_routable(routers, models, "big", "big-served", 1)
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceroutes", selecting_route("small-served", "big-served")
    )
    wait_routers(
        routers,
        lambda: all("auto" in (t or {}).get("models", {}) for t in routers.tables()),
        15,
        "every router to hold the route auto",
    )
    for router in routers.ready_pods():
        with routers.client(router) as client:
            for prompt, served in ((EASY, "small-served"), (HARD, "big-served")):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=prompt["messages"], max_tokens=2
                )
                assert raw.headers["x-inferscale-model"] == served
                assert raw.parse().model == served

    def ready_condition() -> dict[str, Any] | None:
        conditions = route_status(cluster, namespace).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready"), None)

    # The first status may predate the route's compile (NotServed); it must turn Ready.
    ready = wait_for(
        lambda: (c := ready_condition()) is not None and c["status"] == "True" and c,
        30,
        "the route to turn Ready",
    )
    assert ready["reason"] == "Selecting" and "small-served, big-served" in ready["message"]
    # The operator sums every router's counts into the status (one easy, one hard per router).
    routers_count = len(routers.ready_pods())
    status = wait_for(
        lambda: (
            (s := route_status(cluster, namespace)).get("selections")
            == {"big-served": routers_count, "small-served": routers_count}
            and s
        ),
        60,
        "the route's status to count the selections",
    )
    assert status["costSaved"] > 0


def test_an_ejected_candidate_is_skipped(
    cluster: Cluster, namespace: str, routers: Routers, models: Models
) -> None:
    failing = {"name": "INFERSCALE_SIM_FAILURES__ERROR_RATE", "value": "1"}
    models.create(sim_model("cheap"))
    models.create(sim_model("broken", env=[failing]))
    wait_routable(routers, models, "cheap", "cheap-served", 1)
    wait_routable(routers, models, "broken", "broken-served", 1)
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "inferenceroutes",
        selecting_route("cheap-served", "broken-served", name="auto-broken"),
    )
    wait_routers(
        routers,
        lambda: all("auto-broken" in (t or {}).get("models", {}) for t in routers.tables()),
        15,
        "every router to hold the route auto-broken",
    )
    router = routers.ready_pods()[0]
    served = []
    with routers.client(router) as client:
        # Hard prompts go to the strong candidate, which fails until its breaker ejects it;
        # from then on they are served by the cheap one instead of failing.
        for _ in range(10):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="auto-broken", messages=HARD["messages"], max_tokens=2
                )
            except openai.APIStatusError as error:
                assert error.status_code >= 500
                served.append("error")
                continue
            served.append(raw.headers["x-inferscale-model"])
    assert "error" in served[:3], served  # it was tried first
    assert served[-3:] == ["cheap-served"] * 3, served
