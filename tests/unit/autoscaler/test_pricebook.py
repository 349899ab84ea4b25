"""Where a model's accelerator-hour price comes from: its spec, the operator's settings by node
label, by GPU resource name, the default; and the operator's refusal of malformed prices."""

from __future__ import annotations

import re

import pytest

from inferscale.autoscaler.pricebook import (
    PRICE_KEY_PATTERN,
    PriceBook,
    accelerator_hour_price,
    price_key_problem,
)
from inferscale.cli.main import main
from inferscale.config import AutoscalerSettings
from tests.factories import make_model

BOOK = PriceBook(
    {
        "nvidia.com/gpu": 3.0,
        "amd.com/gpu": 2.5,
        "nvidia.com/gpu.product=NVIDIA-L4": 0.8,
        "pool=cheap": 0.5,
        "pool=cpu": 0.2,
    },
    default=4.0,
)


def model(gpus: int = 1, resource: str = "nvidia.com/gpu", selector=None, own=None):
    autoscaling = {} if own is None else {"acceleratorHourPrice": own}
    return make_model(
        "sim",
        resources={"gpus": gpus, "gpuResourceName": resource},
        scheduling={"nodeSelector": selector or {}},
        autoscaling=autoscaling,
    )


@pytest.mark.parametrize(
    ("spec", "price", "source"),
    [
        (model(own=9.0, selector={"pool": "cheap"}), 9.0, "spec.autoscaling.acceleratorHourPrice"),
        (
            model(selector={"nvidia.com/gpu.product": "NVIDIA-L4"}),
            0.8,
            "operator setting autoscaler.acceleratorHourPrices[nvidia.com/gpu.product=NVIDIA-L4]",
        ),
        # Two priced labels: the lower (more replicas stand, the safe side).
        (
            model(selector={"nvidia.com/gpu.product": "NVIDIA-L4", "pool": "cheap"}),
            0.5,
            "autoscaler.acceleratorHourPrices[pool=cheap]",
        ),
        (model(), 3.0, "autoscaler.acceleratorHourPrices[nvidia.com/gpu]"),
        (model(resource="amd.com/gpu"), 2.5, "autoscaler.acceleratorHourPrices[amd.com/gpu]"),
        (model(resource="intel.com/gpu"), 4.0, "autoscaler.defaultAcceleratorHourPrice"),
        (model(selector={"pool": "other"}), 3.0, "[nvidia.com/gpu]"),
        # No GPUs: a GPU price does not describe the replica; a node pool's does.
        (model(gpus=0), None, "a replica without GPUs"),
        (model(gpus=0, selector={"pool": "cpu"}), 0.2, "[pool=cpu]"),
    ],
)
def test_the_most_specific_source_prices_a_model(spec, price, source):
    found = accelerator_hour_price(spec, BOOK)
    assert found.price == price and source in found.source


def test_an_empty_book_prices_only_from_the_spec():
    assert accelerator_hour_price(model(own=1.5), PriceBook()).price == 1.5
    none = accelerator_hour_price(model(), PriceBook())
    assert none.price is None
    assert "no nvidia.com/gpu or nodeSelector label=value key" in none.source


@pytest.mark.parametrize(
    "key",
    [
        "nvidia.com/gpu",
        "amd.com/gpu",
        "gpu",
        "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
        "cloud.google.com/gke-accelerator=nvidia-l4",
        "pool=",
    ],
)
def test_good_keys(key):
    assert price_key_problem(key) is None
    assert re.match(PRICE_KEY_PATTERN, key)  # the chart's schema agrees


@pytest.mark.parametrize(
    "key", ["", "nvidia.com/gpu ", "=x", "a==b", "Nvidia.COM/gpu", "a/b/c", "pool=two words"]
)
def test_malformed_keys_name_the_key(key):
    problem = price_key_problem(key)
    assert problem is not None and repr(key) in problem
    assert not re.match(PRICE_KEY_PATTERN, key)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"accelerator_hour_prices": {"nvidia.com/gpu ": 3}}, "neither a GPU resource name"),
        ({"accelerator_hour_prices": {"nvidia.com/gpu": -3}}, "greater than 0"),
        ({"accelerator_hour_prices": {"nvidia.com/gpu": float("nan")}}, "finite number"),
        ({"accelerator_hour_prices": {"nvidia.com/gpu": 5e6}}, "less than or equal to 1000000"),
        ({"default_accelerator_hour_price": 0}, "greater than 0"),
        ({"default_accelerator_hour_price": float("inf")}, "finite number"),
    ],
)
def test_the_settings_refuse_absurd_or_malformed_prices(settings, names):
    with pytest.raises(ValueError, match=names):
        AutoscalerSettings(**settings)


def test_the_settings_hand_the_pure_pricing_a_book():
    settings = AutoscalerSettings(
        accelerator_hour_prices={"nvidia.com/gpu": 3}, default_accelerator_hour_price=2
    )
    assert settings.price_book() == PriceBook({"nvidia.com/gpu": 3.0}, 2.0)


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("INFERSCALE_AUTOSCALER__ACCELERATOR_HOUR_PRICES", '{"nvidia.com/gpu": -1}', "greater"),
        ("INFERSCALE_AUTOSCALER__ACCELERATOR_HOUR_PRICES", "{not json", "autoscaler"),
        ("INFERSCALE_AUTOSCALER__DEFAULT_ACCELERATOR_HOUR_PRICE", "3 dollars", "valid number"),
    ],
)
def test_the_operator_refuses_to_start_on_a_bad_price_with_one_clear_line(
    variable, value, names, monkeypatch, capsys
):
    # Exit 2 with the setting named, before any cluster call, and no traceback.
    monkeypatch.setenv(variable, value)
    assert main(["operator", "--no-leader-election", "--kubeconfig", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "inferscale operator: invalid settings" in err and names in err
