#!/usr/bin/env python3
"""The router's client-key checks timed inside the running router, under load.

README.md, "Keys and limits".

`keys_micro.py` times the checks in a tight loop, where their code and data stay in the CPU's
caches; inside the router each request runs them between aiohttp's parsing, the upstream call
and the JSON of the answer, which evict them, and they cost several times more. This script
starts the mock upstream (CPU 0), the router with every limit on (`run_router.py --bench-keys`,
CPU 1) with a wall-clock timer around each check (identify, authorize, the admission estimate,
admit, settle), drives it with the load generator at -c 10 (CPU 0), and prints each check's
median and mean microseconds per request. Each timer adds its own cost (`_nop`: the same
wrapper around an empty function, timed in a loop, so a lower bound).

  python keys_insitu.py                            # this checkout, ~15 s
  python keys_insitu.py --root /tmp/old-checkout   # another checkout's operator/ (before/after)

Take the machine-wide lock around it (flock /tmp/inferscale-bench.lock ...).
"""

import argparse
import functools
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk-" + "0123456789abcdef" * 3


def serve(root: str, out: str, router_args: list[str]) -> int:
    """The router of ``root`` with timers; writes them to ``out`` on SIGUSR1."""
    sys.path.insert(0, os.path.join(root, "operator"))
    from inferscale.router import access
    from inferscale.router.stages import admit as app

    times: dict[str, list[int]] = {}
    clock = time.perf_counter_ns

    def timed(name, f):
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def wrapper(*a, **k):
                t = clock()
                r = await f(*a, **k)
                times.setdefault(name, []).append(clock() - t)
                return r
        else:

            @functools.wraps(f)
            def wrapper(*a, **k):
                t = clock()
                r = f(*a, **k)
                times.setdefault(name, []).append(clock() - t)
                return r

        return wrapper

    for name in ("identify", "authorize", "admit", "admit_in_process", "settle"):
        if hasattr(access.Access, name):
            setattr(access.Access, name, timed(name, getattr(access.Access, name)))
    app.estimate_tokens = timed("estimate_tokens", app.estimate_tokens)

    def dump(*_):
        nop = timed("_nop", lambda: None)
        for _ in range(100_000):
            nop()
        with open(out, "w") as f:
            json.dump(times, f)

    signal.signal(signal.SIGUSR1, dump)
    sys.path.insert(0, HERE)
    import run_router

    sys.argv = ["run_router.py", *router_args]
    return int(run_router.main())


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:  # the router process: --serve ROOT OUT ROUTER-ARGS...
        return serve(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.join(HERE, "..", ".."), help="checkout to time")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--port", type=int, default=8095)
    ap.add_argument("--mock-port", type=int, default=18005)
    args = ap.parse_args()
    py = sys.executable
    work = tempfile.mkdtemp(prefix="keys-insitu-")
    table = os.path.join(work, "table.json")
    with open(table, "w") as f:
        endpoint = {"pod": "mock-0", "address": f"127.0.0.1:{args.mock_port}"}
        json.dump({"version": 1, "models": {"m1": {"endpoints": [endpoint]}}}, f)
    out = os.path.join(work, "times.json")
    env = dict(os.environ, ROUTER_API_KEY=KEY)
    log = open(os.path.join(work, "router.log"), "w")  # closed in finally
    mock = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            py,
            os.path.join(HERE, "mock_upstream.py"),
            "--port",
            str(args.mock_port),
            "--max-seconds",
            "300",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    router = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            py,
            os.path.abspath(__file__),
            "--serve",
            os.path.abspath(args.root),
            out,
            "--port",
            str(args.port),
            "--host",
            "127.0.0.1",
            "--table-file",
            table,
            "--table-poll-seconds",
            "0",
            "--bench-keys",
            os.path.join(work, "credentials.json"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        load = subprocess.run(
            [
                "taskset",
                "-c",
                "0",
                py,
                os.path.join(HERE, "loadgen.py"),
                "--url",
                f"http://127.0.0.1:{args.port}/v1/chat/completions",
                "-c",
                str(args.concurrency),
                "-d",
                str(args.duration),
                "-w",
                "1",
                "-H",
                "Authorization: Bearer " + KEY,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=args.duration + 60,
        )
        result = json.loads(load.stdout)
        if result["errors"]:
            print(f"load errors; see {work}/router.log", file=sys.stderr)
        router.send_signal(signal.SIGUSR1)
        for _ in range(100):
            if os.path.exists(out):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # let the dump finish writing
        with open(out) as f:
            times = json.load(f)
    finally:
        router.terminate()
        mock.terminate()
        router.wait(10)
        mock.wait(10)
        log.close()
    print(f"{os.path.abspath(args.root)}: {result['rps']:.0f} req/s, {result['errors']} errors")
    total = 0.0
    for name, samples in sorted(times.items()):
        samples.sort()
        median = samples[len(samples) // 2] / 1000
        mean = sum(samples) / len(samples) / 1000
        if name != "_nop":
            total += median
        print(f"{name:>17}: median {median:6.2f} us, mean {mean:6.2f} us, x {len(samples)}")
    print(f"{'sum of medians':>17}: {total:6.2f} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
