#!/usr/bin/env python3
"""Replay the Mooncake conversation trace through sims behind the router, once per picker.

For each picker: start N fresh `inferscale sim` processes (cold prefix caches) and one
`inferscale router` whose routing table sends the model to them with that strategy; replay a
window of the trace in scaled time as streaming completions; then print mean and p95 time to
first token (client side, through the router), the prefix-cache hit rate (from the sims' own
vLLM-named counters), and the per-replica share of requests (max / mean).

Prompts come from the trace's prefix block hashes: block id -> a fixed run of words, so
requests that share leading blocks share a textual prefix, which the sims' prefix caches (and
the prefixHash picker) see. Scaling, all printed with the results:
  * time: inter-arrival times divided by --speedup;
  * tokens: one trace block (512 tokens) becomes --block-words words of <= 5 characters (one
    sim token each), so a 14-block prompt is 14 x block-words tokens;
  * output: max_tokens = min(trace output_length, --max-tokens).
Everything runs on 127.0.0.1 and stops by itself (bounded request count, per-request timeout).

  .venv/bin/python bench/routing/run_bench.py                     # defaults, ~3 minutes
  .venv/bin/python bench/routing/run_bench.py --requests 400 --speedup 8 --pickers prefixHash
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
TRACE = HERE.parent.parent.parent / "shared" / "traces" / "conversation_trace.jsonl"
MODEL = "trace-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def block_text(block: int, words: int) -> str:
    # Words of 5 base-36 characters: one sim token each, distinct per (block, position).
    out = []
    for j in range(words):
        n = zlib.crc32(f"{block}:{j}".encode()) % (36**5)
        w = ""
        for _ in range(5):
            n, r = divmod(n, 36)
            w += "0123456789abcdefghijklmnopqrstuvwxyz"[r]
        out.append(w)
    return " ".join(out) + " "


def wait_ok(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import urllib.request

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
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = out.get(key, 0.0) + float(value)
    return out


async def replay(base: str, rows: list[dict], args: argparse.Namespace) -> list[float | None]:
    ttfts: list[float | None] = [None] * len(rows)
    t0 = rows[0]["timestamp"]
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int, row: dict) -> None:
            await asyncio.sleep(
                max(0.0, start + (row["timestamp"] - t0) / 1000 / args.speedup - time.monotonic())
            )
            prompt = "".join(block_text(b, args.block_words) for b in row["hash_ids"])
            body = {
                "model": MODEL,
                "prompt": prompt,
                "stream": True,
                "max_tokens": max(1, min(row["output_length"], args.max_tokens)),
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

        await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))
    return ttfts


def run_picker(picker: str, rows: list[dict], args: argparse.Namespace) -> dict:
    py = sys.executable
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port() for _ in range(args.replicas)]
        for p in ports:
            procs.append(
                subprocess.Popen(
                    [
                        py,
                        "-m",
                        "inferscale",
                        "sim",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(p),
                        "--model",
                        MODEL,
                        "--preset",
                        args.preset,
                        "--startup-delay-seconds",
                        "0",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p, proc in zip(ports, procs, strict=True):
            wait_ok(f"http://127.0.0.1:{p}/health", proc)
        route = {
            "strategy": picker,
            "prefixHash": {"prefixCharacters": args.prefix_chars},
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
        tdir = tempfile.mkdtemp()
        tfile = os.path.join(tdir, "table.json")
        Path(tfile).write_text(json.dumps(table))
        rport = free_port()
        router = subprocess.Popen(
            [
                py,
                "-m",
                "inferscale",
                "router",
                "--host",
                "127.0.0.1",
                "--port",
                str(rport),
                "--table-file",
                tfile,
                "--table-poll-seconds",
                "0",
                "--no-access-log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(router)
        base = f"http://127.0.0.1:{rport}"
        wait_ok(base + "/readyz", router)
        t = time.monotonic()
        ttfts = asyncio.run(replay(base, rows, args))
        wall = time.monotonic() - t
        ok = [x for x in ttfts if x is not None]
        hits = queries = 0.0
        for p in ports:
            m = scrape(f"http://127.0.0.1:{p}/metrics")
            hits += sum(v for k, v in m.items() if k.startswith("vllm:prefix_cache_hits_total"))
            queries += sum(
                v for k, v in m.items() if k.startswith("vllm:prefix_cache_queries_total")
            )
        rm = scrape(base + "/metrics")
        per = [
            sum(
                v
                for k, v in rm.items()
                if k.startswith("inferscale_router_requests_total") and f'endpoint="sim-{i}"' in k
            )
            for i in range(args.replicas)
        ]
        mean = statistics.mean(per) if per else 0
        ok_sorted = sorted(ok)
        return {
            "picker": picker,
            "requests": len(rows),
            "ok": len(ok),
            "wall_s": round(wall, 1),
            "ttft_mean_ms": round(1000 * statistics.mean(ok), 1) if ok else None,
            "ttft_p95_ms": round(1000 * ok_sorted[int(0.95 * (len(ok_sorted) - 1))], 1)
            if ok
            else None,
            "prefix_hit_rate": round(hits / queries, 3) if queries else None,
            "per_replica": [int(x) for x in per],
            "max_over_mean": round(max(per) / mean, 2) if mean else None,
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--start", type=int, default=0, help="first trace row")
    ap.add_argument("--requests", type=int, default=900)
    ap.add_argument("--speedup", type=float, default=6.0)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--preset", default="llama-3.1-8b-l4")
    ap.add_argument("--block-words", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument(
        "--prefix-chars",
        type=int,
        default=200,
        help="prefixHash.prefixCharacters (one block of words is ~6 x block-words chars)",
    )
    ap.add_argument("--pickers", default="leastInFlight,prefixHash")
    ap.add_argument("--request-timeout", type=float, default=120.0)
    args = ap.parse_args()
    with open(args.trace) as f:
        rows = [
            json.loads(line) for line in itertools.islice(f, args.start, args.start + args.requests)
        ]
    print(
        json.dumps(
            {
                "trace": os.path.basename(args.trace),
                **{k: v for k, v in vars(args).items() if k != "trace"},
                "trace_span_s": (rows[-1]["timestamp"] - rows[0]["timestamp"]) / 1000,
            }
        ),
        flush=True,
    )
    results = []
    for picker in args.pickers.split(","):
        r = run_picker(picker, rows, args)
        print(json.dumps(r), flush=True)
        results.append(r)
    print()
    print(
        "| picker | ok/requests | mean TTFT ms | p95 TTFT ms | prefix-cache hit rate"
        " | requests per replica | max/mean |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['picker']} | {r['ok']}/{r['requests']} | {r['ttft_mean_ms']} "
            f"| {r['ttft_p95_ms']} | {r['prefix_hit_rate']} | {r['per_replica']} "
            f"| {r['max_over_mean']} |"
        )
    by = {r["picker"]: r for r in results}
    if "leastInFlight" in by and "prefixHash" in by and by["leastInFlight"]["ttft_mean_ms"]:
        ratio = by["prefixHash"]["ttft_mean_ms"] / by["leastInFlight"]["ttft_mean_ms"]
        print(f"\nprefixHash mean TTFT / leastInFlight mean TTFT = {ratio:.2f} (target <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
