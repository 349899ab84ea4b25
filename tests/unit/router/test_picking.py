"""Pickers: tables of cases and hypothesis properties."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferscale.router.picking import (
    ADAPTER_SHARE_WINDOW,
    AdapterShares,
    HashRing,
    adapter_affinity,
    estimate_prompt_tokens,
    hash64,
    holding_adapter,
    least_in_flight,
    least_prefill,
    load_cap,
    pick,
    prefix_hash,
    prefix_text,
    remember_adapter,
    round_robin,
    weighted,
)


@dataclass(frozen=True)
class Snap:
    key: str
    in_flight: int = 0
    weight: int = 1
    queued: int = 0
    kv_usage: float = 0.0
    pending_prompt_tokens: int = 0


def make(*loads: int, **kw) -> list[Snap]:
    return [Snap(f"10.0.0.{i}:8000", in_flight=n, **kw) for i, n in enumerate(loads)]


@pytest.mark.parametrize(
    ("loads", "start", "expected"),
    [
        ((0,), 0, 0),
        ((3, 1, 2), 0, 1),
        ((0, 0, 0), 0, 0),
        ((0, 0, 0), 1, 1),
        ((0, 0, 0), 5, 2),
        ((2, 2, 1, 1), 0, 2),
        ((2, 2, 1, 1), 3, 3),
    ],
)
def test_least_in_flight_table(loads, start, expected):
    cands = make(*loads)
    assert least_in_flight(cands, start) is cands[expected]


def test_least_in_flight_counts_the_engines_queue_and_breaks_ties_on_kv():
    a = Snap("a:1", in_flight=1, queued=5)
    b = Snap("b:1", in_flight=3)
    assert least_in_flight([a, b]) is b
    c = Snap("c:1", in_flight=1, kv_usage=0.9)
    d = Snap("d:1", in_flight=1, kv_usage=0.1)
    assert least_in_flight([c, d]) is d


def test_round_robin_cycles():
    cands = make(0, 0, 0)
    assert [round_robin(cands, i).key for i in range(6)] == [c.key for c in cands] * 2


def test_weighted_follows_weights():
    cands = [Snap("a:1", weight=1), Snap("b:1", weight=3), Snap("c:1", weight=0)]
    counts = Counter(weighted(cands, i / 1000).key for i in range(1000))
    assert counts == {"a:1": 250, "b:1": 750}


def test_weighted_all_zero_still_answers():
    cands = [Snap("a:1", weight=0), Snap("b:1", weight=0)]
    assert weighted(cands, 0.7).key == "b:1"


def test_pick_dispatches():
    cands = make(1, 0)
    assert pick("leastInFlight", cands) is cands[1]
    assert pick("roundRobin", cands, counter=2) is cands[0]
    assert pick("weighted", cands, r=0.9) is cands[1]
    assert pick("prefixHash", cands, prefix=hash64("x")) in cands


@pytest.mark.parametrize(
    ("total", "n", "bound", "cap"),
    [(0, 1, 1.25, 2), (0, 4, 1.25, 1), (8, 4, 1.25, 3), (99, 10, 1.0, 10)],
)
def test_load_cap(total, n, bound, cap):
    assert load_cap(total, n, bound) == cap


def test_prefix_hash_sticks_until_overloaded_then_moves_on():
    cands = make(0, 0, 0, 0)
    ring = HashRing([c.key for c in cands])
    h = hash64("conversation-1")
    home = prefix_hash(cands, ring, h)
    # Load the home endpoint past the cap: the next endpoint clockwise takes the request.
    loaded = [Snap(c.key, in_flight=5 if c.key == home.key else 1) for c in cands]
    moved = prefix_hash(loaded, ring, h)
    assert moved.key != home.key
    assert moved.key == ring.walk(h)[1]  # the next one clockwise (load 1, under the cap of 3)


def test_prefix_hash_skips_endpoints_that_are_not_candidates():
    cands = make(0, 0, 0)
    ring = HashRing([c.key for c in cands])
    h = hash64("p")
    home = prefix_hash(cands, ring, h)
    rest = [c for c in cands if c is not home]
    assert prefix_hash(rest, ring, h) in rest


def test_ring_walk_visits_each_key_once():
    ring = HashRing(["a", "b", "c"], replicas=8)
    for h in (0, 2**63, 2**64 - 1):
        assert sorted(ring.walk(h)) == ["a", "b", "c"]
    assert HashRing([]).walk(5) == []


def test_adding_an_endpoint_moves_few_prefixes():
    keys = [f"10.0.0.{i}:8000" for i in range(8)]
    before = HashRing(keys)
    after = HashRing([*keys, "10.0.0.99:8000"])
    hashes = [hash64(f"prompt {i}") for i in range(2000)]
    moved = sum(before.walk(h)[0] != after.walk(h)[0] for h in hashes)
    assert moved < 2000 * 0.25  # ideal is 1/9 of them


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "messages": [
                    {"role": "system", "content": "be nice"},
                    {"role": "user", "content": "hi"},
                ]
            },
            "hi",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "s",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "image_url"}],
                    }
                ]
            },
            "a",
        ),
        ({"prompt": "hello world"}, "hello world"),
        ({"prompt": ["first", "second"]}, "first"),
        ({"prompt": [1, 2, 3]}, "1,2,3"),
        ({"input": "embed me"}, "embed me"),
        ({"messages": "not a list"}, ""),
        ({"messages": [5, None]}, ""),
        ({}, ""),
        ({"prompt": {"x": 1}}, ""),
    ],
)
def test_prefix_text(body, expected):
    assert prefix_text(body, 1000) == expected


def test_prefix_text_is_cut():
    assert prefix_text({"prompt": "x" * 500}, 256) == "x" * 256
    long = {"messages": [{"role": "user", "content": "y" * 1000}, {"role": "user", "content": "z"}]}
    assert prefix_text(long, 10) == "y" * 10


SYSTEM = {"role": "system", "content": "You are a helpful assistant. " * 20}


def test_every_turn_of_a_conversation_hashes_alike():
    """A first user message shorter than the prefix must not let later turns change the hash."""
    turn1 = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is CHWBL?"},
        ]
    }
    turn2 = {
        "messages": [
            *turn1["messages"],
            {"role": "assistant", "content": "Consistent hashing with bounded loads."},
            {"role": "user", "content": "Who uses it?"},
        ]
    }
    assert prefix_text(turn1, 256) == prefix_text(turn2, 256) == "What is CHWBL?"


def test_a_long_shared_system_prompt_does_not_make_conversations_collide():
    a = {"messages": [SYSTEM, {"role": "user", "content": "Plan a trip to Lisbon"}]}
    b = {"messages": [SYSTEM, {"role": "user", "content": "Explain KV caches"}]}
    assert prefix_text(a, 256) != prefix_text(b, 256)


loads = st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=24)


@settings(max_examples=300, deadline=None)
@given(loads=loads, prefix=st.text(max_size=40), bound=st.floats(min_value=1.0, max_value=3.0))
def test_chwbl_never_exceeds_the_bound(loads, prefix, bound):
    cands = make(*loads)
    ring = HashRing([c.key for c in cands], replicas=16)
    chosen = prefix_hash(cands, ring, hash64(prefix), bound)
    assert chosen.in_flight + 1 <= load_cap(sum(loads), len(loads), bound)


@settings(max_examples=300, deadline=None)
@given(loads=loads, prefix=st.text(max_size=40))
def test_chwbl_same_prefix_same_endpoint_when_not_overloaded(loads, prefix):
    cands = make(*loads)
    ring = HashRing([c.key for c in cands], replicas=16)
    h = hash64(prefix)
    home_key = ring.walk(h)[0]
    home = next(c for c in cands if c.key == home_key)
    chosen = prefix_hash(cands, ring, h)
    if home.in_flight + 1 <= load_cap(sum(loads), len(loads), 1.25):
        assert chosen is home
    assert prefix_hash(cands, ring, h) is chosen  # deterministic


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    requests=st.integers(min_value=1, max_value=400),
    seed=st.integers(0, 10**6),
)
def test_chwbl_sequential_assignment_keeps_every_load_within_the_bound(n, requests, seed):
    """Requests that never finish, all with the same prefix: loads stay within 1.25 x mean + 1."""
    keys = [f"e{i}:1" for i in range(n)]
    ring = HashRing(keys, replicas=16)
    load = dict.fromkeys(keys, 0)
    for i in range(requests):
        cands = [Snap(k, in_flight=load[k]) for k in keys]
        chosen = prefix_hash(cands, ring, hash64(str(seed % 3)))
        load[chosen.key] += 1
        assert max(load.values()) <= load_cap(i, n, 1.25)


@settings(max_examples=200, deadline=None)
@given(loads=loads, start=st.integers(0, 1000))
def test_least_in_flight_is_a_minimum(loads, start):
    cands = make(*loads)
    assert least_in_flight(cands, start).in_flight == min(loads)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=10),
    r=st.floats(0, 1, exclude_max=True),
)
def test_weighted_never_picks_a_zero_weight_when_some_are_positive(weights, r):
    cands = [Snap(f"e{i}:1", weight=w) for i, w in enumerate(weights)]
    chosen = weighted(cands, r)
    if any(weights):
        assert chosen.weight > 0


def test_least_prefill_goes_where_the_least_prompt_waits_for_a_first_token():
    # Two short requests in flight at .0 and one 8,000-token prompt at .1: the prompt holds up
    # a new first token longer, so .0 wins although it has more requests in flight.
    snaps = [
        Snap("10.0.0.0:8000", in_flight=2, pending_prompt_tokens=400),
        Snap("10.0.0.1:8000", in_flight=1, pending_prompt_tokens=8_000),
    ]
    assert least_prefill(snaps, 0).key == "10.0.0.0:8000"
    assert least_prefill(snaps, 1).key == "10.0.0.0:8000"
    assert least_in_flight(snaps, 0).key == "10.0.0.1:8000"


def test_least_prefill_ties_go_by_load_then_kv_then_rotation():
    idle = [Snap(f"10.0.0.{i}:8000") for i in range(3)]
    assert [least_prefill(idle, start).key[-6] for start in range(3)] == ["0", "1", "2"]
    decoding = [
        Snap("a", in_flight=3),
        Snap("b", in_flight=1, kv_usage=0.5),
        Snap("c", in_flight=1, kv_usage=0.2),
    ]
    assert least_prefill(decoding, 0).key == "c"
    assert pick("leastPrefill", decoding, counter=0).key == "c"


@given(
    st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 64)), min_size=1, max_size=12),
    st.integers(0, 1000),
)
@settings(max_examples=200, deadline=None)
def test_least_prefill_is_a_minimum(state, start):
    snaps = [Snap(f"e{i}", in_flight=n, pending_prompt_tokens=t) for i, (t, n) in enumerate(state)]
    chosen = least_prefill(snaps, start)
    assert chosen.pending_prompt_tokens == min(s.pending_prompt_tokens for s in snaps)
    same = [s for s in snaps if s.pending_prompt_tokens == chosen.pending_prompt_tokens]
    assert chosen.in_flight == min(s.in_flight for s in same)


@pytest.mark.parametrize(("size", "tokens"), [(0, 0), (3, 0), (4, 1), (4_001, 1_000), (-5, 0)])
def test_estimate_prompt_tokens(size, tokens):
    assert estimate_prompt_tokens(size) == tokens


@dataclass
class Holder:
    key: str
    adapters: frozenset[str]


def test_holding_adapter_keeps_the_holders_or_everyone_when_none_holds_it():
    a = Holder("a", frozenset({"sql"}))
    b = Holder("b", frozenset({"sql", "chat"}))
    c = Holder("c", frozenset())
    assert holding_adapter([a, b, c], "sql") == [a, b]
    assert holding_adapter([a, b, c], "chat") == [b]
    assert holding_adapter([a, b, c], "new") == [a, b, c]
    assert holding_adapter([], "sql") == []


@dataclass(frozen=True)
class Warm(Snap):
    recent_adapters: list[str] = field(default_factory=list)


def warm(*loads: int, recent: dict[int, list[str]] | None = None) -> list[Warm]:
    return [
        Warm(f"10.0.0.{i}:8000", in_flight=n, recent_adapters=(recent or {}).get(i, []))
        for i, n in enumerate(loads)
    ]


def fresh() -> AdapterShares:
    return AdapterShares()


def shares_of(counts: dict[str, float]) -> AdapterShares:
    shares = AdapterShares()
    shares.counts.update(counts)
    return shares


def test_adapter_affinity_keeps_a_cold_adapter_on_its_place_on_the_ring_until_loaded():
    idle = warm(0, 0, 0, 0)
    ring = HashRing([c.key for c in idle])
    home = adapter_affinity(idle, ring, "sql", fresh())
    assert all(adapter_affinity(idle, ring, "sql", fresh()) == home for _ in range(3))
    # Past its share (4 of 4: 4 + 1 > ceil(1.25 * 5 / 4) = 2), the next replica on the ring
    # takes it.
    over = shares_of({home.key: 4})
    moved = adapter_affinity(idle, ring, "sql", over)
    assert moved.key != home.key
    assert adapter_affinity(idle, ring, "sql", over) == moved  # the same spill replica each time


def test_adapter_affinity_prefers_replicas_that_recently_got_the_adapter_within_their_share():
    cands = warm(1, 1, 1, 1, recent={0: ["sql"], 2: ["chat", "sql"]})
    ring = HashRing([c.key for c in cands])
    assert adapter_affinity(cands, ring, "sql", fresh()).key in (cands[0].key, cands[2].key)
    assert adapter_affinity(cands, ring, "sql", fresh(), start=0).key == cands[0].key
    assert adapter_affinity(cands, ring, "sql", fresh(), start=1).key == cands[2].key  # rotates
    # Without the warm rule the adapter's place on the ring could be any of the four.
    order = ring.walk(hash64("lora:sql"))
    cold = [Warm(c.key, in_flight=1) for c in cands]
    assert adapter_affinity(cold, ring, "sql", fresh()).key == order[0]


def test_adapter_affinity_takes_the_warm_replica_with_the_smallest_share():
    # Both warm replicas are eligible (shares within ceil(1.25 * 8 / 4) = 3, in flight within
    # ceil(3.0 * 3 / 4) = 3); the one with more in flight has the smaller share and gets it.
    cands = warm(0, 2, 0, 0, recent={0: ["sql"], 1: ["sql"]})
    ring = HashRing([c.key for c in cands])
    shares = shares_of({cands[0].key: 2, cands[1].key: 1, cands[2].key: 2, cands[3].key: 2})
    assert adapter_affinity(cands, ring, "sql", shares).key == cands[1].key


def test_a_cold_adapter_goes_to_the_smallest_share_before_its_place_on_the_ring():
    idle = warm(0, 0, 0, 0)
    ring = HashRing([c.key for c in idle])
    order = ring.walk(hash64("lora:sql"))
    shares = shares_of({order[0]: 2, order[1]: 2, order[2]: 1, order[3]: 2})
    assert adapter_affinity(idle, ring, "sql", shares).key == order[2]
    # Sparing an only copy comes first: order[2] would evict "solo", so the ring decides
    # among the others (equal shares).
    cands = [Warm(c.key, recent_adapters=["solo"] if c.key == order[2] else []) for c in idle]
    assert adapter_affinity(cands, ring, "sql", shares).key == order[0]


def test_adapter_affinity_passes_over_a_warm_replica_past_its_share_of_adapter_requests():
    cands = warm(0, 0, 0, 0, recent={0: ["sql"]})
    ring = HashRing([c.key for c in cands])
    key = cands[0].key
    # 9 of 12 requests: 9 + 1 > ceil(1.25 * 13 / 4) = 5, so the warm replica is passed over
    # even though it has nothing in flight.
    busy = shares_of({key: 9, cands[1].key: 1, cands[2].key: 1, cands[3].key: 1})
    assert adapter_affinity(cands, ring, "sql", busy).key != key
    # Within its share (3 of 12: 4 <= 5) it keeps the adapter.
    fair = shares_of({key: 3, cands[1].key: 3, cands[2].key: 3, cands[3].key: 3})
    assert adapter_affinity(cands, ring, "sql", fair).key == key
    # The route's load bound sets the share: at 3.0 the 9-of-12 replica is within it.
    assert adapter_affinity(cands, ring, "sql", busy, 3.0).key == key


def test_adapter_affinity_passes_over_a_replica_with_too_much_in_flight_whatever_its_share():
    # Total 8 in flight: the cap is ceil(3.0 * 9 / 4) = 7, and 7 + 1 > 7 (a stalled replica).
    cands = warm(7, 1, 0, 0, recent={0: ["sql"]})
    ring = HashRing([c.key for c in cands])
    assert adapter_affinity(cands, ring, "sql", fresh()).key != cands[0].key
    # A looser flight bound (or less in flight) keeps it.
    assert adapter_affinity(cands, ring, "sql", fresh(), flight_bound=4.0).key == cands[0].key
    # The flight cap is never tighter than the load bound: at bound 4.0 it is 9, and 8 <= 9.
    assert adapter_affinity(cands, ring, "sql", fresh(), 4.0, flight_bound=1.0).key == cands[0].key


def test_adapter_affinity_falls_back_to_every_candidate_when_none_is_eligible():
    cands = warm(0, 0, recent={0: ["sql"]})
    ring = HashRing([c.key for c in cands])
    # Both past their share of a bound below 1 (1 + 1 > ceil(0.5 * 3 / 2) = 1): the ring decides.
    shares = shares_of({cands[0].key: 1, cands[1].key: 1})
    order = ring.walk(hash64("lora:sql"))
    assert adapter_affinity(cands, ring, "sql", shares, 0.5).key == order[0]


def test_adapter_affinity_spreads_cold_adapters_over_replicas():
    idle = warm(0, 0, 0, 0)
    ring = HashRing([c.key for c in idle])
    homes = Counter(adapter_affinity(idle, ring, f"a{i}", fresh()).key for i in range(40))
    assert len(homes) == 4 and max(homes.values()) <= 20


def test_adapter_affinity_keeps_the_busiest_replica_within_the_bound_of_the_mean():
    # Every adapter warm on replica 0 only: without the share bound it would take everything.
    cands = warm(0, 0, 0, 0, recent={0: [f"a{i}" for i in range(4)]})
    ring = HashRing([c.key for c in cands])
    shares = fresh()
    served: Counter[str] = Counter()
    for i in range(400):
        chosen = adapter_affinity(cands, ring, f"a{i % 4}", shares, 1.25, i)
        shares.note(chosen.key)
        served[chosen.key] += 1
    assert max(served.values()) <= 1.25 * 100 + 1


def test_adapter_shares_halve_each_window_and_forget_endpoints_gone_quiet():
    shares = AdapterShares(window=4)
    for key in ["a", "a", "a", "b"]:
        shares.note(key)
    assert shares.count("a") == 1.5 and shares.count("b") == 0.5  # halved at the 4th
    for _ in range(4 * 8):
        shares.note("a")
    assert shares.count("b") == 0.0 and "b" not in shares.counts  # below 1/64: dropped
    assert set(shares.counts) == {"a"}
    assert AdapterShares(window=0).window == 1  # a bad window is clamped, never a crash
    assert ADAPTER_SHARE_WINDOW >= 64


def test_remember_adapter_keeps_the_last_distinct_adapters_most_recent_last():
    recent: list[str] = []
    for name in ["a", "b", "a", "c", "d"]:
        remember_adapter(recent, name, 3)
    assert recent == ["a", "c", "d"]
    remember_adapter(recent, "c", 3)
    assert recent == ["a", "d", "c"]


def test_a_cold_adapter_spares_a_replica_whose_eviction_would_drop_an_only_copy():
    idle = warm(0, 0, 0, 0)
    ring = HashRing([c.key for c in idle])
    order = ring.walk(hash64("lora:sql"))
    # The adapter's first replica on the ring would evict "solo", warm nowhere else; the second
    # would evict "shared", which the third also holds.
    recent = {order[0]: ["solo", "x"], order[1]: ["shared", "y"], order[2]: ["shared"]}
    cands = [Warm(c.key, recent_adapters=recent.get(c.key, [])) for c in idle]
    assert adapter_affinity(cands, ring, "sql", fresh()).key == order[1]
    # Without the rule (the ring alone) it would have been the first.
    assert prefix_hash(cands, ring, hash64("lora:sql")).key == order[0]
    # A replica with nothing recent evicts nothing: the ring's first one keeps the adapter.
    assert adapter_affinity(idle, ring, "sql", fresh()).key == order[0]


def test_a_cold_adapter_takes_the_ring_first_when_every_eviction_drops_an_only_copy():
    idle = warm(0, 0, 0, 0)
    ring = HashRing([c.key for c in idle])
    order = ring.walk(hash64("lora:sql"))
    cands = [Warm(c.key, recent_adapters=[f"only-{i}"]) for i, c in enumerate(idle)]
    assert adapter_affinity(cands, ring, "sql", fresh()).key == order[0]
    # Past its share the first is passed over even if it were cheaper.
    assert adapter_affinity(cands, ring, "sql", shares_of({order[0]: 4})).key == order[1]
