"""kopf logs in with the operator's own client's credentials; the lean diff-base is kopf's own."""

import kopf
import pytest
import yaml

from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import Runtime
from inferscale.controller.startup import operator_login
from inferscale.kube.client import KubernetesApi
from inferscale.kube.fake import FakeKubeApi


def test_login_uses_the_runtime_clients_kubeconfig_not_the_environment(tmp_path, monkeypatch):
    # $KUBECONFIG points elsewhere (or, as with --kubeconfig, was set too late for the
    # kubernetes library's default): kopf must still reach the file the client was built from.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://10.1.2.3:16443"}}],
                "users": [{"name": "u", "user": {"token": "abc"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    api = KubernetesApi.from_environment(str(path))
    memo = kopf.Memo(runtime=Runtime(api=api, settings=OperatorSettings()))
    info = operator_login(memo=memo, logger=None, settings=kopf.OperatorSettings())
    assert info is not None
    assert (info.server, info.scheme, info.token) == ("https://10.1.2.3:16443", "Bearer", "abc")
    api.close()


def test_login_without_a_real_client_falls_back_to_kopfs_own(monkeypatch):
    seen = {}

    def fake_login(**kwargs):
        seen.update(kwargs)
        return None

    monkeypatch.setattr(kopf, "login_via_client", fake_login)
    memo = kopf.Memo(runtime=Runtime(api=FakeKubeApi(), settings=OperatorSettings()))
    assert operator_login(memo=memo, logger="L", settings="S") is None
    assert seen == {"logger": "L", "settings": "S"}


def _watched_body():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "labels": {"inferscale.io/model": "m"},
            "annotations": {
                "inferscale.io/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "a",
            },
            "managedFields": [{"manager": "inferscale", "fieldsV1": {"f:spec": {}}}],
            "ownerReferences": [{"kind": "InferenceModel", "name": "m", "uid": "o"}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "engine"}]}}},
        "status": {"readyReplicas": 1, "conditions": [{"type": "Available"}]},
    }


@pytest.mark.parametrize(
    "extra_fields", [None, [], ["status.readyReplicas"], [("status", "conditions")], ["spec.x"]]
)
def test_the_lean_diff_base_is_kopfs_own(extra_fields):
    from inferscale.controller.startup import LeanDiffBaseStorage

    kwargs = {"prefix": "inferscale.io", "key": "last-handled-configuration"}
    ours = LeanDiffBaseStorage(**kwargs)
    kopfs = kopf.AnnotationsDiffBaseStorage(**kwargs)
    body = kopf.Body(_watched_body())
    assert ours.build(body=body, extra_fields=extra_fields) == kopfs.build(
        body=body, extra_fields=extra_fields
    )
    assert body["metadata"]["managedFields"], "the watched body is left alone"


def test_the_lean_diff_base_keeps_the_status_only_when_asked():
    from inferscale.controller.startup import LeanDiffBaseStorage

    storage = LeanDiffBaseStorage(prefix="inferscale.io", key="last-handled-configuration")
    body = kopf.Body(_watched_body())
    assert "status" not in storage.build(body=body)
    asked = storage.build(body=body, extra_fields=["status.readyReplicas"])
    assert asked["status"] == {"readyReplicas": 1}
