"""LoRA adapters on the engines: the flags that switch LoRA on, refusals, golden Deployments."""

from __future__ import annotations

import argparse

import pytest

from inferscale.api.v1alpha1.inference_model import ENGINES as API_ENGINES
from inferscale.cli import sim as sim_cli
from inferscale.reconcile.deployment import build_deployment
from inferscale.reconcile.engines import (
    ENGINES,
    VLLM_RUNTIME_LORA_ENV,
    UnsupportedSpec,
    check_spec,
    engine_command,
    max_adapter_rank,
)
from inferscale.reconcile.settings import ReconcileSettings
from tests.factories import make_model
from tests.unit.reconcile.conftest import assert_golden, assert_valid

TWO = [
    {"name": "sql", "source": "hf://org/sql-lora", "rank": 8},
    {"name": "chat", "source": "pvc://loras/chat", "rank": 64},
]
SERVING = [e for e in API_ENGINES if ENGINES[e].serves_adapters]
REFUSING = [e for e in API_ENGINES if not ENGINES[e].serves_adapters]


def has_run(args, run):
    n = len(run)
    return any(list(args[i : i + n]) == run for i in range(len(args) - n + 1))


def test_vllm_switches_lora_on_with_runtime_loading():
    cmd = engine_command(make_model("vllm", adapters=TWO, adapterSlots=3), "base")
    assert has_run(cmd.args, ["--enable-lora", "--max-loras", "3", "--max-lora-rank", "64"])
    assert dict(cmd.env)[VLLM_RUNTIME_LORA_ENV] == "True"
    # Adapters are loaded at run time, so their names and paths never reach the pod template.
    assert not any("sql" in a or "lora-modules" in a for a in cmd.args)


def test_sglang_lora_flags_without_paths():
    cmd = engine_command(make_model("sglang", adapters=TWO), "base")
    assert has_run(cmd.args, ["--enable-lora", "--max-loras-per-batch", "4"])
    assert has_run(cmd.args, ["--max-lora-rank", "64", "--lora-target-modules", "all"])
    assert "--lora-paths" not in cmd.args
    assert VLLM_RUNTIME_LORA_ENV not in dict(cmd.env)


def test_sim_max_loras_parses_with_the_real_sim_cli(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("INFERSCALE_SIM_")]:
        monkeypatch.delenv(key)
    cmd = engine_command(make_model("sim", adapters=TWO, adapterSlots=2), "base")
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers(dest="command"))
    settings = sim_cli.settings_from_args(parser.parse_args(["sim", *cmd.args]))
    assert settings.engine_params().max_loras == 2


@pytest.mark.parametrize("engine", list(API_ENGINES))
def test_no_adapters_no_lora_flags(engine):
    cmd = engine_command(make_model(engine), "base")
    assert not any("lora" in a for a in cmd.args)
    assert VLLM_RUNTIME_LORA_ENV not in dict(cmd.env)


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        ([None], 16),
        ([8], 8),
        ([1], 8),
        ([8, None], 16),
        ([20], 32),
        ([300], 320),
        ([321], 512),
        ([512, 8], 512),
    ],
)
def test_max_lora_rank_is_the_largest_rounded_up_to_a_vllm_rank(ranks, expected):
    adapters = [
        {"name": f"a{i}", "source": "hf://o/a"} | ({} if r is None else {"rank": r})
        for i, r in enumerate(ranks)
    ]
    assert max_adapter_rank(make_model("vllm", adapters=adapters)) == expected


@pytest.mark.parametrize("engine", REFUSING)
def test_other_engines_refuse_adapters_with_a_clear_reason(engine):
    spec = make_model(engine, adapters=TWO)
    problems = check_spec(spec, "base")
    assert problems == [f"{engine} cannot serve LoRA adapters (spec.adapters); use vllm or sglang"]
    with pytest.raises(UnsupportedSpec):
        build_deployment("m", "default", spec, ReconcileSettings())


@pytest.mark.parametrize("engine", SERVING)
def test_adapter_named_like_the_object_is_refused(engine):
    spec = make_model(engine, adapters=[{"name": "m", "source": "hf://o/a"}])
    assert check_spec(spec, "m") == [
        "adapter 'm' has the model's own served name; rename the adapter"
    ]
    assert check_spec(spec, "other") == []


def test_vllm_lora_with_data_parallel_copies_is_refused():
    spec = make_model(
        "vllm", adapters=TWO, resources={"gpus": 2}, optimization={"tensorParallelSize": 1}
    )
    (problem,) = check_spec(spec, "base")
    assert "one model copy per pod" in problem


@pytest.mark.parametrize("engine", SERVING)
def test_golden_deployment_with_adapters(engine):
    dep = build_deployment(
        f"lora-{engine}", "models", make_model(engine, adapters=TWO), ReconcileSettings()
    )
    assert_valid(dep)
    assert_golden(f"adapters-{engine}", [dep])


def test_adding_an_adapter_of_no_larger_rank_leaves_the_pod_template_alone():
    def template(adapters):
        spec = make_model("vllm", adapters=adapters)
        return build_deployment("m", "d", spec, ReconcileSettings())["spec"]["template"]

    assert template(TWO[1:]) == template(TWO)
    assert template(TWO[:1]) != template(TWO)  # a larger rank resizes the engine's buffers
