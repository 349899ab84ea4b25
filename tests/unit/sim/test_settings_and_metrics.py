"""Settings (env + flags), the CLI's flag generation, and the three metric dialects."""

from __future__ import annotations

import pytest

from inferscale.cli.main import build_parser
from inferscale.cli.sim import settings_from_args
from inferscale.sim import PRESETS, LatencyModel
from inferscale.sim.metrics import RENDERERS
from inferscale.sim.settings import SimSettings


def parse(*argv: str) -> SimSettings:
    return settings_from_args(build_parser().parse_args(["sim", *argv]))


def test_defaults_bind_all_interfaces_with_the_h100_preset(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("INFERSCALE_SIM_")]:
        monkeypatch.delenv(key)
    settings = parse()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.engine_params() == PRESETS["llama-3.1-8b-h100"]


def test_env_is_read_and_flags_win(monkeypatch):
    monkeypatch.setenv("INFERSCALE_SIM_PORT", "9001")
    monkeypatch.setenv("INFERSCALE_SIM_MODEL", "env-model")
    monkeypatch.setenv("INFERSCALE_SIM_PRESET", "llama-3.1-8b-l4")
    monkeypatch.setenv("INFERSCALE_SIM_ENGINE__MAX_NUM_SEQS", "7")
    monkeypatch.setenv("INFERSCALE_SIM_ENGINE__STARTUP_DELAY_SECONDS", "2.5")
    monkeypatch.setenv("INFERSCALE_SIM_FAILURES__ERROR_RATE", "0.25")
    settings = parse(
        "--model", "flag-model", "--startup-delay-seconds", "1", "--fail-hang-after", "3"
    )
    assert settings.port == 9001
    assert settings.model == "flag-model"
    params = settings.engine_params()
    assert params.max_num_seqs == 7  # env, merged key by key with the flags
    assert params.startup_delay_seconds == 1.0  # flag over env
    assert params.step_base_seconds == PRESETS["llama-3.1-8b-l4"].step_base_seconds
    assert settings.failures.error_rate == 0.25
    assert settings.failures.hang_after_requests == 3


def test_every_engine_parameter_has_a_flag():
    sim = build_parser()._subparsers._group_actions[0].choices["sim"]  # type: ignore[union-attr]
    flags = {opt for action in sim._actions for opt in action.option_strings}
    for name in type(PRESETS["zero"]).model_fields:
        assert f"--{name.replace('_', '-')}" in flags


def test_invalid_settings_exit_with_2(capsys):
    args = build_parser().parse_args(["sim", "--max-model-len", "10", "--kv-capacity-tokens", "5"])
    assert args.func(args) == 2
    assert "invalid settings" in capsys.readouterr().err


def _busy_model() -> LatencyModel:
    model = LatencyModel(
        PRESETS["llama-3.1-8b-h100"].model_copy(update={"startup_delay_seconds": 0})
    )
    model.submit(0.0, 100, 10)
    model.advance(1.0)
    model.submit(1.0, 100, 10)
    return model


VLLM = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
]


@pytest.mark.parametrize(
    ("dialect", "names", "absent"),
    [
        ("vllm", VLLM, ["sglang:", "tgi_"]),
        (
            "sglang",
            ["sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
             "sglang:time_to_first_token_seconds_bucket", "sglang:queue_time_seconds_sum",
             "sglang:prompt_tokens_total", "sglang:cached_tokens_total"],
            ["vllm:", "tgi_"],
        ),
        (
            "tgi",
            ["tgi_batch_current_size", "tgi_queue_size", "tgi_request_duration_bucket",
             "tgi_request_queue_duration_count", "tgi_request_mean_time_per_token_duration_sum",
             "tgi_request_input_length_sum", "tgi_request_generated_tokens_sum"],
            ["vllm:", "sglang:", "time_to_first_token", "token_usage"],
        ),
    ],
)  # fmt: skip
def test_dialects_speak_their_engine_names(dialect, names, absent):
    text = RENDERERS[dialect](_busy_model(), 'my"model')
    sample_names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"
    }
    for name in names:
        assert name in sample_names, name
    for prefix in absent:
        assert prefix not in text
    if dialect == "vllm":
        assert 'vllm:num_requests_running{engine="0",model_name="my\\"model"} 1.0' in text
        assert 'vllm:generation_tokens_total{engine="0",model_name="my\\"model"} 10.0' in text
        assert "# TYPE vllm:prompt_tokens_total counter" in text
        assert 'le="+Inf"' in text and 'le="0.001"' in text
