"""``inferscale whatif``: the table, --json, --plots, and bad input (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest

from inferscale.cli.main import main


def write_trace(path, rate=2.0, seconds=120, prompt=300, output=30):
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(int(rate * seconds)):
        t = i / rate
        lines.append(f"2023-11-16 18:{int(t // 60):02d}:{t % 60:010.7f},{prompt},{output}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def trace(tmp_path):
    return write_trace(tmp_path / "small.csv")


def test_table_lists_every_policy(trace, capsys):
    assert main(["whatif", "--trace", str(trace), "--cold-start", "10"]) == 0
    out = capsys.readouterr().out
    assert "small.csv: 240 requests over 120 s" in out
    for name in ("ours", "hpa", "keda", "kubeai", "oracle"):
        assert f"\n{name} " in out
    assert "SLO att." in out and "GPU-h" in out


def test_json_gives_the_same_figures_to_scripts(trace, capsys):
    argv = ["whatif", "--trace", str(trace), "--policies", "ours,oracle", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["policy"] for p in doc["policies"]] == ["ours", "oracle"]
    assert doc["run"]["requests"] == 240 and doc["run"]["preset"] == "llama-3.1-8b-h100"
    ours = doc["policies"][0]
    assert ours["slo_attainment"] == 1.0 and ours["spilled_tokens_pct"] == 0.0
    assert ours["gpu_hours"] == pytest.approx(119.5 / 3600)


def test_slice_speedup_and_spillover_flags(trace, capsys):
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours", "--json", "--duration", "60",
        "--speedup", "2", "--spillover", "--spill-at", "4", "--min-replicas", "0",
        "--initial-replicas", "0", "--scale-to-zero-delay", "30", "--target", "8",
    ]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"]["requests"] == 120 and doc["run"]["span_s"] == pytest.approx(29.75)
    assert doc["run"]["spillover"] is True and doc["run"]["spill_in_flight_per_replica"] == 4
    assert doc["policies"][0]["spilled_requests"] > 0  # nothing is ready at the start


def test_plots_are_written(trace, tmp_path, capsys):
    out = tmp_path / "plots"
    argv = ["whatif", "--trace", str(trace), "--policies", "ours,kubeai", "--plots", str(out)]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["load.png", "overview.png", "replicas.png", "ttft.png"]
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names)


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (None, [], "cannot read trace"),
        ("garbage\n", [], "expected the header"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,x,1\n", [], "line 2"),
        ("", [], "empty"),
        ("ok", ["--policies", "ours,magic"], "unknown policies"),
        ("ok", ["--min-replicas", "5", "--max-replicas", "2"], "must not exceed"),
        ("ok", ["--scale-to-zero-delay", "5"], "needs --min-replicas 0"),
        ("ok", ["--start", "100000"], "no request in the chosen window"),
        ("ok", ["--trace-format", "mooncake"], "not JSON"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, setup, extra, message):
    path = tmp_path / "t.csv"
    if setup == "ok":
        write_trace(path, seconds=10)
    elif setup is not None:
        path.write_text(setup)
    assert main(["whatif", "--trace", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inferscale whatif: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_strategy_and_prompt_token_spillover_flags(trace, capsys):
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours", "--preset", "llama-3.1-8b-l4",
        "--strategy", "leastPrefill", "--spillover", "--spill-prompt-tokens", "auto",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 2 s x 0.8 / 0.33 ms per token on the L4 preset.
    assert "leastPrefill, spillover at 16 or 4848 prompt tokens" in out
    argv[-1] = "250"  # below one request's 300-token prompt: every request spills
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"]["strategy"] == "leastPrefill"
    assert doc["run"]["spill_prompt_tokens_per_replica"] == 250
    assert doc["policies"][0]["spilled_requests"] == 240


@pytest.mark.parametrize(
    "flag",
    [
        ["--cold-start", "-1"],
        ["--target", "0"],
        ["--speedup", "0"],
        ["--spill-prompt-tokens", "0"],
        ["--spill-prompt-tokens", "lots"],
        ["--strategy", "prefixHash"],
    ],
)
def test_impossible_numbers_are_usage_errors(trace, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(["whatif", "--trace", str(trace), *flag])
    assert exit_info.value.code == 2
