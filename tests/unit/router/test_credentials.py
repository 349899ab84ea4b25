"""The credentials document and the router's Access: digests, constant-time lookup, swaps."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError

from inferscale.protocol.credentials import (
    ClientKey,
    RouterCredentials,
    StaleCredentialsError,
    credentials_json,
    key_digest,
    summary,
)
from inferscale.protocol.versions import stored_version as stored_credentials_version
from inferscale.router.access import Access
from inferscale.router.credentials import KeyIndex

KEY = "sk-client-0123456789abcdef"
PROVIDER_KEY = "sk-provider-secret-value"


def creds(version: int = 1, **overrides) -> RouterCredentials:
    doc = {
        "version": version,
        "providerKeys": {"team/openai": PROVIDER_KEY},
        "clientKeys": [
            {"digest": key_digest(KEY), "client": "team/app", "allowedModels": ["llama"]},
        ],
        "requireClientKey": True,
    }
    doc.update(overrides)
    return RouterCredentials.model_validate_json(json.dumps(doc))


def test_the_digest_is_sha256_hex_of_the_utf8_key():
    assert key_digest("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert len(key_digest(KEY)) == 64


def test_the_index_finds_a_key_by_its_hash_and_nothing_else():
    index = KeyIndex.build(creds().client_keys)
    found = index.find(KEY)
    assert found is not None and found.client == "team/app"
    assert index.find(KEY + "x") is None
    assert index.find("") is None
    assert index.find(key_digest(KEY)) is None  # the digest itself is not a key
    assert len(index) == 1


@pytest.fixture
def compared(monkeypatch) -> list[tuple[bytes, bytes]]:
    """The arguments of every ``hmac.compare_digest`` call from now on."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_the_match_is_confirmed_in_constant_time(compared):
    KeyIndex.build(creds().client_keys).find(KEY)
    assert compared == [(hashlib.sha256(KEY.encode()).digest(),) * 2]


def test_a_digest_listed_twice_keeps_its_first_entry():
    first = ClientKey(digest=key_digest(KEY), client="a/first")
    second = ClientKey(digest=key_digest(KEY), client="b/second")
    assert KeyIndex.build([first, second]).find(KEY) == first


def test_provider_keys_never_show_in_repr_str_or_a_default_dump():
    c = creds()
    for text in (repr(c), str(c), c.model_dump_json(), json.dumps(c.model_dump(mode="json"))):
        assert PROVIDER_KEY not in text
    assert json.dumps(summary(c)).find(PROVIDER_KEY) < 0
    assert key_digest(KEY) not in json.dumps(summary(c))


def test_the_stored_json_carries_the_keys_and_round_trips():
    c = creds(version=7)
    text = credentials_json(c)
    assert json.loads(text)["providerKeys"] == {"team/openai": PROVIDER_KEY}
    again = RouterCredentials.model_validate_json(text)
    assert again.same_content(c) and again.version == 7
    assert stored_credentials_version(text) == 7
    assert stored_credentials_version("not json") is None
    assert stored_credentials_version('{"version": true}') is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"providerKeys": {"no-slash": PROVIDER_KEY}},
        {"providerKeys": {"team/openai": 5}},
        {"clientKeys": [{"digest": PROVIDER_KEY, "client": "team/app"}]},
        {"clientKeys": [{"digest": key_digest(KEY), "client": "nonamespace"}]},
        {"clientKeys": [{"digest": key_digest(KEY), "client": "a/b", "allowedModels": [" x"]}]},
        {"version": -1},
        {"surprise": PROVIDER_KEY},
    ],
)
def test_invalid_documents_are_refused_without_quoting_them(overrides):
    with pytest.raises(ValidationError) as error:
        creds(**overrides)
    assert PROVIDER_KEY not in str(error.value)
    assert "input_value" not in str(error.value)


def test_access_swaps_newer_credentials_and_refuses_older_or_conflicting_ones():
    access = Access()
    assert access.version == 0 and access.provider_key("team/openai") is None
    assert not access.required
    assert access.replace(creds(version=5))
    assert access.provider_key("team/openai") == PROVIDER_KEY
    assert access.provider_key("team/other") is None
    assert access.required
    assert access.keys.find(KEY) is not None
    assert not access.replace(creds(version=5))  # the same again: no change
    with pytest.raises(StaleCredentialsError, match="older"):
        access.replace(creds(version=4))
    with pytest.raises(StaleCredentialsError, match="other content"):
        access.replace(creds(version=5, providerKeys={"team/openai": "sk-another-one"}))
    assert access.replace(creds(version=6, providerKeys={}, clientKeys=[], requireClientKey=False))
    assert access.provider_key("team/openai") is None and access.keys.find(KEY) is None
    assert not access.required


def test_the_routers_own_setting_forces_keys_whatever_the_credentials_say():
    access = Access(require_client_key=True)
    assert access.required
    access.replace(creds(requireClientKey=False))
    assert access.required


def test_identify_confirms_the_digest_in_constant_time(compared):
    access = Access()
    access.replace(creds())
    assert access.identify(f"Bearer {KEY}") is access.policies["team/app"]
    assert compared == [(hashlib.sha256(KEY.encode()).digest(),) * 2]


def test_a_wrong_key_of_the_same_length_is_refused():
    access = Access()
    access.replace(creds())
    for wrong in (KEY[:-1] + "g", "x" + KEY[1:], KEY.upper()):
        assert len(wrong) == len(KEY) and wrong != KEY
        refusal = access.identify(f"Bearer {wrong}")
        assert getattr(refusal, "code", None) == "invalid_api_key"


def test_a_rotated_or_deleted_key_stops_working_at_the_next_request():
    new_key = "sk-client-rotated-0123456789"
    access = Access()
    access.replace(creds())
    assert access.identify(f"Bearer {KEY}") is access.policies["team/app"]
    rotated = [{"digest": key_digest(new_key), "client": "team/app", "allowedModels": ["llama"]}]
    access.replace(creds(version=2, clientKeys=rotated))
    assert getattr(access.identify(f"Bearer {KEY}"), "code", None) == "invalid_api_key"
    assert access.identify(f"Bearer {new_key}") is access.policies["team/app"]
    # Limits changed with the rotation: the new policy, not one held from before.
    limited = [{**rotated[0], "limits": {"requestsPerMinute": 7}}]
    access.replace(creds(version=3, clientKeys=limited))
    policy = access.identify(f"Bearer {new_key}")
    assert getattr(policy, "requests_per_minute", None) == 7
    access.replace(creds(version=4, clientKeys=[]))
    assert getattr(access.identify(f"Bearer {new_key}"), "code", None) == "invalid_api_key"
    assert access.by_digest == {}


def test_presented_keys_never_grow_the_routers_memory():
    access = Access()
    access.replace(creds())
    held = dict(access.by_digest)
    for n in range(2000):
        access.identify(f"Bearer random-bad-key-{n:08d}")
    assert access.by_digest == held and len(access.by_digest) == 1
    assert access.refused == {("invalid_key", ""): 2000}
