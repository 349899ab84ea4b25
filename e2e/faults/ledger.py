"""Every request of a fault scenario, how it ended, and the figures of one table row.

Outcomes, as the issue counts them (``Record.outcome``):

- ``ok``: a full answer from one of our replicas;
- ``spilled``: a full answer from a hosted provider (the router's ``X-Inferscale-Backend``
  names a ``provider:``);
- ``clean``: failed with a body that says why: an HTTP error with a JSON error, or an SSE
  error event inside a stream;
- ``dirty``: failed without one: no connection, a reset, a stream cut with no error event,
  an answer that is not the API's;
- ``lost``: no answer before the client's own timeout (a hang).

``detail`` says more (``http 503``, ``sse model_unavailable``, ``connect``, ``reset``,
``cut``, ``timeout``). Pure: no I/O, no clock; times are seconds since the load began.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

OUTCOMES = ("ok", "spilled", "clean", "dirty", "lost")
SUCCEEDED = frozenset({"ok", "spilled"})


@dataclass(frozen=True)
class Record:
    """One request, from its sending to its end."""

    sent_at: float
    ended_at: float
    stream: bool
    outcome: str
    detail: str = ""
    first_byte: bool = False
    """Whether generated text reached the client before the end (a stream past its first
    token; a non-streaming answer counts as its one byte only when it succeeded)."""
    source: str = ""
    """Which entry point it went to (a router's label)."""
    backend: str = ""
    """The pod or provider that answered, from the router's headers."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCEEDED

    @property
    def latency(self) -> float:
        return self.ended_at - self.sent_at


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between ranks (NumPy's default); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def recovery_seconds(records: Iterable[Record], fault_at: float) -> float | None:
    """Seconds from the fault until the first request sent after the last failure.

    0 when nothing failed (or only requests that had begun before the fault and ended with
    it); None when no request was sent after the last failure: not recovered in the run.
    """
    ordered = sorted(records, key=lambda r: r.sent_at)
    last_failed = max((i for i, r in enumerate(ordered) if not r.succeeded), default=None)
    if last_failed is None:
        return 0.0
    if last_failed + 1 >= len(ordered):
        return None
    return max(0.0, ordered[last_failed + 1].sent_at - fault_at)


@dataclass
class Row:
    """One line of the reliability table: a scenario's counts and times."""

    scenario: str
    records: list[Record]
    fault_at: float
    notes: list[str] = field(default_factory=list)
    facts: dict[str, int] = field(default_factory=dict)
    """Counts a scenario measured besides the requests, for its bound (slow sockets closed)."""
    recoveries: list[str] = field(default_factory=list)
    """Each run's recovery text, when the row merges several runs."""

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.outcome for r in self.records)

    @property
    def failures(self) -> Counter[str]:
        """Failed requests by ``outcome: detail``."""
        return Counter(f"{r.outcome}: {r.detail}" for r in self.records if not r.succeeded)

    @property
    def p99(self) -> float | None:
        return percentile([r.latency for r in self.records if r.succeeded], 99)

    @property
    def recovery(self) -> float | None:
        return recovery_seconds(self.records, self.fault_at)

    def failed(self, *, source: str | None = None, stream: bool | None = None) -> list[Record]:
        """The failed requests, of one entry point and kind when given."""
        return [
            r
            for r in self.records
            if not r.succeeded
            and (source is None or r.source == source)
            and (stream is None or r.stream == stream)
        ]

    def describe(self) -> str:
        """A line for a person: counts, failures by kind, p99, recovery."""
        counts = self.counts
        parts = [f"{self.scenario}: sent {len(self.records)}"]
        parts += [f"{name} {counts[name]}" for name in OUTCOMES]
        if self.failures:
            parts.append(
                "(" + ", ".join(f"{k} x{n}" for k, n in sorted(self.failures.items())) + ")"
            )
        parts.append(f"p99 {format_seconds(self.p99)}")
        parts.append(f"recovery {self.recovery_text}")
        return " ".join(parts + [f"[{n}]" for n in self.notes])

    @property
    def recovery_text(self) -> str:
        """The recovery time; ``-`` where no request succeeded at all (nothing to recover to)."""
        if not any(r.succeeded for r in self.records):
            return "-"
        return format_seconds(self.recovery, missing="not recovered")


def format_seconds(value: float | None, missing: str = "-") -> str:
    """``0.123`` → ``123 ms``, ``4.5`` → ``4.50 s``; ``missing`` for None."""
    if value is None:
        return missing
    # 0.9996 s rounds to 1000 ms: print it as seconds.
    return f"{value * 1000:.0f} ms" if value < 0.9995 else f"{value:.2f} s"
