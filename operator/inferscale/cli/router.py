"""``inferscale router``: run the router (flags over ``INFERSCALE_ROUTER_*`` env over defaults).

Flags that are not given leave the setting to the environment and then to the defaults, because
the router runs as a pod with both env and args. The admin token comes from
``--admin-token-file`` (a mounted Secret) or ``INFERSCALE_ROUTER_ADMIN_TOKEN``; never a flag, so
it stays out of process listings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from inferscale.router.settings import RouterSettings

_FLAGS: dict[str, tuple[type, str]] = {
    "host": (str, "address to bind (default 0.0.0.0)"),
    "port": (int, "TCP port (default 8080)"),
    "table_file": (str, "routing table to load at start and re-read on change (ConfigMap)"),
    "table_poll_seconds": (float, "how often the table file is checked (10)"),
    "credentials_file": (str, "provider keys and client-key digests (a Secret), re-read on change"),
    "admin_token_file": (str, "file holding the admin API's bearer token (a Secret)"),
    "max_request_bytes": (int, "largest request body (413 beyond)"),
    "client_body_timeout_seconds": (float, "time a client has to send its body (408 beyond)"),
    "idle_connection_seconds": (float, "close a connection without a complete request (75)"),
    "max_client_connections": (int, "most open client connections; 503 past it (0: no cap)"),
    "connect_timeout_seconds": (float, "engine connect timeout"),
    "breaker_failures": (int, "consecutive failures that eject an endpoint or a provider"),
    "breaker_ejection_seconds": (float, "first ejection, doubled each time in a row"),
    "keepalive_seconds": (float, "SSE keep-alive interval for held streams"),
    "scrape_interval_seconds": (float, "engine /metrics scrape interval (0: off)"),
    "mirror_max_in_flight": (int, "most mirror copies in flight; past it a copy is dropped (64)"),
    "usage_retention_days": (float, "usage records older than this leave Redis (31)"),
    "usage_ring_records": (int, "usage records kept in process without Redis (50000)"),
    "drain_seconds": (float, "on SIGTERM, serve this long with /readyz at 503"),
    "shutdown_grace_seconds": (float, "then, time in-flight requests get to finish"),
}


def register(subparsers: Any) -> None:
    """Add the ``router`` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "router",
        help="run the OpenAI-compatible router (programmed by the operator)",
        description="The data plane in front of the engines; see docs/router.md.",
        argument_default=argparse.SUPPRESS,
    )
    for name, (kind, text) in _FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=text)
    p.add_argument(
        "--require-client-key",
        dest="require_client_key",
        action="store_true",
        help="refuse requests without a known client key, whatever the credentials say",
    )
    p.add_argument(
        "--no-usage-ledger", dest="usage_ledger", action="store_false", help="no usage records"
    )
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="no access log")
    p.add_argument("--no-uvloop", dest="uvloop", action="store_false", help="plain asyncio loop")
    p.set_defaults(func=cmd_router)


def _loop_factory(settings: RouterSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not settings.uvloop:
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def cmd_router(args: argparse.Namespace) -> int:
    """Run the router until SIGTERM; 2 on invalid settings or an unreadable token file."""
    # Imported here: every other subcommand (the sim in each pod above all) starts faster
    # without the router's aiohttp server and its dependencies.
    from inferscale.router.app import serve
    from inferscale.router.documents import read_admin_token

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    try:
        settings = RouterSettings(**given)
        token = read_admin_token(settings)
    except (ValidationError, OSError) as error:
        print(f"inferscale router: invalid settings: {error}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
        runner.run(serve(settings, token))
    return 0
