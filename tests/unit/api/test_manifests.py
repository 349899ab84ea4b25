"""Examples parse; every bad manifest is refused with an error naming the field and the rule."""

import pytest

from inferscale.api.v1alpha1 import InferenceModel
from inferscale.api.validation import parse_object
from inferscale.errors import SpecError
from tests.manifests import example_docs, invalid_manifests

EXAMPLES = example_docs()
INVALID = invalid_manifests()


def test_there_are_examples_of_every_kind():
    kinds = {doc["kind"] for _, doc in EXAMPLES}
    assert kinds == {"InferenceModel", "InferenceRoute", "InferenceProvider", "InferenceClient"}
    assert any(
        doc["spec"]["engine"] == "sim" for _, doc in EXAMPLES if doc["kind"] == "InferenceModel"
    )


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[f"{n}:{d['kind']}" for n, d in EXAMPLES])
def test_example_is_valid_and_round_trips(name, doc):
    parsed = parse_object(doc)
    assert parsed.metadata.name == doc["metadata"]["name"]
    # What the operator writes back must parse to the same object.
    assert parse_object(parsed.to_wire()) == parsed
    # Every key the user wrote survives (nothing silently dropped).
    assert _keys(doc["spec"]) <= _keys(parsed.to_wire()["spec"])


def _keys(node, prefix=""):
    if isinstance(node, dict):
        out = set()
        for key, value in node.items():
            out.add(prefix + key)
            out |= _keys(value, prefix + key + ".")
        return out
    if isinstance(node, list):
        return set().union(*(_keys(v, prefix) for v in node)) if node else set()
    return set()


def test_there_are_invalid_cases_for_every_required_rule():
    names = {m.name for m in INVALID}
    required = {
        "min-greater-than-max",
        "negative-gpus",
        "fractional-gpus",
        "unknown-engine",
        "backend-neither",
        "backend-both",
        "provider-without-key",
        "unknown-field",
    }
    assert required <= names
    assert all(m.expect for m in INVALID), "every invalid manifest says what its error contains"


@pytest.mark.parametrize("case", INVALID, ids=[m.name for m in INVALID])
def test_invalid_manifest_is_refused_with_the_field_named(case):
    with pytest.raises(SpecError) as error:
        parse_object(case.doc)
    for text in case.expect:
        assert text in str(error.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a mapping"),
        ({"apiVersion": "v1", "kind": "Pod"}, "apiVersion"),
        ({"apiVersion": "inferscale.io/v1alpha1", "kind": "Nope"}, "kind: expected one of"),
        (
            {"apiVersion": "inferscale.io/v1alpha1", "kind": "InferenceModel"},
            "metadata: Field required",
        ),
        (
            {
                "apiVersion": "inferscale.io/v1alpha1",
                "kind": "InferenceModel",
                "metadata": {"name": "x"},
                "spec": "oops",
            },
            "spec: Input should be",
        ),
    ],
)
def test_malformed_objects_get_clear_errors(doc, message):
    with pytest.raises(SpecError, match=message):
        parse_object(doc)


def test_defaults_fill_a_minimal_model():
    model = InferenceModel.model_validate(
        {
            "apiVersion": "inferscale.io/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "m"},
            "spec": {"model": "hf://org/m", "engine": "vllm"},
        }
    )
    assert model.spec.resources.gpus == 1
    assert model.spec.resources.gpu_resource_name == "nvidia.com/gpu"
    assert (model.spec.min_replicas, model.spec.max_replicas) == (1, 4)
    assert model.spec.autoscaling.enabled
    assert model.spec.optimization.tensor_parallel_size is None
    wire = model.to_wire()
    assert wire["spec"]["autoscaling"]["targetInFlightPerReplica"] == 16
    assert "servedName" not in wire["spec"]


@pytest.mark.parametrize("gpus", ["1", True, 2.0])
def test_gpu_count_is_strictly_an_integer(gpus):
    """Strict mode: YAML strings, booleans and floats are not silently coerced."""
    with pytest.raises(SpecError, match="spec.resources.gpus"):
        parse_object(
            {
                "apiVersion": "inferscale.io/v1alpha1",
                "kind": "InferenceModel",
                "metadata": {"name": "m"},
                "spec": {"model": "hf://org/m", "engine": "vllm", "resources": {"gpus": gpus}},
            }
        )


def test_quantities_accept_numbers_and_strings():
    base = {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m"},
    }
    for cpu in (4, "500m", "2"):
        parse_object(
            {**base, "spec": {"model": "hf://o/m", "engine": "sim", "resources": {"cpu": cpu}}}
        )
    with pytest.raises(SpecError, match="spec.resources.cpu"):
        parse_object(
            {**base, "spec": {"model": "hf://o/m", "engine": "sim", "resources": {"cpu": "four"}}}
        )


def test_prices_accept_integers():
    parse_object(
        {
            "apiVersion": "inferscale.io/v1alpha1",
            "kind": "InferenceProvider",
            "metadata": {"name": "p"},
            "spec": {
                "type": "anthropic",
                "apiKeySecretRef": {"name": "k", "key": "api-key"},
                "models": [
                    {
                        "name": "claude",
                        "inputPricePerMillionTokens": 3,
                        "outputPricePerMillionTokens": 15,
                    }
                ],
            },
        }
    )
