"""``inferscale usage``: the usage ledger summed by client, team, model, day (CSV or JSON).

Reads the records from a router's admin API (``--router URL``, with the admin token from
``--admin-token-file`` or ``INFERSCALE_ROUTER_ADMIN_TOKEN``; with Redis that is every router's
records, else that router's own), or straight from the Redis stream the routers write
(``--redis-url``, or ``INFERSCALE_ROUTER_REDIS_URL``, with ``--redis-key-prefix``). Exit
status: 0; 2 for bad arguments, an unreachable router or Redis, or a refused token, with a
sentence that says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferscale.router.usage import UsageQueryError, check_groups, summarize, to_csv, to_json

EXIT_UNAVAILABLE = 2
TIMEOUT_SECONDS = 30.0


def register(subparsers: Any) -> None:
    """Add the ``usage`` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "usage",
        help="usage ledger report: requests, tokens and cost by client, team, model, day",
        description="Sum the routers' usage records; see docs/router.md (Usage ledger).",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--router", help="a router's base URL (its admin API serves the report)")
    source.add_argument("--redis-url", help="read the routers' Redis stream directly")
    p.add_argument("--admin-token-file", help="file with the router's admin token (a Secret)")
    p.add_argument("--redis-key-prefix", default="inferscale:", help="the routers' key prefix")
    p.add_argument(
        "--by", default="client,model,day", help="groups, comma-separated (client,model,day)"
    )
    p.add_argument("--since", default="", help="from this UTC date (YYYY-MM-DD) or epoch seconds")
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output (csv)")
    p.set_defaults(func=cmd_usage)


def parse_since(text: str) -> float:
    """Epoch seconds from a UTC date (``YYYY-MM-DD``) or a number; 0 for empty."""
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError as error:
        raise UsageQueryError(
            f"--since: {text!r} is neither YYYY-MM-DD nor epoch seconds"
        ) from error


def cmd_usage(args: argparse.Namespace) -> int:
    """Print the report; 2 when it cannot be made (the reason on standard error)."""
    try:
        by = check_groups(args.by.split(","))
        since = parse_since(args.since)
    except UsageQueryError as error:
        print(f"inferscale usage: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    redis_url = args.redis_url or (
        None if args.router else os.environ.get("INFERSCALE_ROUTER_REDIS_URL")
    )
    try:
        if redis_url:
            rows = asyncio.run(_from_redis(redis_url, args.redis_key_prefix, since))
            text = (
                to_csv(summarize(rows, by), by)
                if args.format == "csv"
                else to_json(summarize(rows, by), by)
            )
        elif args.router:
            text = asyncio.run(_from_router(args, by, since))
        else:
            print("inferscale usage: give --router URL or --redis-url URL", file=sys.stderr)
            return EXIT_UNAVAILABLE
    except UsageSourceError as error:
        print(f"inferscale usage: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


class UsageSourceError(Exception):
    """The router or Redis could not give the records (the message says why)."""


async def _from_redis(url: str, prefix: str, since: float) -> list[Any]:
    from inferscale.router.usage_ledger import UsageLedger, UsageUnavailable, redis_client

    ledger = UsageLedger(
        redis_client(url, TIMEOUT_SECONDS),
        prefix + "usage",
        max_records=1,
        ring_records=0,
        retention_days=1,
        buffer_records=1,
        flush_seconds=1,
        report_max_records=50_000_000,
    )
    try:
        return await ledger.read(since)
    except UsageUnavailable as error:
        raise UsageSourceError(f"{error} (Redis at the given URL)") from error
    finally:
        await ledger.close()


async def _from_router(args: argparse.Namespace, by: tuple[str, ...], since: float) -> str:
    import aiohttp

    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as error:
            raise UsageSourceError(f"cannot read --admin-token-file: {error}") from error
    else:
        token = os.environ.get("INFERSCALE_ROUTER_ADMIN_TOKEN", "")
    url = args.router.rstrip("/") + "/admin/v1/usage"
    query = {"by": ",".join(by), "since": str(since), "format": args.format}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as session,
            session.get(url, params=query, headers=headers) as resp,
        ):
            body = await resp.text()
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise UsageSourceError(f"cannot reach the router at {args.router}: {error!r}") from error
    if resp.status != 200:
        raise UsageSourceError(f"the router answered HTTP {resp.status}: {body[:500]}")
    return body
