"""bench/routing/virtual.py's pooled best case: one shared LRU pool of the replicas' room."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

ROUTING = Path(__file__).resolve().parents[3] / "bench" / "routing"
sys.path.append(str(ROUTING))  # virtual.py imports its siblings by name
spec = importlib.util.spec_from_file_location("bench_routing_virtual", ROUTING / "virtual.py")
assert spec is not None and spec.loader is not None
virtual = importlib.util.module_from_spec(spec)
sys.modules["bench_routing_virtual"] = virtual
spec.loader.exec_module(virtual)

BS = 16


def prompts(n: int, seed: int = 7) -> list[tuple[int, tuple[int, ...]]]:
    """Synthetic conversations: each prompt extends an earlier one (or starts a new one)."""
    rng = random.Random(seed)
    out: list[tuple[int, tuple[int, ...]]] = []
    next_block = 0
    for _ in range(n):
        base: tuple[int, ...] = ()
        if out and rng.random() < 0.7:
            base = rng.choice(out[-40:])[1]
        fresh = tuple(range(next_block, next_block + rng.randint(1, 6)))
        next_block += len(fresh)
        hashes = base + fresh
        out.append((len(hashes) * BS + rng.randint(0, BS - 1), hashes))
    return out


def replay(cache: Any, work: list[tuple[int, tuple[int, ...]]]) -> list[int]:
    """Hit tokens per prompt, replayed in order through ``Oracle`` or ``Pooled``."""
    hits = []
    for tokens, hashes in work:
        before = cache.hits
        cache.uncached(tokens, hashes, BS)
        hits.append(cache.hits - before)
    return hits


def test_pooled_never_hits_more_than_the_unbounded_oracle():
    work = prompts(400)
    oracle = replay(virtual.Oracle(), work)
    for gpu, host in ((4, 0), (8, 16), (30, 120), (100, 0)):
        pooled = replay(virtual.Pooled(gpu, host, 0.05), work)
        assert all(p <= o for p, o in zip(pooled, oracle, strict=True))


def test_pooled_with_room_for_every_block_is_the_oracle():
    work = prompts(400)
    blocks = len({h for _, hashes in work for h in hashes})
    assert replay(virtual.Pooled(blocks, 0, 0.05), work) == replay(virtual.Oracle(), work)
    assert replay(virtual.Pooled(1, blocks, 0.05), work) == replay(virtual.Oracle(), work)


def test_more_room_never_hits_less():
    # LRU's inclusion property: a bigger pool holds all a smaller one holds, prefix by prefix
    # (the tier split does not change what the union holds).
    work = prompts(400)
    smaller = replay(virtual.Pooled(10, 20, 0.05), work)
    for gpu, host in ((30, 0), (10, 40), (20, 20), (60, 200)):
        bigger = replay(virtual.Pooled(gpu, host, 0.05), work)
        assert all(b >= s for b, s in zip(bigger, smaller, strict=True))


def test_host_hits_cost_their_transfer_and_gpu_hits_nothing():
    pool = virtual.Pooled(2, 2, 0.25)
    assert pool.uncached(4 * BS, (1, 2, 3, 4), BS) == 4 * BS  # cold: all recomputed
    # 1, 2 are on the GPU, 3, 4 were moved to the host: 2 free blocks, 2 at a quarter's price.
    assert pool.match((1, 2, 3, 4)) == (4, 2)
    assert pool.uncached(4 * BS + 1, (1, 2, 3, 4), BS) == 1 + 2 * BS // 4
    assert (pool.hits, pool.host_hits, pool.queries) == (4 * BS, 2 * BS, 8 * BS + 1)
    # A full hit still recomputes the last token, charged to the host part first.
    pool = virtual.Pooled(0, 4, 1.0)
    pool.store((1, 2))
    assert pool.uncached(2 * BS, (1, 2), BS) == 1 + (2 * BS - 1)


def test_belady_hits_no_fewer_than_lru_in_the_same_room_and_no_more_than_the_oracle():
    work = prompts(600)
    oracle = replay(virtual.Oracle(), work)
    future = [hashes for _, hashes in work]
    for gpu, host in ((4, 0), (8, 16), (30, 120), (10, 40)):
        belady = replay(virtual.PooledBelady(gpu + host, future, 0.05), work)
        assert sum(belady) >= sum(replay(virtual.Pooled(gpu, host, 0.05), work))
        assert all(b <= o for b, o in zip(belady, oracle, strict=True))
    blocks = len(set().union(*future))
    assert replay(virtual.PooledBelady(blocks, future, 0.05), work) == oracle
    # Every hit is priced as a host-tier load.
    pool = virtual.PooledBelady(2, [(1, 2), (1, 2)], 0.25)
    assert pool.uncached(2 * BS, (1, 2), BS) == 2 * BS
    assert pool.uncached(2 * BS + 1, (1, 2), BS) == 1 + 2 * BS // 4


def test_live_blocks_counts_the_blocks_between_their_first_and_last_use():
    # 1 is used at 0 and 2, 2 at 1 and 3, 3 once: after prompt 1 both 1 and 2 wait for reuse.
    assert virtual.live_blocks([(1,), (2,), (1,), (2, 3)]) == (2, 1, 3, 2)
    assert virtual.live_blocks([]) == (0, 0, 0, 0)
