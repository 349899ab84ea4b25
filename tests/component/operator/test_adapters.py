"""The adapter timer against two real sims and FakeKubeApi: loads, unloads, status, faults."""

from __future__ import annotations

import httpx
import pytest

from inferscale.api.meta import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY
from inferscale.config import OperatorSettings
from inferscale.controller.adapters import has_adapters, sync_adapters
from inferscale.controller.inference_model import Runtime
from inferscale.kube.fake import FakeKubeApi
from inferscale.reconcile.adapters import S3_REFUSED
from inferscale.sim.settings import SimSettings
from tests.component.sim.conftest import MODEL, RunningSim, make_settings

NOW = "2026-12-05T00:00:00Z"
KEY = ("inferscale.io/v1alpha1", "InferenceModel", "ns", "llama")
SQL = {"name": "sql", "source": "hf://org/sql-lora"}
CHAT = {"name": "chat", "source": "pvc://loras/chat"}
S3 = {"name": "s3-one", "source": "s3://bucket/one"}


class Events(list):
    def __call__(self, type_, reason, message):
        self.append((type_, reason, message))


def lora_sim():
    base = make_settings().model_dump()
    return RunningSim(SimSettings(**base | {"enable_lora": True}))


@pytest.fixture(scope="module")
def sims():
    with lora_sim() as one, lora_sim() as two:
        yield {"p1": one, "p2": two}


def pod(name, ip, ready=True):
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "engine", LABEL_MODEL: "llama"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.fixture
def runtime(sims):
    api = FakeKubeApi()
    api.put(pod("p1", "10.0.0.1"))
    api.put(pod("p2", "10.0.0.2"))
    api.put(pod("p3", "10.0.0.3", ready=False))  # not Ready: never called
    yield Runtime(api=api, settings=OperatorSettings())
    for sim in sims.values():  # each test starts from sims without adapters
        for name in list(httpx.get(sim.base_url + "/v1/models").json()["data"]):
            if name.get("parent"):
                httpx.post(sim.base_url + "/v1/unload_lora_adapter", json={"lora_name": name["id"]})


def set_spec(runtime, adapters):
    stored = runtime.api.objects.get(KEY)
    body = stored or {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "llama", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": "hf://org/llama", "engine": "sim", "resources": {"gpus": 0}},
    }
    body["spec"]["adapters"] = adapters
    return runtime.api.put(body)


async def sync(runtime, sims, client=None, url=None):
    events = Events()
    urls = url or (lambda pod, ip, port: sims[pod].base_url)
    async with httpx.AsyncClient() as own:
        await sync_adapters(
            runtime,
            runtime.api.objects[KEY],
            client or own,
            events,
            now=lambda: NOW,
            base_url=urls,
        )
    return events


def loaded(sim):
    cards = httpx.get(sim.base_url + "/v1/models").json()["data"]
    return {c["id"]: c["root"] for c in cards if c.get("parent")}


def status(runtime):
    return runtime.api.objects[KEY].get("status") or {}


def by_name(runtime):
    return {a["name"]: a for a in status(runtime).get("adapters", [])}


async def test_loads_every_adapter_on_every_ready_replica_and_reports(runtime, sims):
    set_spec(runtime, [SQL, CHAT, S3])
    events = await sync(runtime, sims)
    for sim in sims.values():
        assert loaded(sim) == {"sql": "org/sql-lora", "chat": "/mnt/adapters/loras/chat"}
    adapters = by_name(runtime)
    assert adapters["sql"] == {
        "name": "sql",
        "phase": "Loaded",
        "loadedReplicas": 2,
        "readyReplicas": 2,
        "loadedOn": ["p1", "p2"],
    }
    assert adapters["chat"]["phase"] == "Loaded"
    assert adapters["s3-one"]["phase"] == "Failed"
    assert adapters["s3-one"]["message"] == S3_REFUSED
    (condition,) = [c for c in status(runtime)["conditions"] if c["type"] == "AdaptersReady"]
    assert (condition["status"], condition["reason"]) == ("False", "AdapterFailed")
    assert sorted(e[1] for e in events) == ["AdapterFailed"] + ["AdapterLoaded"] * 4
    assert ("Normal", "AdapterLoaded", "load adapter sql (org/sql-lora) on p1") in events

    # Again: nothing to do, nothing written, nothing posted.
    runtime.api.calls.clear()
    assert await sync(runtime, sims) == []
    assert [c for c in runtime.api.calls if c[0] == "patch_status"] == []


async def test_a_removed_adapter_is_unloaded_and_the_condition_turns_true(runtime, sims):
    set_spec(runtime, [SQL, CHAT])
    await sync(runtime, sims)
    set_spec(runtime, [SQL])
    events = await sync(runtime, sims)
    assert sorted(events) == [
        ("Normal", "AdapterUnloaded", "unload adapter chat from p1"),
        ("Normal", "AdapterUnloaded", "unload adapter chat from p2"),
    ]
    assert all(loaded(sim) == {"sql": "org/sql-lora"} for sim in sims.values())
    assert list(by_name(runtime)) == ["sql"]
    (condition,) = [c for c in status(runtime)["conditions"] if c["type"] == "AdaptersReady"]
    assert (condition["status"], condition["reason"]) == ("True", "AdaptersLoaded")


async def test_no_adapters_left_clears_the_status_and_the_condition(runtime, sims):
    set_spec(runtime, [SQL])
    await sync(runtime, sims)
    body = set_spec(runtime, [])
    assert has_adapters(body["spec"], body["status"])
    await sync(runtime, sims)
    assert status(runtime).get("adapters") == []
    assert not [c for c in status(runtime)["conditions"] if c["type"] == "AdaptersReady"]
    body = runtime.api.objects[KEY]
    assert not has_adapters(body["spec"], body["status"])


async def test_an_engine_refusal_is_the_adapter_status_not_a_crash(runtime, sims):
    # The sim refuses an adapter named like its base model with 400, as vLLM does.
    set_spec(runtime, [SQL, {"name": MODEL, "source": "hf://org/x"}])
    events = await sync(runtime, sims)
    bad = by_name(runtime)[MODEL]
    assert bad["phase"] == "Failed" and bad["loadedReplicas"] == 0
    assert bad["message"].startswith("p1: load answered 400")  # the first pod's, by name
    assert "base model's name" in bad["message"]
    assert bad["message"].endswith("(and 1 more replica)")
    assert by_name(runtime)["sql"]["phase"] == "Loaded"
    assert [e for e in events if e[0] == "Warning"] == [
        ("Warning", "AdapterFailed", f"adapter {MODEL}: {bad['message']}")
    ]
    # The same failure next time: no second Warning.
    assert [e for e in await sync(runtime, sims) if e[0] == "Warning"] == []


async def test_an_unreachable_replica_is_reported_and_the_others_served(runtime, sims):
    set_spec(runtime, [SQL])

    def url(pod, ip, port):
        return sims["p1"].base_url if pod == "p1" else "http://127.0.0.1:9"

    await sync(runtime, sims, url=url)
    sql = by_name(runtime)["sql"]
    assert (sql["phase"], sql["loadedReplicas"], sql["readyReplicas"]) == ("Loading", 1, 2)
    assert sql["message"].startswith("replica p2 could not be read: ConnectError")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, text="not json"), "/v1/models: "),
        (httpx.Response(200, json={"data": 3}), "/v1/models: the /v1/models answer has no list"),
        (httpx.Response(503, text="starting"), "/v1/models answered 503"),
    ],
)
async def test_bad_listings_become_messages(runtime, sims, answer, message):
    set_spec(runtime, [SQL])
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    async with client:
        await sync(runtime, sims, client=client)
    sql = by_name(runtime)["sql"]
    assert sql["phase"] == "Loading" and sql["loadedReplicas"] == 0
    assert message in sql["message"]


async def test_a_timed_out_load_is_reported(runtime, sims):
    set_spec(runtime, [SQL])

    def answer(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "llama", "parent": None}]})
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await sync(runtime, sims, client=client)
    assert by_name(runtime)["sql"]["message"] == "p1: load timed out (and 1 more replica)"
