"""``inferscale top``: every InferenceModel's replicas, load and last scaling decision, live.

Replica counts, the load signals and the last scaling reason come from each InferenceModel's
status (what the operator wrote); the spillover flag from the InferenceRoutes' status. With
``--router URL`` (repeatable: one per router pod) in flight and held come from the routers' own
gauges instead, and the routers' histograms add time to first token (p50/p95 over the last
``TTFT_WINDOW_SECONDS``; since the routers started with ``--once``) and the spillover counter a
rate. Exit status: 0, or 2 when the cluster cannot be read at the start (unreachable, no
credentials, CRD not installed, RBAC), with a sentence that says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from inferscale.loadtest.report import seconds_text
from inferscale.loadtest.routermetrics import RouterSnapshot, counter_rate, ttft_quantiles
from inferscale.loadtest.status import ModelStatus

if TYPE_CHECKING:
    import aiohttp

    from inferscale.kube.client import KubeApi

EXIT_UNAVAILABLE = 2
TTFT_WINDOW_SECONDS = 10.0
ROUTER_TIMEOUT_SECONDS = 3.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class Row:
    """One InferenceModel as ``top`` shows it."""

    model: ModelStatus
    in_flight: float | None
    held: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    spill: str


def register(subparsers: Any) -> None:
    """Add the ``top`` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "top",
        help="live view of every InferenceModel: replicas, load, TTFT, last scaling reason",
        description=(
            "Show every InferenceModel's ready/desired replicas, requests in flight and held, "
            "time to first token and spillover (with --router), and the last scaling reason."
        ),
    )
    p.add_argument("--namespace", "-n", help="one namespace only (default: all)")
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument(
        "--router",
        action="append",
        default=[],
        metavar="URL",
        help="a router's base URL, to read its /metrics (repeat for each router pod)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one snapshot and exit")
    mode.add_argument("--watch", action="store_true", help="refresh until Ctrl-C (the default)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, help="stop after this many refreshes")
    p.set_defaults(func=cmd_top)


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max((now - moment).total_seconds(), 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_table(
    rows: Sequence[Row], now: datetime, width: int, routers: bool, note: str | None = None
) -> list[str]:
    """The table's lines, cut to ``width`` (the reason column takes what is left)."""
    header = (
        "NAMESPACE",
        "NAME",
        "STATE",
        "READY",
        "DESIRED",
        "IN-FLIGHT",
        "HELD",
        "TTFT p50/p95",
        "SPILL",
        "LAST SCALE",
        "REASON",
    )
    cells = [
        (
            r.model.namespace,
            r.model.name,
            "Ready" if r.model.ready_condition == "True" else (r.model.ready_condition or "-"),
            _count(r.model.ready),
            _count(r.model.desired),
            _num(r.in_flight),
            _num(r.held),
            "-" if r.ttft_p50 is None else f"{seconds_text(r.ttft_p50)}/{seconds_text(r.ttft_p95)}",
            r.spill,
            _age(r.model.last_scale_time, now),
            r.model.last_scale_reason or "-",
        )
        for r in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header[:-1])]
    source = "routers" if routers else "status (the operator's last read)"
    lines = [
        f"inferscale top  {now:%Y-%m-%d %H:%M:%S} UTC  {len(rows)} InferenceModels"
        f"  in flight/held from {source}",
    ]
    if note:
        lines.append(f"  ! {note}")
    lines.append("")
    for row in (header, *cells):
        fixed = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        lines.append(f"{fixed}  {row[-1]}".rstrip())
    if not rows:
        lines.append("(no InferenceModels)")
    return [line[:width] for line in lines]


def build_rows(
    models: Sequence[ModelStatus],
    spilling: set[str],
    snapshot: RouterSnapshot | None,
    older: RouterSnapshot | None,
) -> list[Row]:
    """Join status, route spillover and router metrics (by served name) into rows."""
    rows = []
    for m in models:
        in_flight: float | None = m.in_flight
        held: float | None = m.held
        p50 = p95 = None
        spill = "yes" if m.key in spilling else "-"
        if snapshot is not None:
            name = m.served_name
            in_flight = snapshot.in_flight.get(name, 0.0)
            held = snapshot.held.get(name, 0.0)
            p50, p95 = ttft_quantiles(snapshot, older, name)
            if snapshot.has_spillover:
                rate = counter_rate(snapshot, older, "spillover", name)
                if rate is not None and rate > 0:
                    spill = f"{rate:.1f}/s"
        rows.append(Row(m, in_flight, held, p50, p95, spill))
    return rows


class Top:
    """Reads and draws; keeps the recent router snapshots for the TTFT window."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str | None,
        routers: Sequence[str],
        session: aiohttp.ClientSession | None,
    ) -> None:
        """Collaborators in; nothing is read yet."""
        self.api = api
        self.namespace = namespace
        self.routers = list(routers)
        self.session = session
        self.snapshots: deque[RouterSnapshot] = deque()

    async def frame(self, now: datetime, width: int) -> list[str]:
        """Read everything once and render; ClusterUnavailable when models cannot be read."""
        from inferscale.loadtest.observe import read_models, read_spilling, scrape_routers

        models = await read_models(self.api, self.namespace)
        spilling = await read_spilling(self.api, self.namespace)
        snapshot = older = None
        note = None
        if self.routers and self.session is not None:
            at = asyncio.get_running_loop().time()
            snapshot = await scrape_routers(self.session, self.routers, ROUTER_TIMEOUT_SECONDS, at)
            while self.snapshots and self.snapshots[0].at < at - TTFT_WINDOW_SECONDS:
                self.snapshots.popleft()
            older = self.snapshots[0] if self.snapshots else None
            self.snapshots.append(snapshot)
            if snapshot.errors:
                note = "router not read: " + "; ".join(snapshot.errors)
        rows = build_rows(models, spilling, snapshot, older)
        return render_table(rows, now, width, snapshot is not None, note)


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    # The Kubernetes client and aiohttp load here, not with the CLI: `inferscale sim` in a pod
    # starts without them.
    import aiohttp

    from inferscale.loadtest.observe import ClusterUnavailable, connect_cluster

    try:
        api = connect_cluster(args.kubeconfig)
    except ClusterUnavailable as error:
        print(f"inferscale top: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    tty = out.isatty()
    session = aiohttp.ClientSession() if args.router else None
    top = Top(api, args.namespace, args.router, session)
    try:
        drawn = 0
        while True:
            width = shutil.get_terminal_size((160, 24)).columns if tty else 10_000
            try:
                lines = await top.frame(datetime.now(UTC), width)
            except ClusterUnavailable as error:
                if drawn == 0:
                    print(f"inferscale top: {error}", file=sys.stderr)
                    return EXIT_UNAVAILABLE
                lines = [f"inferscale top  {datetime.now(UTC):%H:%M:%S} UTC", f"  ! {error}"]
            if tty and not args.once:
                out.write(CLEAR_SCREEN)
            elif drawn:
                out.write("\n")
            out.write("\n".join(lines) + "\n")
            out.flush()
            drawn += 1
            if args.once or (args.count is not None and drawn >= args.count):
                return 0
            await asyncio.sleep(args.interval)
    finally:
        if session is not None:
            await session.close()
        api.close()


def cmd_top(args: argparse.Namespace) -> int:
    """Show the table once or until Ctrl-C; see the module docstring for the exit status."""
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        print("inferscale top: --interval and --count must be above 0", file=sys.stderr)
        return EXIT_UNAVAILABLE
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(args, sys.stdout))
    return 0
