"""RoutingTable schema and EndpointTable swaps."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferscale.protocol.table import RoutingTable, StaleTableError
from inferscale.router.table import EndpointTable


def make_table(version: int = 1, **models) -> RoutingTable:
    return RoutingTable.model_validate(
        {
            "version": version,
            "models": {
                name: {
                    "endpoints": [{"pod": f"{name}-{i}", "address": a} for i, a in enumerate(addrs)]
                }
                for name, addrs in (models or {"m": ["127.0.0.1:9001"]}).items()
            },
        }
    )


def test_wire_format_is_camel_case_with_route_defaults():
    table = RoutingTable.model_validate_json(
        '{"version": 3, "models": {"llama": {"route": {"strategy": "prefixHash",'
        ' "prefixHash": {"loadBound": 1.5}, "holdQueue": {"maxRequests": 7}},'
        ' "endpoints": [{"pod": "p", "address": "10.1.2.3:8000", "ready": false}]}}}'
    )
    route = table.models["llama"].route
    assert route.strategy == "prefixHash"
    assert route.prefix_hash.load_bound == 1.5
    assert route.hold_queue.max_requests == 7
    assert route.retries.max_attempts == 3
    assert route.timeouts.first_token_seconds == 120
    dumped = table.model_dump(by_alias=True)
    assert "holdQueue" in dumped["models"]["llama"]["route"]


@pytest.mark.parametrize(
    "doc",
    [
        {"models": {}},
        {"version": -1},
        {"version": 1, "models": {"bad name!": {}}},
        {"version": 1, "models": {"m": {"endpoints": [{"pod": "p", "address": "http://x:1"}]}}},
        {"version": 1, "models": {"m": {"route": {"strategy": "random"}}}},
        {"version": 1, "extra": True},
        {"version": "1"},
    ],
)
def test_invalid_tables_are_refused(doc):
    with pytest.raises(ValidationError):
        RoutingTable.model_validate(doc)


def test_swap_refuses_older_versions_and_is_idempotent():
    table = EndpointTable()
    assert table.replace(make_table(2)) is True
    assert table.replace(make_table(2)) is False
    with pytest.raises(StaleTableError):
        table.replace(make_table(1))
    with pytest.raises(StaleTableError):
        table.replace(make_table(2, m=["127.0.0.1:1"]))
    assert table.version == 2


def test_swap_keeps_runtime_state_of_endpoints_that_stay():
    table = EndpointTable()
    table.replace(make_table(1, m=["127.0.0.1:1", "127.0.0.1:2"]))
    kept = table.models["m"].ready[0]
    kept.in_flight = 4
    table.replace(make_table(2, m=["127.0.0.1:1", "127.0.0.1:3"]))
    assert table.models["m"].ready[0] is kept and kept.in_flight == 4
    assert [e.address for e in table.models["m"].ready] == ["127.0.0.1:1", "127.0.0.1:3"]
    assert {e.address for e in table.endpoints()} == {"127.0.0.1:1", "127.0.0.1:3"}


def test_not_ready_endpoints_are_never_candidates():
    table = EndpointTable()
    table.replace(
        RoutingTable.model_validate(
            {
                "version": 1,
                "models": {
                    "m": {
                        "endpoints": [
                            {"pod": "a", "address": "127.0.0.1:1", "ready": False},
                            {"pod": "b", "address": "127.0.0.1:2"},
                        ]
                    }
                },
            }
        )
    )
    assert [e.pod for e in table.models["m"].candidates(0.0)] == ["b"]


def test_listeners_hear_every_swap():
    table = EndpointTable()
    seen = []
    table.subscribe(lambda t: seen.append(t.version))
    table.replace(make_table(1))
    table.replace(make_table(5))
    assert seen == [1, 5]


def test_circuit_breaker_ejects_then_half_opens_one_at_a_time():
    table = EndpointTable()
    table.replace(make_table(1, m=["127.0.0.1:1", "127.0.0.1:2"]))
    e = table.models["m"].ready[0]
    assert not e.record_failure(0.0, threshold=3, base_s=5, max_s=60)
    assert not e.record_failure(0.0, threshold=3, base_s=5, max_s=60)
    assert e.record_failure(1.0, threshold=3, base_s=5, max_s=60)
    assert [c.address for c in table.models["m"].candidates(2.0)] == ["127.0.0.1:2"]
    assert e.available(6.5)  # half-open
    e.in_flight = 1
    assert not e.available(6.5)  # one probe at a time
    e.in_flight = 0
    assert e.record_failure(7.0, threshold=3, base_s=5, max_s=60)  # probe failed: 10 s now
    assert not e.available(16.0) and e.available(17.5)
    e.record_success()
    assert e.available(0.0) and e.failures == 0


PROVIDERS = {
    "team/openai": {
        "type": "openai",
        "baseURL": "https://api.openai.com/v1",
        "models": {"mini": {"providerModel": "gpt-4o-mini", "inputPricePerMillionTokens": 0.15}},
    }
}


def test_backends_and_providers_on_the_wire():
    table = RoutingTable.model_validate(
        {
            "version": 1,
            "providers": PROVIDERS,
            "models": {
                "m": {
                    "routeId": "team/m",
                    "weight": 2,
                    "route": {"spillover": {"inFlightPerReplica": 4}, "spend": {"maxPerDay": 9}},
                    "backends": [
                        {"role": "spillover", "provider": "team/openai", "model": "mini"},
                        {"role": "mirror", "model": "other", "mirrorPercent": 10},
                    ],
                },
                "other": {},
            },
        }
    )
    entry = table.models["m"]
    assert entry.route.spillover.in_flight_per_replica == 4
    assert entry.route.spillover.on_cold_start is True
    assert entry.route.spend.max_per_day == 9 and entry.route.spend.on_cap_reached == "queue"
    assert [b.label for b in entry.backends] == ["provider:team/openai/mini", "model:other"]
    assert table.providers["team/openai"].timeout_seconds == 60
    assert "baseURL" in table.model_dump(by_alias=True)["providers"]["team/openai"]


@pytest.mark.parametrize(
    ("backend", "providers"),
    [
        ({"role": "spillover", "provider": "team/nobody", "model": "mini"}, PROVIDERS),
        ({"role": "spillover", "provider": "team/openai", "model": "gpt-5"}, PROVIDERS),
        ({"role": "fallback", "model": "ghost"}, {}),
        ({"role": "fallback", "model": "m"}, {}),  # itself
        ({"role": "fallback", "model": "other", "mirrorPercent": 5}, {}),
        ({"role": "boss", "model": "other"}, {}),
    ],
)
def test_backends_that_do_not_resolve_are_refused(backend, providers):
    with pytest.raises(ValidationError):
        RoutingTable.model_validate(
            {
                "version": 1,
                "providers": providers,
                "models": {"m": {"backends": [backend]}, "other": {}},
            }
        )


@pytest.mark.parametrize(
    "provider",
    [
        {"type": "openai", "baseURL": "ftp://x", "models": {"a": {"providerModel": "a"}}},
        {"type": "openai", "baseURL": "https://x", "models": {}},
        {"type": "palm", "baseURL": "https://x", "models": {"a": {"providerModel": "a"}}},
        {
            "type": "openai",
            "baseURL": "https://x",
            "apiKey": "sk-1",
            "models": {"a": {"providerModel": "a"}},
        },
    ],
)
def test_invalid_providers_are_refused(provider):
    # An API key is not even a field: keys never travel in the table.
    with pytest.raises(ValidationError):
        RoutingTable.model_validate({"version": 1, "providers": {"team/p": provider}})


def adapter_table(version: int, adapters: list[str], loaded: list[str], **extra) -> RoutingTable:
    endpoint = {"pod": "p0", "address": "127.0.0.1:9001", "adapters": loaded}
    return RoutingTable.model_validate(
        {
            "version": version,
            "models": {"base": {"endpoints": [endpoint], "adapters": adapters, **extra}},
        }
    )


def test_an_adapter_is_its_base_models_endpoints_under_its_own_name():
    table = EndpointTable()
    table.replace(adapter_table(1, ["sql", "chat"], ["sql"]))
    base, sql = table.models["base"], table.models["sql"]
    assert (base.base, sql.base, table.models["chat"].base) == (None, "base", "base")
    assert sql.endpoints[0] is base.endpoints[0]  # one in-flight count per engine
    assert sql.roles is None and sql.name == "sql"
    assert base.endpoints[0].adapters == frozenset({"sql"})
    # A push that loads another adapter there updates the same endpoint state.
    table.replace(adapter_table(2, ["sql", "chat"], ["sql", "chat"]))
    assert table.models["chat"].endpoints[0].adapters == frozenset({"sql", "chat"})
    table.replace(adapter_table(3, ["sql"], ["sql"]))
    assert "chat" not in table.models


def test_an_adapter_of_a_model_with_backends_gets_the_replicas_only():
    doc = adapter_table(1, ["sql"], ["sql"]).model_dump(by_alias=True)
    doc["models"]["base"]["backends"] = [{"role": "spillover", "model": "other"}]
    doc["models"]["other"] = {"endpoints": [{"pod": "q", "address": "127.0.0.1:9002"}]}
    table = EndpointTable()
    table.replace(RoutingTable.model_validate(doc))
    assert table.models["base"].roles is not None
    assert table.models["sql"].roles is None


@pytest.mark.parametrize(
    ("adapters", "loaded", "error"),
    [
        (["base"], [], "adapter names served twice"),
        (["sql", "sql"], [], "adapter names served twice"),
        (["bad name"], [], "invalid adapter names"),
        ([], ["bad name"], "invalid adapter names"),
    ],
)
def test_bad_adapter_names_are_refused(adapters, loaded, error):
    with pytest.raises(ValidationError, match=error):
        adapter_table(1, adapters, loaded)
