"""Applying a KV-events stream to the index: in order, gaps, restarts, malformed payloads."""

from __future__ import annotations

from inferscale.protocol.kvevents import encode_batch
from inferscale.router.kvsubscribe import StreamStats, apply
from inferscale.router.ttft import CacheIndex
from inferscale.sim import KvEvent


def payload(*events: KvEvent) -> bytes:
    return encode_batch(0.0, events, 16)


def test_an_ordered_stream_mirrors_the_cache():
    index, stats = CacheIndex(), StreamStats()
    apply(index, "a", stats, 0, payload(KvEvent("stored", (1, 2, 3), "GPU")))
    apply(index, "a", stats, 1, payload(KvEvent("removed", (3,), "GPU")))
    apply(index, "a", stats, 2, payload(KvEvent("stored", (3,), "CPU")))
    assert index.match("a", [1, 2, 3]) == (2, 1)
    assert (stats.batches, stats.events, stats.gaps, stats.restarts) == (3, 3, 0, 0)


def test_a_gap_forgets_what_was_known_and_learns_again():
    index, stats = CacheIndex(), StreamStats()
    apply(index, "a", stats, 0, payload(KvEvent("stored", (1, 2), "GPU")))
    # Message 1 was lost: it may have removed 1 and 2, so neither can be trusted.
    apply(index, "a", stats, 2, payload(KvEvent("stored", (9,), "GPU")))
    assert stats.gaps == 1 and index.match("a", [1]) == (0, 0) and index.match("a", [9]) == (1, 0)


def test_a_restarted_publisher_empties_the_entry():
    index, stats = CacheIndex(), StreamStats()
    for seq in range(5):
        apply(index, "a", stats, seq, payload(KvEvent("stored", (seq,), "GPU")))
    apply(index, "a", stats, 0, payload(KvEvent("stored", (100,), "GPU")))
    assert stats.restarts == 1 and index.blocks("a") == 1


def test_joining_mid_stream_is_not_a_gap():
    index, stats = CacheIndex(), StreamStats()
    apply(index, "a", stats, 41, payload(KvEvent("stored", (1,), "GPU")))
    assert stats.gaps == 0 and index.blocks("a") == 1


def test_a_malformed_payload_is_counted_and_clears_never_raises():
    index, stats = CacheIndex(), StreamStats()
    apply(index, "a", stats, 0, payload(KvEvent("stored", (1,), "GPU")))
    apply(index, "a", stats, 1, b"\xc1 not msgpack")
    assert stats.malformed == 1 and index.blocks("a") == 0
    apply(index, "a", stats, 2, payload(KvEvent("stored", (2,), "GPU")))
    assert stats.gaps == 0 and index.blocks("a") == 1
    apply(index, "b", StreamStats(), 0, payload(KvEvent("cleared", (), "GPU")))
    assert index.blocks("a") == 1
