#!/usr/bin/env python3
"""Replay the Mooncake conversation trace through sims behind the router, once per picker.

For each load (``--speedups``) and picker: start N fresh `inferscale sim` processes (cold prefix
caches, KV events on, each publishing on its own loopback port; ``--host-factor`` gives each
the host-memory tier) and one `inferscale router` whose routing table sends the model to them
with that strategy and names each sim's KV-events publisher (so ``predictedTTFT`` runs on the
sims' own events); replay a window of the trace in scaled time as streaming completions; then
print mean and p95 time to first token (client side, through the router, and the sims' own),
the prefix-cache hit rate (the sims' own vLLM-named counters, host-tier hits in brackets), the
most blocks the router's KV-event index held, the per-replica share of requests and the
time-averaged in flight per replica (max / mean), and the same run in virtual time
(``virtual.py``: the same latency model and pickers without HTTP or clocks) as a cross-check.

The workload and the engine come from ``workload.py`` (see its docstring and the README for
the scaling): by default every trace token is a sim token (``--block-words 512``) on the
preset's real KV cache and prefill cost, with the trace's real output lengths.
Everything runs on 127.0.0.1 and stops by itself (bounded request count, per-request timeout).

  .venv/bin/python bench/routing/run_bench.py                      # speedups 1 and 1.5
  .venv/bin/python bench/routing/run_bench.py --start 9000 --requests 600 --speedups 1.25
  .venv/bin/python bench/routing/run_bench.py --requests 400 --speedups 1.5 --host-factor 4 \
      --pickers leastInFlight,predictedTTFT,leastPrefill
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import virtual
from workload import (
    Prompts,
    Row,
    add_workload_arguments,
    default_trace,
    engine_flags,
    engine_params,
    output_tokens,
    read_rows,
)

from inferscale.protocol.kvevents import KvEventsConfig
from inferscale.sim.model import EngineParams

MODEL = "trace-model"
INDEX_BLOCKS = "inferscale_router_kv_index_blocks"
RESYNCS = "inferscale_router_kv_stream_resyncs_total"
ROUTER_TTFT = "inferscale_router_time_to_first_token_seconds"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ok(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = out.get(key, 0.0) + float(value)
    return out


def endpoint_values(metrics: dict[str, float], name: str, replicas: int) -> list[float]:
    return [
        sum(v for k, v in metrics.items() if k.startswith(name) and f'endpoint="sim-{i}"' in k)
        for i in range(replicas)
    ]


async def replay(
    base: str,
    rows: list[Row],
    prompts: Prompts,
    args: argparse.Namespace,
    speedup: float,
    sends: list[float],
) -> tuple[list[float | None], list[float], int]:
    """TTFT per request, in flight per replica averaged over 0.5 s samples of the router, and
    the most block hashes the router's KV-event index held at once (all replicas, sampled).

    ``sends`` gets each request's send time, seconds from the start (the schedule is the
    trace's; a busy client sends late)."""
    ttfts: list[float | None] = [None] * len(rows)
    sends[:] = [0.0] * len(rows)
    # Every prompt's text before the clock starts: built on the way (the first run of a
    # process also fills the block-word cache), the sends lagged the schedule by 83 ms on
    # average (p95 242 ms) in the first picker's run and 7 ms in the later ones, which
    # spread the trace's bursts for the first picker only (README, "Real time with KV events").
    texts = [prompts.text(row) for row in rows]
    t0 = rows[0].at_s
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    load = [0.0] * args.replicas
    samples = 0
    most_blocks = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int, row: Row) -> None:
            await asyncio.sleep(max(0.0, start + (row.at_s - t0) / speedup - time.monotonic()))
            body = {
                "model": MODEL,
                "prompt": texts[i],
                "stream": True,
                "max_tokens": output_tokens(row, args.max_tokens),
            }
            sent = time.monotonic()
            sends[i] = sent - start
            try:
                async with session.post(base + "/v1/completions", json=body) as resp:
                    if resp.status != 200:
                        return
                    async for line in resp.content:
                        if line.startswith(b"data: {"):
                            ttfts[i] = time.monotonic() - sent
                            break
                    async for _ in resp.content.iter_any():
                        pass
            except (TimeoutError, aiohttp.ClientError):
                return

        async def sample() -> None:
            nonlocal samples, most_blocks
            while True:
                await asyncio.sleep(0.5)
                async with session.get(base + "/metrics") as resp:
                    text = await resp.text()
                m: dict[str, float] = {}
                for line in text.splitlines():
                    if line.startswith(("inferscale_router_in_flight{", INDEX_BLOCKS + "{")):
                        key, value = line.rsplit(" ", 1)
                        m[key] = float(value)
                for j, v in enumerate(endpoint_values(m, "inferscale_router_in_flight", len(load))):
                    load[j] += v
                blocks = endpoint_values(m, INDEX_BLOCKS, len(load))
                most_blocks = max(most_blocks, int(sum(blocks)))
                samples += 1

        sampler = asyncio.create_task(sample())
        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))
        finally:
            sampler.cancel()
    return ttfts, [x / max(samples, 1) for x in load], most_blocks


def kv_events_config(port: int) -> str:
    """The sim's ``--kv-events-config``: vLLM's JSON, a ZMQ publisher on loopback ``port``."""
    return KvEventsConfig(enable=True, endpoint=f"tcp://127.0.0.1:{port}").to_json()


def sim_command(
    port: int, kv_port: int | None, args: argparse.Namespace, params: EngineParams
) -> list[str]:
    """``inferscale sim`` on ``port`` with the bench's engine; KV events on ``kv_port`` if any."""
    events = [] if kv_port is None else ["--kv-events-config", kv_events_config(kv_port)]
    return [
        *(sys.executable, "-m", "inferscale", "sim", "--host", "127.0.0.1"),
        *("--port", str(port), "--model", MODEL, "--preset", args.preset),
        *("--max-request-bytes", str(16 * 1024 * 1024)),
        *engine_flags(params),
        *events,
    ]


def routing_table(
    picker: str,
    ports: list[int],
    kv_ports: list[int | None],
    prompts: Prompts,
    args: argparse.Namespace,
) -> dict[str, object]:
    """The router's table file: one model on the sims, routed by ``picker``.

    An endpoint whose sim publishes KV events names the publisher (``kvEvents``), so the
    router subscribes to it and ``predictedTTFT`` scores that replica with its cache.
    """
    route = {
        "strategy": picker,
        "prefixHash": {
            "prefixCharacters": prompts.prefix_chars(args.prefix_blocks),
            "loadBound": args.load_bound,
        },
        "timeouts": {"firstTokenSeconds": args.request_timeout},
    }
    endpoints: list[dict[str, object]] = []
    for i, (p, kv) in enumerate(zip(ports, kv_ports, strict=True)):
        e: dict[str, object] = {"pod": f"sim-{i}", "address": f"127.0.0.1:{p}", "engine": "sim"}
        if kv is not None:
            e["kvEvents"] = f"127.0.0.1:{kv}"
        endpoints.append(e)
    return {"version": 1, "models": {MODEL: {"route": route, "endpoints": endpoints}}}


def start_fleet(
    picker: str, prompts: Prompts, args: argparse.Namespace, tdir: str
) -> tuple[list[subprocess.Popen], list[int], str]:
    """Fresh sims and a router in front of them: (processes, sim ports, the router's URL).

    The processes are returned as soon as each starts, so the caller stops them on any error.
    """
    params = engine_params(args.preset, prompts.scale, args.kv_factor, args.host_factor)
    procs: list[subprocess.Popen] = []
    ports = [free_port() for _ in range(args.replicas)]
    kv_ports = [None if args.no_kv_events else free_port() for _ in ports]
    for p, kv in zip(ports, kv_ports, strict=True):
        procs.append(
            subprocess.Popen(
                sim_command(p, kv, args, params),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for p, proc in zip(ports, procs, strict=True):
        wait_ok(f"http://127.0.0.1:{p}/health", proc)
    tfile = os.path.join(tdir, "table.json")
    Path(tfile).write_text(json.dumps(routing_table(picker, ports, kv_ports, prompts, args)))
    rport = free_port()
    router = subprocess.Popen(
        [
            *(sys.executable, "-m", "inferscale", "router", "--host", "127.0.0.1"),
            *("--port", str(rport), "--table-file", tfile, "--table-poll-seconds", "0"),
            "--no-access-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(router)
    base = f"http://127.0.0.1:{rport}"
    wait_ok(base + "/readyz", router)
    return procs, ports, base


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, router first; kill what does not exit in 15 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cache_figures(ports: list[int], base: str) -> dict[str, object]:
    """After a run: the sims' hit rates and what the router's KV-event index saw.

    ``prefix_hit_rate`` counts GPU and host-tier hits (vLLM's ``prefix_cache_hits`` and its
    connector's ``external_prefix_cache_hits``) over the prompt tokens, as ``virtual.py`` does.
    """
    sums = {"hits": 0.0, "queries": 0.0, "host": 0.0, "ttft_s": 0.0, "firsts": 0.0}
    names = {
        "hits": "vllm:prefix_cache_hits_total",
        "queries": "vllm:prefix_cache_queries_total",
        "host": "vllm:external_prefix_cache_hits_total",
        "ttft_s": "vllm:time_to_first_token_seconds_sum",
        "firsts": "vllm:time_to_first_token_seconds_count",
    }
    for p in ports:
        m = scrape(f"http://127.0.0.1:{p}/metrics")
        for what, name in names.items():
            sums[what] += sum(v for k, v in m.items() if k.startswith(name + "{"))
    router = scrape(base + "/metrics")
    router_ttft = [
        sum(v for k, v in router.items() if k.startswith(f"{ROUTER_TTFT}_{part}{{"))
        for part in ("sum", "count")
    ]
    queries = sums["queries"]
    return {
        "prefix_hit_rate": round((sums["hits"] + sums["host"]) / queries, 3) if queries else None,
        "host_hit_rate": round(sums["host"] / queries, 3) if queries else None,
        # The sims' own TTFT, from arrival at the engine (model time): what the client's TTFT
        # adds beyond it is the HTTP path, the router and the CPU these processes wait for.
        "engine_ttft_mean_ms": (
            round(1000 * sums["ttft_s"] / sums["firsts"], 1) if sums["firsts"] else None
        ),
        # From the router's receipt of the request to the first chunk it relays.
        "router_ttft_mean_ms": (
            round(1000 * router_ttft[0] / router_ttft[1], 1) if router_ttft[1] else None
        ),
        "index_blocks_end": int(sum(v for k, v in router.items() if k.startswith(INDEX_BLOCKS))),
        "kv_resyncs": int(sum(v for k, v in router.items() if k.startswith(RESYNCS))),
        "router_metrics": router,
    }


def run_picker(
    picker: str, rows: list[Row], prompts: Prompts, args: argparse.Namespace, speedup: float
) -> dict[str, object]:
    """One fresh fleet, one replay; the row of figures ``main`` prints."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tdir:
        try:
            procs, ports, base = start_fleet(picker, prompts, args, tdir)
            t = time.monotonic()
            sends: list[float] = []
            ttfts, load, most_blocks = asyncio.run(
                replay(base, rows, prompts, args, speedup, sends)
            )
            wall = time.monotonic() - t
            cache = cache_figures(ports, base)
        finally:
            stop(procs)
    ok = sorted(x for x in ttfts if x is not None)
    t0 = rows[0].at_s
    lags = sorted(s - (r.at_s - t0) / speedup for s, r in zip(sends, rows, strict=True))
    if args.log:
        with open(args.log, "a") as f:
            for i, (sent, ttft) in enumerate(zip(sends, ttfts, strict=True)):
                line = {"picker": picker, "speedup": speedup, "row": i, "sent_s": sent}
                f.write(json.dumps({**line, "ttft_s": ttft}) + "\n")
    per = endpoint_values(
        cache.pop("router_metrics"),  # type: ignore[arg-type]
        "inferscale_router_requests_total",
        args.replicas,
    )
    mean = statistics.mean(per)
    mean_load = statistics.mean(load)
    return {
        "picker": picker,
        "speedup": speedup,
        "requests": len(rows),
        "ok": len(ok),
        "wall_s": round(wall, 1),
        "ttft_mean_ms": round(1000 * statistics.mean(ok), 1) if ok else None,
        "ttft_p95_ms": round(1000 * ok[int(0.95 * (len(ok) - 1))], 1) if ok else None,
        # How late the client sent, against the trace's schedule (a busy machine's client lags).
        "send_lag_ms_mean_p95": [
            round(1000 * statistics.mean(lags), 1),
            round(1000 * lags[int(0.95 * (len(lags) - 1))], 1),
        ],
        **cache,
        "index_blocks_max": most_blocks,
        "per_replica": [int(x) for x in per],
        "max_over_mean": round(max(per) / mean, 2) if mean else None,
        "in_flight_max_over_mean": round(max(load) / mean_load, 2) if mean_load else None,
        "mean_in_flight": round(mean_load, 1),
    }


HEADER = (
    "| start | speedup | picker | ok | mean TTFT ms | p95 TTFT ms | hit rate (host)"
    " | requests per replica | requests max/mean | in-flight max/mean | ratio | p95 ratio"
    " | index blocks max | engine mean TTFT ms | virtual mean TTFT ms | virtual ratio"
    " | virtual p95 ratio | virtual hit rate (host) |\n" + "|---" * 18 + "|"
)


def table_lines(results: list[dict[str, object]], start: int, speedup: float) -> list[str]:
    """Rows of the printed table, ratios against the first picker's run (same load)."""
    first = results[0]

    def ratio(r: dict[str, object], key: str) -> str:
        mine, base = r[key], first[key]
        if not isinstance(mine, float) or not isinstance(base, float) or not base:
            return "–"
        return f"{mine / base:.2f}"

    return [
        f"| {start} | {speedup:g} | {r['picker']} | {r['ok']}/{r['requests']} "
        f"| {r['ttft_mean_ms']} | {r['ttft_p95_ms']} | {r['prefix_hit_rate']} "
        f"({r['host_hit_rate']}) | {r['per_replica']} | {r['max_over_mean']} "
        f"| {r['in_flight_max_over_mean']} | {ratio(r, 'ttft_mean_ms')} "
        f"| {ratio(r, 'ttft_p95_ms')} | {r['index_blocks_max']} | {r['engine_ttft_mean_ms']} "
        f"| {r['virtual_ttft_mean_ms']} | {ratio(r, 'virtual_ttft_mean_ms')} "
        f"| {ratio(r, 'virtual_ttft_p95_ms')} | {r['virtual_hit_rate']} "
        f"({r['virtual_host_hit_rate']}) |"
        for r in results
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default=str(default_trace()))
    ap.add_argument("--start", type=int, default=0, help="first trace row")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--speedups", default="1,1.5", help="trace-time divisors (the load)")
    add_workload_arguments(ap)
    ap.add_argument("--pickers", default="leastInFlight,prefixHash")
    ap.add_argument("--request-timeout", type=float, default=300.0)
    ap.add_argument("--log", help="append each request's send time and TTFT here (JSON lines)")
    ap.add_argument(
        "--no-kv-events",
        action="store_true",
        help="sims publish no KV events (predictedTTFT then falls back to leastPrefill)",
    )
    args = ap.parse_args()
    rows = read_rows(args.trace, args.start, args.requests)
    prompts = Prompts(args.block_words)
    params = engine_params(args.preset, prompts.scale, args.kv_factor, args.host_factor)
    print(
        json.dumps(
            {
                "trace": os.path.basename(args.trace),
                **{k: v for k, v in vars(args).items() if k != "trace"},
                "trace_span_s": rows[-1].at_s - rows[0].at_s,
                "prefix_characters": prompts.prefix_chars(args.prefix_blocks),
                "engine": params.model_dump(),
            }
        ),
        flush=True,
    )
    lines = []
    for speedup in (float(s) for s in args.speedups.split(",")):
        results = []
        for picker in args.pickers.split(","):
            r = run_picker(picker, rows, prompts, args, speedup)
            v = virtual.run(
                picker,
                rows,
                prompts,
                params,
                replicas=args.replicas,
                speedup=speedup,
                prefix_blocks=args.prefix_blocks,
                max_tokens=args.max_tokens,
                load_bound=args.load_bound,
                ring_points=64,
            )
            for key in ("ttft_mean_ms", "ttft_p95_ms", "prefix_hit_rate", "host_hit_rate"):
                r["virtual_" + key.removeprefix("prefix_")] = v[key]
            print(json.dumps(r), flush=True)
            results.append(r)
        lines += table_lines(results, args.start, speedup)
    print("\n" + HEADER)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
