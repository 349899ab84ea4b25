"""spec.adapters: LoRA adapters on an InferenceModel, as pydantic and the CRD check them."""

import pytest

from inferscale.api.crdgen import build_all
from inferscale.api.v1alpha1.inference_model import MAX_ADAPTERS
from inferscale.api.validation import parse_object
from inferscale.errors import SpecError


def model(**spec):
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m"},
        "spec": {"model": "hf://org/base", "engine": "vllm", **spec},
    }


def adapter(name="sql", source="hf://org/sql-lora", **extra):
    return {"name": name, "source": source, **extra}


def test_adapters_parse_with_defaults():
    parsed = parse_object(
        model(adapters=[adapter(), adapter("chat", "pvc://loras/chat", rank=64)])
    ).spec
    assert [(a.name, a.source, a.rank) for a in parsed.adapters] == [
        ("sql", "hf://org/sql-lora", None),
        ("chat", "pvc://loras/chat", 64),
    ]
    assert parsed.adapter_slots == 4


def test_no_adapters_by_default():
    assert parse_object(model()).spec.adapters == []


@pytest.mark.parametrize(
    ("adapters", "needle"),
    [
        ([adapter(), adapter(source="hf://org/other")], "unique names (repeated: sql)"),
        ([adapter(name="bad name")], "adapters.0.name"),
        ([adapter(name="")], "adapters.0.name"),
        ([adapter(source="http://x/y")], "adapters.0.source"),
        ([adapter(source="hf://")], "adapters.0.source"),
        ([adapter(rank=0)], "adapters.0.rank"),
        ([adapter(rank=513)], "adapters.0.rank"),
        ([adapter(extra="x")], "adapters.0.extra"),
        ([adapter(str(i)) for i in range(MAX_ADAPTERS + 1)], "adapters"),
    ],
)
def test_bad_adapters_are_refused(adapters, needle):
    with pytest.raises(SpecError, match="adapters") as error:
        parse_object(model(adapters=adapters))
    assert needle in str(error.value)


def test_adapter_named_like_the_served_name_is_refused():
    with pytest.raises(SpecError, match="adapters\\[\\]\\.name must differ from servedName"):
        parse_object(model(servedName="base", adapters=[adapter("base")]))


@pytest.mark.parametrize("slots", [0, MAX_ADAPTERS + 1, "4"])
def test_adapter_slots_bounds(slots):
    with pytest.raises(SpecError, match="adapterSlots"):
        parse_object(model(adapterSlots=slots))


def test_crd_keys_adapters_by_name_and_carries_the_served_name_rule():
    crd = next(c for c in build_all() if c["spec"]["names"]["kind"] == "InferenceModel")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    adapters = spec["properties"]["adapters"]
    assert adapters["x-kubernetes-list-type"] == "map"
    assert adapters["x-kubernetes-list-map-keys"] == ["name"]
    assert adapters["maxItems"] == MAX_ADAPTERS
    assert set(adapters["items"]["required"]) == {"name", "source"}
    rules = {r["message"]: r for r in spec["x-kubernetes-validations"]}
    assert rules["adapters[].name must differ from servedName"]["fieldPath"] == ".adapters"
