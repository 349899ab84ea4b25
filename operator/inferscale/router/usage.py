"""The usage ledger's records and reports (pure): one record per request, summed by group.

A record says who asked (client, team), what for (route, the model asked for), who served (the
pod or backend label, and the provider when a hosted one answered), how it went (status,
milliseconds) and what it used (prompt and completion tokens, cost at the provider's prices).
Never the prompt or an answer, never a key. :func:`summarize` sums records by any of
:data:`GROUPS` (``day`` is the record's UTC date); :func:`to_csv` and :func:`to_json` render the
rows the CLI and the admin endpoint serve. :func:`parse_record` reads a record back from Redis's
strings and rejects what is not one (bad data never crashes a report).

Pure: no I/O, no clock (times come in as arguments).
"""

from __future__ import annotations

import csv
import io
import json
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

Record = dict[str, str | int | float]

TEXT_FIELDS: Final = ("id", "client", "team", "route", "model", "served_by", "provider")
NUMBER_FIELDS: Final = ("ts", "status", "prompt_tokens", "completion_tokens", "cost", "ms")
GROUPS: Final = ("client", "team", "route", "model", "provider", "day", "status")
"""What reports may group by."""
SUMS: Final = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")
"""What each report row adds up (errors: answers with a status of 400 or more)."""
PROVIDER_PREFIX: Final = "provider:"
RECORD_FIELD: Final = "r"
"""The stream entry's one field: the record as JSON."""


class UsageQueryError(ValueError):
    """A report asked for a group that does not exist (a 400)."""


def provider_of(served_by: str) -> str:
    """The provider id in a backend label ``provider:<ns>/<name>/<model>`` (else empty)."""
    if not served_by.startswith(PROVIDER_PREFIX):
        return ""
    return served_by[len(PROVIDER_PREFIX) :].rsplit("/", 1)[0]


def milli(value: float) -> float:
    """A non-negative ``value`` to three decimals (as ``round(value, 3)``, at a quarter its cost).

    Half-way cases may round up where ``round`` keeps the even digit: a thousandth of a second or
    millisecond in a record or log line, never a count.
    """
    return int(value * 1000 + 0.5) / 1000


def _count(usage: object, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if type(value) is int and value > 0 else 0


def usage_record(
    *,
    ts: float,
    request_id: str,
    client: str,
    team: str,
    route: str,
    model: str,
    served_by: str,
    status: int,
    usage: object,
    cost: float,
    ms: float,
) -> Record:
    """One request's record (``usage`` in OpenAI's shape; anything else counts 0 tokens)."""
    return {
        "ts": milli(ts),
        "id": request_id,
        "client": client,
        "team": team,
        "route": route,
        "model": model,
        "served_by": served_by,
        "provider": provider_of(served_by),
        "status": status,
        "prompt_tokens": _count(usage, "prompt_tokens"),
        "completion_tokens": _count(usage, "completion_tokens"),
        "cost": cost,
        "ms": milli(ms),
    }


def parse_record(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Record | None:
    """A record from a stream entry's fields (as Redis returns them); None for what is not one.

    An entry holds the record as JSON in :data:`RECORD_FIELD`; entries written before that
    (one field per column) are read too, until retention trims them.
    """
    text: dict[str, str] = {}
    for key, value in fields.items():
        try:
            name = key.decode() if isinstance(key, bytes) else str(key)
            text[name] = value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            return None
    if RECORD_FIELD in text:
        try:
            doc = json.loads(text[RECORD_FIELD])
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        text = {str(k): str(v) for k, v in doc.items() if isinstance(v, str | int | float)}
    out: Record = {}
    try:
        for name in NUMBER_FIELDS:
            number = float(text[name])
            if number != number or number in (float("inf"), float("-inf")):
                return None
            out[name] = number if name in ("ts", "cost", "ms") else int(number)
    except (KeyError, ValueError):
        return None
    for name in TEXT_FIELDS:
        out[name] = text.get(name, "")
    return out


def day_of(ts: float) -> str:
    """The UTC date of epoch seconds ``ts`` (``YYYY-MM-DD``)."""
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def check_groups(by: Iterable[str]) -> tuple[str, ...]:
    """``by`` as a tuple, or UsageQueryError naming a group that does not exist."""
    groups = tuple(g for g in by if g)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise UsageQueryError(f"by: unknown group {unknown[0]!r} (groups: {', '.join(GROUPS)})")
    return groups


def summarize(records: Iterable[Record], by: Iterable[str]) -> list[dict[str, str | int | float]]:
    """Rows of :data:`SUMS` per distinct value of the ``by`` groups, sorted by those values."""
    groups = check_groups(by)
    rows: dict[tuple[str, ...], dict[str, str | int | float]] = {}
    for record in records:
        key = tuple(
            day_of(float(record["ts"])) if g == "day" else str(record.get(g, "")) for g in groups
        )
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**dict(zip(groups, key, strict=True)), **dict.fromkeys(SUMS, 0)}
        row["requests"] = int(row["requests"]) + 1
        row["errors"] = int(row["errors"]) + (int(record["status"]) >= 400)
        for name in ("prompt_tokens", "completion_tokens"):
            row[name] = int(row[name]) + int(record[name])
        row["cost"] = float(row["cost"]) + float(record["cost"])
    return [rows[key] for key in sorted(rows)]


def to_csv(rows: list[dict[str, str | int | float]], by: Iterable[str]) -> str:
    """The rows as CSV with a header line (groups first, then :data:`SUMS`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*check_groups(by), *SUMS]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(row.get(c, "") for c in columns)
    return out.getvalue()


def to_json(rows: list[dict[str, str | int | float]], by: Iterable[str]) -> str:
    """The rows as ``{"by": [...], "rows": [...]}``."""
    return json.dumps({"by": list(check_groups(by)), "rows": rows})


class UsageRing:
    """The last ``capacity`` records of this router, for a router without Redis."""

    def __init__(self, capacity: int) -> None:
        """Keep at most ``capacity`` records (the oldest go first)."""
        self.records: deque[Record] = deque(maxlen=capacity)

    def add(self, records: Iterable[Record]) -> None:
        """Append ``records`` (the oldest fall off the end)."""
        self.records.extend(records)

    def since(self, ts: float) -> list[Record]:
        """The records at or after epoch seconds ``ts``."""
        return [r for r in self.records if float(r["ts"]) >= ts]
