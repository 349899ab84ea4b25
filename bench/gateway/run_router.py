#!/usr/bin/env python3
"""Start `inferscale router` from this checkout inside the benchmark venv.

The benchmark runs every Python gateway under the same interpreter, with the same aiohttp,
uvloop and orjson, so the comparison is between the code and not the environments. The router
needs only pydantic, pydantic-settings, PyYAML and aiohttp (and redis for shared limits), which
the benchmark venv has, so it runs from the source folder instead of an install. Arguments are
`inferscale router`'s, plus:

  --bench-keys FILE   write credentials to FILE that accept the benchmark's key (ROUTER_API_KEY,
                      which run_bench.py sets for every gateway) with every limit on (requests
                      and tokens per minute, daily and monthly budgets, set high enough that the
                      load never reaches them), require a key, and serve them (--credentials-file).
  --bench-redis-url URL   share those limits through Redis at URL (the router reads it from
                      INFERSCALE_ROUTER_REDIS_URL, never from a flag: a URL may hold a password).
"""

import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "operator"))

from inferscale.cli import router  # noqa: E402


def write_credentials(path: str, key: str) -> None:
    doc = {
        "version": 1,
        "requireClientKey": True,
        "clientKeys": [
            {
                "digest": hashlib.sha256(key.encode()).hexdigest(),
                "client": "bench/loadgen",
                "allowedModels": ["m1"],
                "limits": {"requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000},
                "budgets": {"tokensPerDay": 10**14, "tokensPerMonth": 10**15},
                # A team with budgets: its counters are checked on every request too.
                "team": "bench/team",
                "teamBudgets": {"tokensPerDay": 10**14, "usdPerDay": 10**8},
            }
        ],
    }
    with open(path, "w") as f:
        json.dump(doc, f)


def main() -> int:
    argv = sys.argv[1:]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--bench-keys", default=None)
    pre.add_argument("--bench-redis-url", default=None)
    pre.add_argument("--bench-redis-sync", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.bench_redis_url:
        os.environ["INFERSCALE_ROUTER_REDIS_URL"] = known.bench_redis_url
    if known.bench_redis_sync:
        os.environ["INFERSCALE_ROUTER_REDIS_SYNC_SECONDS"] = known.bench_redis_sync
    if known.bench_keys:
        key = os.environ.get("ROUTER_API_KEY", "")
        if not key:
            raise SystemExit("--bench-keys needs ROUTER_API_KEY (run_bench.py sets it)")
        write_credentials(known.bench_keys, key)
        rest += ["--credentials-file", known.bench_keys]
    parser = argparse.ArgumentParser(prog="run_router")
    sub = parser.add_subparsers(dest="command", required=True)
    router.register(sub)
    args = parser.parse_args(["router", *rest])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
