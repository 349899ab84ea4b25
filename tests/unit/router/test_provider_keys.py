"""KeyPool: keys taken in turn within their rates; refused and rate-limited keys out alone."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from inferscale.protocol.credentials import ProviderKeyEntry
from inferscale.router.provider_keys import (
    BACKOFF_MAX_SECONDS,
    KeyPool,
    PooledKey,
    rebuild,
)
from inferscale.router.providers import retry_after_seconds


def pool(*keys: PooledKey) -> KeyPool:
    return KeyPool(keys or (PooledKey("s/a", "sk-a"), PooledKey("s/b", "sk-b")))


def ids(p: KeyPool, n: int, now: float = 0.0, estimate: int = 10) -> list[str | None]:
    out = []
    for _ in range(n):
        lease = p.take(now, estimate)
        out.append(lease.key.id if lease is not None else None)
    return out


def test_keys_are_taken_in_turn():
    assert ids(pool(), 5) == ["s/a", "s/b", "s/a", "s/b", "s/a"]


def test_each_key_keeps_its_own_requests_per_minute():
    p = pool(PooledKey("s/a", "sk-a", requests_per_minute=1), PooledKey("s/b", "sk-b"))
    assert ids(p, 4) == ["s/a", "s/b", "s/b", "s/b"]
    # One request a minute: the bucket holds one again after 60 s.
    assert ids(p, 2, now=60.0) == ["s/a", "s/b"]


def test_no_key_with_room_means_none_and_the_pool_still_counts_as_usable():
    p = pool(PooledKey("s/a", "sk-a", requests_per_minute=2))
    assert ids(p, 3) == ["s/a", "s/a", None]
    assert p.unusable_reason(0.0) is None  # rate limits are its own, not the provider's


def test_tokens_per_minute_take_the_estimate_and_settle_with_the_usage():
    p = pool(PooledKey("s/a", "sk-a", tokens_per_minute=100))
    lease = p.take(0.0, 60)
    assert lease is not None
    assert p.take(0.0, 60) is None  # 40 left
    lease.settle({"total_tokens": 10})  # it used 10, not 60: 50 come back
    assert p.take(0.0, 91) is None and p.take(0.0, 90) is not None


def test_a_request_larger_than_a_minute_of_tokens_still_runs_on_a_full_bucket():
    p = pool(PooledKey("s/a", "sk-a", tokens_per_minute=100))
    assert p.take(0.0, 5_000) is not None
    assert p.take(0.0, 1) is None


def test_usage_without_tokens_keeps_the_estimate():
    p = pool(PooledKey("s/a", "sk-a", tokens_per_minute=100))
    lease = p.take(0.0, 60)
    assert lease is not None
    for usage in (None, {}, {"total_tokens": "many"}):
        lease.settle(usage)
    assert p.take(0.0, 41) is None and p.take(0.0, 40) is not None


def test_a_refused_key_is_out_alone_and_the_provider_only_when_every_key_is():
    p = pool()
    first = p.take(0.0, 1)
    assert first is not None and first.key.id == "s/a"
    p.revoke(first)
    assert ids(p, 3) == ["s/b", "s/b", "s/b"]
    assert p.unusable_reason(0.0) is None
    second = p.take(0.0, 1)
    assert second is not None
    p.revoke(second)
    assert p.take(1e9, 1) is None  # no time mends it
    assert "refused by the provider (401/403)" in (p.unusable_reason(1e9) or "")


def test_a_rate_limited_key_waits_its_retry_after_or_a_doubling_backoff():
    p = pool()
    a = p.take(0.0, 1)
    assert a is not None
    assert p.back_off(a, 0.0, 2.5) == 2.5
    assert ids(p, 2, now=1.0) == ["s/b", "s/b"]
    assert ids(p, 2, now=2.6) == ["s/a", "s/b"]
    # Without Retry-After: 1 s, 2 s, 4 s ... while 429s come in a row; a success resets it.
    assert [p.back_off(a, 10.0, None) for _ in range(3)] == [2.0, 4.0, 8.0]
    p.succeeded(a)
    assert p.back_off(a, 10.0, None) == 1.0
    assert p.back_off(a, 10.0, 10_000) == BACKOFF_MAX_SECONDS


def test_every_key_backing_off_says_when_the_first_returns():
    p = pool()
    for wait in (3.0, 5.0):
        lease = p.take(0.0, 1)
        assert lease is not None
        p.back_off(lease, 0.0, wait)
    assert p.take(1.0, 1) is None
    assert "back in 2.0 s" in (p.unusable_reason(1.0) or "")
    assert p.unusable_reason(3.0) is None


def test_tried_keys_are_skipped():
    p = pool()
    lease = p.take(0.0, 1, tried=["s/a"])
    assert lease is not None and lease.key.id == "s/b"
    assert p.take(0.0, 1, tried=["s/a", "s/b"]) is None


def test_reports_and_reprs_name_ids_never_keys():
    p = pool(PooledKey("s/a", "sk-secret-a"))
    lease = p.take(0.0, 1)
    assert lease is not None
    p.back_off(lease, 0.0, 5)
    assert p.report(1.0) == [{"id": "s/a", "state": "backing_off", "backOffSeconds": 4.0}]
    assert "sk-secret-a" not in repr(p.keys) and "sk-secret-a" not in repr(lease)


def test_an_empty_pool_has_no_key():
    p = KeyPool([])
    assert p.take(0.0, 1) is None
    assert "no API key" in (p.unusable_reason(0.0) or "")


def entry(key_id: str, key: str, **rates: int) -> ProviderKeyEntry:
    return ProviderKeyEntry(id=key_id, key=SecretStr(key), **rates)


def test_rebuild_keeps_the_state_of_unchanged_keys_and_starts_rotated_ones_afresh():
    held = rebuild({"ns/p": [entry("s/a", "sk-a"), entry("s/b", "sk-b")]}, {})
    a, b = held["ns/p"].keys
    held["ns/p"].revoke(held["ns/p"].take(0.0, 1))  # type: ignore[arg-type]
    assert a.revoked
    b.backoff_until = 50.0
    new = rebuild({"ns/p": [entry("s/a", "sk-a2"), entry("s/b", "sk-b")]}, held)
    a2, b2 = new["ns/p"].keys
    assert not a2.revoked and a2.key == "sk-a2"  # the Secret changed: tried again
    assert b2 is b and b2.backoff_until == 50.0  # unchanged: its backoff holds


def test_rebuild_with_new_rates_keeps_refusals_and_refills_the_buckets():
    held = rebuild({"ns/p": [entry("s/a", "sk-a", requestsPerMinute=1)]}, {})
    p = held["ns/p"]
    assert ids(p, 2) == ["s/a", None]
    p.keys[0].backoffs = 2
    new = rebuild({"ns/p": [entry("s/a", "sk-a", requestsPerMinute=2)]}, held)
    assert new["ns/p"].keys[0].backoffs == 2
    assert ids(new["ns/p"], 3) == ["s/a", "s/a", None]


def test_a_provider_gone_from_the_credentials_is_dropped():
    held = rebuild({"ns/p": [entry("s/a", "sk-a")]}, {})
    assert rebuild({}, held) == {}


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": " 1.5 "}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "-4"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "1e12"}, 3600.0),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_the_providers_headers(headers, seconds):
    assert retry_after_seconds(headers) == seconds
