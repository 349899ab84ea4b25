"""The API server is the real one: its version, our CRDs, and refusals of bad manifests."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.manifests import REPO, invalid_manifests

from e2e.conftest import KUBE_VERSION, Cluster, load_yaml, wait_for

pytestmark = pytest.mark.e2e

CRD_DIR = REPO / "crds"
GROUP, VERSION = "inferscale.io", "v1alpha1"
PLURALS = {
    d["spec"]["names"]["kind"]: d["spec"]["names"]["plural"]
    for path in sorted(CRD_DIR.glob("*.yaml"))
    for d in load_yaml(path)
}


def test_version_reports_the_release(cluster: Cluster) -> None:
    info = client.VersionApi(cluster.api).get_code()
    if cluster.local is not None:
        assert info.git_version == KUBE_VERSION
        assert (info.major, info.minor) == ("1", "36")
    else:
        assert info.git_version.startswith("v1.")


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> list[str]:
    """Apply every CRD of crds/ (create or replace) and wait until each is Established."""
    ext = client.ApiextensionsV1Api(cluster.api)
    names = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in load_yaml(path):
            name = doc["metadata"]["name"]
            names.append(name)
            try:
                ext.create_custom_resource_definition(doc)
            except ApiException as error:
                if error.status != 409:
                    raise
                current = ext.read_custom_resource_definition(name)
                doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, doc)

    def established() -> bool:
        for name in names:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_for(established, 60, "the CRDs to be Established")
    return names


def test_every_crd_is_accepted(crds: list[str]) -> None:
    assert sorted(crds) == sorted(f"{p}.{GROUP}" for p in PLURALS.values())
    assert len(crds) == len(list(CRD_DIR.glob("*.yaml")))


@pytest.mark.parametrize("manifest", invalid_manifests(), ids=lambda m: m.name)
def test_bad_manifest_is_refused_with_its_field_named(
    cluster: Cluster, crds: list[str], namespace: str, manifest
) -> None:
    doc = manifest.doc
    plural = PLURALS[doc["kind"]]
    with pytest.raises(ApiException) as refused:
        # Strict field validation is what `kubectl apply` asks for: unknown fields are errors.
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, doc, field_validation="Strict"
        )
    assert refused.value.status in (400, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    for text in manifest.expect:
        assert text in message, f"{text!r} not in the API server's answer: {message}"
