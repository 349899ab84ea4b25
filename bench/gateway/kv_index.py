#!/usr/bin/env python3
"""The router's throughput with its KV-cache index fed at 4 busy replicas' event rate, and without.

Issue 20's gateway check: throughput with the index fed >= 0.9x without it, in the same run.
Both arms run the same router (`Router.proxy` on one event loop, the engine attempt replaced by
a constant answer as in `stages_micro.py`), the same table (4 sim endpoints with a `kvEvents`
address, route strategy `predictedTTFT`, so every request is tokenized, hashed and scored
against the index) and the same chat prompt (~300 tokens, 18 blocks). The only difference: in
the fed arm a second process publishes vLLM-format KV events on the 4 endpoints' addresses and
the router's subscriber applies them on the same event loop as the requests.

The rate of a busy replica: an H100 prefilling an 8B model at ~25k tokens/s stores ~1,560
16-token blocks/s and, once its cache is full, evicts as many. The publisher sends each replica
a batch every 10 ms of 16 BlockStored and 16 BlockRemoved hashes: 1,600 + 1,600 blocks/s per
replica, 12,800 block events/s in all (400 batches/s). Each request yields to the loop once (as
a served request does while its socket is read), so the subscriber gets its turns.

  .venv/bin/python bench/gateway/kv_index.py --rounds 6 --seconds 5 [--router-cpu 1 --feed-cpu 0]

Each round runs both arms in fresh processes (alternating which goes first). The figure compared
is requests per CPU second of the router process (the subscriber's work included): what a
CPU-bound router serves, and far steadier on a shared machine than wall-clock requests/s (also
printed). Printed per round, then the median and the lowest ratio, fed over bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

BASE_PORT = 31570
"""The publishers' ports: below Linux's ephemeral range (32768-60999 by default). A SUB socket
that keeps reconnecting to a port with no publisher (the bare arm; the fed arm before the
publisher binds) can connect to itself when that port is also a free source port (TCP
simultaneous open), and then holds it: 45570 failed two runs with "Address already in use"."""
ENDPOINTS = 4
PROMPT = " ".join(f"token{i} of a shared system prompt" for i in range(60))
BODY = json.dumps(
    {"model": "m1", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
).encode()


class Content:
    def is_eof(self) -> bool:
        return True


class FakeRequest:
    method = "POST"
    path = "/v1/chat/completions"
    content = Content()
    content_length = len(BODY)
    client_max_size = 1 << 20

    def __init__(self) -> None:
        self.headers = {"Content-Type": "application/json"}

    async def read(self) -> bytes:
        return BODY


def publish(seconds: float, period: float) -> None:
    """The fed arm's other process: 4 PUB sockets, one batch per socket each ``period``."""
    import zmq

    from inferscale.protocol.kvevents import CacheEvent, encode_batch, encode_seq

    ctx = zmq.Context()
    socks = []
    for n in range(ENDPOINTS):
        s = ctx.socket(zmq.PUB)
        s.set_hwm(100_000)
        s.bind(f"tcp://127.0.0.1:{BASE_PORT + n}")
        socks.append(s)
    rng = random.Random(1)
    live: list[list[int]] = [[] for _ in socks]
    seq = [0] * ENDPOINTS
    end = time.monotonic() + seconds
    tick = time.monotonic()
    while time.monotonic() < end:
        for n, s in enumerate(socks):
            stored = [rng.getrandbits(63) for _ in range(16)]
            live[n].extend(stored)
            events = [CacheEvent("stored", tuple(stored), "GPU")]
            if len(live[n]) > 4096:  # a full cache: evict as many as were stored
                events.append(CacheEvent("removed", tuple(live[n][:16]), "GPU"))
                del live[n][:16]
            payload = encode_batch(time.time(), events, 16)
            s.send_multipart((b"kv-events", encode_seq(seq[n]), payload))
            seq[n] += 1
        tick += period
        time.sleep(max(tick - time.monotonic(), 0))
    for s in socks:
        s.close(linger=0)
    ctx.term()


def measure(seconds: float, fed: bool) -> dict[str, float]:
    """Requests per wall and per CPU second through ``Router.proxy``; events applied per second.

    The CPU is the router process's, the subscriber's work included.
    """
    from aiohttp import web

    from inferscale.protocol.table import RoutingTable
    from inferscale.router import app as router_app
    from inferscale.router.settings import RouterSettings
    from inferscale.router.stages.forward import Forward
    from inferscale.router.table import EndpointTable

    answer = web.Response(status=200, body=b"{}")

    async def constant(*_args: object, **_kwargs: object) -> web.Response:
        return answer

    Forward.__call__ = constant  # type: ignore[method-assign]
    endpoints = [
        {
            "pod": f"sim-{n}",
            "address": f"127.0.0.1:{18001 + n}",
            "engine": "sim",
            "kvEvents": f"127.0.0.1:{BASE_PORT + n}",
        }
        for n in range(ENDPOINTS)
    ]
    route = {"strategy": "predictedTTFT"}
    doc = {"version": 1, "models": {"m1": {"endpoints": endpoints, "route": route}}}
    table = EndpointTable()
    table.replace(RoutingTable.model_validate(doc))
    settings = RouterSettings(scrape_interval_seconds=0, table_poll_seconds=0, usage_ledger=False)
    app = router_app.create_app(settings, table, log_sink=None)
    router = app[router_app.ROUTER_KEY]

    async def run() -> dict[str, float]:
        await router.on_startup(app)
        sub = router.kv_subscriber
        assert sub is not None
        if fed:  # the publisher is up: wait (bounded) until every stream delivers
            for _ in range(200):
                if all(s.batches for s in sub.stats.values()):
                    break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("the publisher's events never arrived")
        request = FakeRequest()
        for _ in range(1000):  # warm up
            await router.proxy(request)  # type: ignore[arg-type]
        events_before = sum(s.events for s in sub.stats.values())
        done = 0
        cpu = time.process_time()
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            for _ in range(100):
                await router.proxy(request)  # type: ignore[arg-type]
                await asyncio.sleep(0)
            done += 100
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu
        events = sum(s.events for s in sub.stats.values()) - events_before
        await router.on_shutdown(app)
        return {"rate": done / elapsed, "cpu_rate": done / cpu, "events": events / elapsed}

    return asyncio.run(run())


def child(args: list[str]) -> int:
    print(json.dumps(measure(float(args[0]), args[1] == "fed")))
    return 0


def arm(fed: bool, ns: argparse.Namespace) -> dict[str, float]:
    pin = ["taskset", "-c", ns.router_cpu] if ns.router_cpu else []
    feeder = None
    if fed:
        feed_pin = ["taskset", "-c", ns.feed_cpu] if ns.feed_cpu else []
        feeder = subprocess.Popen(
            [*feed_pin, sys.executable, __file__, "--publish", str(ns.seconds + 15), "0.01"]
        )
    try:
        out = subprocess.run(
            [*pin, sys.executable, __file__, "--one", str(ns.seconds), "fed" if fed else "bare"],
            check=True,
            capture_output=True,
            text=True,
            timeout=ns.seconds + 60,
        ).stdout
    finally:
        if feeder is not None:
            feeder.terminate()
            feeder.wait(10)
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        return child(sys.argv[2:])
    if sys.argv[1:2] == ["--publish"]:
        publish(float(sys.argv[2]), float(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--router-cpu", default=None, help="taskset -c for the router process")
    ap.add_argument("--feed-cpu", default=None, help="taskset -c for the publisher process")
    ns = ap.parse_args()
    ratios: list[float] = []
    for n in range(ns.rounds):
        row = {}
        for fed in (False, True) if n % 2 == 0 else (True, False):
            row[fed] = arm(fed, ns)
        bare, fed_ = row[False], row[True]
        ratios.append(fed_["cpu_rate"] / bare["cpu_rate"])
        print(
            f"round {n + 1}: bare {bare['rate']:,.0f} req/s ({bare['cpu_rate']:,.0f} per CPU s), "
            f"fed {fed_['rate']:,.0f} req/s ({fed_['cpu_rate']:,.0f} per CPU s, "
            f"{fed_['events']:,.0f} events/s applied); CPU-bound throughput ratio {ratios[-1]:.3f}"
        )
    print(
        f"median CPU-bound throughput ratio, fed / bare, {ns.rounds} rounds: "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f})"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
