"""The routing publisher against FakeKubeApi and routers (httpx.MockTransport, and a real one).

Covers delivery (bearer token, every router, the ConfigMap), versions across restarts, the
failure paths (router down, 409, 401/403, missing Secret, RBAC), and the kopf glue that wakes
the publisher only for changes routing reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from inferscale.config import OperatorSettings, RoutingSettings
from inferscale.controller import routing
from inferscale.controller.inference_model import Runtime
from inferscale.controller.routing import RoutingPublisher, RoutingState, Sources, read_sources
from inferscale.errors import Forbidden, NotFound
from inferscale.kube.fake import FakeKubeApi
from inferscale.protocol.table import RoutingTable
from tests.component.operator.routers import NS, Routers, admin_secret
from tests.component.router.conftest import TOKEN, RunningRouter
from tests.factories import model, pod, router_pod

CM_KEY = ("v1", "ConfigMap", NS, "inferscale-routing-table")
SETTINGS = RoutingSettings(coalesce_seconds=0.01, retry_initial_seconds=0.05, retry_max_seconds=1)


class World:
    """Indices (plain lists) and the publisher over them, with a fake clock for versions."""

    def __init__(self, settings: RoutingSettings = SETTINGS) -> None:
        self.api = FakeKubeApi()
        self.api.put(admin_secret())
        self.routers = Routers()
        self.models: list[dict[str, Any]] = [model("llama", engine="sim", namespace="team")]
        self.routes: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = [pod("llama-1", ip="10.0.0.1", namespace="team")]
        self.router_pods: list[dict[str, Any]] = [router_pod("r1", ip="10.9.0.1")]
        self.providers: list[dict[str, Any]] = []
        self.now_ms = 1_000
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.routers.handler))
        self.publisher = RoutingPublisher(
            self.api,
            settings,
            NS,
            lambda: Sources(self.models, self.routes, self.pods, self.router_pods, self.providers),
            client=self.client,
            wall_ms=lambda: self.now_ms,
        )

    def stored(self) -> dict[str, Any]:
        return json.loads(self.api.objects[CM_KEY]["data"]["routing-table.json"])


@pytest.fixture
async def world():
    w = World()
    yield w
    await w.publisher.close()
    await w.client.aclose()


async def test_pushes_the_table_with_the_token_and_stores_it(world):
    await world.publisher.sync()
    (put,) = [r for r in world.routers.requests if r.method == "PUT"]
    assert str(put.url) == "http://10.9.0.1:8080/admin/v1/routing-table"
    assert put.headers["authorization"] == f"Bearer {TOKEN}"
    table = RoutingTable.model_validate_json(put.content)
    assert table.version == 1_000
    (endpoint,) = table.models["llama"].endpoints
    assert (endpoint.pod, endpoint.address, endpoint.ready) == ("llama-1", "10.0.0.1:8000", True)
    assert world.stored()["version"] == 1_000
    assert RoutingTable.model_validate(world.stored()) == table


def _provider(price: float) -> dict[str, Any]:
    return {
        "metadata": {"name": "openai", "namespace": "team"},
        "spec": {
            "type": "openai",
            "apiKeySecretRef": {"name": "openai-key", "key": "api-key"},
            "models": [{"name": "gpt-4o-mini", "outputPricePerMillionTokens": price}],
        },
    }


async def test_providers_and_spillover_reach_the_routers_and_a_price_change_is_a_new_table(world):
    world.routes.append(
        {
            "metadata": {"name": "llama", "namespace": "team"},
            "spec": {
                "backends": [
                    {"inferenceModel": "llama"},
                    {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
                ]
            },
        }
    )
    world.providers.append(_provider(0.6))
    await world.publisher.sync()
    table = RoutingTable.model_validate(world.routers.tables["10.9.0.1"])
    (backend,) = table.models["llama"].backends
    assert backend.label == "provider:team/openai/gpt-4o-mini"
    assert (
        table.providers["team/openai"].models["gpt-4o-mini"].output_price_per_million_tokens == 0.6
    )
    world.providers[0] = _provider(0.8)
    world.now_ms = 2_000
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.1"]["version"] == 2_000
    assert world.publisher.compiled is not None and world.publisher.compiled.problems == ()


async def test_nothing_changed_means_no_new_version_and_no_push(world):
    await world.publisher.sync()
    world.now_ms = 5_000
    await world.publisher.sync()
    assert world.routers.puts("10.9.0.1") == 1
    assert world.publisher.table is not None and world.publisher.table.version == 1_000


async def test_a_pod_turning_ready_is_a_new_version_for_every_router(world):
    world.router_pods.append(router_pod("r2", ip="10.9.0.2"))
    world.pods.append(pod("llama-2", ip="10.0.0.2", namespace="team", ready=False))
    await world.publisher.sync()
    world.pods[1] = pod("llama-2", ip="10.0.0.2", namespace="team", ready=True)
    world.now_ms = 900  # the clock went back: the version still grows
    await world.publisher.sync()
    for ip in ("10.9.0.1", "10.9.0.2"):
        table = world.routers.tables[ip]
        assert table["version"] == 1_001
        assert [e.get("ready", True) for e in table["models"]["llama"]["endpoints"]] == [True, True]


async def test_a_deleting_pod_leaves_the_table_at_once(world):
    await world.publisher.sync()
    world.pods[0] = pod("llama-1", ip="10.0.0.1", namespace="team", deleting=True)
    await world.publisher.sync()
    held = world.routers.tables["10.9.0.1"]
    assert held["models"]["llama"].get("endpoints", []) == []  # known, held, not routed


async def test_versions_keep_growing_across_operator_restarts(world):
    world.api.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "inferscale-routing-table", "namespace": NS},
            "data": {"routing-table.json": json.dumps({"version": 9_999_999, "models": {}})},
        }
    )
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.1"]["version"] == 10_000_000


async def test_an_unreadable_configmap_still_gives_versions_from_the_clock(world):
    world.api.fail_next("get", Forbidden(403, "Forbidden", "configmaps is forbidden"))
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000


async def test_a_router_holding_a_newer_table_gets_a_version_above_it(world):
    world.routers.tables["10.9.0.1"] = {"version": 50_000, "models": {}}
    await world.publisher.sync()  # 409; reads 50000
    assert world.publisher.table is None and world.publisher.dirty.is_set()
    world.publisher.routers[next(iter(world.publisher.routers))].retry_at = 0
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.1"]["version"] == 50_001


async def test_an_unreachable_router_is_retried_with_backoff_and_others_are_served(world, caplog):
    world.router_pods.append(router_pod("r2", ip="10.9.0.2"))
    world.routers.down.add("10.9.0.2")
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
        await world.publisher.sync()  # not due yet: no second try
    assert world.routers.puts("10.9.0.2") == 1
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000
    (line,) = [r.getMessage() for r in caplog.records if "r2" in r.getMessage()]
    assert "push to router sys/r2 failed" in line and "10.9.0.2" in line
    state = world.publisher.routers["uid-r2"]
    assert state.failures == 1
    first_wait = state.retry_at - world.publisher.monotonic()
    assert 0 < first_wait <= SETTINGS.retry_initial_seconds
    # It comes back: the retry delivers once the back-off has passed.
    world.routers.down.clear()
    await asyncio.sleep(SETTINGS.retry_initial_seconds)
    assert world.publisher.wake_at() <= world.publisher.monotonic()
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.2"]["version"] == 1_000
    assert world.publisher.routers["uid-r2"].failures == 0


async def test_backoff_doubles_and_is_capped(world):
    world.routers.down.add("10.9.0.1")
    waits = []
    for _ in range(8):
        if "uid-r1" in world.publisher.routers:
            world.publisher.routers["uid-r1"].retry_at = 0  # due now, whatever the back-off
        await world.publisher.sync()
        waits.append(world.publisher.routers["uid-r1"].retry_at - world.publisher.monotonic())
    expected = [0.05, 0.1, 0.2, 0.4, 0.8, 1, 1, 1]
    assert waits == pytest.approx(expected, abs=0.02)


async def test_a_refused_token_is_logged_without_the_token_and_reread(world, caplog):
    world.routers.token = "rotated"
    with caplog.at_level(logging.DEBUG, logger="inferscale.controller.routing"):
        await world.publisher.sync()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused the admin token (403)" in text and "sys/r1" in text
    assert TOKEN not in text
    assert world.publisher.token is None  # read again on the next try
    world.api.put(admin_secret("rotated"))
    world.publisher.routers["uid-r1"].retry_at = 0
    await world.publisher.sync()
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000


async def test_a_missing_secret_stops_pushes_not_the_configmap(world, caplog):
    del world.api.objects[("v1", "Secret", NS, "inferscale-router-admin")]
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
        world.publisher.token_retry_at = 0
        await world.publisher.sync()
    assert world.routers.requests == []
    assert world.stored()["version"] == 1_000
    lines = [r.getMessage() for r in caplog.records if "not pushed" in r.getMessage()]
    assert lines == [
        "routing table is not pushed to routers: Secret sys/inferscale-router-admin does not "
        "exist; routers keep what the ConfigMap sys/inferscale-routing-table holds"
    ]  # once, not per try


@pytest.mark.parametrize(
    ("data", "why"),
    [({}, "has no key 'token'"), ({"token": "!!"}, "not valid base64"), ({"token": ""}, "empty")],
)
async def test_a_bad_secret_is_reported(world, caplog, data, why):
    world.api.put({**admin_secret(), "data": data})
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
    assert world.routers.requests == []
    assert any(why in r.getMessage() for r in caplog.records)


async def test_a_refused_table_and_other_statuses_are_logged_and_retried(world, caplog):
    world.routers.answer["10.9.0.1"] = 400
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
    assert any("as invalid: no (400)" in r.getMessage() for r in caplog.records)
    world.routers.answer["10.9.0.1"] = 500
    world.publisher.routers["uid-r1"].retry_at = 0
    await world.publisher.sync()
    assert world.publisher.routers["uid-r1"].failures == 2


async def test_a_router_that_turns_ready_is_sent_the_table_at_once(world):
    world.router_pods[0] = router_pod("r1", ip="10.9.0.1", ready=False)
    world.routers.down.add("10.9.0.1")  # still starting: not listening yet
    await world.publisher.sync()
    assert world.publisher.routers["uid-r1"].retry_at > world.publisher.monotonic()
    world.routers.down.clear()
    world.router_pods[0] = router_pod("r1", ip="10.9.0.1", ready=True)
    await world.publisher.sync()  # no back-off wait
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000


async def test_a_restarted_router_process_is_sent_the_table_again(world):
    await world.publisher.sync()
    restarted = router_pod("r1", ip="10.9.0.1")
    restarted["status"]["containerStatuses"][0]["restartCount"] = 3
    world.router_pods[0] = restarted
    await world.publisher.sync()
    assert world.routers.puts("10.9.0.1") == 2


async def test_routers_not_running_or_deleting_are_not_pushed(world):
    world.router_pods = [
        router_pod("r1", ip=None),
        router_pod("r2", ip="10.9.0.2", deleting=True),
        router_pod("r3", ip="10.9.0.3", phase="Pending"),
    ]
    await world.publisher.sync()
    assert world.routers.requests == []
    assert world.stored()["version"] == 1_000


async def test_a_forbidden_configmap_write_names_rbac_and_is_retried(world, caplog):
    world.api.fail_next("apply", Forbidden(403, "Forbidden", "configmaps is forbidden"))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
    assert any("configmaps get, create, patch" in r.getMessage() for r in caplog.records)
    assert CM_KEY not in world.api.objects
    assert world.publisher.wake_at() <= world.publisher.monotonic() + SETTINGS.retry_max_seconds
    world.publisher.store_at = 0
    await world.publisher.sync()
    assert world.stored()["version"] == 1_000


async def test_a_configmap_write_failing_the_same_way_warns_once(world, caplog):
    for _ in range(3):
        world.api.fail_next("apply", NotFound(404, "NotFound", 'namespaces "sys" not found'))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        for _ in range(3):
            world.publisher.store_at = 0
            await world.publisher.sync()
    assert sum("writing ConfigMap" in r.getMessage() for r in caplog.records) == 1
    assert world.publisher.store_failures == 3


async def test_configmap_writes_are_paced_but_pushes_are_not():
    w = World(SETTINGS.model_copy(update={"configmap_interval_seconds": 60}))
    try:
        await w.publisher.sync()
        w.pods.append(pod("llama-2", ip="10.0.0.2", namespace="team"))
        await w.publisher.sync()
        assert w.routers.tables["10.9.0.1"]["version"] == 1_001
        assert w.stored()["version"] == 1_000  # the next write waits for the interval
        await w.publisher.close()  # ... or for the operator to stop
        assert w.stored()["version"] == 1_001
    finally:
        await w.client.aclose()


async def test_problems_are_logged_once_while_they_last(world, caplog):
    world.pods.append(pod("v6", ip="fd00::1", namespace="team"))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.routing"):
        await world.publisher.sync()
        await world.publisher.sync()
    assert sum("v6" in r.getMessage() for r in caplog.records) == 1


async def test_resync_sends_the_same_table_again(world):
    await world.publisher.sync()
    world.publisher.resync()
    await world.publisher.sync()
    assert world.routers.puts("10.9.0.1") == 2
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000


async def test_the_loop_coalesces_a_burst_into_one_push(world):
    task = asyncio.create_task(world.publisher.run())
    try:
        for i in range(20):
            world.pods.append(pod(f"llama-b{i}", ip=f"10.0.1.{i}", namespace="team"))
            world.publisher.notify()
        await asyncio.sleep(0.3)
        assert world.routers.puts("10.9.0.1") == 1
        assert len(world.routers.tables["10.9.0.1"]["models"]["llama"]["endpoints"]) == 21
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_loop_survives_a_bug_in_one_sync(caplog):
    w = World(SETTINGS.model_copy(update={"retry_max_seconds": 0.05}))
    calls = []

    def broken() -> Sources:
        calls.append(1)
        raise RuntimeError("boom")

    w.publisher.read = broken
    task = asyncio.create_task(w.publisher.run())
    try:
        with caplog.at_level(logging.ERROR, logger="inferscale.controller.routing"):
            w.publisher.notify()
            await asyncio.sleep(0.3)
            w.publisher.notify()
            await asyncio.sleep(0.3)
        assert not task.done() and len(calls) >= 2
        assert any("sync failed" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await w.client.aclose()


async def test_a_real_router_takes_the_table_and_serves_its_models():
    api = FakeKubeApi()
    api.put(admin_secret())
    with RunningRouter() as router:
        settings = SETTINGS.model_copy(update={"admin_port": router.port})
        models = [model("llama", engine="sim", namespace="team", servedName="llama-sim")]
        pods = [pod("llama-1", ip="127.0.0.1", namespace="team")]
        routers = [router_pod("r1", ip="127.0.0.1")]
        publisher = RoutingPublisher(
            api, settings, NS, lambda: Sources(models, [], pods, routers), wall_ms=lambda: 42
        )
        try:
            await publisher.sync()
            held = httpx.get(
                f"{router.base_url}/admin/v1/routing-table",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ).json()
            assert held["version"] == 42
            (endpoint,) = held["models"]["llama-sim"]["endpoints"]
            assert endpoint["address"] == "127.0.0.1:8000" and endpoint["engine"] == "sim"
            assert held["models"]["llama-sim"]["route"]["strategy"] == "predictedTTFT"
            models_seen = httpx.get(f"{router.base_url}/v1/models").json()
            assert [m["id"] for m in models_seen["data"]] == ["llama-sim"]
            assert httpx.get(f"{router.base_url}/readyz").status_code == 200
        finally:
            await publisher.close()


# -- kopf glue -------------------------------------------------------------------------------


class Index(dict):
    """A kopf index stand-in: key -> list of objects."""


def indices(w: World) -> dict[str, Any]:
    return {
        "models": Index({("team", "llama"): w.models}),
        "model_pods": Index({("team", "llama"): w.pods}),
        "inference_routes": Index(),
        "inference_providers": Index(),
        "router_pods": Index({(NS, "r1"): w.router_pods}),
    }


async def test_the_first_event_starts_the_publisher_and_only_relevant_changes_wake_it():
    runtime = Runtime(api=FakeKubeApi(), settings=OperatorSettings(pod_namespace=NS))
    memo: dict[str, Any] = {"runtime": runtime}
    await routing.routing_startup(memo=memo)
    state = memo["routing"]
    assert isinstance(state, RoutingState) and state.publisher is None
    w = World()
    idx = indices(w)
    body = pod("llama-1", ip=None, namespace="team", ready=False)
    await routing.routing_model_pod_event(type=None, body=body, memo=memo, **idx)
    try:
        assert state.publisher is not None and state.task is not None
        assert state.publisher.namespace == NS
        assert state.publisher.dirty.is_set()
        state.publisher.dirty.clear()
        # The same view again (a status field routing does not read): no wake-up.
        body["status"]["hostIP"] = "192.168.0.1"
        await routing.routing_model_pod_event(type="MODIFIED", body=body, memo=memo, **idx)
        assert not state.publisher.dirty.is_set()
        # An IP, then Ready, then the deletion: each wakes it.
        for changed in (
            pod("llama-1", namespace="team", ready=False),
            pod("llama-1", namespace="team", ready=True),
            pod("llama-1", namespace="team", deleting=True),
        ):
            await routing.routing_model_pod_event(type="MODIFIED", body=changed, memo=memo, **idx)
            assert state.publisher.dirty.is_set()
            state.publisher.dirty.clear()
        await routing.routing_model_pod_event(type="DELETED", body=changed, memo=memo, **idx)
        assert state.publisher.dirty.is_set()
        state.publisher.dirty.clear()
        # Models and routes: a spec change (generation) or deletion wakes it, status does not.
        m = model("llama", engine="sim", namespace="team")
        m["metadata"]["generation"] = 1
        await routing.routing_model_event(type=None, body=m, memo=memo, **idx)
        assert state.publisher.dirty.is_set()
        state.publisher.dirty.clear()
        m["status"] = {"readyReplicas": 1}
        await routing.routing_model_event(type="MODIFIED", body=m, memo=memo, **idx)
        assert not state.publisher.dirty.is_set()
        r = router_pod("r1", ready=False)
        await routing.routing_router_pod_event(type=None, body=r, memo=memo, **idx)
        state.publisher.dirty.clear()
        await routing.routing_router_pod_event(
            type="MODIFIED", body=router_pod("r1", ready=True), memo=memo, **idx
        )
        assert state.publisher.dirty.is_set()
    finally:
        await routing.routing_cleanup(memo=memo)
    assert state.task.done()


async def test_routing_disabled_starts_nothing():
    settings = OperatorSettings(routing=RoutingSettings(enabled=False))
    memo: dict[str, Any] = {"runtime": Runtime(api=FakeKubeApi(), settings=settings)}
    await routing.routing_startup(memo=memo)
    w = World()
    await routing.routing_model_pod_event(type=None, body=pod("p"), memo=memo, **indices(w))
    assert memo["routing"].publisher is None
    assert not routing.is_router(body=router_pod("r1"), memo=memo)
    await w.client.aclose()


def test_router_pods_are_recognised_by_namespace_and_labels():
    settings = OperatorSettings(pod_namespace=NS)
    memo = {"runtime": Runtime(api=FakeKubeApi(), settings=settings)}
    assert routing.is_router(body=router_pod("r1"), memo=memo)
    assert not routing.is_router(body=pod("p", namespace=NS), memo=memo)
    assert not routing.is_router(body=router_pod("r1"), memo={})


def test_index_snapshots_and_read_sources():
    route = {
        "metadata": {"name": "r", "namespace": "team", "managedFields": [{}], "generation": 2},
        "spec": {"backends": [{"inferenceModel": "llama"}]},
    }
    (snapshot,) = routing.inference_routes(body=route).values()
    assert "managedFields" not in snapshot["metadata"] and snapshot["spec"] == route["spec"]
    (router,) = routing.router_pods(body=router_pod("r1")).values()
    assert router["status"]["podIP"] == "10.9.0.1" and router["metadata"]["uid"] == "uid-r1"
    w = World()
    sources = read_sources(indices(w))
    assert [m["metadata"]["name"] for m in sources.models] == ["llama"]
    assert sources.routes == [] and len(sources.pods) == 1 and len(sources.routers) == 1


async def test_a_retry_alone_sends_the_table_it_has_without_recompiling(world):
    world.routers.down.add("10.9.0.1")
    await world.publisher.sync()
    world.routers.down.clear()
    world.pods.append(pod("llama-2", ip="10.0.0.2", namespace="team"))  # not notified
    world.publisher.routers["uid-r1"].retry_at = 0
    await world.publisher.sync(recompile=False)
    assert world.routers.tables["10.9.0.1"]["version"] == 1_000
    assert len(world.routers.tables["10.9.0.1"]["models"]["llama"]["endpoints"]) == 1
