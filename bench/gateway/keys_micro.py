#!/usr/bin/env python3
"""CPU per request of the router's client-key work alone, without HTTP (README "Keys and limits").

Runs what `Router.proxy` does for one request of the benchmark's client, with every limit on
(the credentials `run_router.py --bench-keys` writes), in a loop on one event loop:

  identify (hash the bearer, look the digest up), authorize (allowed models), the admission
  estimate, admit (rates and budgets, in process), settle (charge the real usage)

and prints the best of --repeats runs of --requests each, in microseconds of process CPU per
request. `--parts` also times each step alone. It exercises the code of this checkout
(operator/ on the path), so run it before and after a change on the same machine:

  python keys_micro.py                 # ~10 s
  python keys_micro.py --parts
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "operator"))

from inferscale.protocol.credentials import RouterCredentials  # noqa: E402
from inferscale.router.access import Access, estimate_tokens  # noqa: E402

KEY = "sk-" + "0123456789abcdef" * 3
BODY = json.dumps(
    {"model": "m1", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
).encode()
USAGE = {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}


def bench_access() -> Access:
    access = Access()
    access.replace(
        RouterCredentials.model_validate(
            {
                "version": 1,
                "requireClientKey": True,
                "clientKeys": [
                    {
                        "digest": hashlib.sha256(KEY.encode()).hexdigest(),
                        "client": "bench/loadgen",
                        "allowedModels": ["m1"],
                        "limits": {
                            "requestsPerMinute": 100_000_000,
                            "tokensPerMinute": 1_000_000_000,
                        },
                        "budgets": {"tokensPerDay": 10**14, "tokensPerMonth": 10**15},
                    }
                ],
            }
        )
    )
    return access


async def one_run(access: Access, n: int, part: str) -> float:
    header = "Bearer " + KEY
    obj = json.loads(BODY)
    size = len(BODY)
    policy = access.identify(header)
    grant = await access.admit(policy, estimate_tokens(size, obj))
    # As Router.proxy does in this checkout: no coroutine per admission where it can.
    in_process = hasattr(access, "admit_in_process")
    start = time.process_time()
    if part == "all":
        for _ in range(n):
            policy = access.identify(header)
            access.authorize(policy, "m1")
            if policy.limited:
                estimate = estimate_tokens(size, obj)
                grant = (
                    access.admit_in_process(policy, estimate)
                    if in_process
                    else await access.admit(policy, estimate)
                )
                access.settle(grant, USAGE, 200)
    elif part == "identify":
        for _ in range(n):
            access.identify(header)
    elif part == "authorize":
        for _ in range(n):
            access.authorize(policy, "m1")
    elif part == "estimate":
        for _ in range(n):
            estimate_tokens(size, obj)
    elif part == "admit":
        for _ in range(n):
            if in_process:
                access.admit_in_process(policy, 24)
            else:
                await access.admit(policy, 24)
    elif part == "settle":
        for _ in range(n):
            access.settle(grant, USAGE, 200)
    elif part == "loop":  # the bare loop, to subtract
        for _ in range(n):
            pass
    return (time.process_time() - start) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--parts", action="store_true", help="also time each step alone")
    args = ap.parse_args()
    access = bench_access()
    parts = ["all"] + (
        ["identify", "authorize", "estimate", "admit", "settle", "loop"] if args.parts else []
    )
    for part in parts:
        best = min(asyncio.run(one_run(access, args.requests, part)) for _ in range(args.repeats))
        runs = f"best of {args.repeats} x {args.requests}"
        print(f"{part:>9}: {best:6.2f} us CPU per request ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
