"""The usage ledger's records and reports (pure): building, reading back, summing, rendering."""

from __future__ import annotations

import csv
import io
import json

import pytest

from inferscale.router.codec import dumps
from inferscale.router.usage import (
    UsageQueryError,
    UsageRing,
    parse_record,
    provider_of,
    summarize,
    to_csv,
    to_json,
    usage_record,
)

DAY1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def record(ts: float = DAY1, client: str = "ns/a", status: int = 200, **usage: int):
    return usage_record(
        ts=ts,
        request_id="r-1",
        client=client,
        team="",
        route="ns/chat",
        model="m",
        served_by="provider:ns/openai/mini",
        status=status,
        usage={"prompt_tokens": 4, "completion_tokens": 2, **usage},
        cost=0.5,
        ms=12.3456,
    )


def test_a_record_names_the_provider_and_counts_only_real_tokens():
    doc = record(prompt_tokens=-3)
    assert doc["provider"] == "ns/openai" and doc["prompt_tokens"] == 0
    assert doc["completion_tokens"] == 2 and doc["ms"] == 12.346
    assert provider_of("pod-abc") == "" and provider_of("model:other") == ""
    empty = usage_record(
        ts=1, request_id="x", client="", team="", route="", model="", served_by="",
        status=401, usage="garbage", cost=0.0, ms=0,
    )  # fmt: skip
    assert empty["prompt_tokens"] == 0 and empty["completion_tokens"] == 0


def test_a_record_reads_back_from_redis_strings_and_bad_data_is_skipped():
    doc = record()
    fields = {k.encode(): str(v).encode() for k, v in doc.items()}
    assert parse_record(fields) == doc
    assert parse_record({b"ts": b"1"}) is None  # fields missing
    assert parse_record({**fields, b"cost": b"nan"}) is None
    assert parse_record({**fields, b"status": b"two hundred"}) is None
    assert parse_record({**fields, b"client": b"\xff"}) is None


def test_a_record_written_as_one_json_field_reads_back_and_bad_json_is_skipped():
    doc = record()
    assert parse_record({b"r": dumps(doc)}) == doc
    assert parse_record({b"r": b"{not json"}) is None
    assert parse_record({b"r": b"[1, 2]"}) is None
    assert parse_record({b"r": dumps({**doc, "status": True})}) is None
    assert parse_record({b"r": dumps({**doc, "client": ["x"]})}) == {**doc, "client": ""}


def test_summaries_by_client_and_day_count_requests_errors_tokens_and_cost():
    records = [
        record(),
        record(client="ns/b", status=429),
        record(ts=DAY1 + 86_400, completion_tokens=5),
    ]
    rows = summarize(records, ["client", "day"])
    assert rows == [
        {"client": "ns/a", "day": "2026-01-01", "requests": 1, "errors": 0,
         "prompt_tokens": 4, "completion_tokens": 2, "cost": 0.5},
        {"client": "ns/a", "day": "2026-01-02", "requests": 1, "errors": 0,
         "prompt_tokens": 4, "completion_tokens": 5, "cost": 0.5},
        {"client": "ns/b", "day": "2026-01-01", "requests": 1, "errors": 1,
         "prompt_tokens": 4, "completion_tokens": 2, "cost": 0.5},
    ]  # fmt: skip
    assert summarize(records, [])[0]["requests"] == 3
    table = list(csv.DictReader(io.StringIO(to_csv(rows, ["client", "day"]))))
    assert table[1]["completion_tokens"] == "5"
    assert json.loads(to_json(rows, ["client", "day"]))["by"] == ["client", "day"]


def test_an_unknown_group_is_refused():
    with pytest.raises(UsageQueryError, match="prompt"):
        summarize([record()], ["client", "prompt"])


def test_the_ring_keeps_the_newest_records():
    ring = UsageRing(2)
    ring.add([record(ts=1), record(ts=2), record(ts=3)])
    assert [r["ts"] for r in ring.since(0)] == [2, 3]
    assert [r["ts"] for r in ring.since(3)] == [3]
