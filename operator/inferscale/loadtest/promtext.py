"""Prometheus text format (0.0.4) read back: samples, and quantiles of histogram buckets.

Pure. Enough of the format for what the router and the engines expose (``name{labels} value``
with optional timestamp; ``#`` lines skipped); a malformed line is skipped, never fatal, since a
viewer must keep showing what it can. Quantiles interpolate linearly inside the bucket, as
PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value."""

    name: str
    labels: dict[str, str]
    value: float


def _parse_labels(text: str) -> dict[str, str] | None:
    """Labels from ``a="x",b="y"`` (backslash escapes honoured); None when malformed."""
    labels: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            return None
        key = text[i:eq].strip()
        i = eq + 2
        value: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                value.append({"n": "\n"}.get(text[i + 1], text[i + 1]))
                i += 2
            else:
                value.append(text[i])
                i += 1
        if i >= n:
            return None
        labels[key] = "".join(value)
        i += 1
    return labels


def parse_samples(text: str) -> list[Sample]:
    """Every sample of an exposition, in order; malformed lines are skipped."""
    out: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            if close < brace:
                continue
            name = line[:brace]
            labels = _parse_labels(line[brace + 1 : close])
            rest = line[close + 1 :].split()
        else:
            name, *rest = line.split()
            labels = {}
        if labels is None or not rest or not name:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        out.append(Sample(name, labels, value))
    return out


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` buckets; None with no counts.

    As PromQL: linear inside the bucket that holds the rank; the lowest bucket starts at 0 (or
    at its bound if that is negative); a rank in the ``+Inf`` bucket answers the highest finite
    bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                finite = [b for b, _ in ordered if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == lower_count:
                return bound
            if bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def histogram_buckets(
    samples: Iterable[Sample], name: str, group_by: str
) -> dict[str, dict[float, float]]:
    """``{label value: {upper bound: cumulative count}}`` of ``name``'s buckets.

    Series that share ``group_by``'s value are summed (several router pods, for example).
    """
    out: dict[str, dict[float, float]] = {}
    bucket = name + "_bucket"
    for sample in samples:
        if sample.name != bucket or "le" not in sample.labels:
            continue
        try:
            bound = float(sample.labels["le"])
        except ValueError:
            continue
        row = out.setdefault(sample.labels.get(group_by, ""), {})
        row[bound] = row.get(bound, 0.0) + sample.value
    return out


def sum_by(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    """``{label value: summed value}`` of every series of ``name``."""
    out: dict[str, float] = {}
    for sample in samples:
        if sample.name == name:
            key = sample.labels.get(label, "")
            out[key] = out.get(key, 0.0) + sample.value
    return out
