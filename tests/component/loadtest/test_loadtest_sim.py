"""``inferscale loadtest`` end to end against the sim on loopback, and against nothing at all."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from inferscale.cli.main import main
from tests.component.sim.conftest import MODEL, RunningSim, make_settings


@pytest.fixture(scope="module")
def sim():
    # 2 ms per decode step: 8 tokens take ~16 ms, so TTFT and latency are measurably apart.
    with RunningSim(make_settings(step_base_seconds=0.002)) as running:
        yield running


def run_json(capsys, *args):
    code = main(["loadtest", "--json", "--no-cluster", "--quiet", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_streaming_chat_counts_every_request_and_measures_ttft(sim, capsys):
    code, doc, _ = run_json(
        capsys,
        "--url",
        sim.base_url,
        "--model",
        MODEL,
        "--stages",
        "1s@40,1s@0",
        "--max-tokens",
        "8",
    )
    assert code == 0 and doc["passed"]
    req = doc["requests"]
    assert req["sent"] == req["ok"] == req["attempted"] > 10 and req["errors"] == 0
    assert doc["tokens"]["output"] == 8 * req["ok"]
    # 128 prompt words plus the chat template's tokens, as the sim counts them.
    assert 128 * req["ok"] < doc["tokens"]["prompt"] < 150 * req["ok"]
    ttft, latency = doc["ttft_seconds"], doc["latency_seconds"]
    assert ttft["count"] == req["ok"] and 0 < ttft["p50"] < latency["p50"]
    assert doc["elapsed_seconds"] >= 2.0  # the quiet stage is waited out
    assert doc["target"] == {"url": sim.base_url, "model": MODEL, "api": "chat", "stream": True}


def test_non_streaming_completions_and_the_model_from_v1_models(sim, capsys):
    code, doc, _ = run_json(
        capsys, "--url", sim.base_url + "/v1/", "--api", "completions", "--no-stream",
        "--rate", "30", "--duration", "1s", "--max-tokens", "5", "--prompt-tokens", "20",
    )  # fmt: skip
    assert code == 0
    assert doc["target"]["model"] == MODEL and doc["target"]["url"] == sim.base_url
    assert doc["ttft_seconds"] is None and doc["latency_seconds"]["count"] == doc["requests"]["ok"]
    assert doc["tokens"]["output"] == 5 * doc["requests"]["ok"] > 0


def test_a_trace_is_replayed_with_its_sizes(sim, capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 300, "output_length": 3, "hash_ids": [1]},
        {"timestamp": 200, "input_length": 9000, "output_length": 4, "hash_ids": [1, 2]},
        "not json",
        {"timestamp": 400, "input_length": 100, "output_length": 2, "hash_ids": [3]},
    ]
    trace.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    code, doc, _ = run_json(
        capsys, "--url", sim.base_url, "--trace", str(trace), "--speedup", "2",
        "--max-prompt-tokens", "1000",
    )  # fmt: skip
    assert code == 0
    assert doc["requests"]["ok"] == 3 and doc["tokens"]["output"] == 3 + 4 + 2
    prompt = doc["tokens"]["prompt"]
    assert 300 + 1000 + 100 <= prompt < 300 + 1000 + 100 + 3 * 20
    assert doc["trace"]["rows"] == 3 and doc["trace"]["bad_lines"] == 1
    assert doc["trace"]["problems"] == ["line 3: not JSON"]


def test_json_file_holds_the_summary_while_the_table_still_prints(sim, capsys, tmp_path):
    saved = tmp_path / "run.json"
    code = main(
        ["loadtest", "--url", sim.base_url, "--rate", "20", "--duration", "0.5s",
         "--no-cluster", "--quiet", "--json-file", str(saved)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "inferscale loadtest summary" in out and "PASS" in out
    doc = json.loads(saved.read_text())
    assert doc["passed"] and doc["requests"]["ok"] == doc["requests"]["sent"] > 0
    assert f"ok {doc['requests']['ok']}" in out  # the same run in both


@pytest.mark.parametrize("where", ["missing-dir/run.json", "."])
def test_a_json_file_that_cannot_be_written_is_refused_before_any_load(capsys, tmp_path, where):
    started = time.monotonic()
    # The endpoint is never asked: the path is checked first.
    code = main(
        ["loadtest", "--url", "http://127.0.0.1:9", "--rate", "5", "--json-file",
         str(tmp_path / where)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 2
    assert "--json-file" in err and "unreachable" not in err


def test_a_json_file_that_fails_at_the_end_fails_the_run(sim, capsys):
    # /dev/full passes the check before the load and refuses every write (ENOSPC), root or not.
    code = main(
        ["loadtest", "--url", sim.base_url, "--rate", "5", "--duration", "0.2s",
         "--no-cluster", "--quiet", "--json-file", "/dev/full"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "PASS" in captured.out  # the run itself passed
    assert "cannot write --json-file /dev/full" in captured.err


def test_errors_fail_the_run_unless_allowed():
    settings = make_settings(failures={"error_rate": 1.0, "error_status": 503})
    with RunningSim(settings) as failing:
        args = ["loadtest", "--url", failing.base_url, "--rate", "20", "--duration", "1s"]
        assert main([*args, "--no-cluster", "--quiet"]) == 1
        assert main([*args, "--no-cluster", "--quiet", "--max-error-ratio", "1"]) == 0


def test_error_kinds_and_the_table(capsys):
    with RunningSim(make_settings(failures={"error_rate": 1.0, "error_status": 503})) as failing:
        code = main(
            ["loadtest", "--url", failing.base_url, "--rate", "20", "--duration", "1s",
             "--no-cluster", "--quiet"]
        )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 1
    assert "errors      http 503 x" in text and "FAIL: failed 100.00% of requests" in text


def test_an_unknown_model_is_warned_about_and_counted(sim, capsys):
    code, doc, err = run_json(
        capsys, "--url", sim.base_url, "--model", "nope", "--rate", "10", "--duration", "0.5s"
    )
    assert "'nope' is not in" in err and code == 1
    assert set(doc["errors"]) == {"http 404"}


def test_requests_past_the_concurrency_cap_are_dropped(capsys):
    # 0.1 s per step and 20 tokens: each request runs ~2 s; one at a time may be in flight.
    with RunningSim(make_settings(step_base_seconds=0.1)) as slow:
        code, doc, _ = run_json(
            capsys, "--url", slow.base_url, "--rate", "20", "--duration", "1s",
            "--max-in-flight", "1", "--max-tokens", "20",
        )  # fmt: skip
    assert code == 1
    assert doc["requests"]["sent"] == 1 and doc["requests"]["dropped"] >= 5
    assert doc["requests"]["ok"] == 1


def test_a_hung_endpoint_times_out_per_request(capsys):
    with RunningSim(make_settings(failures={"hang_after_requests": 0})) as hung:
        started = time.monotonic()
        code, doc, _ = run_json(
            capsys, "--url", hung.base_url, "--rate", "10", "--duration", "0.5s",
            "--timeout", "0.5",
        )  # fmt: skip
        assert time.monotonic() - started < 5
    assert code == 1 and set(doc["errors"]) == {"timeout"}
    assert doc["requests"]["errors"] == doc["requests"]["sent"] > 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_exits_2_at_once(capsys):
    started = time.monotonic()
    code = main(["loadtest", "--url", f"http://127.0.0.1:{free_port()}", "--rate", "5"])
    assert code == 2 and time.monotonic() - started < 3
    err = capsys.readouterr().err
    assert "the endpoint is unreachable" in err and "cannot connect" in err


def test_a_silent_endpoint_fails_the_preflight_after_its_timeout(capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never answers
        port = listener.getsockname()[1]
        started = time.monotonic()
        code = main(
            ["loadtest", "--url", f"http://127.0.0.1:{port}", "--rate", "5",
             "--preflight-timeout", "0.5"]
        )  # fmt: skip
        assert code == 2 and time.monotonic() - started < 3
    assert "no answer within 0.5 s" in capsys.readouterr().err


def test_interrupted_run_prints_its_summary_exits_130_and_never_shows_the_key(sim):
    env = {**os.environ, "OPENAI_API_KEY": "sk-secret-do-not-print"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferscale", "loadtest", "--url", sim.base_url,
         "--rate", "20", "--duration", "60s", "--refresh", "0.2", "--no-cluster"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        # Interrupt once the run is under way (a few live lines out), however slow the start.
        deadline = time.monotonic() + 60
        while sum(line.startswith("[0:") for line in seen) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            seen.append(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "sk-secret" not in out
    assert out.count("[0:0") >= 3  # one line per refresh when stdout is not a terminal
    assert "summary  (interrupted)" in out and "ok " in out
