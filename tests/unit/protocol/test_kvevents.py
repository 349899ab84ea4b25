"""vLLM's KV events on the wire: the sim's encoding, both vLLM encodings, and bad payloads."""

from __future__ import annotations

import random

import msgpack
import pytest

from inferscale.protocol.kvevents import (
    CacheEvent,
    KvEventFormatError,
    KvEventsConfig,
    decode_batch,
    decode_seq,
    encode_batch,
    encode_seq,
    subscribe_address,
)
from inferscale.sim import KvEvent


def test_what_the_sim_encodes_decodes_to_the_same_events():
    events = [
        KvEvent("stored", (1, 2, 2**63 - 1), "GPU"),
        KvEvent("removed", (1,), "GPU"),
        KvEvent("stored", (1,), "CPU"),
        KvEvent("cleared", (), "GPU"),
    ]
    batch = decode_batch(encode_batch(12.5, events, 16))
    assert batch.ts == 12.5
    assert batch.events == (
        CacheEvent("stored", (1, 2, 2**63 - 1), "GPU"),
        CacheEvent("removed", (1,), "GPU"),
        CacheEvent("stored", (1,), "CPU"),
        CacheEvent("cleared", (), None),
    )


def test_vllm_array_form_with_and_without_medium_and_a_dp_rank():
    payload = msgpack.packb(
        [
            1.0,
            [
                ["BlockStored", [5, 6], None, [1, 2, 3], 16, None],  # before media: no medium
                ["BlockRemoved", [5]],
                ["BlockStored", [7], 6, [], 16, None, "CPU"],
            ],
            0,
        ]
    )
    assert decode_batch(payload).events == (
        CacheEvent("stored", (5, 6), None),
        CacheEvent("removed", (5,), None),
        CacheEvent("stored", (7,), "CPU"),
    )


def test_vllm_map_form_with_bytes_hashes_and_unknown_event_types():
    payload = msgpack.packb(
        {
            "ts": 2,
            "events": [
                {"type": "BlockStored", "block_hashes": [b"\x00\x01"], "medium": "GPU"},
                {"type": "SomethingNew", "x": 1},  # a later vLLM's event: skipped
                {"type": "AllBlocksCleared"},
            ],
        }
    )
    assert decode_batch(payload).events == (
        CacheEvent("stored", (1,), "GPU"),
        CacheEvent("cleared", (), None),
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb(3),
        msgpack.packb(["x", []]),
        msgpack.packb([1.0, "events"]),
        msgpack.packb([1.0, [42]]),
        msgpack.packb([1.0, [["BlockStored", "not a list"]]]),
        msgpack.packb([1.0, [["BlockStored", [1.5]]]]),
        msgpack.packb([1.0, [["BlockStored", [True]]]]),
        msgpack.packb([1.0, [["BlockRemoved", [1], 7]]]),
        msgpack.packb({"ts": True, "events": []}),
    ],
)
def test_bad_payloads_raise_the_format_error_only(raw):
    with pytest.raises(KvEventFormatError):
        decode_batch(raw)


def test_random_bytes_never_raise_anything_else():
    rng = random.Random(5)
    good = encode_batch(1.0, [KvEvent("stored", (1, 2, 3), "GPU")], 16)
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode_batch(bytes(data[: rng.randrange(len(data) + 1)]))
        except KvEventFormatError:
            pass


def test_sequence_frames():
    assert decode_seq(encode_seq(7)) == 7
    assert decode_seq((-1).to_bytes(8, "big", signed=True)) == -1  # vLLM's end-of-replay
    with pytest.raises(KvEventFormatError):
        decode_seq(b"\x01")


def test_config_reads_vllms_option():
    on = KvEventsConfig.from_json(
        '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:6000",'
        ' "topic": "kv-events"}'
    )
    assert on == KvEventsConfig(True, "tcp://*:6000", "kv-events")
    assert KvEventsConfig.from_json(on.to_json()) == on
    assert not KvEventsConfig.from_json("{}").enable
    for bad in ("[", "[]", '{"enable_kv_cache_events": "yes"}', '{"endpoint": "ipc://x"}'):
        with pytest.raises(ValueError):
            KvEventsConfig.from_json(bad)
    assert subscribe_address("tcp://*:6000", "10.1.2.3") == "tcp://10.1.2.3:6000"
    with pytest.raises(ValueError):
        subscribe_address("tcp://*:x", "h")
