"""The credentials publisher against FakeKubeApi and routers (httpx.MockTransport, and a real one).

Covers what reaches the routers (provider keys, client digests, never a client key), the Secret
that keeps it, rotation through Secret events, the InferenceClient status, a failed Secret read
(keeps the last credentials), and the kopf glue: only referenced Secrets are handled.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx
import pytest

from inferscale.config import AccessSettings, OperatorSettings, RoutingSettings
from inferscale.controller import credentials
from inferscale.controller.credentials import (
    CredentialSources,
    CredentialsPublisher,
    CredentialsState,
    read_sources,
)
from inferscale.controller.inference_model import Runtime
from inferscale.errors import Forbidden, KubeApiError
from inferscale.kube.fake import FakeKubeApi
from inferscale.protocol.credentials import key_digest
from tests.component.operator.routers import NS, Routers, admin_secret
from tests.component.router.conftest import TOKEN, RunningRouter
from tests.factories import client, key_secret, provider, router_pod

SETTINGS = RoutingSettings(coalesce_seconds=0.01, retry_initial_seconds=0.05, retry_max_seconds=1)
ACCESS = AccessSettings()
CLIENT_KEY = "client-key-0123456789"
ROTATED_KEY = "rotated-key-0123456789"
PROVIDER_KEY = "sk-provider-0123456789"
STORED = ("v1", "Secret", NS, "inferscale-router-credentials")


def stored_client(api: FakeKubeApi, obj: dict[str, Any]) -> dict[str, Any]:
    """Put a client into the fake API (so its status can be patched) and return it."""
    return api.put(obj)


class World:
    def __init__(self) -> None:
        self.api = FakeKubeApi()
        self.api.put(admin_secret())
        self.api.put(key_secret("app-key", CLIENT_KEY))
        self.api.put(key_secret("openai-key", PROVIDER_KEY))
        self.clients = [stored_client(self.api, client())]
        self.providers = [provider()]
        self.router_pods = [router_pod("r1", ip="10.9.0.1"), router_pod("r2", ip="10.9.0.2")]
        self.routers = Routers()
        self.now_ms = 1_000
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.routers.handler))
        self.publisher = CredentialsPublisher(
            self.api,
            SETTINGS,
            ACCESS,
            NS,
            lambda: CredentialSources(self.providers, self.clients, self.router_pods),
            client=self.client,
            wall_ms=lambda: self.now_ms,
            now=lambda: "2025-01-01T00:00:00Z",
        )

    def pushed(self, ip: str = "10.9.0.1") -> dict[str, Any]:
        return self.routers.tables[ip]

    def stored(self) -> dict[str, Any]:
        data = self.api.objects[STORED]["data"]["credentials.json"]
        return json.loads(base64.b64decode(data))

    def client_status(self, name: str = "app") -> dict[str, Any]:
        key = ("inferscale.io/v1alpha1", "InferenceClient", "team", name)
        return self.api.objects[key].get("status") or {}


@pytest.fixture
async def world():
    w = World()
    yield w
    await w.publisher.close()
    await w.client.aclose()


async def test_every_router_gets_provider_keys_and_client_digests_and_the_secret_keeps_them(
    world,
):
    await world.publisher.sync()
    puts = [r for r in world.routers.requests if r.method == "PUT"]
    assert {str(r.url) for r in puts} == {
        "http://10.9.0.1:8080/admin/v1/credentials",
        "http://10.9.0.2:8080/admin/v1/credentials",
    }
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in puts)
    doc = world.pushed()
    assert doc["version"] == 1_000
    assert doc["providerKeys"] == {"team/openai": PROVIDER_KEY}
    assert doc["clientKeys"] == [{"client": "team/app", "digest": key_digest(CLIENT_KEY)}]
    assert doc["requireClientKey"] is True
    assert all(CLIENT_KEY not in r.content.decode() for r in puts)  # digests only
    assert world.stored() == doc
    assert world.api.objects[STORED]["type"] == "Opaque"
    status = world.client_status()
    assert status["keys"] == 1 and status["conditions"][0]["reason"] == "KeyAccepted"


async def test_nothing_changed_means_no_new_version_and_no_status_write(world):
    await world.publisher.sync()
    world.clients[0] = world.api.objects[
        ("inferscale.io/v1alpha1", "InferenceClient", "team", "app")
    ]
    writes = sum(1 for c in world.api.calls if c[0] == "patch_status")
    world.now_ms = 5_000
    await world.publisher.sync()
    assert world.routers.puts("10.9.0.1") == 1 and world.pushed()["version"] == 1_000
    assert sum(1 for c in world.api.calls if c[0] == "patch_status") == writes


async def test_a_rotated_secret_switches_the_key_on_every_router(world):
    await world.publisher.sync()
    rotated = world.api.put(key_secret("app-key", ROTATED_KEY))
    world.publisher.secret_changed(("team", "app-key"), rotated)
    assert world.publisher.dirty.is_set()
    world.now_ms = 2_000
    await world.publisher.sync()
    for ip in ("10.9.0.1", "10.9.0.2"):
        doc = world.pushed(ip)
        assert doc["version"] == 2_000
        assert doc["clientKeys"][0]["digest"] == key_digest(ROTATED_KEY)
    # The same data again (a resync of the watch): nothing to do.
    world.publisher.dirty.clear()
    world.publisher.secret_changed(("team", "app-key"), rotated)
    assert not world.publisher.dirty.is_set()


async def test_a_deleted_secret_takes_the_key_away_and_the_status_says_why(world):
    await world.publisher.sync()
    world.publisher.secret_changed(("team", "app-key"), None)
    world.now_ms = 2_000
    await world.publisher.sync()
    doc = world.pushed()
    assert "clientKeys" not in doc and doc["requireClientKey"] is True
    ready = world.client_status()["conditions"][0]
    assert ready["status"] == "False" and ready["reason"] == "SecretNotFound"


async def test_secrets_no_longer_referenced_are_forgotten(world):
    await world.publisher.sync()
    assert set(world.publisher.secrets) == {("team", "app-key"), ("team", "openai-key")}
    world.clients.clear()
    await world.publisher.sync()
    assert set(world.publisher.secrets) == {("team", "openai-key")}
    assert world.pushed().get("requireClientKey", False) is False


async def test_a_failed_secret_read_keeps_the_last_credentials_and_retries(world, caplog):
    await world.publisher.sync()
    world.api.put(key_secret("other-key", "other-key-0123456789"))
    world.clients.append(stored_client(world.api, client("other", secret="other-key")))
    world.api.fail_next("get", Forbidden(403, "Forbidden", "secrets is forbidden"))
    world.now_ms = 2_000
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.credentials"):
        await world.publisher.sync()
    assert world.pushed()["version"] == 1_000  # unchanged: no key was dropped
    assert world.publisher.refetch_at > 0
    assert world.publisher.wake_at() <= world.publisher.refetch_at
    assert any("reading Secret team/other-key failed" in m for m in caplog.messages)
    world.publisher.refetch_at = world.publisher.monotonic()  # due now
    await world.publisher.sync(recompile=False)
    assert len(world.pushed()["clientKeys"]) == 2 and world.publisher.refetch_at == 0


async def test_problems_are_logged_once_and_never_hold_a_key(world, caplog):
    world.api.put(key_secret("app-key", "short"))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.credentials"):
        await world.publisher.sync()
        world.publisher.resync()
        await world.publisher.sync()
    lines = [m for m in caplog.messages if "InferenceClient team/app" in m]
    assert len(lines) == 1 and "short" not in lines[0].replace("shorter", "")
    assert not any(PROVIDER_KEY in m for m in caplog.messages)


async def test_a_forbidden_secret_write_names_rbac(world, caplog):
    world.api.fail_next("apply", Forbidden(403, "Forbidden", "secrets is forbidden"))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.credentials"):
        await world.publisher.sync()
    assert any("secrets create" in m for m in caplog.messages)
    assert STORED not in world.api.objects


async def test_a_restarted_operator_continues_above_the_stored_version(world):
    await world.publisher.sync()
    again = CredentialsPublisher(
        world.api,
        SETTINGS,
        ACCESS,
        NS,
        world.publisher.read,
        client=world.client,
        wall_ms=lambda: 10,  # a clock far behind
    )
    world.api.put(key_secret("app-key", ROTATED_KEY))
    await again.sync()
    assert world.pushed()["version"] == 1_001


async def test_a_status_write_failure_is_logged_not_raised(world, caplog):
    world.api.fail_next("patch_status", KubeApiError(500, "InternalError", "etcd is sad"))
    with caplog.at_level(logging.WARNING, logger="inferscale.controller.credentials"):
        await world.publisher.sync()
    assert any(
        "writing the status of InferenceClient team/app failed" in m for m in caplog.messages
    )
    assert world.pushed()["version"] == 1_000


async def test_a_real_router_takes_the_credentials():
    api = FakeKubeApi()
    api.put(admin_secret())
    api.put(key_secret("openai-key", PROVIDER_KEY))
    with RunningRouter() as router:
        settings = SETTINGS.model_copy(update={"admin_port": router.port})
        publisher = CredentialsPublisher(
            api,
            settings,
            ACCESS,
            NS,
            lambda: CredentialSources([provider()], [], [router_pod("r1", ip="127.0.0.1")]),
            wall_ms=lambda: 42,
        )
        try:
            await publisher.sync()
            assert router.router is not None
            assert router.router.access.version == 42
            assert router.router.provider_key("team/openai") == PROVIDER_KEY
        finally:
            await publisher.close()


# -- kopf glue -------------------------------------------------------------------------------


class Index(dict):
    """A kopf index stand-in: key -> list of objects."""


def indices(w: World) -> dict[str, Any]:
    return {
        "inference_clients": Index({("team", "app"): w.clients}),
        "inference_providers": Index({("team", "openai"): w.providers}),
        "client_key_secrets": Index({("team", "app-key"): [None]}),
        "provider_key_secrets": Index({("team", "openai-key"): [None]}),
        "router_pods": Index({(NS, "r1"): w.router_pods}),
    }


async def test_the_glue_starts_the_publisher_and_handles_only_referenced_secrets():
    runtime = Runtime(api=FakeKubeApi(), settings=OperatorSettings(pod_namespace=NS))
    memo: dict[str, Any] = {"runtime": runtime}
    await credentials.credentials_startup(memo=memo)
    state = memo["credentials"]
    assert isinstance(state, CredentialsState) and state.publisher is None
    w = World()
    idx = indices(w)
    assert credentials.is_key_secret(body=key_secret("app-key", "x"), memo=memo, **idx)
    assert credentials.is_key_secret(body=key_secret("openai-key", "x"), memo=memo, **idx)
    assert not credentials.is_key_secret(body=key_secret("unrelated", "x"), memo=memo, **idx)
    assert not credentials.is_key_secret(
        body=key_secret("app-key", "x", namespace="elsewhere"), memo=memo, **idx
    )
    body = dict(w.clients[0])
    await credentials.credentials_client_event(type=None, body=body, memo=memo, **idx)
    try:
        assert state.publisher is not None and state.task is not None
        assert state.publisher.namespace == NS
        assert state.publisher.dirty.is_set()
        state.publisher.dirty.clear()
        # A status write (no generation change) does not wake it; a spec change does.
        body["status"] = {"keys": 1}
        await credentials.credentials_client_event(type="MODIFIED", body=body, memo=memo, **idx)
        assert not state.publisher.dirty.is_set()
        body["metadata"] = {**body["metadata"], "generation": 9}
        await credentials.credentials_client_event(type="MODIFIED", body=body, memo=memo, **idx)
        assert state.publisher.dirty.is_set()
        state.publisher.dirty.clear()
        await credentials.credentials_secret_event(
            type="MODIFIED", body=key_secret("app-key", ROTATED_KEY), memo=memo, **idx
        )
        assert state.publisher.dirty.is_set()
        assert state.publisher.secrets[("team", "app-key")] == {"api-key": ROTATED_KEY}
        await credentials.credentials_secret_event(
            type="DELETED", body=key_secret("app-key", ROTATED_KEY), memo=memo, **idx
        )
        assert state.publisher.secrets[("team", "app-key")] is None
        state.publisher.dirty.clear()
        await credentials.credentials_router_pod_event(
            type=None, body=router_pod("r9", ip="10.9.0.9"), memo=memo, **idx
        )
        assert state.publisher.dirty.is_set()
    finally:
        await credentials.credentials_cleanup(memo=memo)
        await w.client.aclose()
    assert state.task.done()


async def test_access_disabled_starts_nothing_and_filters_every_secret():
    settings = OperatorSettings(access=AccessSettings(enabled=False))
    memo: dict[str, Any] = {"runtime": Runtime(api=FakeKubeApi(), settings=settings)}
    await credentials.credentials_startup(memo=memo)
    w = World()
    idx = indices(w)
    await credentials.credentials_client_event(type=None, body=w.clients[0], memo=memo, **idx)
    assert memo["credentials"].publisher is None
    assert not credentials.is_key_secret(body=key_secret("app-key", "x"), memo=memo, **idx)
    await w.client.aclose()


def test_index_snapshots_and_read_sources():
    body = {**client(), "status": {"keys": 1}}
    body["metadata"] = {**body["metadata"], "managedFields": [{}]}
    (snapshot,) = credentials.inference_clients(body=body).values()
    assert "managedFields" not in snapshot["metadata"] and snapshot["status"] == {"keys": 1}
    (snapshot,) = credentials.inference_providers(body=provider()).values()
    assert "status" not in snapshot
    assert credentials.client_key_secrets(body=client()) == {("team", "app-key"): None}
    assert credentials.provider_key_secrets(body={"metadata": {}, "spec": {}}) is None
    several = provider(
        apiKeySecretRef=None,
        apiKeys=[
            {"secretRef": {"name": "keys-1", "key": "a"}},
            {"secretRef": {"name": "keys-1", "key": "b"}},
            {"secretRef": {"name": "keys-2", "key": "a"}},
        ],
    )
    assert credentials.provider_key_secrets(body=several) == {
        ("team", "keys-1"): None,
        ("team", "keys-2"): None,
    }
    w = World()
    sources = read_sources(indices(w))
    assert len(sources.clients) == 1 and len(sources.providers) == 1 and len(sources.routers) == 2
