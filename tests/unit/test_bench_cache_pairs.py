"""bench/cache's pairs: reading users' files (bad data included) and choosing a threshold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PAIRS_PY = Path(__file__).resolve().parents[2] / "bench" / "cache" / "pairs.py"
spec = importlib.util.spec_from_file_location("bench_cache_pairs", PAIRS_PY)
assert spec is not None and spec.loader is not None
pairs = importlib.util.module_from_spec(spec)
sys.modules["bench_cache_pairs"] = pairs
spec.loader.exec_module(pairs)


def test_jsonl_and_csv_with_or_without_a_header_read_the_same():
    jsonl = (
        '{"text_a": "hi", "text_b": "hello", "label": 1}\n\n'
        '{"text_a": "hi", "text_b": "bye", "label": 0}\n'
    )
    csv_plain = "hi,hello,1\nhi,bye,0\n"
    csv_header = "text_a,text_b,label\nhi,hello,1\r\nhi,bye,0\n"
    expected = [pairs.Pair("hi", "hello", True), pairs.Pair("hi", "bye", False)]
    for text in (jsonl, csv_plain, csv_header):
        assert pairs.parse_pairs(text, "f") == expected


def test_csv_fields_may_be_quoted():
    assert pairs.parse_pairs('"a, b","c ""d""",1\n', "f") == [pairs.Pair("a, b", 'c "d"', True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "f: no pairs"),
        ("a,b\n", "f:1: expected text_a,text_b,label; got 2 columns"),
        ("a,b,2\n", "f:1: label '2' is not 1"),
        ("a,,1\n", "f:1: text_b must be a non-empty string"),
        ('{"text_a": "a", "text_b": "b", "label": 1}\n{"text_a": "a"\n', "f:2: not JSON"),
        ('{"text_a": "a", "text_b": "b", "label": 1}\n[1]\n', "f:2: expected an object"),
        ('{"text_a": 3, "text_b": "b", "label": 1}\n', "f:1: text_a must be"),
        ('{"text_a": "a", "text_b": "b", "label": 0.5}\n', "f:1: label 0.5 is not"),
    ],
)
def test_bad_pairs_are_a_clear_error_naming_the_line(text, message):
    with pytest.raises(pairs.PairsError) as error:
        pairs.parse_pairs(text, "f")
    assert str(error.value).startswith(message)


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(pairs.PairsError, match="cannot read"):
        pairs.read_pairs(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe,x,1\n")
    with pytest.raises(pairs.PairsError, match="cannot read"):
        pairs.read_pairs(bad)


def test_stsb_rows_count_as_same_from_a_score_of_four(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('a,b,4.0\n"c, d",e,3.99\n')
    assert [p.same for p in pairs.read_stsb(path)] == [True, False]
    path.write_text("a,b,high\n")
    with pytest.raises(pairs.PairsError, match="s.csv:1: score 'high' is not a number"):
        pairs.read_stsb(path)


def test_precision_and_recall_of_hits():
    s = pairs.score([0.9, 0.8, 0.95, 0.2], [True, False, True, True], 0.8)
    assert (s.hits, s.right, s.positives) == (3, 2, 3)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    none = pairs.score([0.1], [True], 0.5)
    assert none.precision == 1.0 and none.recall == 0.0


def test_choose_takes_the_lowest_threshold_from_which_precision_holds():
    def at(threshold, hits, right):
        return pairs.Score(threshold, hits, right, 100)

    scores = [
        at(0.7, 100, 80),
        at(0.8, 60, 58),  # 0.967
        at(0.85, 50, 47),  # 0.94: breaks the run, so 0.8 cannot be chosen
        at(0.9, 40, 39),
        at(0.95, 10, 5),  # too few hits to count either way
    ]
    assert pairs.choose(scores).threshold == 0.9
    assert pairs.choose([at(0.9, 40, 30)]) is None
    assert pairs.choose([at(0.99, 5, 5)]) is None
