"""Property-based checks of the replica rules: accepted exactly when the rules say so."""

from hypothesis import given
from hypothesis import strategies as st

from inferscale.api.validation import parse_object
from inferscale.errors import SpecError

counts = st.integers(min_value=-2, max_value=12)


def model(**spec):
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m"},
        "spec": {"model": "hf://org/m", "engine": "sim", **spec},
    }


@given(min_r=counts, max_r=counts, replicas=st.none() | counts, zero_delay=st.none() | counts)
def test_replica_bounds(min_r, max_r, replicas, zero_delay):
    spec = {"minReplicas": min_r, "maxReplicas": max_r}
    if replicas is not None:
        spec["replicas"] = replicas
    if zero_delay is not None:
        spec["autoscaling"] = {"scaleToZeroDelaySeconds": zero_delay}
    values_ok = min(min_r, max_r) >= 0 and (replicas is None or replicas >= 0)
    values_ok = values_ok and (zero_delay is None or zero_delay >= 0)
    rules_ok = (
        min_r <= max_r
        and (replicas is None or min_r <= replicas <= max_r)
        and (zero_delay is None or min_r == 0)
    )
    try:
        parsed = parse_object(model(**spec))
    except SpecError:
        assert not (values_ok and rules_ok)
    else:
        assert values_ok and rules_ok
        assert parsed.spec.min_replicas <= parsed.spec.max_replicas


@given(gpus=st.integers(min_value=0, max_value=16), tp=st.integers(min_value=1, max_value=16))
def test_tensor_parallel_divides_gpus(gpus, tp):
    doc = model(resources={"gpus": gpus}, optimization={"tensorParallelSize": tp})
    try:
        parse_object(doc)
    except SpecError as error:
        assert gpus != 0 and gpus % tp != 0
        assert "tensorParallelSize must divide resources.gpus" in str(error)
    else:
        assert gpus == 0 or gpus % tp == 0
