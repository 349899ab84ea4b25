"""The summary (its JSON shape, the failed ratio and verdict, the table) and the live view."""

import json
import random

import pytest

from inferscale.loadtest.report import (
    LiveFrame,
    RunInfo,
    errors_text,
    render_line,
    render_live,
    render_summary,
    seconds_text,
    sparkline,
    summarize,
)
from inferscale.loadtest.stats import Outcome, Recorder
from inferscale.loadtest.trace import TraceStats
from tests.factories import make_model_status

INFO = RunInfo(
    url="http://127.0.0.1:8080",
    model="m",
    api="chat",
    stream=True,
    load="stages 10s@2",
    seed=0,
    duration=10.0,
    max_in_flight=8,
    max_error_ratio=0.0,
)


def recorder(ok=3, errors=(), dropped=0):
    rec = Recorder(0.0, random.Random(0))
    for i in range(ok):
        rec.on_sent(float(i), 0.0)
        rec.on_done(
            i + 0.5, Outcome(True, 0.5 + i, ttft=0.1 * (i + 1), prompt_tokens=100, output_tokens=10)
        )
    for kind in errors:
        rec.on_sent(5.0, 0.0)
        rec.on_done(5.5, Outcome(False, 0.2, error=kind))
    for _ in range(dropped):
        rec.on_dropped(6.0)
    return rec


def test_json_shape_is_stable():
    rec = recorder(ok=3, errors=["http 503"], dropped=1)
    rec.on_models(1.0, [make_model_status(desired=1, ready=1)])
    rec.on_models(3.0, [make_model_status(desired=3, ready=1, reason="70 in flight")])
    rec.on_models(5.0, [make_model_status(desired=1, ready=3)])
    doc = summarize(INFO, rec, 10.0, trace=TraceStats(rows=4)).to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {
        "target", "load", "elapsed_seconds", "requests", "rates", "tokens", "ttft_seconds",
        "latency_seconds", "errors", "replicas", "scale_events", "cluster", "trace",
        "max_schedule_lag_seconds", "failed_ratio", "max_error_ratio", "expect_scaling",
        "scaled_up_and_down", "passed", "interrupted", "notes",
    }  # fmt: skip
    assert doc["requests"] == {
        "attempted": 5, "sent": 4, "ok": 3, "errors": 1, "dropped": 1, "cancelled": 0,
    }  # fmt: skip
    assert doc["rates"] == {
        "sent_per_second": 0.4,
        "ok_per_second": 0.3,
        "output_tokens_per_second": 3.0,
    }
    assert doc["ttft_seconds"]["p50"] == pytest.approx(0.2)
    assert doc["latency_seconds"]["count"] == 3 and doc["latency_seconds"]["max"] == 2.5
    assert doc["errors"] == {"http 503": 1}
    assert doc["replicas"]["default/m"] == {
        "min_desired": 1, "max_desired": 3, "min_ready": 1, "max_ready": 3,
        "last_desired": 1, "last_ready": 3, "scale_ups": 1, "scale_downs": 1,
    }  # fmt: skip
    assert [(e["from"], e["to"], e["at_seconds"]) for e in doc["scale_events"]] == [
        (1, 3, 3.0),
        (3, 1, 5.0),
    ]
    assert doc["failed_ratio"] == pytest.approx(0.4) and doc["passed"] is False
    assert doc["trace"] == {"rows": 4, "bad_lines": 0, "out_of_order": 0, "problems": []}
    assert "api_key" not in json.dumps(doc).lower()


@pytest.mark.parametrize(
    ("errors", "dropped", "limit", "passed"),
    [
        ((), 0, 0.0, True),
        (("timeout",), 0, 0.0, False),
        ((), 1, 0.0, False),
        (("timeout",), 0, 0.25, True),  # 1 of 4 = 0.25: at the limit passes
        (("timeout", "timeout"), 0, 0.25, False),
    ],
)
def test_failed_ratio_against_the_limit(errors, dropped, limit, passed):
    info = RunInfo(**{**INFO.__dict__, "max_error_ratio": limit})
    summary = summarize(info, recorder(ok=3, errors=errors, dropped=dropped), 10.0)
    assert summary.passed is passed


def test_expect_scaling_needs_an_up_and_a_down_of_one_model():
    info = RunInfo(**{**INFO.__dict__, "expect_scaling": True})
    rec = recorder()
    rec.on_models(1.0, [make_model_status(desired=1)])
    rec.on_models(2.0, [make_model_status(desired=3)])
    only_up = summarize(info, rec, 10.0)
    assert not only_up.passed and "scale-up and scale-down NOT seen" in render_summary(only_up)
    rec.on_models(3.0, [make_model_status(desired=1)])
    both = summarize(info, rec, 10.0)
    assert both.passed and both.to_json()["scaled_up_and_down"] is True
    assert summarize(INFO, recorder(), 10.0).passed  # not asked for: not needed


def test_nothing_attempted_passes():
    summary = summarize(INFO, recorder(ok=0), 1.0)
    assert summary.failed_ratio == 0 and summary.passed
    assert summary.to_json()["ttft_seconds"] is None


def test_summary_table_shows_counts_percentiles_errors_and_replicas():
    rec = recorder(ok=3, errors=["http 503", "http 503", "timeout"])
    rec.on_models(1.0, [make_model_status(desired=1, ready=1)])
    rec.on_models(3.0, [make_model_status(desired=4, ready=2, reason="scaled 1 -> 4")])
    stats = TraceStats(rows=3, bad_lines=1, problems=["line 7: not JSON"])
    text = render_summary(summarize(INFO, rec, 10.0, trace=stats, notes=["a note"]))
    assert "attempted 6   sent 6   ok 3   errors 3   dropped 0" in text
    assert "TTFT" in text and "200 ms" in text and "latency" in text
    assert "errors      http 503 x2, timeout x1" in text
    assert "default/m" in text and "1..4" in text and "1..2" in text
    assert "0:03 default/m 1 -> 4  scaled 1 -> 4" in text
    assert "line 7: not JSON" in text and "note        a note" in text
    assert "FAIL: failed 50.00% of requests (limit 0.00%)" in text


def test_summary_without_cluster_says_why():
    text = render_summary(summarize(INFO, recorder(), 3.0, cluster_note="cluster not visible: x"))
    assert "replicas    cluster not visible: x" in text and "PASS" in text


def frame(rec, now, **kw):
    return LiveFrame(info=INFO, elapsed=now, phase="stage 1/1 10s@2", recorder=rec, now=now, **kw)


def test_live_view_shows_rates_ttft_errors_and_replicas():
    rec = recorder(ok=3, errors=["http 503"])
    rec.on_models(1.0, [make_model_status(desired=1, ready=1)])
    models = [make_model_status(desired=3, ready=1, reason="up")]
    rec.on_models(4.0, models)
    lines = render_live(frame(rec, 6.0, models=models))
    text = "\n".join(lines)
    assert "0:06 / 0:10  stage 1/1 10s@2" in text
    assert "sent 4   ok 3   errors 1   dropped 0" in text
    assert "failed   0.2" in text  # one error over the 5 s window
    assert "p50   200 ms" in text
    assert "http 503 x1" in text
    assert "default/m      1/3" in text and "scaling up" in text
    assert "0:04 default/m 1 -> 3  up" in text
    line = render_line(frame(rec, 6.0, models=models))
    assert line.startswith("[0:06] sent") and "default/m 1/3" in line and "\n" not in line


def test_live_view_without_cluster_shows_the_note_and_many_models_are_capped():
    rec = recorder()
    assert "replicas   cluster not visible" in "\n".join(
        render_live(frame(rec, 1.0, cluster_note="cluster not visible"))
    )
    models = [make_model_status(f"x{i:02d}") for i in range(20)] + [make_model_status("m")]
    lines = render_live(frame(rec, 1.0, models=models))
    assert any("default/m " in ln for ln in lines)  # the target model is always shown
    assert "... and 13 more InferenceModels" in "\n".join(lines)


def test_live_view_phases():
    rec = recorder()
    assert "draining" in render_live(frame(rec, 1.0, draining=True))[1]
    assert "finished" in render_live(frame(rec, 1.0, draining=True, finished=True))[1]


@pytest.mark.parametrize(
    ("value", "text"), [(None, "-"), (0.0412, "41 ms"), (1.234, "1.23 s"), (95.2, "95 s")]
)
def test_seconds_text(value, text):
    assert seconds_text(value) == text


def test_sparkline_and_errors_text():
    assert sparkline([0, 1, 2, 4], 4) == " ▂▄█"
    assert sparkline([0, 0], 0) == "  "
    assert errors_text({}) == "none"
    assert errors_text({"b": 1, "a": 1, "c": 5}) == "c x5, a x1, b x1"
