#!/usr/bin/env python3
"""CPU per request of the router's own request path up to the engine call, old against new.

Runs `Router.proxy` of a checkout on a fake request (a parsed-once chat body for model m1, the
benchmark's table) in a loop on one event loop, with the one engine attempt replaced by a
constant answer (`Router._attempt` before the stage pipeline, the forward stage's `__call__`
after it), so what is timed is everything the router does around the engine call: reading and
checking the body, the model lookup, the access and hold checks, picking and the in-flight
bookkeeping (and, since the pipeline, the stage calls). Without HTTP, sockets or a second
process, the figure is far steadier than the gateway benchmark's throughput on a shared machine;
it leaves out the HTTP work, which the change does not touch.

  python stages_micro.py --old /tmp/router-old            # this checkout is NEW
  python stages_micro.py --old /tmp/router-old --rounds 10 --requests 50000

Each round runs both checkouts (alternating which goes first) in fresh processes; printed:
every round's microseconds per request, the minimum per checkout, and new - old.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = json.dumps(
    {"model": "m1", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
).encode()


class Content:
    def is_eof(self):
        return True


class FakeRequest:
    method = "POST"
    path = "/v1/chat/completions"
    content = Content()

    def __init__(self):
        self.headers = {"Content-Type": "application/json"}

    async def read(self):
        return BODY


def measure(root: str, requests: int) -> float:
    """Microseconds of process CPU per request through ``root``'s Router.proxy."""
    sys.path.insert(0, os.path.join(root, "operator"))
    from aiohttp import web

    from inferscale.router import app as router_app
    from inferscale.router.settings import RouterSettings

    answer = web.Response(status=200, body=b"{}")

    async def constant(*_args, **_kwargs):
        return answer

    try:
        from inferscale.router.stages.forward import Forward
    except ImportError:  # before the pipeline: one attempt is Router._attempt
        router_app.Router._attempt = constant
    else:
        Forward.__call__ = constant
    try:
        from inferscale.protocol.table import RoutingTable
    except ImportError:
        from inferscale.router.table import RoutingTable
    from inferscale.router.table import EndpointTable

    table = EndpointTable()
    endpoint = {"pod": "mock-0", "address": "127.0.0.1:18001"}
    doc = {"version": 1, "models": {"m1": {"endpoints": [endpoint]}}}
    table.replace(RoutingTable.model_validate(doc))
    settings = RouterSettings(scrape_interval_seconds=0, table_poll_seconds=0)
    app = router_app.create_app(settings, table, log_sink=None)
    router = app[router_app.ROUTER_KEY]

    async def run() -> float:
        request = FakeRequest()
        for _ in range(1000):  # warm up
            await router.proxy(request)
        start = time.process_time()
        for _ in range(requests):
            await router.proxy(request)
        return (time.process_time() - start) / requests * 1e6

    return asyncio.run(run())


def main() -> int:
    if sys.argv[1:2] == ["--one"]:  # a child: --one ROOT REQUESTS
        print(measure(sys.argv[2], int(sys.argv[3])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="checkout before the change")
    ap.add_argument("--new", default=os.path.join(HERE, "..", ".."), help="checkout after it")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--cpu", default=None, help="pin the children to this CPU list (taskset -c)")
    args = ap.parse_args()
    pin = ["taskset", "-c", args.cpu] if args.cpu else []
    seen: dict[str, list[float]] = {"old": [], "new": []}
    for n in range(args.rounds):
        order = ("old", "new") if n % 2 == 0 else ("new", "old")
        row = {}
        for which in order:
            root = os.path.abspath(getattr(args, which))
            out = subprocess.run(
                [*pin, sys.executable, __file__, "--one", root, str(args.requests)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row[which] = float(out.strip().splitlines()[-1])
            seen[which].append(row[which])
        old, new = row["old"], row["new"]
        print(f"round {n + 1}: old {old:.2f} us, new {new:.2f} us, new - old {new - old:+.2f} us")
    best_old, best_new = min(seen["old"]), min(seen["new"])
    print(
        f"min over {args.rounds} rounds: old {best_old:.2f} us/request, new {best_new:.2f} "
        f"us/request, new - old {best_new - best_old:+.2f} us ({best_new / best_old:.3f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
