"""Request traces for the what-if simulator: the formats in ``shared/traces/``, read and sliced.

- ``azure``: the Azure LLM inference trace 2023 CSV, header ``TIMESTAMP,ContextTokens,
  GeneratedTokens``; timestamps like ``2023-11-16 18:17:03.9799600`` (7 fractional digits,
  so only the first 26 characters are parsed).
- ``mooncake``: Mooncake's JSONL, one ``{"timestamp": ms, "input_length", "output_length",
  "hash_ids"}`` per line; ``hash_ids`` name 512-token prompt blocks, equal ids being a shared
  prefix. Each is expanded to the latency model's blocks so its prefix cache sees the sharing.

Every request's arrival is in seconds from the first request of the file. A file that is
missing, empty or garbled raises :class:`TraceError` naming the file and the line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

TraceFormat = Literal["azure", "mooncake"]
TRACE_FORMATS: Final[tuple[TraceFormat, ...]] = ("azure", "mooncake")
AZURE_HEADER: Final = "TIMESTAMP,ContextTokens,GeneratedTokens"
MOONCAKE_BLOCK_TOKENS: Final = 512


class TraceError(ValueError):
    """A trace file that cannot be read or parsed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a trace."""

    arrival: float
    """Seconds from the start of the trace."""
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()
    """Mooncake's 512-token block ids (empty when the trace has none)."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A named, time-ordered list of requests."""

    name: str
    format: TraceFormat
    requests: tuple[Request, ...]

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last (0 for one request)."""
        if not self.requests:
            return 0.0
        return self.requests[-1].arrival - self.requests[0].arrival

    def sliced(
        self,
        *,
        start: float = 0.0,
        duration: float | None = None,
        limit: int | None = None,
        speedup: float = 1.0,
    ) -> Trace:
        """A window of the trace, rebased to start at 0, with time divided by ``speedup``.

        Args:
            start: skip the requests of the first ``start`` seconds.
            duration: keep ``duration`` seconds after ``start`` (None: all).
            limit: keep at most this many requests (None: all).
            speedup: divide inter-arrival times by this (2 replays twice as fast: twice the load).

        Raises:
            TraceError: the window holds no request, or an argument is out of range.
        """
        if start < 0 or (duration is not None and duration <= 0) or not speedup > 0:
            raise TraceError("start must be >= 0, duration and speedup > 0")
        if limit is not None and limit < 1:
            raise TraceError("limit must be >= 1")
        end = math.inf if duration is None else start + duration
        kept = [r for r in self.requests if start <= r.arrival < end]
        if limit is not None:
            kept = kept[:limit]
        if not kept:
            raise TraceError(f"{self.name}: no request in the chosen window")
        t0 = kept[0].arrival
        out = tuple(replace(r, arrival=(r.arrival - t0) / speedup) for r in kept)
        return Trace(self.name, self.format, out)


def detect_format(path: Path, first_line: str) -> TraceFormat:
    """``azure`` or ``mooncake`` from the first line (then the file name).

    Raises:
        TraceError: neither format.
    """
    line = first_line.strip().lstrip("\ufeff")
    if line.startswith("TIMESTAMP,"):
        return "azure"
    if line.startswith("{"):
        return "mooncake"
    if path.suffix == ".csv":
        return "azure"
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    raise TraceError(
        f"{path}: cannot tell the trace format from its first line; pass --trace-format"
    )


def _count(value: object, what: str, where: str, minimum: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise TraceError(f"{where}: {what} is not a whole number: {value!r}") from None
    if isinstance(number, bool) or number < minimum:
        raise TraceError(f"{where}: {what} must be >= {minimum}, got {value!r}")
    return number


def parse_azure(lines: Iterable[str], name: str) -> list[Request]:
    """Requests of an Azure CSV (header line included)."""
    out: list[Request] = []
    first: datetime | None = None
    for number, line in enumerate(lines, start=1):
        line = line.strip().lstrip("\ufeff")
        where = f"{name} line {number}"
        if number == 1:
            if line.replace(" ", "") != AZURE_HEADER:
                raise TraceError(f"{where}: expected the header {AZURE_HEADER!r}, got {line!r}")
            continue
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != 3:
            raise TraceError(f"{where}: expected 3 comma-separated fields, got {len(fields)}")
        try:
            when = datetime.fromisoformat(fields[0].strip()[:26])
        except ValueError:
            raise TraceError(f"{where}: bad TIMESTAMP {fields[0]!r}") from None
        first = when if first is None else first
        out.append(
            Request(
                arrival=(when - first).total_seconds(),
                prompt_tokens=_count(fields[1], "ContextTokens", where, 0),
                output_tokens=_count(fields[2], "GeneratedTokens", where, 0),
            )
        )
    return out


def parse_mooncake(lines: Iterable[str], name: str) -> list[Request]:
    """Requests of a Mooncake JSONL file."""
    out: list[Request] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        where = f"{name} line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise TraceError(f"{where}: not JSON: {error}") from None
        if not isinstance(row, dict):
            raise TraceError(f"{where}: expected a JSON object")
        stamp = row.get("timestamp")
        if (
            not isinstance(stamp, int | float)
            or isinstance(stamp, bool)
            or not math.isfinite(stamp)
            or stamp < 0
        ):
            raise TraceError(f"{where}: timestamp must be a non-negative number, got {stamp!r}")
        blocks = row.get("hash_ids", [])
        if not isinstance(blocks, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in blocks
        ):
            raise TraceError(f"{where}: hash_ids must be a list of integers")
        out.append(
            Request(
                arrival=stamp / 1000.0,
                prompt_tokens=_count(row.get("input_length"), "input_length", where, 0),
                output_tokens=_count(row.get("output_length"), "output_length", where, 0),
                prefix_blocks=tuple(blocks),
            )
        )
    if out:
        t0 = min(r.arrival for r in out)
        out = [replace(r, arrival=r.arrival - t0) for r in out]
    return out


def parse_trace(lines: Sequence[str], name: str, fmt: TraceFormat) -> Trace:
    """A trace from its lines; sorted by arrival (stable, so equal times keep file order).

    Raises:
        TraceError: a garbled line, or no request at all.
    """
    requests = parse_azure(lines, name) if fmt == "azure" else parse_mooncake(lines, name)
    if not requests:
        raise TraceError(f"{name}: the trace holds no request")
    requests.sort(key=lambda r: r.arrival)
    return Trace(name, fmt, tuple(requests))


def load_trace(path: str | Path, fmt: TraceFormat | None = None) -> Trace:
    """Read a trace file; ``fmt`` None detects it from the first line.

    Raises:
        TraceError: missing, unreadable, empty or garbled file (never an OSError).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"cannot read trace {path}: {error}") from None
    lines = text.splitlines()
    if not lines or not any(line.strip() for line in lines):
        raise TraceError(f"{path}: the trace file is empty")
    if fmt is None:
        fmt = detect_format(path, next(line for line in lines if line.strip()))
    return parse_trace(lines, path.name, fmt)
