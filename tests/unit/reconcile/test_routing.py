"""compile_table: models, routes and pods -> the routing table, including bad data."""

from __future__ import annotations

import json

import pytest

from inferscale.protocol.table import RouteSettings, RoutingTable, table_json
from inferscale.protocol.versions import stored_version
from inferscale.reconcile.engines import ENGINES
from inferscale.reconcile.routing import (
    adapters_view,
    build_table_configmap,
    compile_routes,
    compile_table,
    is_router_pod,
    next_version,
    pod_view,
    router_targets,
)
from tests.factories import NS, model, model_spec_dict, pod, provider, route, router_pod


def test_a_model_with_ready_and_starting_pods():
    table = compile_table(
        7,
        [model(servedName="llama-3.1-8b")],
        [],
        [pod("llama-b", ip="10.0.0.2", ready=False), pod("llama-a", ip="10.0.0.1")],
    )
    assert table.version == 7
    entry = table.models["llama-3.1-8b"]
    assert entry.route == RouteSettings()
    # Sorted by pod name; the engine port is the Deployment builder's (vLLM: 8000).
    assert [(e.pod, e.address, e.ready, e.engine) for e in entry.endpoints] == [
        ("llama-a", f"10.0.0.1:{ENGINES['vllm'].port}", True, "vllm"),
        ("llama-b", "10.0.0.2:8000", False, "vllm"),
    ]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_engine_gets_its_own_port(engine):
    table = compile_table(1, [model(engine=engine)], [], [pod("p")])
    (endpoint,) = table.models["llama"].endpoints
    assert endpoint.address == f"10.0.0.1:{ENGINES[engine].port}"
    assert endpoint.engine == engine


def test_served_name_defaults_to_the_model_name():
    assert list(compile_table(1, [model("qwen")], [], []).models) == ["qwen"]


def test_a_model_without_pods_is_known_with_no_endpoints():
    # Its requests are held while a replica starts, never refused as unknown.
    table = compile_table(1, [model()], [], [])
    assert table.models["llama"].endpoints == []


@pytest.mark.parametrize(
    ("bad_pod", "why"),
    [
        (pod("p", ip=None, ready=False), "no IP yet: not started"),
        (pod("p", deleting=True), "being deleted: leaves before its engine is stopped"),
        (pod("p", phase="Succeeded"), "finished"),
        (pod("p", phase="Failed", ready=False), "failed"),
        (pod("p", model_name="ghost"), "unknown model label"),
        (pod("p", namespace="other"), "same model name, other namespace"),
        (pod("p", **{"app.kubernetes.io/managed-by": "someone"}), "not ours"),
        (pod("p", **{"app.kubernetes.io/component": "router"}), "not an engine pod"),
        ({"metadata": "garbage"}, "metadata not an object"),
        ({"metadata": {"name": "p", "namespace": NS}}, "no labels"),
        ({}, "empty"),
    ],
)
def test_pods_that_cannot_take_requests_are_left_out(bad_pod, why):
    table = compile_table(1, [model()], [], [bad_pod, pod("good", ip="10.0.0.9")])
    assert [e.pod for e in table.models["llama"].endpoints] == ["good"], why


def test_non_mapping_inputs_do_not_crash():
    compiled = compile_routes([model(), "junk", None], [42], ["junk", None])  # type: ignore[list-item]
    assert list(compiled.models) == ["llama"]


def test_a_pod_with_only_an_ipv6_address_is_reported():
    ipv6 = pod("p6", ip="fd00::1")
    compiled = compile_routes([model()], [], [ipv6])
    assert compiled.models["llama"].endpoints == []
    assert any("p6" in p and "IPv4" in p for p in compiled.problems)


def test_dual_stack_pod_uses_its_ipv4_address():
    dual = pod("p", ip="fd00::1")
    dual["status"]["podIPs"] = [{"ip": "fd00::1"}, {"ip": "10.1.2.3"}]
    (endpoint,) = compile_table(1, [model()], [], [dual]).models["llama"].endpoints
    assert endpoint.address == "10.1.2.3:8000"


def test_a_malformed_ip_is_left_out():
    compiled = compile_routes([model()], [], [pod("p", ip="not-an-ip")])
    assert compiled.models["llama"].endpoints == []


def test_a_model_being_deleted_leaves_the_table():
    gone = model()
    gone["metadata"]["deletionTimestamp"] = "2025-01-01T01:00:00Z"
    assert compile_table(1, [gone], [], [pod("p")]).models == {}


def test_a_model_whose_spec_does_not_parse_is_reported_and_left_out():
    bad = model()
    bad["spec"]["engine"] = "warp-drive"
    compiled = compile_routes([bad, model("other")], [], [])
    assert list(compiled.models) == ["other"]
    (problem,) = compiled.problems
    assert "team/llama" in problem and "engine" in problem


def test_a_model_without_metadata_is_reported():
    compiled = compile_routes([{"spec": model_spec_dict()}], [], [])
    assert compiled.models == {}
    assert compiled.problems == ("an InferenceModel without a name or namespace was left out",)


def test_a_name_too_long_to_serve_is_reported():
    compiled = compile_routes([model("m" * 200)], [], [])
    assert compiled.models == {}
    assert "cannot be a served model name" in compiled.problems[0]


def test_two_models_with_one_served_name_the_older_wins():
    young = model("young", servedName="shared", created="2025-03-01T00:00:00Z")
    old = model("old", namespace="b", servedName="shared", created="2025-02-01T00:00:00Z")
    pods = [pod("y", model_name="young"), pod("o", model_name="old", namespace="b")]
    for order in ([young, old], [old, young]):
        compiled = compile_routes(order, [], pods)
        assert [e.pod for e in compiled.models["shared"].endpoints] == ["o"]
        (problem,) = compiled.problems
        assert "team/young left out" in problem and "b/old" in problem


def test_a_route_applies_its_settings_to_its_models_served_name():
    spec = {
        "strategy": "prefixHash",
        "prefixHash": {"loadBound": 2, "prefixCharacters": 64, "replicasPerEndpoint": 8},
        "retries": {"maxAttempts": 2, "onStatus": [503]},
        "timeouts": {"firstTokenSeconds": 5, "totalSeconds": 60},
        "holdQueue": {"maxRequests": 3, "maxWaitSeconds": 9},
    }
    compiled = compile_routes(
        [model(servedName="llama-3.1-8b"), model("other")],
        [route(modelName="llama-3.1-8b", **spec)],
        [pod("p")],
    )
    assert compiled.problems == ()
    settings = compiled.models["llama-3.1-8b"].route
    assert settings.to_wire() == RouteSettings.model_validate(spec).to_wire()
    assert settings.strategy == "prefixHash" and settings.hold_queue.max_requests == 3
    assert compiled.models["other"].route == RouteSettings()
    assert [e.pod for e in compiled.models["llama-3.1-8b"].endpoints] == ["p"]


def test_a_route_named_otherwise_than_the_served_name_is_reported_but_applied():
    compiled = compile_routes([model()], [route("chat", strategy="roundRobin")], [])
    assert compiled.models["llama"].route.strategy == "roundRobin"
    (problem,) = compiled.problems
    assert "clients must send model 'llama'" in problem and "'chat'" in problem


ANTHROPIC = provider(
    "claude",
    "anthropic",
    models=[
        {"name": "sonnet", "providerModel": "claude-sonnet-4-5", "inputPricePerMillionTokens": 3}
    ],
)


def test_every_role_joins_the_primary_models_entry():
    backends = [
        {"inferenceModel": "llama", "weight": 3},
        {"provider": {"name": "claude", "model": "sonnet"}, "weight": 1},
        {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
        {"inferenceModel": "spare", "role": "fallback"},
        {
            "provider": {"name": "openai", "model": "gpt-4o-mini"},
            "role": "mirror",
            "mirrorPercent": 5,
        },
        {"inferenceModel": "spare", "role": "mirror"},
    ]
    compiled = compile_routes(
        [model(autoscaling={"targetInFlightPerReplica": 8}), model("spare")],
        [route(backends=backends, spend={"maxPerHour": 2, "onCapReached": "reject"})],
        [pod("p")],
        providers=[provider(), ANTHROPIC, provider("unused")],
    )
    assert compiled.problems == ()
    entry = compiled.models["llama"]
    assert entry.route_id == "team/llama" and entry.weight == 3 and entry.serves_locally
    assert [e.pod for e in entry.endpoints] == ["p"]
    assert [(b.role, b.provider, b.model, b.weight, b.mirror_percent) for b in entry.backends] == [
        ("primary", "team/claude", "sonnet", 1, None),
        ("spillover", "team/openai", "gpt-4o-mini", 1, None),
        ("fallback", None, "spare", 1, None),
        ("mirror", "team/openai", "gpt-4o-mini", 1, 5.0),
        ("mirror", None, "spare", 1, 100.0),
    ]
    # The threshold defaults to the model's autoscaling target.
    assert entry.route.spillover.in_flight_per_replica == 8
    assert entry.route.spillover.on_cold_start is True
    assert entry.route.spend.max_per_hour == 2 and entry.route.spend.on_cap_reached == "reject"
    # Only the providers some backend uses, with official URLs and provider-side names.
    assert sorted(compiled.providers) == ["team/claude", "team/openai"]
    claude = compiled.providers["team/claude"]
    assert claude.base_url == "https://api.anthropic.com"
    assert claude.models["sonnet"].provider_model == "claude-sonnet-4-5"
    openai = compiled.providers["team/openai"]
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.models["gpt-4o-mini"].provider_model == "gpt-4o-mini"
    assert openai.models["gpt-4o-mini"].output_price_per_million_tokens == 0.6
    assert (
        compiled.models["spare"].route == RouteSettings() and not compiled.models["spare"].backends
    )


def test_a_routes_own_threshold_wins_and_the_table_round_trips_without_keys():
    backends = [
        {"inferenceModel": "llama"},
        {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
    ]
    table = compile_table(
        4,
        [model()],
        [
            route(
                backends=backends,
                strategy="leastPrefill",
                spillover={
                    "inFlightPerReplica": 3,
                    "promptTokensPerReplica": 4800,
                    "onColdStart": False,
                },
            )
        ],
        [],
        [provider(baseURL="https://proxy.example/v1/")],
    )
    settings = table.models["llama"].route
    assert settings.spillover.in_flight_per_replica == 3
    assert settings.spillover.prompt_tokens_per_replica == 4800
    assert settings.strategy == "leastPrefill"
    assert table.providers["team/openai"].base_url == "https://proxy.example/v1"
    text = table_json(table)
    assert RoutingTable.model_validate_json(text) == table
    assert "api-key" not in text and "apiKeySecretRef" not in text


def test_a_route_served_by_providers_alone_has_an_entry_of_its_own():
    backends = [
        {"provider": {"name": "claude", "model": "sonnet"}, "weight": 2},
        {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "fallback"},
    ]
    compiled = compile_routes(
        [model()],
        [route("chat", backends=backends, modelName="assistant")],
        [],
        providers=[provider(), ANTHROPIC],
    )
    assert compiled.problems == ()
    entry = compiled.models["assistant"]
    assert entry.endpoints == [] and not entry.serves_locally and entry.route_id == "team/chat"
    assert [(b.role, b.model) for b in entry.backends] == [
        ("primary", "sonnet"),
        ("fallback", "gpt-4o-mini"),
    ]
    assert sorted(compiled.models) == ["assistant", "llama"]


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        (
            {"provider": {"name": "nobody", "model": "gpt-4o-mini"}, "role": "spillover"},
            "InferenceProvider team/nobody does not exist",
        ),
        (
            {"provider": {"name": "openai", "model": "gpt-5"}, "role": "spillover"},
            "offers no model 'gpt-5' (it offers gpt-4o-mini)",
        ),
        (
            {"inferenceModel": "ghost", "role": "fallback"},
            "InferenceModel team/ghost does not exist",
        ),
        ({"inferenceModel": "llama", "role": "fallback"}, "both a primary and a fallback backend"),
    ],
)
def test_unusable_backends_are_left_out_and_reported(backend, problem):
    compiled = compile_routes(
        [model()],
        [route(backends=[{"inferenceModel": "llama"}, backend])],
        [],
        providers=[provider()],
    )
    assert compiled.models["llama"].backends == []
    assert compiled.providers == {}
    (found,) = compiled.problems
    assert problem in found and "team/llama" in found


def test_a_provider_in_another_namespace_is_out_of_reach():
    backends = [
        {"inferenceModel": "llama"},
        {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
    ]
    compiled = compile_routes(
        [model()], [route(backends=backends)], [], providers=[provider(namespace="other")]
    )
    assert compiled.models["llama"].backends == []
    assert any("team/openai does not exist" in p for p in compiled.problems)


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        (
            [route("chat", backends=[{"provider": {"name": "nobody", "model": "x"}}])],
            "InferenceRoute team/chat left out: none of its primary backends is usable",
        ),
        (
            [route("llama", backends=[{"provider": {"name": "openai", "model": "gpt-4o-mini"}}])],
            "InferenceRoute team/llama left out: model 'llama' is already served by an "
            "InferenceModel",
        ),
        (
            [
                route(
                    "a",
                    modelName="chat",
                    backends=[{"provider": {"name": "openai", "model": "gpt-4o-mini"}}],
                ),
                route(
                    "b",
                    modelName="chat",
                    created="2025-02-01T00:00:00Z",
                    backends=[{"provider": {"name": "openai", "model": "gpt-4o-mini"}}],
                ),
            ],
            "InferenceRoute team/b left out: model 'chat' is already served by team/a",
        ),
    ],
)
def test_hosted_routes_that_cannot_be_served(routes, problem):
    compiled = compile_routes([model()], routes, [], providers=[provider()])
    assert problem in compiled.problems
    assert compiled.models["llama"].backends == []


def test_an_invalid_provider_is_reported_and_left_out():
    bad = provider(type="openai-compatible")  # needs a baseURL
    nameless = provider()
    del nameless["metadata"]["name"]
    backends = [
        {"inferenceModel": "llama"},
        {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
    ]
    compiled = compile_routes(
        [model()], [route(backends=backends)], [], providers=[bad, nameless, "junk"]
    )  # type: ignore[list-item]
    assert compiled.providers == {}
    assert any(
        "InferenceProvider team/openai left out" in p and "baseURL" in p for p in compiled.problems
    )
    assert "an InferenceProvider without a name or namespace was left out" in compiled.problems


def test_a_route_to_a_missing_model_is_reported():
    compiled = compile_routes([model()], [route(backends=[{"inferenceModel": "nope"}])], [])
    assert compiled.models["llama"].route == RouteSettings()
    assert any("nope does not exist" in p for p in compiled.problems)


def test_a_route_in_another_namespace_does_not_reach_the_model():
    compiled = compile_routes([model()], [route(namespace="elsewhere")], [])
    assert compiled.models["llama"].route == RouteSettings()
    assert any("elsewhere/llama does not exist" in p for p in compiled.problems)


def test_two_routes_for_one_model_the_older_wins():
    first = route("a", modelName="llama", strategy="roundRobin", created="2025-01-01T00:00:00Z")
    second = route("b", modelName="llama", strategy="weighted", created="2025-01-05T00:00:00Z")
    compiled = compile_routes([model()], [second, first], [])
    assert compiled.models["llama"].route.strategy == "roundRobin"
    (problem,) = compiled.problems
    assert "team/b" in problem and "team/a" in problem


def test_an_invalid_route_is_reported_and_ignored():
    bad = route(strategy="random")
    compiled = compile_routes([model()], [bad], [])
    assert compiled.models["llama"].route == RouteSettings()
    assert any("InferenceRoute team/llama ignored" in p for p in compiled.problems)


def test_a_route_being_deleted_no_longer_applies():
    gone = route(strategy="roundRobin")
    gone["metadata"]["deletionTimestamp"] = "2025-01-03T00:00:00Z"
    assert compile_routes([model()], [gone], []).models["llama"].route == RouteSettings()


def test_the_compiled_table_is_what_a_router_accepts_and_stable():
    inputs = ([model(), model("b", engine="sim")], [route()], [pod("p"), pod("q", "b")])
    first = compile_table(5, *inputs)
    again = compile_table(5, *(list(reversed(x)) for x in inputs))
    assert first == again  # the order of the watch does not matter
    text = table_json(first)
    assert RoutingTable.model_validate_json(text) == first
    assert stored_version(text) == 5


@pytest.mark.parametrize(
    ("previous", "now_ms", "expected"),
    [
        (0, 1_700_000_000_000, 1_700_000_000_000),
        (1_800_000_000_000, 1_700_000_000_000, 1_800_000_000_001),
    ],
)
def test_next_version_grows_even_when_the_clock_went_back(previous, now_ms, expected):
    assert next_version(previous, now_ms) == expected


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ('{"version": 12, "models": {}}', 12),
        ('{"version": "12"}', None),
        ('{"version": true}', None),
        ("[1]", None),
        ("not json", None),
        (None, None),
    ],
)
def test_stored_version_reads_what_it_can(text, version):
    assert stored_version(text) == version


def test_configmap_holds_the_table_text():
    cm = build_table_configmap("t", "sys", "routing-table.json", '{"version":1}')
    assert cm["metadata"]["namespace"] == "sys"
    assert json.loads(cm["data"]["routing-table.json"]) == {"version": 1}
    # The chart creates it and Helm claims managed-by: the operator must not fight over it.
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/name": "inferscale",
        "app.kubernetes.io/component": "routing-table",
    }


def test_pod_view_is_none_for_non_engine_pods_and_sees_readiness():
    assert pod_view({"metadata": {"name": "x"}}) is None
    view = pod_view(pod("p", ready=False))
    assert view is not None and (view.ip, view.ready, view.gone) == ("10.0.0.1", False, False)
    deleting = pod_view(pod("p", deleting=True))
    assert deleting is not None and deleting.gone


def test_router_targets():
    labels = {"app.kubernetes.io/name": "inferscale-router"}
    pods = [
        router_pod("r2", ip="10.9.0.2", ready=False),  # starting: pushed, so it can turn Ready
        router_pod("r1"),
        router_pod("r3", ip=None),
        router_pod("r4", deleting=True),
        router_pod("r5", phase="Pending"),
        {"metadata": {"name": "r6"}},
    ]
    targets = router_targets(pods)
    assert [(t.name, t.ip, t.ready, t.restarts) for t in targets] == [
        ("r1", "10.9.0.1", True, 2),
        ("r2", "10.9.0.2", False, 2),
    ]
    assert is_router_pod(router_pod("r1"), "sys", labels)
    assert not is_router_pod(router_pod("r1"), "other", labels)
    assert not is_router_pod(pod("p", namespace="sys"), "sys", labels)


@pytest.mark.parametrize("ip", ["999.1.1.1", "256.0.0.1", "01.2.3.4", "1.2.3", "1.2.3.4.5"])
def test_addresses_that_are_not_ipv4_are_left_out(ip):
    assert compile_table(1, [model()], [], [pod("p", ip=ip)]).models["llama"].endpoints == []


def test_the_parse_cache_changes_nothing_but_skips_unchanged_specs(monkeypatch):
    from inferscale.api.v1alpha1.inference_model import InferenceModelSpec

    models = [model("a"), model("b", servedName="bee")]
    for i, m in enumerate(models):
        m["metadata"].update(uid=f"u{i}", generation=1)
    cache: dict = {}
    first = compile_routes(models, [], [pod("p", "a")], cache=cache)
    assert first == compile_routes(models, [], [pod("p", "a")])
    assert set(cache) == {("team", "a", "u0", 1), ("team", "b", "u1", 1)}
    calls = []
    original = InferenceModelSpec.model_validate
    monkeypatch.setattr(
        InferenceModelSpec,
        "model_validate",
        lambda *a, **kw: calls.append(1) or original(*a, **kw),
    )
    assert compile_routes(models, [], [pod("p", "a")], cache=cache) == first
    assert calls == []
    # A spec change moves the generation: that model is parsed again, the gone one forgotten.
    models[1]["spec"]["servedName"] = "bee-2"
    models[1]["metadata"]["generation"] = 2
    again = compile_routes(models[1:], [], [], cache=cache)
    assert list(again.models) == ["bee-2"] and len(calls) == 1
    assert set(cache) == {("team", "b", "u1", 2)}


def test_the_provider_examples_compile_without_problems():
    import yaml

    from tests.manifests import REPO

    docs = {}
    for name in (
        "sim-model",
        "openai-provider",
        "anthropic-provider",
        "sim-route-with-spillover",
        "vllm-llama-3.1-8b",
        "route-with-spillover",
    ):
        (doc,) = yaml.safe_load_all((REPO / "examples" / f"{name}.yaml").read_text())
        doc["metadata"]["namespace"] = NS
        docs[name] = doc
    compiled = compile_routes(
        [docs["sim-model"], docs["vllm-llama-3.1-8b"]],
        [docs["sim-route-with-spillover"], docs["route-with-spillover"]],
        [],
        providers=[docs["openai-provider"], docs["anthropic-provider"]],
    )
    assert compiled.problems == ()
    sim = compiled.models["llama-3.1-8b-sim"]
    assert [(b.role, b.label) for b in sim.backends] == [
        ("spillover", "provider:team/openai/gpt-4o-mini"),
        ("fallback", "provider:team/anthropic/claude-sonnet"),
        ("mirror", "provider:team/anthropic/claude-sonnet"),
    ]
    assert sim.route.spend.max_per_hour == 2
    assert compiled.models["llama-3.1-8b"].route.spillover.in_flight_per_replica == 48


ADAPTERS = [
    {"name": "sql", "source": "hf://org/sql"},
    {"name": "chat", "source": "pvc://loras/chat"},
    {"name": "s3-one", "source": "s3://bucket/one"},
]


def with_loaded(obj, **loaded_on):
    obj["status"] = {
        "adapters": [
            {"name": n, "phase": "Loading", "loadedOn": pods} for n, pods in loaded_on.items()
        ]
    }
    return obj


def test_a_models_adapters_and_where_they_are_loaded_go_into_the_table():
    llama = with_loaded(
        model(adapters=ADAPTERS, adapterSlots=2), sql=["llama-a", "llama-b"], chat=["llama-b"]
    )
    table = compile_table(1, [llama], [], [pod("llama-a"), pod("llama-b", ip="10.0.0.2")])
    entry = table.models["llama"]
    # An s3:// adapter cannot be loaded, so its name is not routed (the router answers 404).
    assert entry.adapters == ["sql", "chat"]
    assert entry.adapter_slots == 2  # how many adapters the router expects a replica to keep warm
    assert [(e.pod, e.adapters) for e in entry.endpoints] == [
        ("llama-a", ["sql"]),
        ("llama-b", ["chat", "sql"]),
    ]
    assert RoutingTable.model_validate_json(table_json(table)) == table


@pytest.mark.parametrize(
    "status",
    [
        {"adapters": "x"},
        {"adapters": [3, {"name": 4}, {"name": "sql", "loadedOn": "llama-a"}]},
        {"adapters": [{"name": "bad name!", "loadedOn": ["llama-a"]}]},
        {"adapters": [{"name": "sql", "loadedOn": [7, None]}]},
    ],
)
def test_a_hand_edited_adapter_status_does_not_break_the_compile(status):
    llama = model(adapters=ADAPTERS)
    llama["status"] = status
    table = compile_table(1, [llama], [], [pod("llama-a")])
    assert table.models["llama"].endpoints[0].adapters == []


def test_adapter_names_another_model_serves_are_left_out_and_reported():
    older = model("llama", adapters=[{"name": "other", "source": "hf://o/a"}, ADAPTERS[0]])
    younger = model("mistral", created="2025-02-01T00:00:00Z", adapters=[ADAPTERS[0]])
    third = model("other", created="2025-03-01T00:00:00Z")
    compiled = compile_routes([older, younger, third], [], [])
    assert compiled.models["llama"].adapters == ["sql"]
    assert compiled.models["mistral"].adapters == []
    assert compiled.problems == (
        "adapter 'other' of InferenceModel team/llama left out: the name is already served "
        "by the model 'other'",
        "adapter 'sql' of InferenceModel team/mistral left out: the name is already served "
        "by team/llama",
    )


def test_the_routing_view_of_a_model_follows_where_its_adapters_are_loaded():
    llama = model(adapters=ADAPTERS)
    assert adapters_view(llama) == ()
    one = adapters_view(with_loaded(model(adapters=ADAPTERS), sql=["llama-b", "llama-a"]))
    assert one == (("llama-a", ("sql",)), ("llama-b", ("sql",)))
    two = adapters_view(with_loaded(model(adapters=ADAPTERS), sql=["llama-a"], chat=["llama-a"]))
    assert two == (("llama-a", ("chat", "sql")),)  # a change the publisher sees, and republishes
