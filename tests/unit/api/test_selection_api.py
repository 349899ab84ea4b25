"""InferenceRoute's selection: what the models (and the CRD's CEL rules) accept and refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inferscale.api.v1alpha1.inference_route import InferenceRouteSpec

SMALL = {"model": "small", "outputPricePerMillionTokens": 0.6}
BIG = {"model": "big", "outputPricePerMillionTokens": 15, "tier": 1}


def test_weighted_selection_is_an_ab_split():
    spec = InferenceRouteSpec.model_validate(
        {"selection": {"policy": "weighted", "candidates": [{**SMALL, "weight": 9}, BIG]}}
    )
    assert spec.selection is not None
    assert [c.weight for c in spec.selection.candidates] == [9, 1]


def test_a_route_with_a_selection_and_no_backends():
    spec = InferenceRouteSpec.model_validate({"selection": {"candidates": [SMALL, BIG]}})
    assert spec.backends == [] and spec.selection is not None
    assert spec.selection.policy == "cost" and spec.selection.strong_share == 0.4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "backends need at least one primary"),
        (
            {"backends": [{"inferenceModel": "m"}], "selection": {"candidates": [SMALL, BIG]}},
            "either backends or a selection",
        ),
        ({"selection": {"candidates": [SMALL]}}, "at least 2 items"),
        ({"selection": {"candidates": [SMALL, SMALL]}}, "distinct models"),
        ({"selection": {"candidates": [SMALL, {**BIG, "tier": -1}]}}, "greater than or equal"),
        ({"selection": {"candidates": [SMALL, {**BIG, "model": "bad name"}]}}, "pattern"),
        ({"selection": {"candidates": [SMALL, BIG], "strongShare": 1.5}}, "less than or equal"),
        ({"selection": {"candidates": [SMALL, BIG], "policy": "cheapest"}}, "'cost', 'latency' or"),
        ({"selection": {"candidates": [SMALL, {"tier": 1}]}}, "model"),
        (
            {
                "selection": {
                    "policy": "weighted",
                    "candidates": [{**SMALL, "weight": 0}, {**BIG, "weight": 0}],
                }
            },
            "positive weight",
        ),
    ],
)
def test_malformed_selections_are_refused(spec: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        InferenceRouteSpec.model_validate(spec)
