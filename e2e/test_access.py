"""Client keys and provider keys reach the routers from Secrets: InferenceClient end to end.

One operator (its own namespace, its own ServiceAccount, exactly config/rbac, so the Secret watch
and the credentials Secret prove the RBAC) and the two routers of config/router serve the
module; each test has its own namespace for its model, Secrets and InferenceClients. Requests
go from this process to each router pod's IP with the official ``openai`` SDK (no retries).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from kubernetes.client.rest import ApiException

from e2e.conftest import Cluster, wait_for
from e2e.operator_support import (
    Models,
    apply_crds,
    apply_documents,
    namespaced_documents,
    own_namespace,
    running_operator,
    sim_model,
)
from e2e.router_support import ROUTER_FILE, ROUTER_PORT, SECRET, Routers
from e2e.router_support import wait_routable as _wait_routable
from e2e.router_support import wait_routers as _wait
from inferscale.cli.main import main

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-access"
MESSAGES_PER_ROUTER = 3
CREDENTIALS_SECRET = "inferscale-router-credentials"
GROUP, VERSION = "inferscale.io", "v1alpha1"
MESSAGES = [{"role": "user", "content": "hi"}]
ROTATION_WITHIN_SECONDS = 10.0
"""A rotated key is accepted by every router this soon after the Secret changes."""


@pytest.fixture(scope="module")
def routers(cluster: Cluster) -> Iterator[Routers]:
    """CRDs, the admin-token Secret, the operator and two routers, all in one namespace."""
    cluster.require_local()
    apply_crds(cluster)
    token = secrets.token_hex(24)
    with own_namespace(cluster, OPERATOR_NAMESPACE) as namespace:
        cluster.core.create_namespaced_secret(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET},
                "stringData": {"token": token},
            },
        )
        with running_operator(cluster, namespace, replicas=1) as operator:
            apply_documents(cluster, namespaced_documents(ROUTER_FILE, namespace))
            running = Routers(cluster, namespace, token, operator)
            _wait(running, lambda: len(running.ready_pods()) == 2, 90, "2 Ready routers")
            yield running
            running.http.close()


def key_secret(cluster: Cluster, namespace: str, name: str, value: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"api-key": value},
    }
    try:
        cluster.core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
        cluster.core.replace_namespaced_secret(name, namespace, body)


def create(cluster: Cluster, namespace: str, plural: str, body: dict[str, Any]) -> None:
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def credentials_of(routers: Routers, pod: Any) -> dict[str, Any] | None:
    """What a router says it holds (its admin API's summary: no key, no digest)."""
    response = routers.http.get(
        f"http://{pod.status.pod_ip}:{ROUTER_PORT}/admin/v1/credentials",
        headers={"Authorization": f"Bearer {routers.token}"},
    )
    return response.json() if response.status_code == 200 else None


def answers(routers: Routers, pod: Any, key: str, served: str) -> int:
    """The HTTP status a chat completion gets from ``pod`` with ``key``."""
    with routers.client(pod) as base:
        client = base.with_options(api_key=key)
        try:
            client.chat.completions.create(model=served, messages=MESSAGES, max_tokens=2)
        except openai.APIStatusError as error:
            return error.status_code
    return 200


def stored_credentials(routers: Routers) -> dict[str, Any] | None:
    try:
        secret = routers.cluster.core.read_namespaced_secret(CREDENTIALS_SECRET, routers.namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    doc: dict[str, Any] = json.loads(base64.b64decode(secret.data["credentials.json"]))
    return doc


def client_ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    obj = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceclients", name
    )
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return dict(condition)
    return None


def all_logs(routers: Routers) -> str:
    """Every log line of the operator and the routers (their whole files)."""
    local = routers.cluster.require_local()
    texts = []
    for folder in sorted((local.log_dir / "pods").glob(f"{routers.namespace}_*")):
        for path in folder.glob("*.log"):
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def check_usage_ledger(
    routers: Routers, key: str, served: str, client_id: str, tmp_path: Path
) -> int:
    """Anthropic's Messages API with the client's key as ``x-api-key``, then ``inferscale
    usage`` from each router: the client's records add up to what this test sent it.
    Returns the tokens the client used on every router together."""
    token = tmp_path / "admin-token"
    total = 0
    token.write_text(routers.token)
    body = {"model": served, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    for pod in routers.ready_pods():
        base = f"http://{pod.status.pod_ip}:{ROUTER_PORT}"
        for _ in range(MESSAGES_PER_ROUTER):
            answer = routers.http.post(base + "/v1/messages", json=body, headers={"x-api-key": key})
            assert answer.status_code == 200, answer.text
            assert answer.json()["type"] == "message"
        args = ["usage", "--router", base, "--admin-token-file", str(token), "--format", "json"]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main([*args, "--by", "client"]) == 0
        rows = {row["client"]: row for row in json.loads(out.getvalue())["rows"]}
        # Per router (no Redis here): one chat answer with the key, and the Messages requests.
        assert rows[client_id]["requests"] == 1 + MESSAGES_PER_ROUTER
        assert rows[client_id]["completion_tokens"] > 0
        total += rows[client_id]["prompt_tokens"] + rows[client_id]["completion_tokens"]
    return total


def client_usage(cluster: Cluster, namespace: str, name: str) -> tuple[dict, dict]:
    """An InferenceClient's ``status.usage`` and its UsageReported condition (empty: none)."""
    obj = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceclients", name
    )
    status = obj.get("status") or {}
    reported = [c for c in status.get("conditions") or [] if c["type"] == "UsageReported"]
    return status.get("usage") or {}, reported[0] if reported else {}


def test_an_inference_client_key_is_accepted_and_rotating_its_secret_switches_keys(
    cluster: Cluster, namespace: str, routers: Routers, tmp_path: Path
) -> None:
    models = Models(cluster, namespace)
    models.create(sim_model("keyed", replicas=1))
    served = "keyed-served"
    _wait_routable(routers, models, "keyed", served, 1)
    first = "sk-first-" + secrets.token_hex(16)
    key_secret(cluster, namespace, "app-key", first)
    create(
        cluster,
        namespace,
        "inferenceclients",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceClient",
            "metadata": {"name": "app"},
            "spec": {
                "apiKeySecretRef": {"name": "app-key", "key": "api-key"},
                "allowedModels": [served],
                "limits": {"requestsPerMinute": 600},
                "budgets": {"tokensPerDay": 10_000_000},
                "team": {"name": "core", "budgets": {"tokensPerMonth": 1_000_000_000}},
            },
        },
    )
    ready = _wait(
        routers,
        lambda: (c := client_ready(cluster, namespace, "app")) and c["status"] == "True" and c,
        30,
        "the InferenceClient to be Ready",
    )
    assert ready["reason"] == "KeyAccepted"
    client_id = f"{namespace}/app"
    _wait(
        routers,
        lambda: all(
            client_id in ((credentials_of(routers, p) or {}).get("clients") or [])
            for p in routers.ready_pods()
        ),
        15,
        "every router to hold the client's key",
    )
    for pod in routers.ready_pods():
        assert answers(routers, pod, first, served) == 200
        assert answers(routers, pod, "sk-wrong-" + secrets.token_hex(16), served) == 401
        assert answers(routers, pod, "unused", served) == 401  # keys are required now
    used = check_usage_ledger(routers, first, served, client_id, tmp_path)
    # status.usage: the operator adds up both routers' counters (no Redis here, so the
    # condition says the figures are each router's own); the answers with the wrong key and
    # without one used nothing.
    usage, reported = _wait(
        routers,
        lambda: (
            (u := client_usage(cluster, namespace, "app"))[0].get("client", {}).get("tokensToday")
            == used
            and u[1]
            and u
        ),
        30,
        f"status.usage to count the {used} tokens the client used, and its condition",
    )
    assert usage["team"] == {"tokensThisMonth": used}
    assert usage["budgetUsedPercent"] == 0
    assert reported["status"] == "False" and reported["reason"] == "Incomplete"
    assert "no Redis" in reported["message"]
    assert client_ready(cluster, namespace, "app")["reason"] == "KeyAccepted"  # kept
    # Rotate: the Secret gets a new key; the old one stops working everywhere.
    second = "sk-second-" + secrets.token_hex(16)
    rotated_at = time.monotonic()
    key_secret(cluster, namespace, "app-key", second)
    _wait(
        routers,
        lambda: all(answers(routers, p, second, served) == 200 for p in routers.ready_pods()),
        ROTATION_WITHIN_SECONDS,
        "every router to accept the rotated key",
    )
    took = time.monotonic() - rotated_at
    for pod in routers.ready_pods():
        assert answers(routers, pod, first, served) == 401
    print(f"rotated key accepted by every router {took:.2f}s after the Secret changed")
    # The credentials Secret holds the digest, never the key; nothing logged holds either key.
    stored = stored_credentials(routers)
    assert stored is not None
    text = json.dumps(stored)
    assert first not in text and second not in text
    logs = all_logs(routers)
    assert first not in logs and second not in logs
    # Deleting the client takes its key away (and keys stay required only while clients exist).
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceclients", "app"
    )
    _wait(
        routers,
        lambda: all(answers(routers, p, "unused", served) == 200 for p in routers.ready_pods()),
        15,
        "the routers to serve anonymous callers again",
    )


def test_a_provider_key_reaches_every_router_and_no_log_or_configmap(
    cluster: Cluster, namespace: str, routers: Routers
) -> None:
    value = "sk-provider-" + secrets.token_hex(20)
    key_secret(cluster, namespace, "openai-key", value)
    create(
        cluster,
        namespace,
        "inferenceproviders",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceProvider",
            "metadata": {"name": "openai"},
            "spec": {
                "type": "openai-compatible",
                "baseURL": "http://127.0.0.1:9/v1",
                "apiKeySecretRef": {"name": "openai-key", "key": "api-key"},
                "models": [{"name": "hosted-mini"}],
            },
        },
    )
    provider_id = f"{namespace}/openai"
    _wait(
        routers,
        lambda: all(
            provider_id in ((credentials_of(routers, p) or {}).get("providers") or [])
            for p in routers.ready_pods()
        ),
        15,
        "every router to hold the provider's key",
    )
    stored = wait_for(
        lambda: (
            (d := stored_credentials(routers)) and provider_id in d.get("providerKeys", {}) and d
        ),
        15,
        "the credentials Secret to hold the provider key",
    )
    assert stored["providerKeys"][provider_id] == value
    # Rotation reaches the stored copy (and, pushed with it, the routers).
    rotated = "sk-provider-" + secrets.token_hex(20)
    key_secret(cluster, namespace, "openai-key", rotated)
    wait_for(
        lambda: (
            ((stored_credentials(routers) or {}).get("providerKeys") or {}).get(provider_id)
            == rotated
        ),
        15,
        "the rotated provider key in the credentials Secret",
    )
    version = (stored_credentials(routers) or {})["version"]
    _wait(
        routers,
        lambda: all(
            (credentials_of(routers, p) or {}).get("version") == version
            for p in routers.ready_pods()
        ),
        15,
        "every router to hold the rotated credentials",
    )
    table = routers.stored_table()
    assert table is not None
    assert value not in json.dumps(table) and rotated not in json.dumps(table)
    logs = all_logs(routers)
    assert value not in logs and rotated not in logs
