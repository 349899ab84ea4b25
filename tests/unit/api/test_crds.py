"""The generated CRDs: no drift, structural, documented, with the subresources and columns."""

from pathlib import Path

import pytest
import yaml

from inferscale.api.crdgen import CRDS, build_all, clean_description
from inferscale.cli.main import crd_files
from tests.manifests import REPO

CRD_LIST = build_all()
IDS = [c["spec"]["names"]["kind"] for c in CRD_LIST]


def walk(schema, path="spec"):
    """Yield (path, node) for every schema node below ``schema``."""
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def version_schema(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crds_match_the_models():
    """The drift check: `make crds` must have been run after any model change."""
    for name, text in crd_files().items():
        committed = REPO / "crds" / name
        assert committed.is_file(), f"{committed} missing: run `make crds`"
        assert committed.read_text() == text, f"{committed} is stale: run `make crds`"
    assert {p.name for p in (REPO / "crds").glob("*.yaml")} == set(crd_files())


@pytest.mark.parametrize("crd", CRD_LIST, ids=IDS)
def test_every_property_has_a_description(crd):
    root = version_schema(crd)
    undocumented = [
        path
        for part in ("spec", "status")
        for path, node in walk(root["properties"][part], part)
        if not node.get("description", "").strip()
        # List items and map values of plain types are described by their list or map.
        and not (path.endswith(("[]", "{}")) and node.get("type") != "object")
    ]
    assert undocumented == []


@pytest.mark.parametrize("crd", CRD_LIST, ids=IDS)
def test_schema_is_structural(crd):
    root = version_schema(crd)
    for path, node in walk(root):
        assert "$ref" not in node and "$defs" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
            assert all(
                set(o) <= {"type", "pattern", "maxLength", "minLength"} for o in node["anyOf"]
            )
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be a boolean"
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"], path


@pytest.mark.parametrize("crd", CRD_LIST, ids=IDS)
def test_names_category_and_subresources(crd):
    spec = crd["spec"]
    assert spec["group"] == "inferscale.io"
    assert spec["scope"] == "Namespaced"
    assert "inferscale" in spec["names"]["categories"]
    assert spec["names"]["shortNames"]
    version = spec["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert "status" in version["subresources"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Status", "Age"} <= columns


def test_inference_model_scale_subresource_and_columns():
    crd = next(c for c in CRD_LIST if c["spec"]["names"]["kind"] == "InferenceModel")
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    status = version_schema(crd)["properties"]["status"]["properties"]
    assert status["replicas"]["type"] == "integer"
    assert status["selector"]["type"] == "string"
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in ("Served", "Engine", "Ready", "Desired", "Age"):
        assert name in columns
        assert columns[name].get("priority", 0) == 0, f"{name} shows in plain `kubectl get`"


def test_cross_field_rules_are_in_the_crd():
    model = version_schema(CRD_LIST[0])["properties"]["spec"]
    rules = {r["rule"] for r in model["x-kubernetes-validations"]}
    assert "self.minReplicas <= self.maxReplicas" in rules
    # Nested settings objects default to {} so their own defaults are filled in by the API server.
    assert model["properties"]["autoscaling"]["default"] == {}
    assert model["properties"]["minReplicas"]["default"] == 1


def test_conditions_are_a_map_list_keyed_by_type():
    for crd in CRD_LIST:
        conditions = version_schema(crd)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_quantities_are_int_or_string():
    resources = version_schema(CRD_LIST[0])["properties"]["spec"]["properties"]["resources"]
    assert resources["properties"]["cpu"]["x-kubernetes-int-or-string"] is True


def test_every_kind_is_generated_once():
    assert sorted(i.kind for i in CRDS) == [
        "InferenceClient",
        "InferenceModel",
        "InferenceProvider",
        "InferenceRoute",
    ]
    assert len({i.name for i in CRDS}) == 4


def test_crd_files_are_valid_yaml_with_the_generated_header():
    for name, text in crd_files().items():
        assert text.startswith("# Generated by `inferscale crds`")
        assert yaml.safe_load(text)["metadata"]["name"] == name.removesuffix(".yaml")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("One line.", "One line."),
        ("Wrapped\n    line.", "Wrapped line."),
        ("Uses ``code``.", "Uses `code`."),
        ("Para one.\n\nPara two.", "Para one.\n\nPara two."),
    ],
)
def test_clean_description(raw, clean):
    assert clean_description(raw) == clean


def test_repo_layout_keeps_operator_a_source_folder():
    """`operator/` must never become a package: it would shadow the standard library."""
    assert not (Path(REPO) / "operator" / "__init__.py").exists()


def test_committed_api_reference_matches_the_models():
    from inferscale.api.reference import render_reference

    committed = REPO / "docs" / "reference.md"
    assert committed.read_text() == render_reference(), "docs/reference.md is stale: make crds"


def test_reference_lists_every_field_and_rule():
    from inferscale.api.reference import render_reference

    text = render_reference()
    for path in ("spec.minReplicas", "spec.backends[].provider.model", "spec.apiKeySecretRef.key"):
        assert f"`{path}`" in text
    assert "minReplicas must be less than or equal to maxReplicas" in text
    assert "a backend must name exactly one of inferenceModel or provider" in text
