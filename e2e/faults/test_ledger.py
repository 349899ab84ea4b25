"""The fault suite's bookkeeping: outcomes, percentiles, recovery times, bounds (no processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.faults.__main__ import BEGIN, END, update_rows
from e2e.faults.ledger import Record, Row, format_seconds, percentile, recovery_seconds
from e2e.faults.scenarios import only_clean_503, router_bound, streams_cut_cleanly


def rec(sent: float, outcome: str = "ok", **kw: Any) -> Record:
    return Record(sent, sent + kw.pop("took", 0.1), kw.pop("stream", False), outcome, **kw)


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="unknown outcome"):
        Record(0, 1, False, "fine")


def test_percentile_interpolates_between_ranks():
    assert percentile([], 99) is None
    assert percentile([1.0], 99) == 1.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([float(x) for x in range(101)], 99) == pytest.approx(99.0)


def test_recovery_is_zero_without_failures_and_none_when_the_last_request_failed():
    assert recovery_seconds([rec(0), rec(1)], fault_at=0.5) == 0.0
    assert recovery_seconds([rec(0), rec(1, "dirty")], fault_at=0.5) is None


def test_recovery_runs_from_the_fault_to_the_first_request_after_the_last_failure():
    records = [rec(0), rec(1, "dirty"), rec(2, "clean"), rec(3.5), rec(4)]
    assert recovery_seconds(records, fault_at=1.0) == 2.5
    # A stream cut by the fault was sent before it: the next request is on time.
    assert recovery_seconds([rec(0, "clean", stream=True), rec(0.2)], fault_at=1.0) == 0.0


def test_a_row_counts_outcomes_and_failures_by_kind():
    row = Row("x", [rec(0), rec(1, "spilled"), rec(2, "dirty", detail="connect")], 0.5)
    assert row.counts == {"ok": 1, "spilled": 1, "dirty": 1}
    assert row.failures == {"dirty: connect": 1}
    assert "dirty: connect x1" in row.describe()
    assert Row("y", [rec(0, "clean", detail="http 503")], 0).recovery_text == "-"


def test_format_seconds():
    assert format_seconds(None) == "-"
    assert format_seconds(0.1234) == "123 ms"
    assert format_seconds(4.5) == "4.50 s"
    assert format_seconds(0.9996) == "1.00 s"


def test_the_kill_bound_refuses_early_stream_failures_and_dirty_cuts():
    fine = Row("k", [rec(0), rec(1, "clean", stream=True, first_byte=True, detail="sse x")], 0)
    assert streams_cut_cleanly(fine) == []
    early = Row("k", [rec(0, "clean", stream=True, detail="http 502")], 0)
    assert "1 streams failed before their first byte" in streams_cut_cleanly(early)
    dirty = Row("k", [rec(0, "dirty", stream=True, first_byte=True, detail="cut")], 0)
    assert "1 streams cut without an SSE error event" in streams_cut_cleanly(dirty)
    plain = Row("k", [rec(0, "clean", detail="http 502")], 0)
    assert any("non-streaming" in p for p in streams_cut_cleanly(plain))


def test_the_router_bound_blames_only_the_other_routers_failures():
    killed = [rec(1, "dirty", detail="connect", source="router-0"), rec(2, source="router-0")]
    assert router_bound(Row("r", killed, 1)) == []
    other = [rec(1, "dirty", detail="reset", source="router-1"), rec(2)]
    assert any("other router" in p for p in router_bound(Row("r", other, 1)))


def test_the_held_bound_takes_404_only_after_the_deletion():
    ok = [rec(0, "clean", detail="http 503"), rec(2, "clean", detail="http 404")]
    assert only_clean_503(Row("h", ok, 1.0)) == []
    bad = [rec(0, "clean", detail="http 404")]
    assert only_clean_503(Row("h", bad, 1.0))
    lost = [rec(0, "lost", detail="timeout")]
    assert any("lost" in p for p in only_clean_503(Row("h", lost, 1.0)))


def test_the_table_has_a_cell_for_every_column_and_worst_recovery_wins():
    from e2e.faults.__main__ import collapse, table, worst_recovery
    from e2e.faults.scenarios import SCENARIOS

    row = Row("x", [rec(0), rec(1, "dirty", detail="connect")], 0.5, ["a note"])
    row.recoveries = ["0 ms", "not recovered"]
    lines = table([(SCENARIOS[0], row, [])]).splitlines()
    assert len({line.count("|") for line in lines}) == 1
    assert "dirty: connect x1" in lines[2] and "a note" in lines[2]
    assert worst_recovery(["0 ms", "2.50 s", "900 ms"]) == "2.50 s"
    assert collapse([(1, "a"), (2, "a"), (2, "b")], 2) == ["every run: a", "run 2: b"]
    assert worst_recovery(["-", "-"]) == "-"
    assert worst_recovery(["1.00 s", "not recovered"]) == "not recovered"


def test_update_rows_replaces_and_adds_rows_and_keeps_the_others(tmp_path: Path) -> None:
    head = "| scenario | fault |\n|---|---|\n"
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN}\nthe long run\n\n{head}| a | old |\n| b | old |\n{END}\nend\n")
    update_rows(doc, "`cmd -k b` on yesterday", head + "| b | new |\n| c | new |")
    update_rows(doc, "`cmd -k b` on today", head + "| b | new |\n| c | new |")
    assert doc.read_text() == (
        f"intro\n{BEGIN}\nthe long run\n\n{head}| a | old |\n| b | new |\n| c | new |\n\n"
        f"Rows `b`, `c` from `cmd -k b` on today\n{END}\nend\n"
    )
