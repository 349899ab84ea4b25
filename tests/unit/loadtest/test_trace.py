"""Trace parsing: both formats, the shared files, bad lines, order, speedup and limits."""

from pathlib import Path

import pytest

from inferscale.loadtest.trace import TraceError, TraceStats, detect_format, read_trace

# tests/unit/loadtest/<this file> -> the repository is parents[3]; the shared folder sits beside it.
TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "traces"
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.9799600,0,0
"""
MOONCAKE = """{"timestamp": 1000, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1]}
{"timestamp": 1500, "input_length": 700, "output_length": 49, "hash_ids": [0, 2]}
{"timestamp": 3000, "input_length": 12, "output_length": 3}
"""


def read(text, **kwargs):
    stats = TraceStats()
    return list(read_trace(text.splitlines(keepends=True), stats, **kwargs)), stats


def test_azure_rows_relative_to_the_first():
    arrivals, stats = read(AZURE)
    assert [round(a.at, 4) for a in arrivals] == [0.0, 0.052, 2.0]
    assert [(a.prompt_tokens, a.output_tokens) for a in arrivals] == [(4808, 10), (3180, 8), (1, 1)]
    assert [a.index for a in arrivals] == [0, 1, 2]
    assert stats.rows == 3 and stats.bad_lines == 0


def test_mooncake_rows_keep_their_prefix_blocks():
    arrivals, _ = read(MOONCAKE)
    assert [a.at for a in arrivals] == [0.0, 0.5, 2.0]
    assert [a.blocks for a in arrivals] == [(0, 1), (0, 2), ()]
    assert arrivals[0].prompt_tokens == 6758 and arrivals[0].output_tokens == 500


def test_speedup_and_limit():
    arrivals, stats = read(MOONCAKE, speedup=4, limit=2)
    assert [a.at for a in arrivals] == [0.0, 0.125]
    assert stats.rows == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not,a,row", "bad TIMESTAMP"),
        ("2023-11-16 18:17:06.0,12", "expected 3 fields"),
        ("2023-11-16 18:17:06.0,x,3", "invalid literal"),
        ("2023-11-16 18:17:06.0,-4,3", "ContextTokens -4 is out of range"),
        ("2023-11-16 18:17:06.0,4,99999999999", "GeneratedTokens 99999999999 is out of range"),
    ],
)
def test_bad_azure_lines_are_skipped_and_reported(line, problem):
    text = AZURE.replace("2023-11-16 18:17:04.0319600,3180,8", line)
    arrivals, stats = read(text)
    assert len(arrivals) == 2
    assert stats.bad_lines == 1
    assert stats.problems[0].startswith("line 3: ") and problem in stats.problems[0]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{oops", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"timestamp": "x", "input_length": 1, "output_length": 1}', "timestamp"),
        ('{"timestamp": true, "input_length": 1, "output_length": 1}', "timestamp"),
        ('{"timestamp": 5, "output_length": 1}', "input_length is not an integer"),
        ('{"timestamp": 5, "input_length": 1.5, "output_length": 1}', "input_length"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": "ab"}', "hash_ids"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [1.5]}', "hash_ids"),
    ],
)
def test_bad_mooncake_lines_are_skipped_and_reported(line, problem):
    arrivals, stats = read(MOONCAKE.replace(MOONCAKE.splitlines()[1], line))
    assert len(arrivals) == 2 and stats.bad_lines == 1
    assert stats.problems == [f"line 2: {stats.problems[0].split(': ', 1)[1]}"]
    assert problem in stats.problems[0]


def test_only_the_first_problems_are_kept_but_all_are_counted():
    text = MOONCAKE + "{bad\n" * 20
    _, stats = read(text)
    assert stats.bad_lines == 20 and len(stats.problems) == 5


def test_out_of_order_rows_are_sent_at_the_previous_time():
    text = MOONCAKE.replace('"timestamp": 1500', '"timestamp": 500')
    arrivals, stats = read(text)
    assert [a.at for a in arrivals] == [0.0, 0.0, 2.0]
    assert stats.out_of_order == 1


def test_blank_lines_and_a_bom_are_ignored():
    arrivals, _ = read("\ufeff" + AZURE.replace("\n", "\n\n"))
    assert len(arrivals) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,c\n1,2,3\n", "unknown format"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nbad\n", "no valid request rows"),
        ("{bad\n{worse\n", "no valid request rows .line 1: not JSON."),
        ("", "no valid request rows"),
    ],
)
def test_unusable_traces_are_errors(text, message):
    with pytest.raises(TraceError, match=message):
        read(text, name="x.csv")


def test_forced_format_checks_the_header():
    with pytest.raises(TraceError, match="expected the header"):
        read(MOONCAKE, trace_format="azure")


def test_speedup_must_be_positive():
    with pytest.raises(TraceError, match="speedup"):
        read(AZURE, speedup=0)


def test_detect_format():
    assert detect_format('{"timestamp": 0}') == "mooncake"
    assert detect_format("TIMESTAMP, ContextTokens, GeneratedTokens") == "azure"


@pytest.mark.parametrize(
    ("name", "rows", "span"),
    [
        ("AzureLLMInferenceTrace_code.csv", 8819, 3436),
        ("AzureLLMInferenceTrace_conv.csv", 19366, 3502),
        ("conversation_trace.jsonl", 12031, 3537),
    ],
)
def test_the_shared_traces_parse_cleanly(name, rows, span):
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    stats = TraceStats()
    with path.open() as handle:
        arrivals = list(read_trace(handle, stats))
    # Row counts and time spans from the traces' README.
    assert stats.rows == rows and stats.bad_lines == 0
    assert arrivals[-1].at == pytest.approx(span, abs=1)
