"""Every engine's flag mapping: one table per typed optimisation field, over every engine."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from inferscale.api.v1alpha1.inference_model import ENGINES as API_ENGINES
from inferscale.cli import sim as sim_cli
from inferscale.errors import SpecError
from inferscale.reconcile.engines import (
    ENGINES,
    LLAMACPP_CACHE,
    MODEL_SOURCE_MOUNT,
    TRTLLM_OPTIONS_ENV,
    TRTLLM_OPTIONS_FILE,
    UnsupportedSpec,
    check_spec,
    engine_command,
    layout,
    parse_model_source,
    whole_cpus,
)
from tests.factories import make_model

ALL = list(API_ENGINES)


def has_run(args: tuple[str, ...], run: list[str]) -> bool:
    """``run`` appears in ``args`` as consecutive items."""
    n = len(run)
    return any(list(args[i : i + n]) == run for i in range(len(args) - n + 1))


def command_for(engine: str, **overrides: Any):
    return engine_command(make_model(engine, **overrides), "served")


def trtllm_options(cmd) -> dict[str, Any]:
    return json.loads(dict(cmd.env)[TRTLLM_OPTIONS_ENV])


def test_every_api_engine_has_a_profile():
    assert set(ENGINES) == set(API_ENGINES)


@pytest.mark.parametrize("engine", ALL)
def test_profile_is_complete(engine):
    p = ENGINES[engine]
    assert p.default_image and p.base_command
    assert p.health_path.startswith("/") and p.metrics_path.startswith("/")
    assert 1024 <= p.port <= 65535, "non-privileged port, so engines may drop root"


# (engine, expected base: command and the first args)
BASE = [
    (
        "vllm",
        ("vllm", "serve"),
        ["meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "served"],
    ),
    (
        "sglang",
        ("python3", "-m", "sglang.launch_server"),
        ["--model-path", "meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "served"],
    ),
    ("tgi", ("text-generation-launcher",), ["--model-id", "meta-llama/Llama-3.1-8B-Instruct"]),
    (
        "trtllm",
        ("trtllm-serve",),
        ["meta-llama/Llama-3.1-8B-Instruct", "--served_model_name", "served"],
    ),
    (
        "llamacpp",
        ("/app/llama-server",),
        ["--hf-repo", "meta-llama/Llama-3.1-8B-Instruct", "--alias", "served"],
    ),
    ("sim", ("inferscale", "sim"), ["--model", "served", "--port", "8000"]),
]


@pytest.mark.parametrize(("engine", "command", "first"), BASE)
def test_base_command_model_and_served_name(engine, command, first):
    cmd = command_for(engine)
    assert cmd.command == command
    assert list(cmd.args[: len(first)]) == first


@pytest.mark.parametrize("engine", ALL)
def test_port_flag_matches_profile(engine):
    args = command_for(engine).args
    assert has_run(args, ["--port", str(ENGINES[engine].port)])


def test_sglang_enables_metrics():
    assert "--enable-metrics" in command_for("sglang").args


@pytest.mark.parametrize("engine", ALL)
def test_spec_args_come_last(engine):
    cmd = command_for(engine, args=["--foo", "bar"])
    assert list(cmd.args[-2:]) == ["--foo", "bar"]


@pytest.mark.parametrize("engine", ALL)
def test_defaults_add_no_optimisation_flags(engine):
    args = command_for(engine).args
    for flag in ("--quantization", "--quantize", "--kv-cache-dtype", "--speculative-config"):
        assert flag not in args


# (field override, engine, expected consecutive args, expected env) ; None args = unsupported
KV_EVENTS = '{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557","topic":"kv-events"}'
OFFLOAD_1024_BLOCKS = (
    '{"kv_connector":"OffloadingConnector","kv_connector_extra_config":{"num_cpu_blocks":1024},'
    '"kv_role":"kv_both"}'
)
OPT_TABLE: list[tuple[dict[str, Any], str, list[str] | None, dict[str, str]]] = [
    # quantisation
    ({"quantization": "awq"}, "vllm", ["--quantization", "awq"], {}),
    ({"quantization": "awq"}, "sglang", ["--quantization", "awq"], {}),
    ({"quantization": "awq"}, "tgi", ["--quantize", "awq"], {}),
    ({"quantization": "awq"}, "trtllm", None, {}),
    ({"quantization": "fp8"}, "vllm", ["--quantization", "fp8"], {}),
    ({"quantization": "bitsandbytes"}, "tgi", ["--quantize", "bitsandbytes"], {}),
    ({"quantization": "gptq"}, "sglang", ["--quantization", "gptq"], {}),
    ({"quantization": "awq"}, "llamacpp", None, {}),
    ({"quantization": "awq"}, "sim", [], {}),
    # prefix caching
    ({"prefixCaching": True}, "vllm", ["--enable-prefix-caching"], {}),
    ({"prefixCaching": False}, "vllm", ["--no-enable-prefix-caching"], {}),
    ({"prefixCaching": True}, "sglang", [], {}),
    ({"prefixCaching": False}, "sglang", ["--disable-radix-cache"], {}),
    ({"prefixCaching": True}, "tgi", [], {"PREFIX_CACHING": "1"}),
    ({"prefixCaching": False}, "tgi", [], {"PREFIX_CACHING": "0"}),
    ({"prefixCaching": True}, "llamacpp", ["--cache-prompt"], {}),
    ({"prefixCaching": False}, "llamacpp", ["--no-cache-prompt"], {}),
    ({"prefixCaching": True}, "sim", [], {}),
    # maximum model length
    ({"maxModelLen": 8192}, "vllm", ["--max-model-len", "8192"], {}),
    ({"maxModelLen": 8192}, "sglang", ["--context-length", "8192"], {}),
    (
        {"maxModelLen": 8192},
        "tgi",
        ["--max-input-tokens", "8191", "--max-total-tokens", "8192"],
        {},
    ),
    ({"maxModelLen": 8192}, "trtllm", ["--max_seq_len", "8192"], {}),
    # llama.cpp's context is shared by its slots (16 by default): each slot gets maxModelLen.
    ({"maxModelLen": 8192}, "llamacpp", ["--parallel", "16", "--ctx-size", "131072"], {}),
    ({"maxModelLen": 8192}, "sim", ["--max-model-len", "8192"], {}),
    # KV-cache dtype
    ({"kvCacheDtype": "fp8"}, "vllm", ["--kv-cache-dtype", "fp8"], {}),
    ({"kvCacheDtype": "fp8_e5m2"}, "vllm", ["--kv-cache-dtype", "fp8_e5m2"], {}),
    ({"kvCacheDtype": "fp8"}, "sglang", ["--kv-cache-dtype", "fp8_e4m3"], {}),
    ({"kvCacheDtype": "fp8_e5m2"}, "sglang", ["--kv-cache-dtype", "fp8_e5m2"], {}),
    ({"kvCacheDtype": "fp8"}, "tgi", ["--kv-cache-dtype", "fp8_e4m3fn"], {}),
    ({"kvCacheDtype": "fp8_e4m3"}, "tgi", ["--kv-cache-dtype", "fp8_e4m3fn"], {}),
    ({"kvCacheDtype": "fp8_e5m2"}, "tgi", ["--kv-cache-dtype", "fp8_e5m2"], {}),
    ({"kvCacheDtype": "fp8_e5m2"}, "trtllm", None, {}),
    ({"kvCacheDtype": "fp8"}, "llamacpp", None, {}),
    ({"kvCacheDtype": "auto"}, "llamacpp", [], {}),
    ({"kvCacheDtype": "fp8"}, "sim", [], {}),
    # GPU memory
    ({"gpuMemoryUtilization": 0.85}, "vllm", ["--gpu-memory-utilization", "0.85"], {}),
    ({"gpuMemoryUtilization": 0.85}, "sglang", ["--mem-fraction-static", "0.85"], {}),
    ({"gpuMemoryUtilization": 0.85}, "tgi", ["--cuda-memory-fraction", "0.85"], {}),
    (
        {"gpuMemoryUtilization": 0.85},
        "trtllm",
        ["--kv_cache_free_gpu_memory_fraction", "0.85"],
        {},
    ),
    ({"gpuMemoryUtilization": 0.85}, "llamacpp", None, {}),
    ({"gpuMemoryUtilization": 0.85}, "sim", [], {}),
    # KV-cache events (vLLM's option, the sim speaks it too)
    ({"kvCacheEvents": True}, "vllm", ["--kv-events-config", KV_EVENTS], {}),
    ({"kvCacheEvents": True}, "sim", ["--kv-events-config", KV_EVENTS], {}),
    ({"kvCacheEvents": False}, "vllm", [], {}),
    *(({"kvCacheEvents": True}, e, None, {}) for e in ("sglang", "tgi", "trtllm", "llamacpp")),
    # A host-memory KV tier: 2 GiB of 128 KiB tokens = 16,384 tokens = 1,024 vLLM blocks
    (
        {"kvCacheOffload": {"hostMemoryGib": 2, "kvBytesPerToken": 131072}},
        "vllm",
        ["--kv-transfer-config", OFFLOAD_1024_BLOCKS],
        {},
    ),
    ({"kvCacheOffload": {"hostMemoryGib": 2}}, "vllm", None, {}),  # blocks need the geometry
    (
        {"kvCacheOffload": {"hostMemoryGib": 2}},
        "sglang",
        ["--enable-hierarchical-cache", "--hicache-size", "2"],
        {},
    ),
    ({"kvCacheOffload": {"hostMemoryGib": 2}}, "sim", ["--host-kv-capacity-tokens", "16384"], {}),
    *(
        ({"kvCacheOffload": {"hostMemoryGib": 2}}, e, None, {})
        for e in ("tgi", "trtllm", "llamacpp")
    ),
]


@pytest.mark.parametrize(
    ("optimization", "engine", "run", "env"),
    OPT_TABLE,
    ids=[f"{e}-{next(iter(o))}={next(iter(o.values()))}" for o, e, _, _ in OPT_TABLE],
)
def test_optimisation_mapping(optimization, engine, run, env):
    spec = make_model(engine, optimization=optimization)
    if run is None:
        with pytest.raises(UnsupportedSpec) as info:
            engine_command(spec, "served")
        assert info.value.engine == engine and info.value.problems
        assert check_spec(spec, "served") == info.value.problems
        return
    cmd = engine_command(spec, "served")
    assert has_run(cmd.args, run), cmd.args
    for name, value in env.items():
        assert dict(cmd.env)[name] == value
    assert check_spec(spec, "served") == []


def test_sim_ignores_gpu_only_knobs_entirely():
    plain = command_for("sim").args
    tuned = command_for(
        "sim",
        resources={"gpus": 4},
        optimization={
            "quantization": "awq",
            "prefixCaching": False,
            "kvCacheDtype": "fp8",
            "gpuMemoryUtilization": 0.5,
            "speculativeDecoding": {"method": "eagle3", "draftModel": "hf://x/y"},
        },
    ).args
    assert plain == tuned


def test_trtllm_kv_and_prefix_options_go_through_the_options_file():
    cmd = command_for("trtllm", optimization={"prefixCaching": False, "kvCacheDtype": "fp8"})
    assert cmd.command[:2] == ("/bin/sh", "-c")
    assert 'exec trtllm-serve "$@"' in cmd.command[2]
    assert has_run(cmd.args, ["--extra_llm_api_options", TRTLLM_OPTIONS_FILE])
    assert trtllm_options(cmd) == {"kv_cache_config": {"dtype": "fp8", "enable_block_reuse": False}}


def test_trtllm_without_options_runs_trtllm_serve_directly():
    cmd = command_for("trtllm", optimization={"maxModelLen": 4096})
    assert cmd.command == ("trtllm-serve",)
    assert "--extra_llm_api_options" not in cmd.args
    assert cmd.env == ()


# --- parallelism ----------------------------------------------------------------------------

LAYOUTS = [
    (0, None, (0, 1, 1)),
    (1, None, (1, 1, 1)),
    (4, None, (4, 4, 1)),
    (4, 2, (4, 2, 2)),
    (8, 1, (8, 1, 8)),
]


@pytest.mark.parametrize(("gpus", "tp", "expected"), LAYOUTS)
def test_layout(gpus, tp, expected):
    spec = make_model(resources={"gpus": gpus}, optimization={"tensorParallelSize": tp})
    lay = layout(spec)
    assert (lay.gpus, lay.tp, lay.dp) == expected


TP_TABLE = [
    ("vllm", ["--tensor-parallel-size", "4"]),
    ("sglang", ["--tp-size", "4"]),
    ("tgi", ["--num-shard", "4"]),
    ("trtllm", ["--tp_size", "4"]),
]


@pytest.mark.parametrize(("engine", "run"), TP_TABLE)
def test_tensor_parallelism_defaults_to_gpu_count(engine, run):
    assert has_run(command_for(engine, resources={"gpus": 4}).args, run)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm"])
def test_one_gpu_passes_no_parallelism_flag(engine):
    args = command_for(engine).args
    assert not any("tp" in a or "tensor-parallel" in a or "shard" in a for a in args)


DP_TABLE = [
    ("vllm", ["--data-parallel-size", "2"]),
    ("sglang", ["--dp-size", "2"]),
    ("tgi", None),
    ("trtllm", None),
    ("llamacpp", None),
    ("sim", []),
]


@pytest.mark.parametrize(("engine", "run"), DP_TABLE)
def test_spare_gpus_become_data_parallel_copies(engine, run):
    overrides = {"resources": {"gpus": 4}, "optimization": {"tensorParallelSize": 2}}
    if run is None:
        with pytest.raises(UnsupportedSpec, match="must equal resources.gpus"):
            command_for(engine, **overrides)
    else:
        assert has_run(command_for(engine, **overrides).args, run)


# --- speculative decoding -------------------------------------------------------------------

SPEC = {
    "draft": {
        "method": "draft",
        "draftModel": "hf://meta-llama/Llama-3.2-1B",
        "numSpeculativeTokens": 4,
    },
    "ngram": {"method": "ngram", "numSpeculativeTokens": 4},
    "eagle": {
        "method": "eagle",
        "draftModel": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
        "numSpeculativeTokens": 4,
    },
    "eagle3": {
        "method": "eagle3",
        "draftModel": "hf://yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
        "numSpeculativeTokens": 4,
    },
}


def _vllm_config(args):
    return json.loads(args[args.index("--speculative-config") + 1])


SPEC_TABLE = [
    (
        "vllm",
        "draft",
        lambda c: (
            _vllm_config(c.args)
            == {"model": "meta-llama/Llama-3.2-1B", "num_speculative_tokens": 4}
        ),
    ),
    (
        "vllm",
        "ngram",
        lambda c: _vllm_config(c.args) == {"method": "ngram", "num_speculative_tokens": 4},
    ),
    (
        "vllm",
        "eagle",
        lambda c: (
            _vllm_config(c.args)
            == {
                "method": "eagle",
                "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
                "num_speculative_tokens": 4,
            }
        ),
    ),
    ("vllm", "eagle3", lambda c: _vllm_config(c.args)["method"] == "eagle3"),
    (
        "sglang",
        "draft",
        lambda c: has_run(
            c.args,
            [
                "--speculative-algorithm",
                "STANDALONE",
                "--speculative-draft-model-path",
                "meta-llama/Llama-3.2-1B",
            ],
        ),
    ),
    (
        "sglang",
        "ngram",
        lambda c: has_run(
            c.args, ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4"]
        ),
    ),
    (
        "sglang",
        "eagle",
        lambda c: has_run(
            c.args,
            [
                "--speculative-num-steps",
                "4",
                "--speculative-eagle-topk",
                "1",
                "--speculative-num-draft-tokens",
                "5",
            ],
        ),
    ),
    ("sglang", "eagle3", lambda c: has_run(c.args, ["--speculative-algorithm", "EAGLE3"])),
    ("tgi", "draft", None),
    ("tgi", "ngram", lambda c: has_run(c.args, ["--speculate", "4"])),
    ("tgi", "eagle", None),
    ("tgi", "eagle3", None),
    (
        "trtllm",
        "draft",
        lambda c: (
            trtllm_options(c)
            == {
                "disable_overlap_scheduler": True,
                "speculative_config": {
                    "decoding_type": "DraftTarget",
                    "max_draft_len": 4,
                    "speculative_model": "meta-llama/Llama-3.2-1B",
                },
            }
        ),
    ),
    (
        "trtllm",
        "ngram",
        lambda c: (
            trtllm_options(c)["speculative_config"]
            == {"decoding_type": "NGram", "max_draft_len": 4}
        ),
    ),
    ("trtllm", "eagle", None),
    (
        "trtllm",
        "eagle3",
        lambda c: trtllm_options(c)["speculative_config"]["decoding_type"] == "Eagle3",
    ),
    ("llamacpp", "draft", None),
    ("llamacpp", "ngram", None),
    ("sim", "eagle3", lambda c: not any("specul" in a for a in c.args)),
]


@pytest.mark.parametrize(
    ("engine", "method", "check"), SPEC_TABLE, ids=[f"{e}-{m}" for e, m, _ in SPEC_TABLE]
)
def test_speculative_decoding(engine, method, check):
    overrides = {"optimization": {"speculativeDecoding": SPEC[method]}}
    if check is None:
        with pytest.raises(UnsupportedSpec, match=method):
            command_for(engine, **overrides)
    else:
        assert check(command_for(engine, **overrides))


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_draft_model_from_object_storage_is_refused(engine):
    sd = {"method": "draft", "draftModel": "s3://bucket/draft"}
    with pytest.raises(UnsupportedSpec, match="draftModel must be a hub name"):
        command_for(engine, optimization={"speculativeDecoding": sd})


def test_every_problem_is_reported_at_once():
    spec = make_model(
        "trtllm",
        model="s3://bucket/llama",
        optimization={
            "quantization": "awq",
            "kvCacheDtype": "fp8_e5m2",
            "speculativeDecoding": SPEC["eagle"],
        },
    )
    with pytest.raises(UnsupportedSpec) as info:
        engine_command(spec, "served")
    assert len(info.value.problems) == 4
    assert isinstance(info.value, SpecError)
    assert str(info.value).startswith("engine trtllm cannot serve this spec: ")


# --- model sources --------------------------------------------------------------------------

SOURCES = [
    ("hf://org/name", ("hf", "org/name", None)),
    ("hf://org/name/", ("hf", "org/name", None)),
    ("s3://bucket/path/model", ("s3", "s3://bucket/path/model", None)),
    ("pvc://weights/llama/8b", ("pvc", f"{MODEL_SOURCE_MOUNT}/llama/8b", "weights")),
    ("pvc://weights", ("pvc", MODEL_SOURCE_MOUNT, "weights")),
]


@pytest.mark.parametrize(("model", "expected"), SOURCES)
def test_parse_model_source(model, expected):
    src = parse_model_source(model)
    assert (src.scheme, src.path, src.claim) == expected


def test_empty_source_is_a_spec_error():
    with pytest.raises(SpecError, match="names no model"):
        parse_model_source("hf:///")


S3_TABLE = [
    ("vllm", ["s3://bucket/m", "--served-model-name"]),
    ("sglang", None),
    ("tgi", None),
    ("trtllm", None),
    ("llamacpp", None),
    ("sim", []),
]


@pytest.mark.parametrize(("engine", "run"), S3_TABLE)
def test_s3_sources(engine, run):
    if run is None:
        with pytest.raises(UnsupportedSpec, match="cannot load s3:// models"):
            command_for(engine, model="s3://bucket/m")
        return
    args = command_for(engine, model="s3://bucket/m").args
    assert has_run(args, run)
    if engine == "vllm":
        assert has_run(args, ["--load-format", "runai_streamer"])


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm", "llamacpp"])
def test_pvc_source_is_a_local_path(engine):
    args = command_for(engine, model="pvc://weights/llama").args
    assert f"{MODEL_SOURCE_MOUNT}/llama" in args


# --- llama.cpp -----------------------------------------------------------------------------


def test_llamacpp_turns_metrics_on_and_the_web_ui_off():
    args = command_for("llamacpp").args
    assert "--metrics" in args and "--no-webui" in args


def test_llamacpp_loads_a_gguf_file_from_a_claim():
    cmd = command_for("llamacpp", model="pvc://gguf/tiny.gguf", resources={"gpus": 0})
    assert has_run(cmd.args, ["--model", f"{MODEL_SOURCE_MOUNT}/tiny.gguf"])
    assert "--hf-repo" not in cmd.args and "--n-gpu-layers" not in cmd.args
    assert cmd.env == ()


def test_llamacpp_downloads_hub_files_into_the_model_cache():
    cmd = command_for("llamacpp", model="hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")
    assert has_run(cmd.args, ["--hf-repo", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"])
    assert dict(cmd.env)["LLAMA_CACHE"] == LLAMACPP_CACHE


def test_llamacpp_slots_follow_the_autoscaling_target():
    args = command_for(
        "llamacpp",
        autoscaling={"targetInFlightPerReplica": 3},
        optimization={"maxModelLen": 512},
    ).args
    assert has_run(args, ["--parallel", "3", "--ctx-size", "1536"])


def test_llamacpp_without_max_model_len_keeps_the_models_context():
    assert "--ctx-size" not in command_for("llamacpp").args


@pytest.mark.parametrize(
    ("cpu", "threads"),
    [(4, "4"), ("4", "4"), ("1500m", "1"), ("250m", "1"), ("2.5", "2"), ("1k", None), (None, None)],
)
def test_llamacpp_threads_are_the_containers_whole_cpus(cpu, threads):
    resources: dict[str, Any] = {"gpus": 0}
    if cpu is not None:
        resources["cpu"] = cpu
    args = command_for("llamacpp", resources=resources).args
    if threads is None:
        assert "--threads" not in args
    else:
        assert has_run(args, ["--threads", threads])


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("x", None), ("NaN", None)])
def test_whole_cpus_of_odd_quantities(value, expected):
    assert whole_cpus(value) == expected


def test_llamacpp_offloads_every_layer_when_given_gpus():
    assert has_run(command_for("llamacpp", resources={"gpus": 1}).args, ["--n-gpu-layers", "999"])


# --- the sim: the args must parse with the sim's own CLI ------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"optimization": {"maxModelLen": 4096}},
        {"serving": {"terminationGracePeriodSeconds": 7}},
    ],
)
def test_sim_args_parse_with_the_real_sim_cli(overrides, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("INFERSCALE_SIM_")]:
        monkeypatch.delenv(key)
    spec = make_model("sim", **overrides)
    cmd = engine_command(spec, "llama-sim")
    assert cmd.command == ("inferscale", "sim")
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers(dest="command"))
    settings = sim_cli.settings_from_args(parser.parse_args(["sim", *cmd.args]))
    assert settings.model == "llama-sim"
    assert settings.port == ENGINES["sim"].port
    assert settings.shutdown_grace_seconds == spec.serving.termination_grace_period_seconds
    if spec.optimization.max_model_len:
        assert settings.engine_params().max_model_len == spec.optimization.max_model_len
