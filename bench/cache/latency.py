"""What the cache stage costs per request, and how many cached answers one core serves.

In process (the stage alone, on this process's core; ``--cpu`` pins it): the real
:class:`~inferscale.router.stages.cache.CacheLookup` with the static encoder, in front of a next
stage that answers a fixed completion at once. Its store holds ``STORED`` questions of one
conversation partition (the worst case for the nearest-neighbour search: every question of the
route in one matrix). Timed per request, median and p99:

- the route without a cache (the stage hands on: one dict lookup), against calling the next
  stage directly;
- a miss (normalise and hash, exact lookup, embed, nearest neighbour, hand on, keep the answer),
  against calling the next stage directly: the added latency;
- an exact hit and a semantic hit (a paraphrase): the whole answer from the cache.

Over HTTP: ``inferscale router`` as a subprocess pinned to one CPU (the load generator on the
other), a cached route, one question asked once (a miss, answered by a mock engine in this
process), then the same question (exact hits) and a paraphrase (semantic hits) from 32
connections for a few seconds: cached answers per second on one core.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pairs import Pair

from inferscale.protocol.defaults import CACHE_SIMILARITY_THRESHOLD
from inferscale.protocol.table import RoutingTable
from inferscale.router.access import ANONYMOUS, Access
from inferscale.router.access_log import AccessLog
from inferscale.router.context import RequestContext
from inferscale.router.metrics import RouterMetrics
from inferscale.router.settings import RouterSettings
from inferscale.router.stages import Stage, link
from inferscale.router.stages.cache import CacheLookup
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointTable

STORED = 10_000
ROUNDS = 2_000
SYSTEM = "You are a helpful assistant."
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "An answer of a few words. " * 8},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 56, "total_tokens": 86},
    }
).encode()


class Request:
    """What the cache stage reads of an aiohttp request."""

    method = "POST"
    path = "/v1/chat/completions"
    headers: dict[str, str] = {}


class Answer(Stage):
    """The next stage: a whole completion at once."""

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        return web.Response(body=ANSWER, content_type="application/json")


def body(question: str) -> dict[str, Any]:
    return {
        "model": "m1",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "temperature": 0,
    }


def context(name: str, question: str) -> RequestContext:
    ctx = RequestContext(Request(), 0.0, 1, ANONYMOUS)  # type: ignore[arg-type]
    ctx.name = name
    ctx.obj = body(question)
    return ctx


async def timed(call: Callable[[RequestContext], Awaitable[Any]], ctxs: list[RequestContext]):
    """Microseconds of each call."""
    out = []
    for ctx in ctxs:
        started = time.perf_counter_ns()
        await call(ctx)
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def summary(name: str, us: list[float], base: list[float] | None = None) -> float:
    med = statistics.median(us)
    p99 = statistics.quantiles(us, n=100)[98]
    added = f"{med - statistics.median(base):.1f}" if base is not None else ""
    print(f"| {name} | {med:.1f} | {p99:.1f} | {added} |")
    return med


def outcomes(stage: CacheLookup) -> dict[str, int]:
    return {o: n for (_, o), n in stage.state.metrics.cache_requests.items()}


def counted(stage: CacheLookup, before: dict[str, int], outcome: str) -> int:
    return outcomes(stage).get(outcome, 0) - before.get(outcome, 0)


def build_stage(encoder: Any) -> CacheLookup:
    live = EndpointTable()
    live.replace(
        RoutingTable.model_validate(
            {
                "version": 1,
                "models": {
                    "m1": {"route": {"cache": {"enabled": True, "maxEntries": STORED * 2}}},
                    "plain": {},
                },
            }
        )
    )
    state = RouterState(
        RouterSettings(),
        live,
        Access(),
        AccessLog(RouterMetrics(), None, time.monotonic, "bench"),
        clock=time.monotonic,
        wall=time.time,
    )
    stage = CacheLookup(state, lambda: encoder)
    stage.encoder = encoder
    stage.on_table(live)
    link(stage, Answer())
    return stage


async def in_process(pairs: list[Pair]) -> float:
    from inferscale.embedding.store import load_static_encoder

    encoder = load_static_encoder()
    stage = build_stage(encoder)
    texts = list(dict.fromkeys(t for p in pairs for t in (p.text_a, p.text_b)))
    stored, fresh = texts[:STORED], texts[STORED:] or texts[-ROUNDS:]
    for question in stored:
        await stage(context("m1", question))
    print(f"\nthe stage alone: {len(stage.caches['m1'].store)} answers stored in one partition,")
    print(f"{ROUNDS} requests per row, microseconds\n")
    print("| request | median µs | p99 µs | added median µs |")
    print("|---|---:|---:|---:|")
    answer = Answer()
    fresh = (fresh * (ROUNDS // max(len(fresh), 1) + 1))[:ROUNDS]
    base = await timed(answer, [context("plain", q) for q in fresh])
    summary("next stage alone (baseline)", base)
    summary("route without a cache", await timed(stage, [context("plain", q) for q in fresh]), base)
    misses = [context("m1", f"{q} (variant {i})") for i, q in enumerate(fresh)]
    before = outcomes(stage)
    took = await timed(stage, misses)
    missed = counted(stage, before, "miss")
    miss = summary(f"miss: lookup, embed, keep ({missed} of {ROUNDS} missed)", took, base)
    repeat = [context("m1", q) for q in stored[:ROUNDS]]
    before = outcomes(stage)
    took = await timed(stage, repeat)
    hit = summary(f"exact hit ({counted(stage, before, 'hit_exact')} of {ROUNDS})", took)
    paraphrases = [context("m1", q.lower() + " ?") for q in stored[:ROUNDS]]
    before = outcomes(stage)
    took = await timed(stage, paraphrases)
    summary(
        f"lower-cased, ' ?' added ({counted(stage, before, 'hit_semantic')} semantic hits)", took
    )
    added = miss - statistics.median(base)
    print(f"\nmiss added {added:.0f} µs median (target <= 5000), exact hit {hit:.0f} µs (<= 2000)")
    return added


async def serve_mock(port: int) -> web.AppRunner:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def load(url: str, question: str, seconds: float, connections: int = 32) -> tuple[int, int]:
    """(answers, cache hits) in ``seconds`` from ``connections`` loops."""
    done = hits = 0
    payload = json.dumps(body(question)).encode()
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def loop() -> None:
            nonlocal done, hits
            while time.monotonic() < deadline:
                async with s.post(url, data=payload, headers=headers) as resp:
                    await resp.read()
                    done += 1
                    hits += resp.headers.get("X-Inferscale-Cache") == "hit"

        await asyncio.gather(*(loop() for _ in range(connections)))
    return done, hits


async def over_http(router_cpu: int, seconds: float = 5.0) -> None:
    mock_port, router_port = 18411, 18412
    mock = await serve_mock(mock_port)
    route = {"cache": {"enabled": True, "scope": "shared"}}
    table = {
        "version": 1,
        "models": {
            "m1": {
                "route": route,
                "endpoints": [{"pod": "mock-0", "address": f"127.0.0.1:{mock_port}"}],
            }
        },
    }
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        table_file = Path(tmp) / "table.json"
        table_file.write_text(json.dumps(table))
        cmd = ["taskset", "-c", str(router_cpu), sys.executable, "-m", "inferscale", "router",
               "--host", "127.0.0.1", "--port", str(router_port), "--table-file",
               str(table_file), "--table-poll-seconds", "0", "--no-access-log"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{router_port}/v1/chat/completions"
            await wait_ready(f"http://127.0.0.1:{router_port}", proc)
            question = "How do I reset my password?"
            await load(url, question, 0.5, 1)  # the miss, then warm-up hits
            print(f"\nover HTTP, the router pinned to CPU {router_cpu}, 32 connections:\n")
            for name, q in (("exact", question), ("semantic", "how can i reset my password")):
                n, hits = await load(url, q, seconds)
                print(f"- {name}: {n / seconds:,.0f} answers/s, {hits} of {n} from the cache")
        finally:
            proc.terminate()
            proc.wait(10)
            await mock.cleanup()


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"router exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                async with s.get(base + "/metrics") as resp:
                    text = await resp.text()
                    if 'inferscale_router_cache_entries{model="m1"}' in text:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the router's cache did not come up in 60 s")


async def run_latency(pairs: list[Pair]) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    print(f"static encoder, shipped threshold {CACHE_SIMILARITY_THRESHOLD}, CPUs {cpus}")
    miss = await in_process(pairs)
    others = sorted(set(range(os.cpu_count() or 1)) - {cpus[0]}) or cpus
    await over_http(others[-1])
    return 0 if miss < 5000 else 1
