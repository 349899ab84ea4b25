"""The sim's start-up phases: the presets' figures, the cache's manifest, the preload."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from inferscale.cli.sim import register, run_preload, settings_from_args
from inferscale.sim.presets import PRESETS
from inferscale.sim.settings import SimSettings
from inferscale.sim.startup import (
    MANIFEST,
    STARTUP_PROFILES,
    Manifest,
    plan_startup,
    profile_for,
    weight_source,
)
from inferscale.sim.weights import preload, read_manifest

H100 = "llama-3.1-8b-h100"


@pytest.mark.parametrize("name", ["llama-3.1-8b-h100", "llama-3.1-8b-l4", "zero"])
def test_each_presets_cold_start_is_its_profiles_network_total(name):
    # The preset's startup_delay_seconds is derived from the profile's phases (docs/sim.md),
    # in whole seconds: the two cannot disagree, and the rounding moves it by under half a
    # second.
    profile = STARTUP_PROFILES[name]
    assert PRESETS[name].startup_delay_seconds == profile.cold_start_seconds()
    assert PRESETS[name].startup_delay_seconds == pytest.approx(profile.total("network"), abs=0.5)


def test_the_presets_quoted_cold_starts():
    # The figures docs/sim.md and the whatif defaults quote.
    assert PRESETS["llama-3.1-8b-h100"].startup_delay_seconds == 60.0
    assert PRESETS["llama-3.1-8b-l4"].startup_delay_seconds == 90.0
    assert PRESETS["zero"].startup_delay_seconds == 0.0


def test_h100_warm_cache_cold_start_is_at_most_half_the_network_one():
    network = plan_startup(profile_for(H100), PRESETS[H100].startup_delay_seconds, "network")
    cache = plan_startup(profile_for(H100), PRESETS[H100].startup_delay_seconds, "cache")
    assert network.total == pytest.approx(60.0)
    assert cache.total <= 0.5 * network.total
    # The saving is the download: image pull and warm-up are the same from either source.
    assert dict(cache.phases)["warmup"] == dict(network.phases)["warmup"]
    assert dict(network.phases)["weight_load"] - dict(cache.phases)["weight_load"] == (
        pytest.approx(network.total - cache.total)
    )
    assert cache.total == pytest.approx(28.0, abs=0.1)  # the figure docs/sim.md quotes


def test_a_short_configured_start_keeps_the_presets_proportions():
    full = plan_startup(profile_for(H100), 60.0, "cache")
    short = plan_startup(profile_for(H100), 6.0, "cache")
    assert short.total == pytest.approx(full.total / 10)
    assert "weights from the cache" in short.describe()


def test_the_zero_preset_still_honours_a_configured_delay():
    plan = plan_startup(profile_for("zero"), 2.0, "cache")
    assert plan.total == 2.0
    assert plan_startup(profile_for("zero"), 0.0, "network").total == 0.0


def test_the_weight_source_needs_this_model_and_preset():
    mine = Manifest("m", H100, 5)
    assert weight_source(mine, "m", H100) == "cache"
    assert weight_source(mine, "other", H100) == "network"
    assert weight_source(mine, "m", "zero") == "network"
    assert weight_source(None, "m", H100) == "network"


@pytest.mark.parametrize(
    "content",
    ["", "not json", "[]", '{"model": "m"}', '{"model": "m", "preset": "p", "bytes": -1}'],
)
def test_a_garbled_manifest_is_an_empty_cache(tmp_path: Path, content: str):
    (tmp_path / MANIFEST).parent.mkdir(parents=True)
    (tmp_path / MANIFEST).write_text(content)
    assert read_manifest(tmp_path) is None
    assert read_manifest(tmp_path / "missing") is None


def test_preload_sleeps_the_download_then_writes_the_manifest_last(tmp_path: Path):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        assert read_manifest(tmp_path) is None  # nothing claims to be cached mid-download
        slept.append(seconds)

    manifest = asyncio.run(preload(tmp_path, "m", H100, 3.2, sleep))
    assert slept == [3.2]
    assert read_manifest(tmp_path) == manifest == Manifest("m", H100, 16_060_000_000)


def test_preload_into_something_that_is_not_a_directory_fails_before_downloading(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(OSError):
        asyncio.run(preload(blocker, "m", H100, 1.0, sleep))
    assert slept == []


def _args(*argv: str) -> SimSettings:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return settings_from_args(parser.parse_args(["sim", *argv]))


def test_the_preload_command_reports_its_bytes(tmp_path: Path, capsys):
    report = tmp_path / "result"
    settings = _args(
        "--model", "m", "--preset", H100, "--startup-delay-seconds", "0",
        "--weights-cache", str(tmp_path / "cache"), "--preload", "--preload-report", str(report),
    )  # fmt: skip
    assert run_preload(settings) == 0
    assert json.loads(report.read_text()) == {"bytes": 16_060_000_000}
    assert settings.startup_plan(read_manifest(tmp_path / "cache")).source == "cache"
    assert "cached" in capsys.readouterr().out


def test_the_preload_command_fails_with_a_reason_on_a_bad_cache(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    settings = _args(
        "--model", "m", "--startup-delay-seconds", "0",
        "--weights-cache", str(tmp_path / "file"), "--preload",
    )  # fmt: skip
    assert run_preload(settings) == 1
    assert "cannot fill the weight cache" in capsys.readouterr().err


def test_preload_without_a_cache_is_refused():
    with pytest.raises(ValueError, match="preload needs weights_cache"):
        SimSettings(preload=True)
