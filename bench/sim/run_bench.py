#!/usr/bin/env python3
"""Requests per second of one sim process on one core, latency model at zero.

Starts ``inferscale sim --preset zero`` pinned to one core (``taskset`` when available) and a
closed-loop load generator pinned to another, sends small chat completions (a one-line prompt,
``max_tokens`` 8) for a fixed time after a warm-up, and prints one JSON line per run.

Run by hand, not by pytest:  .venv/bin/python bench/sim/run_bench.py [--stream] [--duration 10]

The load generator uses raw asyncio streams with one keep-alive connection per worker, so its
own cost stays small (the idea comes from ``../shared/bench/gateway/loadgen.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say something short."}],
        "max_tokens": 8,
    }
).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(core), *cmd]


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def worker(port: int, body: bytes, stop_at: float, record_from: float, out: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(request)
            status = await read_response(reader)
            done = time.perf_counter()
            if now >= record_from:
                out["latencies"].append(done - now)
                out["ok" if status == 200 else "errors"] += 1
    finally:
        writer.close()


async def drive(port: int, concurrency: int, warmup: float, duration: float, body: bytes) -> dict:
    start = time.perf_counter()
    out: dict = {"ok": 0, "errors": 0, "latencies": []}
    record_from = start + warmup
    stop_at = record_from + duration
    await asyncio.gather(
        *(worker(port, body, stop_at, record_from, out) for _ in range(concurrency))
    )
    lat = sorted(out["latencies"])
    return {
        "requests": out["ok"],
        "errors": out["errors"],
        "rps": round(out["ok"] / duration, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3) if lat else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream", action="store_true", help="SSE streaming requests")
    parser.add_argument("--sim-core", type=int, default=0)
    parser.add_argument("--loadgen-core", type=int, default=1)
    args = parser.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "inferscale", "sim", "--preset", "zero", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--model", "bench-model", "--startup-delay-seconds", "0"]
    sim = subprocess.Popen(pinned(cmd, args.sim_core), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    print("sim did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        if shutil.which("taskset") and args.loadgen_core is not None:
            os.sched_setaffinity(0, {args.loadgen_core})
        body = STREAM_BODY if args.stream else BODY
        result = asyncio.run(drive(port, args.concurrency, args.warmup, args.duration, body))
        result.update(
            mode="stream" if args.stream else "json",
            concurrency=args.concurrency,
            pinned=bool(shutil.which("taskset")),
            cpus=os.cpu_count(),
        )
        print(json.dumps(result))
        return 0
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(15)
        except subprocess.TimeoutExpired:
            sim.kill()


if __name__ == "__main__":
    raise SystemExit(main())
