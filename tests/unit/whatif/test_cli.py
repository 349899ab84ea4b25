"""``inferscale whatif``: the table, --json, --plots, and bad input (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest

from inferscale.cli.main import main
from inferscale.sim.presets import GPU_HOUR_PRICES


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
        "--spill-price-in", "0.5", "--spill-price-out", "1.5",
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
        "--strategy", "leastPrefill", "--spill-price-in", "1", "--spill-price-out", "2",
        "--spillover", "--spill-prompt-tokens", "auto",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 2 s x 0.8 / 0.33 ms per token on the L4 preset.
    assert "leastPrefill, ours balanced, spillover at 16 or 4848 prompt tokens" in out
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
        ["--learned-floor", "0"],
        ["--learned-floor", "1.5"],
        ["--learned-floor", "most"],
        ["--ours-preset", "fast"],
        ["--gpu-hour-price", "-1"],
        ["--gpu-hour-price", "nan"],
        ["--gpu-hour-price", "inf"],
        ["--gpu-hour-price", "5e6"],
        ["--spill-price-in", "nan"],
        ["--spill-price-out", "-0.1"],
        ["--spend-cap", "-1"],
        ["--spend-cap", "lots"],
        ["--spend-cap-per-day", "-1"],
        ["--spend-cap-per-day", "nan"],
    ],
)
def test_impossible_numbers_are_usage_errors(trace, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(["whatif", "--trace", str(trace), *flag])
    assert exit_info.value.code == 2


PROVIDER = """\
apiVersion: inferscale.io/v1alpha1
kind: InferenceProvider
metadata:
  name: hosted
spec:
  type: openai
  apiKeySecretRef: {name: key, key: api-key}
  models:
"""


def provider_file(tmp_path, models: str):
    path = tmp_path / "provider.yaml"
    path.write_text(PROVIDER + models)
    return path


def run_json(argv, capsys):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cost_is_gpu_hours_at_the_presets_list_price_unless_overridden(trace, capsys):
    argv = ["whatif", "--trace", str(trace), "--policies", "ours", "--preset", "llama-3.1-8b-l4"]
    doc = run_json(argv, capsys)
    ours, prices = doc["policies"][0], doc["run"]["prices"]
    assert prices["gpu_hour"] == GPU_HOUR_PRICES["llama-3.1-8b-l4"] > 0
    assert "list price of llama-3.1-8b-l4" in prices["sources"]["gpu_hour"]
    assert ours["cost"] == pytest.approx(ours["gpu_hours"] * prices["gpu_hour"])
    assert ours["spill_cost"] == 0
    doc = run_json([*argv, "--gpu-hour-price", "10"], capsys)
    assert doc["policies"][0]["cost"] == pytest.approx(10 * ours["gpu_hours"])


def test_learned_floor_is_ours_and_named_in_the_header(trace, capsys):
    argv = ["whatif", "--trace", str(trace), "--policies", "ours", "--learned-floor", "0.9"]
    assert main(argv) == 0
    assert "ours' learned floor p90" in capsys.readouterr().out


def test_table_shows_cost_beside_attainment(trace, capsys):
    assert main(["whatif", "--trace", str(trace), "--policies", "ours"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "SLO att." in line)
    assert header.split()[:4] == ["policy", "SLO", "att.", "cost"]


def test_spill_prices_come_from_the_provider_manifest(trace, tmp_path, capsys):
    path = provider_file(
        tmp_path,
        "    - {name: small, inputPricePerMillionTokens: 2, outputPricePerMillionTokens: 8}\n",
    )
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours", "--spillover",
        "--spill-prompt-tokens", "250", "--provider", str(path), "--gpu-hour-price", "0",
    ]  # fmt: skip
    doc = run_json(argv, capsys)
    ours = doc["policies"][0]
    assert ours["spilled_requests"] == 240  # every 300-token prompt is over the 250 budget
    assert doc["run"]["prices"]["sources"]["spill"] == str(path)
    assert ours["cost"] == pytest.approx(240 * (300 * 2 + 30 * 8) / 1e6)
    assert ours["spill_cost"] == pytest.approx(ours["cost"])
    # A flag overrides the file's price.
    doc = run_json([*argv, "--spill-price-out", "0"], capsys)
    assert doc["policies"][0]["cost"] == pytest.approx(240 * 300 * 2 / 1e6)


@pytest.mark.parametrize(
    ("models", "extra", "message"),
    [
        ("    - {name: small, inputPricePerMillionTokens: 2}\n", [], "no outputPricePerMillion"),
        ("    - {name: small}\n", [], "no inputPricePerMillionTokens or output"),
        ("    - {name: small, inputPricePerMillionTokens: -1, outputPricePerMillionTokens: 1}\n",
         [], "invalid InferenceProvider"),
        ("    - {name: a, inputPricePerMillionTokens: 1, outputPricePerMillionTokens: 1}\n"
         "    - {name: b, inputPricePerMillionTokens: 1, outputPricePerMillionTokens: 1}\n",
         [], "pick one with --provider-model"),
        ("    - {name: a, inputPricePerMillionTokens: 1, outputPricePerMillionTokens: 1}\n",
         ["--provider-model", "z"], "has no model 'z'"),
        ("  : [unbalanced\n", [], "cannot read provider"),
    ],
)  # fmt: skip
def test_bad_provider_prices_are_clear_errors(trace, tmp_path, capsys, models, extra, message):
    path = provider_file(tmp_path, models)
    argv = ["whatif", "--trace", str(trace), "--spillover", "--provider", str(path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("inferscale whatif: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--spillover"], "--spillover needs the provider's prices"),
        (["--spillover", "--spill-price-in", "1"], "--spillover needs the provider's prices"),
        (["--provider-model", "x"], "--provider-model needs --provider"),
        (["--provider", "/nonexistent/provider.yaml"], "cannot read provider"),
    ],
)
def test_missing_spill_prices_are_never_a_silent_zero(trace, capsys, extra, message):
    assert main(["whatif", "--trace", str(trace), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_manifest_that_is_no_provider_is_refused(trace, tmp_path, capsys):
    path = tmp_path / "route.yaml"
    path.write_text("apiVersion: inferscale.io/v1alpha1\nkind: InferenceRoute\n")
    argv = ["whatif", "--trace", str(trace), "--spillover", "--provider", str(path)]
    assert main(argv) == 2
    assert "expected one InferenceProvider, found 0" in capsys.readouterr().err


def test_the_oracle_is_sized_by_the_slo_and_target_auto_takes_the_same_figure(tmp_path, capsys):
    # 6 requests a second of 6,000 prompt tokens: more than one H100 prefills within 2 s.
    path = write_trace(tmp_path / "long.csv", rate=6.0, seconds=120, prompt=6000, output=50)
    base = ["whatif", "--trace", str(path), "--policies", "oracle", "--cold-start", "10"]
    fixed_target = run_json([*base, "--target", "64"], capsys)
    auto = run_json([*base, "--target", "auto"], capsys)
    assert auto["run"]["target"] == auto["run"]["oracle_target"] < 64
    assert fixed_target["run"]["target"] == 64
    assert fixed_target["run"]["oracle_target"] == auto["run"]["oracle_target"]
    assert fixed_target["policies"] == auto["policies"]
    assert auto["policies"][0]["slo_attainment"] >= 0.99


def test_each_preset_runs_as_its_own_policy_and_the_header_names_the_cost_mode(trace, capsys):
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours,ours-economy,ours-latency",
        "--spillover", "--spill-price-in", "0.15", "--spill-price-out", "0.6",
    ]  # fmt: skip
    doc = run_json(argv, capsys)
    assert [p["policy"] for p in doc["policies"]] == ["ours", "ours-economy", "ours-latency"]
    assert doc["run"]["ours_preset"] == "balanced" and doc["run"]["ours_cost_mode"] == "on"
    assert main([*argv, "--ours-preset", "latency"]) == 0
    assert "ours' cost-aware mode off (the latency preset)" in capsys.readouterr().out


def test_a_replica_that_costs_nothing_makes_the_cost_mode_fall_back_and_says_so(trace, capsys):
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours", "--spillover",
        "--spill-price-in", "0.15", "--spill-price-out", "0.6", "--gpu-hour-price", "0",
    ]  # fmt: skip
    doc = run_json(argv, capsys)
    assert doc["run"]["ours_cost_mode"] == (
        "falls back to the ordinary policy: a replica-hour costs nothing"
    )
    assert doc["policies"][0]["slo_attainment"] == 1.0


def test_an_absurd_provider_price_makes_the_cost_mode_fall_back(trace, tmp_path, capsys):
    # The API's highest price per million tokens: a replica's hour of tokens costs far more.
    prices = "inputPricePerMillionTokens: 1000000, outputPricePerMillionTokens: 1"
    models = f"    - {{name: m, {prices}}}\n"
    argv = [
        "whatif", "--trace", str(trace), "--policies", "ours", "--spillover",
        "--provider", str(provider_file(tmp_path, models)),
    ]  # fmt: skip
    doc = run_json(argv, capsys)
    assert "is not a sane price" in doc["run"]["ours_cost_mode"]


def test_the_cache_flag_takes_the_presets_start_up_phases(trace, capsys):
    base = ["whatif", "--trace", str(trace), "--policies", "ours", "--json"]
    starts = {}
    for cache in ("warm", "cold"):
        assert main([*base, "--cache", cache]) == 0
        starts[cache] = json.loads(capsys.readouterr().out)["run"]["cold_start_s"]
    assert starts["cold"] == pytest.approx(60.0)  # the H100 preset's start from the network
    assert starts["warm"] == pytest.approx(28.0, abs=0.1)  # docs/sim.md, start-up phases
    assert main([*base]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["cold_start_s"] == 60.0


def test_cache_and_cold_start_together_are_a_usage_error(trace, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["whatif", "--trace", str(trace), "--cache", "warm", "--cold-start", "5"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_day_cap_enters_ours_cost_aware_mode_as_its_hourly_mean(trace, capsys):
    argv = ["whatif", "--trace", str(trace), "--policies", "ours", "--json", "--spillover"]
    argv += ["--spill-price-in", "0.15", "--spill-price-out", "0.6"]
    assert main([*argv, "--spend-cap", "5", "--spend-cap-per-day", "24"]) == 0
    run = json.loads(capsys.readouterr().out)["run"]
    assert run["spill_spend_cap_per_hour"] == 1.0  # 24 / 24, tighter than 5 an hour
