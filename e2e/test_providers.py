"""Hosted providers on the local cluster: spillover under a load step, a spend cap, a mirror, and
the Anthropic translation, with sims as the replicas and mock providers on this machine.

One operator (exactly config/rbac) and the two routers of config/router serve the module; every
pod runs this checkout's code (``PYTHONPATH``: the launcher starts pods with a clean environment).
The mock OpenAI and Anthropic APIs of ``tests/component/router/mock_providers.py`` listen on the
pod network's gateway (loopback when the cluster runs without network namespaces), so the
routers in their pods reach them, and their keys travel the real way: a Secret, the
InferenceProvider, the operator's credentials channel. Requests go from this process to one
router pod's IP with the official ``openai`` SDK (no retries), so every error counts.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from kubernetes.client.rest import ApiException
from tests.component.router.mock_providers import KEY, MockAnthropic, MockOpenAI

from e2e.conftest import REPO, Cluster, wait_for
from e2e.operator_support import (
    Models,
    apply_crds,
    apply_documents,
    namespaced_documents,
    own_namespace,
    running_operator,
    sim_model,
)
from e2e.router_support import (
    ROUTER_FILE,
    ROUTER_PORT,
    SECRET,
    Routers,
    wait_routable,
    wait_routers,
)

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-providers"
GROUP, VERSION = "inferscale.io", "v1alpha1"
CODE = {"PYTHONPATH": str(REPO / "operator")}
"""Pods run this checkout's code, not the one the virtualenv's editable install points at."""
STATUS_SETTINGS = {
    "INFERSCALE_ROUTING__STATUS_INTERVAL_SECONDS": "1",
    "INFERSCALE_ROUTING__SPILLING_WINDOW_SECONDS": "3",
}
MESSAGES = [{"role": "user", "content": "hi"}]
SPILLED = "provider:"


def _with_code(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """config/router with PYTHONPATH in the router container."""
    for doc in docs:
        if doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env = container.setdefault("env", [])
                env.extend({"name": k, "value": v} for k, v in CODE.items())
    return docs


@dataclass
class Stack:
    """The routers, the operator, and the mock providers they reach."""

    routers: Routers
    openai: MockOpenAI
    anthropic: MockAnthropic


@pytest.fixture(scope="module")
def stack(cluster: Cluster) -> Iterator[Stack]:
    local = cluster.require_local()
    host = local.gateway_ip if local.network == "netns" else "127.0.0.1"
    apply_crds(cluster)
    token = secrets.token_hex(24)
    with (
        MockOpenAI(host=host) as mock_openai,
        MockAnthropic(host=host) as mock_anthropic,
        own_namespace(cluster, OPERATOR_NAMESPACE) as namespace,
    ):
        cluster.core.create_namespaced_secret(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET},
                "stringData": {"token": token},
            },
        )
        env = {**CODE, **STATUS_SETTINGS}
        with running_operator(cluster, namespace, replicas=1, env=env) as operator:
            apply_documents(cluster, _with_code(namespaced_documents(ROUTER_FILE, namespace)))
            routers = Routers(cluster, namespace, token, operator)
            wait_routers(routers, lambda: len(routers.ready_pods()) == 2, 90, "2 Ready routers")
            try:
                yield Stack(routers, mock_openai, mock_anthropic)
            finally:
                routers.http.close()


@pytest.fixture(autouse=True)
def fresh_mocks(stack: Stack) -> None:
    for mock in (stack.openai, stack.anthropic):
        mock.fault, mock.fault_times = None, None
        mock.requests.clear()
        mock.headers.clear()


# -- objects --------------------------------------------------------------------------------


def create(cluster: Cluster, namespace: str, plural: str, body: dict[str, Any]) -> None:
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def provider_objects(
    cluster: Cluster,
    namespace: str,
    name: str,
    kind: str,
    base_url: str,
    model: str,
    **prices: float,
) -> None:
    """A Secret with the mock's key and the InferenceProvider that references it."""
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-key"},
            "stringData": {"api-key": KEY},
        },
    )
    create(
        cluster,
        namespace,
        "inferenceproviders",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceProvider",
            "metadata": {"name": name},
            "spec": {
                "type": kind,
                "baseURL": base_url,
                "apiKeySecretRef": {"name": f"{name}-key", "key": "api-key"},
                "timeoutSeconds": 10,
                "models": [{"name": model, "providerModel": f"{model}-at-provider", **prices}],
            },
        },
    )


def route_object(
    name: str, model_name: str, backends: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceRoute",
        "metadata": {"name": name},
        "spec": {"modelName": model_name, "backends": backends, **spec},
    }


def status_of(cluster: Cluster, namespace: str, plural: str, name: str) -> dict[str, Any]:
    try:
        obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException:
        return {}
    status: dict[str, Any] = obj.get("status") or {}
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def coded_sim(name: str, replicas: int, *args: str, **spec: Any) -> dict[str, Any]:
    body = sim_model(name, replicas=replicas, **spec)
    body["spec"]["args"] = ["--startup-delay-seconds", "1", *args]
    body["spec"]["env"] = [{"name": k, "value": v} for k, v in CODE.items()]
    return body


def answered_by(raw: Any) -> str:
    return raw.headers.get("x-inferscale-backend") or raw.headers.get("x-inferscale-pod") or "?"


def replica_and_provider(
    cluster: Cluster,
    namespace: str,
    stack: Stack,
    name: str,
    served: str,
    backend: dict[str, Any],
    *sim_args: str,
    kind: str = "openai-compatible",
    url: str | None = None,
    **spec: Any,
) -> Routers:
    """One sim replica of ``name`` as the primary and a provider ``backend`` (its role, provider
    name and model) of a route served as ``served``, the provider answering at ``url`` (the mock
    OpenAI by default); returns once every router routes it and holds the provider's key."""
    routers, models = stack.routers, Models(cluster, namespace)
    models.create(coded_sim(name, 1, *sim_args))
    provider = backend["provider"]
    provider_objects(
        cluster,
        namespace,
        provider["name"],
        kind,
        url or f"{stack.openai.url}/v1",
        provider["model"],
    )
    backends = [{"inferenceModel": name}, backend]
    create(cluster, namespace, "inferenceroutes", route_object(name, served, backends, **spec))
    wait_routable(routers, models, name, served, 1)
    wait_routers(
        routers,
        lambda: status_of(cluster, namespace, "inferenceroutes", name).get("readyBackends") == 2,
        60,
        "the route's two backends ready (the provider key reached the routers)",
    )
    return routers


SPILLOVER = {"provider": {"name": "hosted", "model": "mini"}, "role": "spillover"}


# -- load -----------------------------------------------------------------------------------


@dataclass
class Step:
    """Closed-loop load on one router: ``threads`` clients, each one request at a time."""

    client: openai.OpenAI
    served: str
    threads: int
    max_tokens: int = 8
    answers: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.served, messages=MESSAGES, max_tokens=self.max_tokens
                )
                raw.parse()
                with self.lock:
                    self.answers.append((time.monotonic(), answered_by(raw)))
            except openai.OpenAIError as error:
                with self.lock:
                    self.errors.append(f"{type(error).__name__}: {error}")

    @contextlib.contextmanager
    def running(self) -> Iterator[Step]:
        workers = [threading.Thread(target=self.loop, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(60)

    def since(self, t: float) -> list[str]:
        with self.lock:
            return [where for at, where in self.answers if at >= t]


# -- tests ----------------------------------------------------------------------------------


def test_spillover_takes_the_excess_of_a_load_step_and_stops_when_replicas_catch_up(
    cluster: Cluster, namespace: str, stack: Stack
) -> None:
    mock, models = stack.openai, Models(cluster, namespace)
    name, served = "burst", "burst-served"
    # About 0.4 s per request (8 tokens at 50 ms a step): two in flight saturate a replica.
    routers = replica_and_provider(
        cluster,
        namespace,
        stack,
        name,
        served,
        SPILLOVER,
        "--step-base-seconds",
        "0.05",
        spillover={"inFlightPerReplica": 2},
    )
    # A hosted answer takes 0.2 s, as a real one would take longer still.
    mock.fault, mock.delay = "slow", 0.2
    router = routers.ready_pods()[0]
    with routers.client(router) as client:
        step = Step(client, served, threads=8)
        with step.running():
            time.sleep(6)
            during = step.since(time.monotonic() - 5)
            spilling = wait_for(
                lambda: status_of(cluster, namespace, "inferenceroutes", name).get("spilling"),
                15,
                "status.spilling",
            )
            # The replicas catch up: four of them take eight clients without saturating.
            models.patch_spec(name, {"replicas": 4})
            wait_routable(routers, models, name, served, 4)
            time.sleep(2)  # the requests that spilled before the new replicas finish
            settled = time.monotonic()
            time.sleep(6)
            after = step.since(settled)
    spilled_during = sum(1 for w in during if w.startswith(SPILLED))
    spilled_after = sum(1 for w in after if w.startswith(SPILLED))
    print(
        f"\nload step, 1 replica: {len(during)} answers, {spilled_during} spilled over; "
        f"4 replicas: {len(after)} answers, {spilled_after} spilled over"
    )
    assert step.errors == [], step.errors[:5]
    assert spilling is True
    # One replica holds two of the eight clients: most of the excess went to the provider.
    assert spilled_during >= len(during) // 2, (spilled_during, len(during))
    assert len(after) > 20 and spilled_after == 0, (spilled_after, len(after))
    assert {r["model"] for r in mock.requests} == {"mini-at-provider"}
    wait_for(
        lambda: status_of(cluster, namespace, "inferenceroutes", name).get("spilling") is False,
        15,
        "status.spilling back to false",
    )


def test_a_long_prompt_spills_over_on_queued_prefill_through_the_real_api(
    cluster: Cluster, namespace: str, stack: Stack
) -> None:
    # spillover.promptTokensPerReplica from the manifest to the router: the API server takes the
    # field, the operator compiles it, and every router spills a prompt longer than the bound.
    name, served = "prefill", "prefill-served"
    bound = {"inFlightPerReplica": 100, "promptTokensPerReplica": 400}
    routers = replica_and_provider(
        cluster, namespace, stack, name, served, SPILLOVER, strategy="leastPrefill", spillover=bound
    )

    def settings_everywhere(expected: int | None) -> bool:
        tables = routers.tables()
        return bool(tables) and all(
            t is not None
            and (t["models"].get(served) or {})
            .get("route", {})
            .get("spillover", {})
            .get("promptTokensPerReplica")
            == expected
            for t in tables
        )

    wait_routers(routers, lambda: settings_everywhere(400), 60, "the bound on every router")
    long_prompt = [{"role": "user", "content": "lorem ipsum " * 200}]  # ~2,400 bytes: ~600
    router = routers.ready_pods()[0]

    def ask(messages: list[dict[str, str]]) -> str:
        with routers.client(router) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=served, messages=messages, max_tokens=4
            )
            raw.parse()
            return answered_by(raw)

    long_first, short = ask(long_prompt), ask(MESSAGES)
    # Without the bound the same prompt stays on the replica.
    cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "inferenceroutes",
        name,
        {"spec": {"spillover": {"promptTokensPerReplica": None}}},
    )
    wait_routers(routers, lambda: settings_everywhere(None), 60, "the bound gone on every router")
    long_after = ask(long_prompt)
    assert long_first.startswith(SPILLED), long_first
    assert not short.startswith(SPILLED) and not long_after.startswith(SPILLED), (short, long_after)


def test_a_spend_cap_stops_spillover_on_every_router(
    cluster: Cluster, namespace: str, stack: Stack
) -> None:
    routers, mock = stack.routers, stack.openai
    models = Models(cluster, namespace)
    name, served = "capped", "capped-served"
    models.create(coded_sim(name, 0))  # at zero: every request would spill over
    # One answer of the mock (9 prompt + 2 completion tokens) costs 4.5 + 2 = 6.5.
    provider_objects(
        cluster,
        namespace,
        "pricey",
        "openai-compatible",
        f"{mock.url}/v1",
        "mini",
        inputPricePerMillionTokens=500_000,
        outputPricePerMillionTokens=1_000_000,
    )
    create(
        cluster,
        namespace,
        "inferenceroutes",
        route_object(
            name,
            served,
            [
                {"inferenceModel": name},
                {"provider": {"name": "pricey", "model": "mini"}, "role": "spillover"},
            ],
            spend={"maxPerHour": 10, "onCapReached": "reject"},
            # No spillover (no key yet) means a short hold, not the default five minutes.
            holdQueue={"maxWaitSeconds": 2},
        ),
    )
    first, second = routers.ready_pods()[:2]
    wait_routers(
        routers,
        lambda: (
            condition(status_of(cluster, namespace, "inferenceproviders", "pricey"), "Ready").get(
                "status"
            )
            == "True"
        ),
        60,
        "the provider's key Ready",
    )

    def spills(pod: Any) -> bool:
        with routers.client(pod) as client:
            try:
                client.chat.completions.create(model=served, messages=MESSAGES, max_tokens=2)
            except openai.APIStatusError:
                return False
        return True

    wait_for(lambda: spills(first), 30, "a first spillover through the first router")
    assert spills(first)  # 13 spent: over the cap of 10 from now on
    with routers.client(first) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=served, messages=MESSAGES, max_tokens=2)
    assert caught.value.status_code == 503
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 3600
    # The other router spent nothing itself; within a status interval (1 s here) the operator
    # tells it what the first one spent.
    time.sleep(3)
    assert not spills(second)
    sent = len(mock.requests)
    status = wait_for(
        lambda: (
            s
            if condition(
                s := status_of(cluster, namespace, "inferenceroutes", name), "SpendCapReached"
            ).get("status")
            == "True"
            else None
        ),
        15,
        "SpendCapReached in the route's status",
    )
    print(f"\nspend cap: {status['spend']} after {sent} hosted answers")
    assert status["spend"]["lastHour"] == 13
    assert sent == 2


def test_a_mirror_receives_its_share(cluster: Cluster, namespace: str, stack: Stack) -> None:
    mock = stack.anthropic
    name, served = "mirrored", "mirrored-served"
    mirror = {
        "provider": {"name": "shadow", "model": "sonnet"},
        "role": "mirror",
        "mirrorPercent": 30,
    }
    routers = replica_and_provider(
        cluster, namespace, stack, name, served, mirror, kind="anthropic", url=mock.url
    )
    router = routers.ready_pods()[0]
    n = 120
    with routers.client(router) as client:
        for i in range(n):
            raw = client.chat.completions.with_raw_response.create(
                model=served, messages=MESSAGES, max_tokens=2, stream=bool(i % 2)
            )
            raw.parse()
            assert answered_by(raw).startswith(f"{name}-"), "a mirror never answers"
    wait_for(lambda: len(mock.requests) >= 20, 20, "mirror copies at the provider")
    time.sleep(1)
    copies = len(mock.requests)
    print(f"\nmirror at 30 %: {copies} of {n} requests copied")
    assert 20 <= copies <= 52  # 36 expected; binomial sd 5
    assert {r["model"] for r in mock.requests} == {"sonnet-at-provider"}
    metrics = httpx.get(f"http://{router.status.pod_ip}:{ROUTER_PORT}/metrics", timeout=5).text
    ok = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("inferscale_router_mirror_requests_total") and 'outcome="ok"' in line
    )
    assert ok == copies


def test_anthropic_through_a_router_and_a_missing_key_in_the_status(
    cluster: Cluster, namespace: str, stack: Stack
) -> None:
    routers, mock = stack.routers, stack.anthropic
    provider_objects(cluster, namespace, "claude", "anthropic", mock.url, "sonnet")
    create(
        cluster,
        namespace,
        "inferenceroutes",
        route_object(
            "assistant", "assistant", [{"provider": {"name": "claude", "model": "sonnet"}}]
        ),
    )
    wait_routers(
        routers,
        lambda: (
            condition(status_of(cluster, namespace, "inferenceroutes", "assistant"), "Ready").get(
                "status"
            )
            == "True"
        ),
        60,
        "the hosted route Ready",
    )
    router = routers.ready_pods()[0]
    with routers.client(router) as client:
        out = client.chat.completions.create(model="assistant", messages=MESSAGES, max_tokens=20)
        chunks = list(
            client.chat.completions.create(
                model="assistant",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert out.choices[0].message.content == "claude:hi"
    assert out.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "claude:hi"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 25
    assert {h["x-api-key"] for h in mock.headers} == {KEY}
    # The key's Secret goes away: the provider and the route say so, the router says why.
    cluster.core.delete_namespaced_secret("claude-key", namespace)
    status = wait_for(
        lambda: (
            s
            if condition(
                s := status_of(cluster, namespace, "inferenceproviders", "claude"), "Ready"
            ).get("status")
            == "False"
            else None
        ),
        30,
        "the provider's Ready=False",
    )
    assert condition(status, "Ready")["reason"] == "SecretNotFound"
    route_status = wait_for(
        lambda: (
            s
            if condition(
                s := status_of(cluster, namespace, "inferenceroutes", "assistant"), "Ready"
            ).get("status")
            == "False"
            else None
        ),
        30,
        "the route's Ready=False",
    )
    assert condition(route_status, "Degraded")["reason"] == "ProviderKeyMissing"

    def refused() -> int:
        with routers.client(router) as client:
            try:
                client.chat.completions.create(model="assistant", messages=MESSAGES)
            except openai.APIStatusError as error:
                return error.status_code
        return 200

    assert wait_for(lambda: refused() == 503, 30, "503 without a key") is True
    logs = routers.operator.logs()
    assert KEY not in logs
