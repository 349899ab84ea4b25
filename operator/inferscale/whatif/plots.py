"""PNG plots of what-if runs: load, replicas and time to first token over time, per policy.

matplotlib with the Agg backend (no display needed); imported only when plots are asked for.
Writes ``load.png``, ``replicas.png``, ``ttft.png`` and ``overview.png`` (the three stacked)
into the folder given, and returns their paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferscale.whatif.cluster import SERVED, RunResult

TTFT_BUCKET_S = 60.0
"""TTFT is drawn as the p99 of each minute (a point per request would hide the tail)."""


def _minute_p99(result: RunResult) -> tuple[list[float], list[float]]:
    buckets: dict[int, list[float]] = {}
    for request, ttft, outcome in zip(
        result.trace.requests, result.ttft, result.outcome, strict=True
    ):
        if outcome == SERVED:
            buckets.setdefault(int(request.arrival // TTFT_BUCKET_S), []).append(ttft)
    xs: list[float] = []
    ys: list[float] = []
    for b in sorted(buckets):
        values = sorted(buckets[b])
        p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
        xs.append((b + 0.5) * TTFT_BUCKET_S / 60)
        ys.append(p99)
    return xs, ys


def _draw(kind: str, ax: Any, results: Sequence[RunResult]) -> None:
    if kind == "load":
        first = results[0]
        ax.plot(
            [p.at / 60 for p in first.timeline],
            [p.load for p in first.timeline],
            lw=0.6,
            color="0.3",
            label=f"load ({first.policy})",
        )
        for r in results[1:]:
            ax.plot([p.at / 60 for p in r.timeline], [p.load for p in r.timeline], lw=0.5)
        ax.set_ylabel("requests in flight + held")
    elif kind == "replicas":
        for r in results:
            ax.step(
                [p.at / 60 for p in r.timeline],
                [p.replicas for p in r.timeline],
                where="post",
                lw=1.0,
                label=r.policy,
            )
        ax.set_ylabel("replicas (ready + starting)")
    else:
        slo = results[0].config.slo_ttft_s
        for r in results:
            xs, ys = _minute_p99(r)
            ax.plot(xs, ys, marker=".", lw=0.8, label=r.policy)
        ax.axhline(slo, color="red", ls="--", lw=0.8, label=f"SLO {slo:g} s")
        ax.set_yscale("log")
        ax.set_ylabel("TTFT p99 per minute (s)")
    ax.set_xlabel("minutes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def write_plots(results: Sequence[RunResult], folder: str | Path, title: str) -> list[Path]:
    """Draw the runs into ``folder`` (created if needed); the paths written.

    Raises:
        OSError: the folder or a file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in ("load", "replicas", "ttft"):
        fig, ax = plt.subplots(figsize=(10, 3.5))
        _draw(kind, ax, results)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for kind, ax in zip(("load", "replicas", "ttft"), axes, strict=True):
        _draw(kind, ax, results)
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    path = out / "overview.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
