"""The protocol package: route settings from the API, the table's wire form, shared defaults."""

from __future__ import annotations

import pytest

from inferscale.api.v1alpha1.inference_model import Autoscaling
from inferscale.api.v1alpha1.inference_provider import InferenceProviderSpec
from inferscale.api.v1alpha1.inference_route import InferenceRouteSpec, RouteBackend
from inferscale.protocol.defaults import IN_FLIGHT_PER_REPLICA
from inferscale.protocol.table import (
    ROUTE_FIELDS,
    RouteSettings,
    RoutingTable,
    SpilloverSettings,
    TableBackend,
    TableProvider,
    table_json,
)

SPEC = {
    "backends": [{"inferenceModel": "m1"}],
    "strategy": "prefixHash",
    "prefixHash": {"prefixCharacters": 100},
    "retries": {"maxAttempts": 2},
    "timeouts": {"totalSeconds": 30},
    "holdQueue": {"maxRequests": 5},
    "spillover": {"promptTokensPerReplica": 1000, "onColdStart": False},
    "spend": {"maxPerHour": 1.5, "onCapReached": "reject"},
}


def test_route_settings_are_the_routes_own_fields_and_the_resolved_spillover():
    assert set(RouteSettings.model_fields) == {*ROUTE_FIELDS, "spillover"}
    assert set(ROUTE_FIELDS) <= set(InferenceRouteSpec.model_fields)
    for name in ROUTE_FIELDS:  # the same defaults as the API's, written there only
        assert (
            RouteSettings().model_dump()[name]
            == InferenceRouteSpec(backends=[{"inferenceModel": "m"}]).model_dump()[name]
        )


def test_from_route_copies_the_spec_and_takes_the_models_target_unless_the_route_sets_one():
    spec = InferenceRouteSpec.model_validate(SPEC)
    settings = RouteSettings.from_route(spec, 7)
    assert settings.strategy == "prefixHash" and settings.prefix_hash.prefix_characters == 100
    assert settings.retries.max_attempts == 2 and settings.hold_queue.max_requests == 5
    assert settings.timeouts.total_seconds == 30 and settings.spend.max_per_hour == 1.5
    assert settings.spillover == SpilloverSettings(
        in_flight_per_replica=7, prompt_tokens_per_replica=1000, on_cold_start=False
    )
    own = InferenceRouteSpec.model_validate({**SPEC, "spillover": {"inFlightPerReplica": 3}})
    assert RouteSettings.from_route(own, 7).spillover.in_flight_per_replica == 3


def test_the_in_flight_default_is_the_apis_and_the_tables():
    assert IN_FLIGHT_PER_REPLICA == Autoscaling().target_in_flight_per_replica
    assert SpilloverSettings().in_flight_per_replica == IN_FLIGHT_PER_REPLICA


def test_the_stored_table_keeps_its_key_order():
    # A router reads the last table from a ConfigMap an older operator may have written, and
    # the operator compares stored text: the JSON must not change shape.
    table = RoutingTable.model_validate(
        {
            "version": 7,
            "models": {
                "m1": {
                    "route": {
                        "strategy": "roundRobin",
                        "holdQueue": {"maxRequests": 5},
                        "spillover": {"inFlightPerReplica": 4},
                        "spend": {"maxPerHour": 1.5},
                    },
                    "endpoints": [{"pod": "p0", "address": "10.0.0.1:8000"}],
                }
            },
        }
    )
    assert table_json(table) == (
        '{"version":7,"models":{"m1":{"route":{"strategy":"roundRobin","holdQueue":{"maxRequests":5},'
        '"spillover":{"inFlightPerReplica":4},"spend":{"maxPerHour":1.5}},'
        '"endpoints":[{"pod":"p0","address":"10.0.0.1:8000"}]}}}'
    )


@pytest.mark.parametrize(
    ("wire", "api", "name"),
    [
        (TableProvider, InferenceProviderSpec, "timeout_seconds"),
        (TableProvider, InferenceProviderSpec, "anthropic_version"),
        (TableBackend, RouteBackend, "weight"),
        (TableBackend, RouteBackend, "mirror_percent"),
    ],
)
def test_the_table_takes_its_defaults_and_bounds_from_the_api(wire, api, name):
    ours, theirs = wire.model_fields[name], api.model_fields[name]
    assert (ours.default, ours.metadata) == (theirs.default, theirs.metadata)


def test_provider_key_sets_travel_in_clear_only_in_the_stored_json_and_read_back_equal():
    from pydantic import SecretStr

    from inferscale.protocol.credentials import (
        ProviderKeyEntry,
        RouterCredentials,
        credentials_json,
        summary,
    )

    doc = RouterCredentials(
        version=2,
        provider_keys={"team/one": SecretStr("sk-single")},
        provider_key_sets={
            "team/many": [
                ProviderKeyEntry(id="keys/a", key=SecretStr("sk-a"), requests_per_minute=5),
                ProviderKeyEntry(id="keys/b", key=SecretStr("sk-b")),
            ]
        },
    )
    assert "sk-a" not in repr(doc) and "sk-a" not in str(summary(doc))
    text = credentials_json(doc)
    assert '"sk-a"' in text and '"requestsPerMinute":5' in text
    back = RouterCredentials.model_validate_json(text)
    assert back.same_content(doc)
    other = back.model_copy(
        update={
            "provider_key_sets": {
                "team/many": [ProviderKeyEntry(id="keys/a", key=SecretStr("sk-x"))]
            }
        }
    )
    assert not other.same_content(doc)
    assert [e.id for e in back.provider_entries("team/one")] == ["default"]
    assert [e.id for e in back.provider_entries("team/many")] == ["keys/a", "keys/b"]
    assert back.provider_entries("team/none") == []
    assert summary(back)["providerKeyIds"] == {"team/many": ["keys/a", "keys/b"]}


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "providerKeySets": {"no-slash": [{"id": "a/b", "key": "sk-hidden"}]}},
        {"version": 1, "providerKeySets": {"ns/p": [{"id": "has space", "key": "sk-hidden"}]}},
        {"version": 1, "providerKeySets": {"ns/p": [{"id": "a/b", "key": "sk-hidden", "x": 1}]}},
    ],
)
def test_bad_provider_key_sets_are_refused_without_quoting_the_key(doc):
    import json

    from pydantic import ValidationError

    from inferscale.protocol.credentials import RouterCredentials

    with pytest.raises(ValidationError) as caught:
        RouterCredentials.model_validate_json(json.dumps(doc))
    assert "sk-hidden" not in str(caught.value)
