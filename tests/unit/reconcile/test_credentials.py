"""compile_credentials: Secrets, InferenceClients and InferenceProviders -> credentials."""

from __future__ import annotations

import base64

import pytest

from inferscale.protocol.credentials import key_digest
from inferscale.reconcile.credentials import (
    build_credentials_secret,
    client_status,
    compile_credentials,
    decode_secret,
    referenced_secrets,
)
from tests.factories import client, provider

KEY_A = "team-a-key-0123456789"
KEY_B = "team-b-key-9876543210"
NOW = "2025-01-01T00:00:00Z"


def test_provider_keys_and_client_digests_are_compiled():
    secrets = {
        ("team", "openai-key"): {"api-key": "sk-provider\n"},
        ("team", "app-key"): {"api-key": KEY_A},
    }
    out = compile_credentials(
        [provider()],
        [client(allowedModels=["llama"], limits={"requestsPerMinute": 60})],
        secrets,
    )
    assert out.provider_keys == {"team/openai": "sk-provider"}  # the newline is stripped
    (key,) = out.client_keys
    assert key.digest == key_digest(KEY_A) and key.client == "team/app"
    assert key.allowed_models == ["llama"] and key.limits.requests_per_minute == 60
    assert out.require_client_key is True
    assert out.clients[("team", "app")].ready and out.clients[("team", "app")].keys == 1
    assert out.providers[("team", "openai")].ready
    assert out.problems == ()
    assert KEY_A not in repr(out.client_keys)


def several_keys(**spec):
    body = provider(**spec)
    del body["spec"]["apiKeySecretRef"]
    body["spec"]["apiKeys"] = [
        {"secretRef": {"name": "keys", "key": "first"}, "requestsPerMinute": 60},
        {"secretRef": {"name": "keys", "key": "second"}, "tokensPerMinute": 1000},
        {"secretRef": {"name": "other", "key": "third"}},
    ]
    return body


def test_a_provider_with_several_keys_sends_each_with_its_id_and_rates():
    secrets = {("team", "keys"): {"first": "sk-one\n", "second": "sk-two"}, ("team", "other"): {}}
    out = compile_credentials([several_keys()], [], secrets)
    assert out.provider_keys == {}
    (entries,) = out.provider_key_sets.values()
    assert [(e.id, e.key.get_secret_value()) for e in entries] == [
        ("keys/first", "sk-one"),
        ("keys/second", "sk-two"),
    ]
    assert entries[0].requests_per_minute == 60 and entries[1].tokens_per_minute == 1000
    state = out.providers[("team", "openai")]
    assert state.ready and state.keys == 2
    assert "not usable: other/third" in state.message and "sk-" not in state.message
    assert referenced_secrets([several_keys()]) == {("team", "keys"), ("team", "other")}


def test_a_provider_none_of_whose_keys_is_usable_is_not_ready():
    out = compile_credentials([several_keys()], [], {("team", "keys"): {"first": "  "}})
    state = out.providers[("team", "openai")]
    assert not state.ready and state.reason == "SecretNotFound"
    assert "no key is usable" in state.message
    assert out.provider_key_sets == {}
    assert any("InferenceProvider team/openai" in p for p in out.problems)


def test_a_provider_whose_key_list_does_not_parse_is_not_ready():
    body = provider()
    del body["spec"]["apiKeySecretRef"]
    body["spec"]["apiKeys"] = [{"secretRef": {"name": "Bad Name!"}}, "junk"]
    out = compile_credentials([body], [], {})
    assert out.providers[("team", "openai")].reason == "InvalidSpec"


def test_several_keys_one_per_line_all_count_and_short_lines_are_refused():
    secrets = {("team", "app-key"): {"api-key": f"{KEY_A}\n\n  {KEY_B}  \nshortkey1\n{KEY_A}\n"}}
    out = compile_credentials([], [client()], secrets)
    assert sorted(k.digest for k in out.client_keys) == sorted(
        [key_digest(KEY_A), key_digest(KEY_B)]
    )
    state = out.clients[("team", "app")]
    assert state.ready and state.keys == 2
    assert "1 line(s) shorter than 16 characters ignored" in state.message
    assert "shortkey1" not in state.message


@pytest.mark.parametrize(
    ("secrets", "reason", "words"),
    [
        ({}, "SecretNotFound", "Secret team/app-key does not exist"),
        ({("team", "app-key"): None}, "SecretNotFound", "does not exist"),
        ({("team", "app-key"): {"other": KEY_A}}, "KeyNotFound", "has no key 'api-key'"),
        ({("team", "app-key"): {"api-key": "changeme"}}, "KeyInvalid", "shorter than 16"),
        ({("team", "app-key"): {"api-key": "  \n"}}, "KeyInvalid", "it is empty"),
    ],
)
def test_a_client_without_a_usable_key_is_not_ready_and_still_closes_the_router(
    secrets, reason, words
):
    out = compile_credentials([], [client()], secrets)
    state = out.clients[("team", "app")]
    assert not state.ready and state.reason == reason and words in state.message
    assert out.client_keys == []
    assert out.require_client_key is True  # auto: a client exists, usable or not
    (problem,) = out.problems
    assert problem.startswith("InferenceClient team/app: ")
    assert "changeme" not in problem


def test_a_key_shared_by_two_clients_belongs_to_the_older_one():
    secrets = {("team", "a"): {"api-key": KEY_A}, ("team", "b"): {"api-key": KEY_A}}
    younger = client("young", secret="b", created="2025-02-01T00:00:00Z")
    older = client("old", secret="a", created="2025-01-01T00:00:00Z")
    out = compile_credentials([], [younger, older], secrets)
    (key,) = out.client_keys
    assert key.client == "team/old"
    state = out.clients[("team", "young")]
    assert not state.ready and state.reason == "KeyInUse" and "team/old" in state.message


def test_a_disabled_client_sends_no_key_and_is_no_problem():
    out = compile_credentials(
        [], [client(disabled=True)], {("team", "app-key"): {"api-key": KEY_A}}
    )
    assert out.client_keys == [] and out.problems == ()
    assert out.clients[("team", "app")].reason == "Disabled"


def test_an_invalid_spec_is_reported_not_raised():
    bad = client(limits={"requestsPerMinute": 0})
    out = compile_credentials([], [bad], {("team", "app-key"): {"api-key": KEY_A}})
    state = out.clients[("team", "app")]
    assert state.reason == "InvalidSpec" and "requestsPerMinute" in state.message


@pytest.mark.parametrize(
    ("require", "clients", "expected"),
    [
        ("auto", [], False),
        ("auto", [client()], True),
        ("always", [], True),
        ("never", [client()], False),
    ],
)
def test_when_a_key_is_required(require, clients, expected):
    assert compile_credentials([], clients, {}, require).require_client_key is expected


def test_a_provider_without_its_key_is_left_out_and_reported():
    out = compile_credentials(
        [provider(), provider("empty", secret="empty")],
        [],
        {("team", "empty"): {"api-key": " \n"}},
    )
    assert out.provider_keys == {}
    assert out.providers[("team", "openai")].reason == "SecretNotFound"
    assert out.providers[("team", "empty")].reason == "KeyInvalid"
    assert len(out.problems) == 2
    assert out.require_client_key is False


def test_referenced_secrets_are_in_the_objects_own_namespace():
    refs = referenced_secrets([provider(namespace="p")], [client(namespace="c"), {"spec": {}}])
    assert refs == {("p", "openai-key"), ("c", "app-key")}


def test_decode_secret_skips_values_that_are_not_base64_text():
    data = {
        "good": base64.b64encode(b"value").decode(),
        "binary": base64.b64encode(b"\xff\xfe").decode(),
        "garbage": "!!!",
    }
    assert decode_secret({"data": data}) == {"good": "value"}
    assert decode_secret({}) == {}


def test_client_status_is_written_only_when_it_changes_and_keeps_the_transition_time():
    out = compile_credentials([], [client()], {("team", "app-key"): {"api-key": KEY_A}})
    state = out.clients[("team", "app")]
    first = client_status(state, 3, None, NOW)
    assert first is not None
    (ready,) = first["conditions"]
    assert ready["type"] == "Ready" and ready["status"] == "True"
    assert first["keys"] == 1 and first["observedGeneration"] == 3
    assert client_status(state, 3, first, "2025-06-01T00:00:00Z") is None
    missing = compile_credentials([], [client()], {}).clients[("team", "app")]
    second = client_status(missing, 3, first, "2025-06-01T00:00:00Z")
    assert second is not None and second["conditions"][0]["lastTransitionTime"].startswith(
        "2025-06"
    )
    assert client_status(state, 3, {"conditions": "garbage"}, NOW) is not None


def test_the_credentials_secret_holds_the_document_base64():
    secret = build_credentials_secret("creds", "sys", "credentials.json", '{"version":1}')
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "sys"
    assert base64.b64decode(secret["data"]["credentials.json"]) == b'{"version":1}'
