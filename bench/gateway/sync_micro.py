"""What one batched sync of limits costs the router: µs of CPU per sync, one client.

Starts nothing: give it a ``redis-server`` on loopback (``--port``). A :class:`BatchedLimiter`
with the benchmark's policy (rates, day and month token budgets, a team with token and money
budgets) admits and settles ``--per-sync`` requests, then syncs; the best of ``--rounds`` of
``--syncs`` syncs, in µs of this process's CPU per sync (admissions and settles excluded).
A sync runs at most once per interval (5 ms: at most 200 a second) whatever the request rate,
so its cost per request falls as the rate grows.

  redis-server --port 18579 --save "" --daemonize yes && python sync_micro.py --port 18579
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio

from inferscale.router.limits import LocalLimiter, Policy, extra_budgets
from inferscale.router.limits_batched import BatchedLimiter


def bench_policy() -> Policy:
    extra = extra_budgets(
        "bench/loadgen", "bench/team", (None, None), (10**14, None), (10**8, None)
    )
    return Policy(
        "bench/loadgen",
        requests_per_minute=10**9,
        tokens_per_minute=10**9,
        tokens_per_day=10**14,
        tokens_per_month=10**14,
        team="bench/team",
        extra=extra,
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--syncs", type=int, default=500)
    ap.add_argument("--per-sync", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    client = redis.asyncio.Redis(host="127.0.0.1", port=args.port)
    limiter = BatchedLimiter(client, LocalLimiter(time.monotonic, time.time), interval=3600)
    policy = bench_policy()
    best = float("inf")
    for _ in range(args.rounds):
        spent = 0.0
        for _ in range(args.syncs):
            for _ in range(args.per_sync):
                _, charge = await limiter.admit(policy, 30)
                assert charge is not None
                limiter.settle(policy, charge, 28, False, 0.0001)
            start = time.process_time()
            await limiter._sync()
            spent += time.process_time() - start
        best = min(best, spent / args.syncs)
    await limiter.close()
    print(f"{best * 1e6:.1f} µs of CPU per sync ({args.per_sync} requests per sync)")


if __name__ == "__main__":
    asyncio.run(main())
