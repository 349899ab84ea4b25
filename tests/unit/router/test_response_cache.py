"""The response cache's pure core: eligibility, keys and the bounded store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inferscale.router.response_cache import (
    ENTRY_OVERHEAD_BYTES,
    CachedAnswer,
    CacheStore,
    cache_query,
    eligible,
    normalise,
    usage_tokens,
)

CHAT = "/v1/chat/completions"


def chat(question, *, system="You help.", earlier=(), **extra):
    messages = [{"role": "system", "content": system}, *earlier]
    messages.append({"role": "user", "content": question})
    return {"model": "m", "messages": messages, "temperature": 0, **extra}


def query(obj, *, client="team/a", shared=False, path=CHAT, route="r", model="m"):
    return cache_query(path, obj, route=route, model=model, client=client, shared=shared)


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def answer(key, partition="p", vector=None, *, body=b'{"x":1}', expires=1000.0, question="q"):
    return CachedAnswer(key, partition, question, vector, body, 3, 4, expires)


@pytest.mark.parametrize(
    ("body", "any_temperature", "allowed"),
    [
        ({"temperature": 0}, False, True),
        ({"temperature": 0.0}, False, True),
        ({}, False, False),  # the API's default temperature is 1
        ({"temperature": 0.7}, False, False),
        ({"temperature": False}, False, False),
        ({"temperature": "0"}, False, False),
        ({"temperature": 0.7}, True, True),
        ({"temperature": 0, "n": 2}, False, False),
        ({"temperature": 0, "n": True}, True, False),
        ({"n": 1}, True, True),
    ],
)
def test_only_requests_for_one_deterministic_answer_are_eligible(body, any_temperature, allowed):
    assert eligible(body, any_temperature) is allowed


def test_normalise_collapses_whitespace_and_case():
    assert normalise("  What's the\n\tWEATHER?  ") == "what's the weather?"


def test_the_same_question_normalised_has_the_same_exact_key():
    a = query(chat("What's the weather?"))
    b = query(chat("  what's THE weather? "))
    assert a is not None and b is not None
    assert a.exact == b.exact and a.partition == b.partition
    assert b.question == "  what's THE weather? "  # embedded as sent


def test_the_stream_flag_and_user_field_do_not_change_the_keys():
    a = query(chat("hi there"))
    b = query(chat("hi there", stream=True, stream_options={"include_usage": True}, user="u"))
    assert a == b


@pytest.mark.parametrize(
    ("other", "kwargs"),
    [
        (chat("hi there", system="You are a pirate."), {}),
        (chat("hi there", earlier=[{"role": "user", "content": "x"}]), {}),
        (chat("hi there", max_tokens=5), {}),
        (chat("hi there"), {"client": "team/b"}),
        (chat("hi there"), {"route": "other"}),
        (chat("hi there"), {"model": "other"}),
    ],
)
def test_another_conversation_tenant_route_or_parameter_is_another_partition(other, kwargs):
    base = query(chat("hi there"))
    moved = query(other, **kwargs)
    assert base is not None and moved is not None
    assert base.partition != moved.partition and base.exact != moved.exact


def test_a_shared_cache_ignores_the_client_key():
    a = query(chat("hi there"), client="team/a", shared=True)
    b = query(chat("hi there"), client="team/b", shared=True)
    assert a == b


def test_completions_key_on_the_prompt():
    a = query({"prompt": "Say hi", "temperature": 0}, path="/v1/completions")
    b = query({"prompt": "say  HI", "temperature": 0}, path="/v1/completions")
    assert a is not None and b is not None and a.exact == b.exact


def test_text_parts_are_joined_into_the_question():
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    found = query(chat(parts))
    assert found is not None and found.question == "hello\nworld"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": "hi"}),
        (CHAT, {"messages": []}),
        (CHAT, {"messages": "hi"}),
        (CHAT, {"messages": [{"role": "assistant", "content": "hi"}]}),
        (CHAT, {"messages": ["hi"]}),
        (CHAT, {"messages": [{"role": "user", "content": None}]}),
        (CHAT, {"messages": [{"role": "user", "content": "   "}]}),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}),
        ("/v1/completions", {"prompt": ["a", "b"]}),
        ("/v1/completions", {"prompt": 5}),
    ],
)
def test_requests_without_a_plain_text_question_are_not_cached(path, body):
    assert query(body, path=path) is None


def test_a_body_with_no_canonical_form_is_not_cached():
    body = {"messages": [{"role": "user", "content": "hi"}], "x": {1, 2}}
    assert query(body) is None


def test_exact_lookup_honours_the_ttl():
    store = CacheStore(10, 1 << 20, 2)
    assert store.put(answer("k", expires=50.0), now=10.0)
    assert store.exact("k", now=49.0) is not None
    assert store.exact("k", now=50.0) is None
    assert len(store) == 0 and store.bytes == 0


def test_nearest_answers_at_or_above_the_threshold_within_the_partition():
    store = CacheStore(10, 1 << 20, 2)
    store.put(answer("a", "p", unit(1, 0)), now=0)
    store.put(answer("b", "p", unit(0, 1)), now=0)
    store.put(answer("c", "other", unit(1, 0.1)), now=0)
    hit = store.nearest("p", unit(1, 0.2), threshold=0.9, now=1)
    assert hit is not None and hit[0].key == "a" and hit[1] == pytest.approx(0.9806, abs=1e-3)
    assert store.nearest("p", unit(1, 1), threshold=0.9, now=1) is None
    assert store.nearest("nobody", unit(1, 0), threshold=0.5, now=1) is None


def test_an_expired_nearest_answer_is_a_miss_and_is_dropped():
    store = CacheStore(10, 1 << 20, 2)
    store.put(answer("a", "p", unit(1, 0), expires=5), now=0)
    assert store.nearest("p", unit(1, 0), 0.9, now=6) is None
    assert len(store) == 0 and not store.partitions


def test_the_entry_bound_evicts_the_oldest_and_never_grows():
    store = CacheStore(3, 1 << 20, 2)
    for i in range(10):
        assert store.put(answer(f"k{i}", "p", unit(1, i)), now=0)
        assert len(store) <= 3
    assert list(store.entries) == ["k7", "k8", "k9"]
    assert store.partitions["p"].count == 3
    assert len(store.partitions["p"].matrix) <= 4


def test_the_byte_bound_evicts_the_oldest_and_never_grows():
    body = b"x" * 1000
    size = answer("k", body=body).size
    store = CacheStore(100, 3 * size, 2)
    for i in range(20):
        store.put(answer(f"k{i}", body=body), now=0)
        assert store.bytes <= store.max_bytes
    assert len(store) == 3


def test_an_answer_larger_than_the_bound_an_expired_one_or_a_wrong_vector_is_not_kept():
    store = CacheStore(10, 2000, 2)
    assert not store.put(answer("big", body=b"x" * 2000), now=0)
    assert not store.put(answer("old", expires=5), now=5)
    assert not store.put(answer("v", vector=np.zeros(3, np.float32)), now=0)
    assert len(store) == 0


def test_replacing_a_key_keeps_one_entry_and_its_bytes():
    store = CacheStore(10, 1 << 20, 2)
    store.put(answer("k", "p", unit(1, 0)), now=0)
    store.put(answer("k", "p", unit(0, 1), body=b"{}"), now=0)
    assert len(store) == 1 and store.partitions["p"].count == 1
    assert store.bytes == 2 + 1 + 8 + ENTRY_OVERHEAD_BYTES


def test_removing_from_the_middle_keeps_every_other_row_findable():
    store = CacheStore(100, 1 << 20, 3)
    vectors = {f"k{i}": unit(1, i, i * i) for i in range(8)}
    for key, vector in vectors.items():
        store.put(answer(key, "p", vector), now=0)
    store.remove("k2")
    store.remove("k0")
    store.remove("missing")
    for key, vector in vectors.items():
        hit = store.nearest("p", vector, 0.9999, now=1)
        if key in ("k0", "k2"):
            assert hit is None or hit[0].key != key
        else:
            assert hit is not None and hit[0].key == key


def test_expired_answers_at_the_front_go_on_the_next_write():
    store = CacheStore(10, 1 << 20, 2)
    store.put(answer("a", expires=5), now=0)
    store.put(answer("b", expires=50), now=0)
    store.put(answer("c", expires=60), now=10)
    assert list(store.entries) == ["b", "c"]


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4}, (3, 4)),
        ({"prompt_tokens": -1, "completion_tokens": "4"}, (0, 0)),
        (None, (0, 0)),
    ],
)
def test_usage_tokens_reads_what_is_there(usage, tokens):
    assert usage_tokens(usage) == tokens


def test_a_record_travels_between_routers_unchanged():
    from inferscale.router.response_cache import decode_record, encode_record

    entry = answer("k", "p", unit(1, 2), body='{"x":"é"}'.encode())
    entry.cost = 0.25
    raw = encode_record("m1", entry, "enc", "router-a")
    record = decode_record(raw, "enc", 2, expires=99.0)
    assert record is not None and (record.route, record.origin) == ("m1", "router-a")
    got = record.entry
    assert (got.key, got.partition, got.question, got.body) == ("k", "p", "q", entry.body)
    assert (got.prompt_tokens, got.completion_tokens, got.expires, got.cost) == (3, 4, 99.0, 0.25)
    assert got.vector is not None and np.allclose(got.vector, entry.vector)


def test_another_encoders_vector_is_dropped_and_the_answer_kept():
    from inferscale.router.response_cache import decode_record, encode_record

    raw = encode_record("m1", answer("k", "p", unit(1, 2)), "enc", "a")
    for encoder, dim in (("other", 2), ("enc", 3)):
        record = decode_record(raw, encoder, dim, expires=1.0)
        assert record is not None and record.entry.vector is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"route":"m","key":"k","partition":"p","question":"q","body":"b","origin":"o",'
        b'"tokens":[1]}',
        b'{"route":1,"key":"k","partition":"p","question":"q","body":"b","origin":"o",'
        b'"tokens":[1,2]}',
        b'{"route":"m","key":"k","partition":"p","question":"q","body":"b","origin":"o",'
        b'"tokens":[-1,2]}',
        b'{"route":"m","key":"k","partition":"p","question":"q","body":"b","origin":"o",'
        b'"tokens":[1,2],"encoder":"enc","vector":"%%%"}',
        b'{"route":"m","key":"k","partition":"p","question":"q","body":"b","origin":"o",'
        b'"tokens":[1,2],"cost":-1}',
    ],
)
def test_a_malformed_record_is_skipped(raw):
    from inferscale.router.response_cache import decode_record

    assert decode_record(raw, "enc", 2, expires=1.0) is None


def test_a_cached_answer_replays_as_chunks():
    from inferscale.router.response_cache import replay_chunks

    doc = {
        "id": "c1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }  # fmt: skip
    chunks = replay_chunks(doc, include_usage=False)
    assert [c["choices"][0].get("delta") for c in chunks] == [
        {"role": "assistant", "content": "hi"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert replay_chunks(doc, include_usage=True)[-1]["usage"] == doc["usage"]
    text = {"object": "text_completion", "choices": [{"text": "hey", "finish_reason": "length"}]}
    replayed = replay_chunks(text, include_usage=True)
    assert [c["choices"][0]["text"] for c in replayed] == ["hey", ""]
    assert all(c["object"] == "text_completion" for c in replayed)


def test_a_stream_tap_gives_up_past_its_limit():
    from inferscale.router.response_cache import StreamTap

    tap = StreamTap(5)
    tap.add(b"abc")
    assert tap.chunks == [b"abc"]
    tap.add(b"def")
    tap.add(b"g")
    assert tap.chunks is None


def _chunk(delta=None, finish=None, index=0, **extra):
    choice = {"index": index, "delta": delta or {}, "finish_reason": finish}
    return json.dumps({"id": "s1", "created": 7, "model": "m", "choices": [choice], **extra})


def test_a_whole_stream_becomes_the_non_streaming_answer():
    from inferscale.router.response_cache import stream_answer

    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}, "stop"),
        json.dumps({"id": "s1", "choices": [], "usage": {"prompt_tokens": 2}}),
        "[DONE]",
    ]
    doc = stream_answer(events, chat=True)
    assert doc == {
        "id": "s1",
        "created": 7,
        "model": "m",
        "usage": {"prompt_tokens": 2},
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
    }
    text = [json.dumps({"choices": [{"index": 0, "text": "hi", "finish_reason": "length"}]}),
            "[DONE]"]  # fmt: skip
    assert stream_answer(text, chat=False)["choices"] == [
        {"index": 0, "text": "hi", "finish_reason": "length"}
    ]


@pytest.mark.parametrize(
    "events",
    [
        [],
        [_chunk({"content": "Hel"}, "stop")],  # no [DONE]: cut short
        [_chunk({"content": "Hel"}), "[DONE]"],  # no finish reason
        [_chunk({"tool_calls": [{"index": 0}]}, "tool_calls"), "[DONE]"],
        [_chunk({"content": "x", "refusal": "no"}, "stop"), "[DONE]"],
        ["not json", "[DONE]"],
        ['{"error": {"message": "x"}}', "[DONE]"],
        ["[1]", "[DONE]"],
        [json.dumps({"choices": [{"index": "0", "delta": {}}]}), "[DONE]"],
        [json.dumps({"choices": [{"index": 0, "delta": {"content": 5}}]}), "[DONE]"],
    ],
)
def test_a_stream_that_cannot_be_replayed_exactly_is_not_kept(events):
    from inferscale.router.response_cache import stream_answer

    assert stream_answer(events, chat=True) is None
