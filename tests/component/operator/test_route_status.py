"""The status reporter against FakeKubeApi, the real routing and credentials publishers, and two
routers' admin APIs (httpx.MockTransport): spend shared between routers, route and provider
status, a rotated, missing and refused key, and the kopf glue.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from inferscale.config import AccessSettings, OperatorSettings, RoutingSettings
from inferscale.controller import route_status
from inferscale.controller.credentials import (
    CredentialSources,
    CredentialsPublisher,
    CredentialsState,
)
from inferscale.controller.inference_model import Runtime
from inferscale.controller.route_status import StatusReporter, StatusState
from inferscale.controller.routing import RoutingPublisher, RoutingState, Sources
from inferscale.kube.fake import FakeKubeApi
from tests.component.operator.routers import NS, admin_secret
from tests.component.router.conftest import TOKEN
from tests.factories import key_secret, model, pod, provider, route, router_pod

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW = T0 + 1800
NOW_TEXT = "2026-01-01T00:30:00Z"
SETTINGS = RoutingSettings(coalesce_seconds=0.01, retry_initial_seconds=0.05, retry_max_seconds=1)
API = "inferscale.io/v1alpha1"
PROVIDER_KEY = "sk-provider-key-never-logged-42"


class Routers:
    """Two routers' admin APIs: spend reports out, the others' spend in."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}
        self.shared: dict[str, dict[str, Any]] = {}

    def report(self, ip: str, process: str, spent: float, **provider: Any) -> None:
        self.reports[ip] = {
            "process": process,
            "now": NOW,
            "hourStart": int(T0),
            "dayStart": int(T0),
            "routes": {"team/llama": {"hour": spent, "day": spent, "lastSpillAt": NOW - 3}},
            "providers": {"team/openai": provider} if provider else {},
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        ip = request.url.host
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(403, json={"error": {"message": "invalid token"}})
        if request.url.path == "/admin/v1/spend":
            if request.method == "GET":
                if ip not in self.reports:
                    return httpx.Response(503, json={"error": {"message": "starting"}})
                return httpx.Response(200, json=self.reports[ip])
            self.shared[ip] = json.loads(request.content)
            return httpx.Response(200, json={"routes": 1})
        doc = json.loads(request.content) if request.method == "PUT" else {}
        return httpx.Response(200, json={"version": doc.get("version"), "changed": True})


class World:
    def __init__(self) -> None:
        self.api = FakeKubeApi()
        self.api.put(admin_secret())
        self.api.put(key_secret("openai-key", PROVIDER_KEY))
        self.route = route(
            backends=[
                {"inferenceModel": "llama"},
                {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
            ],
            spend={"maxPerHour": 2.5},
        )
        self.route["metadata"]["generation"] = 1
        self.provider = provider()
        self.provider["metadata"]["generation"] = 1
        for obj in (self.route, self.provider):
            self.api.put(obj)
        self.models = [model()]
        self.pods = [pod("llama-1")]
        self.routers_pods = [router_pod("r1", ip="10.9.0.1"), router_pod("r2", ip="10.9.0.2")]
        self.routers = Routers()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.routers.handler))
        self.routing = RoutingPublisher(
            self.api,
            SETTINGS,
            NS,
            lambda: Sources(
                self.models, [self.route], self.pods, self.routers_pods, [self.provider]
            ),
            client=self.client,
        )
        self.credentials = CredentialsPublisher(
            self.api,
            SETTINGS,
            AccessSettings(),
            NS,
            lambda: CredentialSources([self.provider], [], self.routers_pods),
            client=self.client,
        )
        self.memo: dict[str, Any] = {
            "routing": RoutingState(publisher=self.routing),
            "credentials": CredentialsState(publisher=self.credentials),
        }
        self.reporter = StatusReporter(
            self.api,
            SETTINGS,
            self.memo,
            lambda: [self.route],
            lambda: [self.provider],
            wall=lambda: NOW,
            now_text=lambda: NOW_TEXT,
        )

    async def sync(self) -> None:
        await self.routing.sync()
        await self.credentials.sync()
        await self.reporter.round()
        # What the watch would show: the route's index entry with the status written.
        stored = self.api.objects[(API, "InferenceRoute", "team", "llama")]
        self.route = {**self.route, "status": stored.get("status") or {}}

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return self.api.objects[(API, kind, "team", name)].get("status") or {}

    def writes(self, kind: str) -> int:
        return sum(1 for c in self.api.calls if c[0] == "patch_status" and c[1] == kind)

    async def close(self) -> None:
        await self.routing.close()
        await self.credentials.close()
        await self.client.aclose()


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


async def test_spend_is_shared_between_routers_and_shown_in_the_route_status():
    w = World()
    try:
        w.routers.report("10.9.0.1", "proc-1", 1.0)
        w.routers.report("10.9.0.2", "proc-2", 2.0)
        await w.sync()
        # Each router is told what the other spent, in the same windows.
        assert w.routers.shared["10.9.0.1"]["routes"]["team/llama"] == {"hour": 2.0, "day": 2.0}
        assert w.routers.shared["10.9.0.2"]["routes"]["team/llama"] == {"hour": 1.0, "day": 1.0}
        assert w.routers.shared["10.9.0.1"]["hourStart"] == int(T0)
        status = w.status("InferenceRoute", "llama")
        assert status["spend"] == {"lastHour": 3.0, "today": 3.0}
        assert status["spilling"] is True and status["readyBackends"] == 2
        found = conditions(status)
        assert found["Ready"][:2] == ("True", "PrimaryReady")
        assert found["SpendCapReached"][:2] == ("True", "HourlyCapReached")
        provider_status = w.status("InferenceProvider", "openai")
        assert conditions(provider_status)["Ready"][:2] == ("True", "KeyAccepted")
        # Nothing changed: nothing is written again.
        before = (w.writes("InferenceRoute"), w.writes("InferenceProvider"))
        await w.sync()
        assert (w.writes("InferenceRoute"), w.writes("InferenceProvider")) == before
    finally:
        await w.close()


async def test_a_router_that_restarted_keeps_its_predecessors_spend():
    w = World()
    try:
        w.routers.report("10.9.0.1", "proc-1", 1.0)
        w.routers.report("10.9.0.2", "proc-2", 2.0)
        await w.sync()
        w.routers.report("10.9.0.2", "proc-2-restarted", 0.5)
        await w.sync()
        assert w.status("InferenceRoute", "llama")["spend"]["today"] == 3.5
        assert w.routers.shared["10.9.0.2"]["routes"]["team/llama"]["day"] == 3.0
    finally:
        await w.close()


async def test_a_rotated_missing_or_refused_key_is_said_without_the_key():
    w = World()
    try:
        w.routers.report("10.9.0.1", "proc-1", 0.0)
        await w.sync()
        # Rotation: the Secret's value changes.
        w.api.put(key_secret("openai-key", "sk-the-new-key-after-rotation-1"))
        w.credentials.secret_changed(
            ("team", "openai-key"), w.api.objects[("v1", "Secret", "team", "openai-key")]
        )
        await w.sync()
        ready = conditions(w.status("InferenceProvider", "openai"))["Ready"]
        assert ready[0] == "True" and f"the key changed at {NOW_TEXT}" in ready[2]
        # Refused by the provider (the routers' reports).
        w.routers.report(
            "10.9.0.1",
            "proc-1",
            0.0,
            failures={"auth": 3},
            lastError="provider team/openai refused the router's API key (HTTP 401)",
            lastReason="auth",
            lastErrorAt=NOW - 2,
        )
        await w.sync()
        assert conditions(w.status("InferenceProvider", "openai"))["Degraded"][:2] == (
            "True",
            "KeyRejected",
        )
        assert conditions(w.status("InferenceRoute", "llama"))["Degraded"][:2] == (
            "True",
            "ProviderFailing",
        )
        # Missing: the Secret is deleted.
        del w.api.objects[("v1", "Secret", "team", "openai-key")]
        w.credentials.secret_changed(("team", "openai-key"), None)
        await w.sync()
        ready = conditions(w.status("InferenceProvider", "openai"))["Ready"]
        assert ready[:2] == ("False", "SecretNotFound") and "team/openai-key" in ready[2]
        degraded = conditions(w.status("InferenceRoute", "llama"))["Degraded"]
        assert degraded[:2] == ("True", "ProviderKeyMissing")
        written = json.dumps([c for c in w.api.calls]) + json.dumps(
            [w.status("InferenceRoute", "llama"), w.status("InferenceProvider", "openai")]
        )
        assert PROVIDER_KEY not in written and "sk-the-new-key" not in written
    finally:
        await w.close()


async def test_routers_that_do_not_answer_are_left_out_of_the_round():
    w = World()
    try:
        w.routers.report("10.9.0.1", "proc-1", 1.0)  # r2 answers 503
        await w.sync()
        assert w.status("InferenceRoute", "llama")["spend"]["today"] == 1.0
        assert "10.9.0.2" not in w.routers.shared
    finally:
        await w.close()


async def test_the_first_event_starts_the_reporter_and_cleanup_stops_it():
    runtime = Runtime(api=FakeKubeApi(), settings=OperatorSettings(pod_namespace=NS))
    memo: dict[str, Any] = {"runtime": runtime}
    await route_status.route_status_startup(memo=memo)
    state = memo[route_status.MEMO_KEY]
    assert isinstance(state, StatusState) and state.reporter is None
    await route_status.route_status_route_event(memo=memo)  # no indices yet: nothing starts
    assert state.reporter is None
    indices = {"inference_routes": {}, "inference_providers": {}}
    await route_status.route_status_provider_event(memo=memo, **indices)
    assert state.reporter is not None and state.task is not None
    await asyncio.sleep(0)  # a round with no routing publisher does nothing
    await route_status.route_status_cleanup(memo=memo)
    assert state.task.done()
