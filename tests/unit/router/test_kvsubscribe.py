"""Applying a KV-events stream to the index: in order, gaps, restarts, malformed payloads."""

from __future__ import annotations

import asyncio

from inferscale.protocol.kvevents import encode_batch, encode_seq
from inferscale.router.kvsubscribe import APPLY_EVENTS, KvEventSubscriber, StreamStats, apply
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


async def test_a_big_batch_is_applied_in_order_over_several_loop_turns():
    # One engine step can publish thousands of events: the loop runs others between slices.
    index = CacheIndex()
    subscriber = KvEventSubscriber(index)
    stats = StreamStats()
    n = 2 * APPLY_EVENTS + 10
    events = [KvEvent("stored", (i,), "GPU") for i in range(n - 1)]
    events.append(KvEvent("removed", (0,), "GPU"))  # the last event sees all the earlier ones
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(index.blocks("a"))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    frames = [b"", encode_seq(0), payload(*events)]
    applied = await subscriber._handle("a", stats, frames, APPLY_EVENTS - 2)
    watcher.cancel()
    await subscriber.close()
    assert index.blocks("a") == n - 2 and stats.events == n and stats.batches == 1
    assert index.match("a", list(range(1, n - 1))) == (n - 2, 0)
    assert applied == (n - 2) % APPLY_EVENTS  # what this turn applied so far
    assert 2 in seen and 2 + APPLY_EVENTS in seen  # parts applied, one slice per turn
    # A malformed message still clears the entry and applies nothing.
    assert await subscriber._handle("a", stats, [b"", encode_seq(1), b"\xc1"], 0) == 0
    assert index.blocks("a") == 0 and stats.malformed == 1
