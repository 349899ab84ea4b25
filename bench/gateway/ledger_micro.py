"""The usage ledger's write path alone: CPU per record, written each of three ways.

A field per column (the first ledger), one JSON field per XADD (the second), and the ledger's
way now: the records of a batch as arguments of one script call per 500 (``WRITE_SCRIPT``).

Starts nothing: give it a ``redis-server`` on loopback (``--port``). Writes batches of
``--batch`` records the way :meth:`UsageLedger.flush` does, each way in turn, and prints the
best of ``--rounds`` in µs of this process's CPU per record (redis-py's packing and reply
parsing, which is what the router pays), with and without hiredis as installed.

  redis-server --port 18579 --save "" --daemonize yes && python ledger_micro.py --port 18579
  python ledger_micro.py --port 18579 --no-hiredis
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from inferscale.router.codec import dumps
from inferscale.router.usage import RECORD_FIELD, usage_record
from inferscale.router.usage_ledger import WRITE_CHUNK, WRITE_SCRIPT


def sample(i: int) -> dict[str, Any]:
    return usage_record(
        ts=time.time(), request_id=f"abc-{i}", client="bench/loadgen", team="bench/team",
        route="", model="m1", served_by="mock-0", status=200,
        usage={"prompt_tokens": 12, "completion_tokens": 16}, cost=0.0, ms=1.234,
    )  # fmt: skip


async def columns(client: Any, key: str, batch: list[dict[str, Any]]) -> None:
    """Before: a field per column, and the age trim on every entry."""
    async with client.pipeline(transaction=False) as pipe:
        for record in batch:
            fields = {name: str(value) for name, value in record.items()}
            pipe.xadd(key, fields, minid="0-0", approximate=True)
        pipe.xtrim(key, maxlen=100_000, approximate=True)
        await pipe.execute()


async def one_field(client: Any, key: str, batch: list[dict[str, Any]]) -> None:
    """Now: the record as one JSON field, both trims once per batch."""
    async with client.pipeline(transaction=False) as pipe:
        for record in batch:
            pipe.execute_command("XADD", key, "*", RECORD_FIELD, dumps(record))
        pipe.xtrim(key, minid="0-0", approximate=True)
        pipe.xtrim(key, maxlen=100_000, approximate=True)
        await pipe.execute()


async def script(client: Any, key: str, batch: list[dict[str, Any]]) -> None:
    """Now: a script call per WRITE_CHUNK records adds them; the last call trims."""
    async with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(batch), WRITE_CHUNK):
            trims = ("0-0", 100_000) if start + WRITE_CHUNK >= len(batch) else (0, 0)
            records = [dumps(r) for r in batch[start : start + WRITE_CHUNK]]
            pipe.execute_command("EVAL", WRITE_SCRIPT, 1, key, RECORD_FIELD, *trims, *records)
        await pipe.execute()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-hiredis", action="store_true", help="as if hiredis were not installed")
    args = ap.parse_args()
    if args.no_hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py's import fails
    import redis.asyncio
    from redis.utils import HIREDIS_AVAILABLE

    client = redis.asyncio.Redis(host="127.0.0.1", port=args.port)
    batch = [sample(i) for i in range(args.batch)]
    ways = (("columns", columns), ("one field", one_field), ("script", script))
    best = {name: float("inf") for name, _ in ways}
    for _ in range(args.rounds):
        for name, write in ways:
            start = time.process_time()
            for _ in range(args.batches):
                await write(client, "ledger-micro", batch)
            spent = (time.process_time() - start) / (args.batch * args.batches)
            best[name] = min(best[name], spent)
    await client.delete("ledger-micro")
    await client.aclose()
    print(f"hiredis: {HIREDIS_AVAILABLE}")
    for name, seconds in best.items():
        print(f"{name:10s} {seconds * 1e6:6.1f} µs of CPU per record")


if __name__ == "__main__":
    asyncio.run(main())
