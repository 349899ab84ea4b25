#!/usr/bin/env python3
"""Replay the Mooncake conversation trace through sims behind the router, once per picker.

For each load (``--speedups``) and picker: start N fresh `inferscale sim` processes (cold prefix
caches) and one `inferscale router` whose routing table sends the model to them with that
strategy; replay a window of the trace in scaled time as streaming completions; then print
mean and p95 time to first token (client side, through the router), the prefix-cache hit rate
(the sims' own vLLM-named counters), the per-replica share of requests and the time-averaged
in flight per replica (max / mean), and the same run in virtual time (``virtual.py``: the
same latency model and pickers without HTTP or clocks) as a cross-check.

The workload and the engine come from ``workload.py`` (see its docstring and the README for
the scaling): by default every trace token is a sim token (``--block-words 512``) on the
preset's real KV cache and prefill cost, with the trace's real output lengths.
Everything runs on 127.0.0.1 and stops by itself (bounded request count, per-request timeout).

  .venv/bin/python bench/routing/run_bench.py                      # speedups 1 and 1.5
  .venv/bin/python bench/routing/run_bench.py --start 9000 --requests 600 --speedups 1.25
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

MODEL = "trace-model"


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
    base: str, rows: list[Row], prompts: Prompts, args: argparse.Namespace, speedup: float
) -> tuple[list[float | None], list[float]]:
    """TTFT per request, and in flight per replica averaged over 0.5 s samples of the router."""
    ttfts: list[float | None] = [None] * len(rows)
    t0 = rows[0].at_s
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    load = [0.0] * args.replicas
    samples = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int, row: Row) -> None:
            await asyncio.sleep(max(0.0, start + (row.at_s - t0) / speedup - time.monotonic()))
            body = {
                "model": MODEL,
                "prompt": prompts.text(row),
                "stream": True,
                "max_tokens": output_tokens(row, args.max_tokens),
            }
            sent = time.monotonic()
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
            nonlocal samples
            while True:
                await asyncio.sleep(0.5)
                async with session.get(base + "/metrics") as resp:
                    text = await resp.text()
                m: dict[str, float] = {}
                for line in text.splitlines():
                    if line.startswith("inferscale_router_in_flight{"):
                        key, value = line.rsplit(" ", 1)
                        m[key] = float(value)
                for j, v in enumerate(endpoint_values(m, "inferscale_router_in_flight", len(load))):
                    load[j] += v
                samples += 1

        sampler = asyncio.create_task(sample())
        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))
        finally:
            sampler.cancel()
    return ttfts, [x / max(samples, 1) for x in load]


def run_picker(
    picker: str, rows: list[Row], prompts: Prompts, args: argparse.Namespace, speedup: float
) -> dict[str, object]:
    py = sys.executable
    params = engine_params(args.preset, prompts.scale, args.kv_factor, args.host_factor)
    procs: list[subprocess.Popen] = []
    tdir = tempfile.TemporaryDirectory()
    try:
        ports = [free_port() for _ in range(args.replicas)]
        for p in ports:
            procs.append(
                subprocess.Popen(
                    [
                        *(py, "-m", "inferscale", "sim", "--host", "127.0.0.1"),
                        *("--port", str(p), "--model", MODEL, "--preset", args.preset),
                        *("--max-request-bytes", str(16 * 1024 * 1024)),
                        *engine_flags(params),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p, proc in zip(ports, procs, strict=True):
            wait_ok(f"http://127.0.0.1:{p}/health", proc)
        route = {
            "strategy": picker,
            "prefixHash": {
                "prefixCharacters": prompts.prefix_chars(args.prefix_blocks),
                "loadBound": args.load_bound,
            },
            "timeouts": {"firstTokenSeconds": args.request_timeout},
        }
        table = {
            "version": 1,
            "models": {
                MODEL: {
                    "route": route,
                    "endpoints": [
                        {"pod": f"sim-{i}", "address": f"127.0.0.1:{p}", "engine": "sim"}
                        for i, p in enumerate(ports)
                    ],
                }
            },
        }
        tfile = os.path.join(tdir.name, "table.json")
        Path(tfile).write_text(json.dumps(table))
        rport = free_port()
        router = subprocess.Popen(
            [
                *(py, "-m", "inferscale", "router", "--host", "127.0.0.1", "--port", str(rport)),
                *("--table-file", tfile, "--table-poll-seconds", "0", "--no-access-log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(router)
        base = f"http://127.0.0.1:{rport}"
        wait_ok(base + "/readyz", router)
        t = time.monotonic()
        ttfts, load = asyncio.run(replay(base, rows, prompts, args, speedup))
        wall = time.monotonic() - t
        ok = sorted(x for x in ttfts if x is not None)
        hits = queries = 0.0
        for p in ports:
            m = scrape(f"http://127.0.0.1:{p}/metrics")
            hits += sum(v for k, v in m.items() if k.startswith("vllm:prefix_cache_hits_total"))
            queries += sum(
                v for k, v in m.items() if k.startswith("vllm:prefix_cache_queries_total")
            )
        per = endpoint_values(
            scrape(base + "/metrics"), "inferscale_router_requests_total", args.replicas
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
            "prefix_hit_rate": round(hits / queries, 3) if queries else None,
            "per_replica": [int(x) for x in per],
            "max_over_mean": round(max(per) / mean, 2) if mean else None,
            "in_flight_max_over_mean": round(max(load) / mean_load, 2) if mean_load else None,
            "mean_in_flight": round(mean_load, 1),
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        tdir.cleanup()


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
            r["virtual_ttft_mean_ms"] = v["ttft_mean_ms"]
            r["virtual_hit_rate"] = v["prefix_hit_rate"]
            print(json.dumps(r), flush=True)
            results.append(r)
        base = results[0]["ttft_mean_ms"]
        vbase = results[0]["virtual_ttft_mean_ms"]
        for r in results:
            ratio = r["ttft_mean_ms"] / base if base and r["ttft_mean_ms"] else None  # type: ignore[operator]
            vratio = r["virtual_ttft_mean_ms"] / vbase  # type: ignore[operator]
            lines.append(
                f"| {args.start} | {speedup:g} | {r['picker']} | {r['ok']}/{r['requests']} "
                f"| {r['ttft_mean_ms']} | {r['ttft_p95_ms']} | {r['prefix_hit_rate']} "
                f"| {r['per_replica']} | {r['max_over_mean']} | {r['in_flight_max_over_mean']} "
                f"| {ratio and round(ratio, 2)} | {r['virtual_ttft_mean_ms']} | {vratio:.2f} |"
            )
    print(
        "\n| start | speedup | picker | ok | mean TTFT ms | p95 TTFT ms | hit rate"
        " | requests per replica | requests max/mean | in-flight max/mean | ratio"
        " | virtual mean TTFT ms | virtual ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
