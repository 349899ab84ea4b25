"""Request traces to replay: the Azure LLM inference trace (CSV) and Mooncake's (JSON lines).

Pure: lines go in (the caller opens the file), :class:`~.arrivals.Arrival` objects come out,
lazily, so a long trace costs no memory. The formats are described in ``traces/README.md`` of the
shared data:

* Azure 2023: a header ``TIMESTAMP,ContextTokens,GeneratedTokens``, then one row per request
  with an absolute time such as ``2023-11-16 18:17:03.9799600`` (seven fractional digits, of
  which ``datetime`` reads six).
* Mooncake: one JSON object per line with ``timestamp`` (milliseconds from the trace start),
  ``input_length``, ``output_length`` and ``hash_ids`` (prefix blocks of 512 tokens).

A bad line is skipped and counted in :class:`TraceStats` (with the first few messages, line
numbers included), never fatal; a file with no valid row at all is a :class:`TraceError`. A row
earlier than the one before it is sent at the earlier row's time (open-loop replay cannot go
back) and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from inferscale.loadtest.arrivals import Arrival

TraceFormat = Literal["azure", "mooncake"]
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per prefix block in the Mooncake trace's ``hash_ids``."""
MAX_PROBLEMS_KEPT = 5
MAX_TOKENS_PER_REQUEST = 10_000_000
_EPOCH = datetime(1970, 1, 1)


class TraceError(ValueError):
    """A trace that cannot be replayed at all (unknown format, no valid row)."""


@dataclass
class TraceStats:
    """What reading the trace found besides valid rows."""

    rows: int = 0
    bad_lines: int = 0
    out_of_order: int = 0
    problems: list[str] = field(default_factory=list)
    """The first few bad lines, as ``line N: what is wrong``."""

    def bad(self, line_number: int, message: str) -> None:
        """Count one bad line and keep its message if there is room."""
        self.bad_lines += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(f"line {line_number}: {message}")


def detect_format(first_line: str, name: str = "") -> TraceFormat:
    """Guess the format from the file's first non-empty line (the name breaks no ties)."""
    text = first_line.strip().lstrip("\ufeff")
    if text.startswith("{"):
        return "mooncake"
    if _is_azure_header(text):
        return "azure"
    raise TraceError(
        f"{name or 'trace'}: unknown format: expected the Azure CSV header "
        f"{','.join(AZURE_HEADER)} or a Mooncake JSON line, got {text[:80]!r}"
    )


def _is_azure_header(line: str) -> bool:
    return tuple(c.strip() for c in line.strip().lstrip("\ufeff").split(",")) == AZURE_HEADER


def _tokens(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} is not a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError(f"{what} is not an integer")
    if not 0 <= value <= MAX_TOKENS_PER_REQUEST:
        raise ValueError(f"{what} {value} is out of range")
    return value


@dataclass(frozen=True, slots=True)
class _Row:
    seconds: float
    prompt_tokens: int
    output_tokens: int
    blocks: tuple[int, ...]


def _azure_row(line: str) -> _Row:
    parts = line.split(",")
    if len(parts) != 3:
        raise ValueError(f"expected 3 fields, got {len(parts)}")
    stamp = parts[0].strip()
    try:
        # Seven fractional digits; datetime reads up to six.
        moment = datetime.fromisoformat(stamp[:26])
    except ValueError:
        raise ValueError(f"bad TIMESTAMP {stamp[:40]!r}") from None
    # Naive times are differences only: no local-time conversion (and no DST jump) applies.
    seconds = moment.timestamp() if moment.tzinfo else (moment - _EPOCH).total_seconds()
    return _Row(
        seconds,
        _tokens(parts[1], "ContextTokens"),
        _tokens(parts[2], "GeneratedTokens"),
        (),
    )


def _mooncake_row(line: str) -> _Row:
    try:
        doc = json.loads(line)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    stamp = doc.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise ValueError("timestamp is missing or not a number")
    hashes = doc.get("hash_ids") or []
    if not isinstance(hashes, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in hashes
    ):
        raise ValueError("hash_ids is not a list of integers")
    return _Row(
        stamp / 1000.0,
        _tokens(doc.get("input_length"), "input_length"),
        _tokens(doc.get("output_length"), "output_length"),
        tuple(hashes),
    )


def read_trace(
    lines: Iterable[str],
    stats: TraceStats,
    *,
    speedup: float = 1.0,
    limit: int | None = None,
    trace_format: TraceFormat | None = None,
    name: str = "",
) -> Iterator[Arrival]:
    """Arrivals from a trace's lines, times relative to the first row and divided by ``speedup``.

    Token counts of zero become one (an empty prompt or answer is not a request). Raises
    :class:`TraceError` when the format is unknown or, once the lines run out, no row was valid.
    """
    if not (math.isfinite(speedup) and speedup > 0):
        raise TraceError(f"speedup must be above 0, not {speedup}")
    numbered: Iterator[tuple[int, str]] = enumerate(lines, start=1)
    fmt = trace_format
    for number, line in numbered:
        if not line.strip():
            continue
        if fmt is None:
            fmt = detect_format(line, name)
        if fmt == "mooncake":
            numbered = _chain_one(number, line, numbered)  # no header: this is the first row
        elif not _is_azure_header(line):
            expected = ",".join(AZURE_HEADER)
            raise TraceError(f"{name or 'trace'}: line {number}: expected the header {expected}")
        break
    parse = _azure_row if fmt == "azure" else _mooncake_row
    first: float | None = None
    last = 0.0
    for number, line in numbered:
        if limit is not None and stats.rows >= limit:
            return
        if not line.strip():
            continue
        try:
            row = parse(line)
        except ValueError as error:
            stats.bad(number, str(error))
            continue
        if first is None:
            first = row.seconds
        offset = (row.seconds - first) / speedup
        if offset < last:
            stats.out_of_order += 1
            offset = last
        last = offset
        yield Arrival(
            stats.rows,
            offset,
            max(row.prompt_tokens, 1),
            max(row.output_tokens, 1),
            row.blocks,
        )
        stats.rows += 1
    if stats.rows == 0:
        detail = f" ({stats.problems[0]})" if stats.problems else ""
        raise TraceError(f"{name or 'trace'}: no valid request rows{detail}")


def _chain_one(
    number: int, line: str, rest: Iterator[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    yield number, line
    yield from rest
