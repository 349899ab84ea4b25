"""Trace reading: both formats, detection, slicing, and every way a file can be bad."""

from __future__ import annotations

import json

import pytest

from inferscale.whatif.trace import Request, Trace, TraceError, load_trace

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.9799600,10,0
"""


def mooncake_lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_azure_csv_is_read_relative_to_its_first_request(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE)
    trace = load_trace(path)
    assert trace.format == "azure" and trace.name == "azure.csv"
    assert [r.prompt_tokens for r in trace.requests] == [4808, 3180, 10]
    assert [r.output_tokens for r in trace.requests] == [10, 8, 0]
    assert trace.requests[0].arrival == 0.0
    assert trace.requests[1].arrival == pytest.approx(0.052)
    assert trace.span == pytest.approx(2.0)


def test_mooncake_jsonl_is_read_sorted_and_rebased(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        mooncake_lines(
            [
                {"timestamp": 3000, "input_length": 700, "output_length": 5, "hash_ids": [0, 2]},
                {"timestamp": 1000, "input_length": 600, "output_length": 4, "hash_ids": [0, 1]},
            ]
        )
        + "\n"
    )
    trace = load_trace(path)
    assert trace.format == "mooncake"
    assert trace.requests == (Request(0.0, 600, 4, (0, 1)), Request(2.0, 700, 5, (0, 2)))


def test_format_comes_from_content_not_the_name(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text(AZURE)
    assert load_trace(path).format == "azure"
    path.write_text(mooncake_lines([{"timestamp": 0, "input_length": 1, "output_length": 1}]))
    assert load_trace(path).format == "mooncake"


def test_slicing_rebases_and_speeds_up():
    trace = Trace("t", "azure", tuple(Request(float(t), 10, 1) for t in range(10)))
    window = trace.sliced(start=2, duration=4, speedup=2)
    assert [r.arrival for r in window.requests] == [0.0, 0.5, 1.0, 1.5]
    assert len(trace.sliced(limit=3).requests) == 3
    with pytest.raises(TraceError, match="no request in the chosen window"):
        trace.sliced(start=100)
    with pytest.raises(TraceError):
        trace.sliced(speedup=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("hello\n", "cannot tell the trace format"),
        ("TIMESTAMP,Foo\n", "expected the header"),
        (AZURE + "2023-11-16 18:17:06.0,12\n", "line 5: expected 3 comma-separated fields"),
        (AZURE + "yesterday,1,1\n", "line 5: bad TIMESTAMP"),
        (AZURE + "2023-11-16 18:17:06.0,many,1\n", "ContextTokens is not a whole number"),
        (AZURE + "2023-11-16 18:17:06.0,5,-1\n", "GeneratedTokens must be >= 0"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "holds no request"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{oops\n', "line 2: not JSON"),
        ("[1, 2]\n", "cannot tell the trace format"),
        ('{"timestamp": -1, "input_length": 5, "output_length": 1}\n', "timestamp must be"),
        ('{"timestamp": "x", "input_length": 5, "output_length": 1}\n', "timestamp must be"),
        ('{"timestamp": 0, "output_length": 1}\n', "input_length is not a whole number"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": "a"}\n', "hash_ids"),
    ],
)
def test_bad_files_are_trace_errors_naming_the_problem(tmp_path, text, message):
    suffix = ".csv" if text.startswith("T") else ".jsonl" if text.startswith("{") else ".txt"
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_a_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(TraceError, match="line 1: expected a JSON object"):
        load_trace(path, "mooncake")


def test_missing_and_binary_files_are_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path)  # a directory
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(binary)
