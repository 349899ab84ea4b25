"""REST paths, error translation, and the fake's contract (the real client is tested in e2e/)."""

from pathlib import Path

import pytest

from inferscale.errors import Conflict, Forbidden, KubeApiError, NotFound
from inferscale.kube.client import KubeApi, KubernetesApi, _error_for, resource_type
from inferscale.kube.fake import FakeKubeApi


@pytest.mark.parametrize(
    ("api_version", "kind", "namespace", "name", "sub", "path"),
    [
        ("v1", "Pod", "ns", "p", None, "/api/v1/namespaces/ns/pods/p"),
        ("v1", "Pod", None, None, None, "/api/v1/pods"),
        ("v1", "Node", None, "n1", None, "/api/v1/nodes/n1"),
        ("apps/v1", "Deployment", "ns", None, None, "/apis/apps/v1/namespaces/ns/deployments"),
        (
            "inferscale.io/v1alpha1",
            "InferenceModel",
            "a b",
            "m",
            "status",
            "/apis/inferscale.io/v1alpha1/namespaces/a%20b/inferencemodels/m/status",
        ),
    ],
)
def test_paths(api_version, kind, namespace, name, sub, path):
    assert resource_type(api_version, kind).path(namespace, name, sub) == path


def test_unknown_kind_and_missing_namespace_are_refused():
    with pytest.raises(ValueError, match="does not manage"):
        resource_type("batch/v1", "CronJob")
    with pytest.raises(ValueError, match="needs a namespace"):
        resource_type("v1", "Pod").path(None, "p")


@pytest.mark.parametrize(
    ("status", "body", "error_type", "text"),
    [
        (
            404,
            b'{"kind":"Status","reason":"NotFound","message":"pods \\"x\\" not found"}',
            NotFound,
            "not found",
        ),
        (409, b'{"reason":"AlreadyExists","message":"exists"}', Conflict, "AlreadyExists"),
        (
            403,
            b'{"reason":"Forbidden","message":"cannot list pods"}',
            Forbidden,
            "cannot list pods",
        ),
        (500, b"<html>oops</html>", KubeApiError, "oops"),
        (422, None, KubeApiError, "422"),
    ],
)
def test_error_translation(status, body, error_type, text):
    error = _error_for(status, body)
    assert type(error) is error_type
    assert error.status == status
    assert text in str(error)


def test_real_and_fake_satisfy_the_protocol():
    def accepts(api: KubeApi) -> KubeApi:
        return api

    accepts(FakeKubeApi())
    assert callable(KubernetesApi.from_environment)


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "namespace": "ns", "labels": {"app": "x"}},
    "spec": {"replicas": 1},
}


async def test_fake_apply_get_list_delete_and_status():
    api = FakeKubeApi()
    created = await api.apply(DEPLOYMENT)
    assert created["metadata"]["generation"] == 1
    same = await api.apply(DEPLOYMENT)
    assert same["metadata"]["generation"] == 1, "an unchanged spec keeps its generation"
    changed = await api.apply({**DEPLOYMENT, "spec": {"replicas": 3}})
    assert changed["metadata"]["generation"] == 2
    assert (await api.get("apps/v1", "Deployment", "ns", "d"))["spec"]["replicas"] == 3
    assert len(await api.list("apps/v1", "Deployment", "ns", "app=x")) == 1
    assert await api.list("apps/v1", "Deployment", "ns", "app=y") == []
    await api.patch_status("apps/v1", "Deployment", "ns", "d", {"readyReplicas": 3})
    assert (await api.get("apps/v1", "Deployment", "ns", "d"))["status"] == {"readyReplicas": 3}
    assert await api.delete("apps/v1", "Deployment", "ns", "d") is True
    assert await api.delete("apps/v1", "Deployment", "ns", "d") is False
    with pytest.raises(NotFound):
        await api.get("apps/v1", "Deployment", "ns", "d")
    assert [c[0] for c in api.calls][:3] == ["apply", "apply", "apply"]


async def test_fake_injected_failure_hits_once():
    api = FakeKubeApi()
    api.fail_next("apply", Forbidden(403, "Forbidden", "no"))
    with pytest.raises(Forbidden):
        await api.apply(DEPLOYMENT)
    await api.apply(DEPLOYMENT)


async def test_fake_rejects_selectors_it_cannot_evaluate():
    with pytest.raises(ValueError, match="equality"):
        await FakeKubeApi().list("v1", "Pod", "ns", "app!=x")


def _kubeconfig(tmp_path, user):
    import yaml

    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {
                        "name": "k",
                        "cluster": {
                            "server": "https://10.0.0.1:6443",
                            "certificate-authority-data": "Q0E=",
                        },
                    }
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return str(path)


def test_connection_is_the_clients_own_server_and_token(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = KubernetesApi.from_environment(_kubeconfig(tmp_path, {"token": "t0ken"}))
    conn = api.connection()
    assert conn.server == "https://10.0.0.1:6443"
    assert (conn.scheme, conn.token) == ("Bearer", "t0ken")
    assert conn.ca_path and Path(conn.ca_path).read_text() == "CA"
    assert not conn.insecure and conn.certificate_path is None
    api.close()


def test_connection_with_client_certificates_has_no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    user = {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}
    api = KubernetesApi.from_environment(_kubeconfig(tmp_path, user))
    conn = api.connection()
    assert conn.token is None and conn.scheme is None
    assert conn.certificate_path and Path(conn.certificate_path).read_text() == "CERT"
    assert conn.private_key_path and Path(conn.private_key_path).read_text() == "KEY"
    api.close()


class _Recorder:
    """A one-route HTTP server on 127.0.0.1 that records requests and answers canned bytes."""

    def __init__(self, answer: bytes):
        import http.server
        import threading

        recorder = self
        self.answer = answer
        self.requests: list[tuple[str, str, str, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                recorder.requests.append(
                    (self.command, self.path, self.headers.get("Content-Type"), body)
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(recorder.answer)))
                self.end_headers()
                self.wfile.write(recorder.answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api(self) -> KubernetesApi:
        from kubernetes import client as k8s

        conf = k8s.Configuration()
        conf.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return KubernetesApi(k8s.ApiClient(conf), timeout_seconds=5)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_apply_sends_the_object_as_json_and_parses_the_answer():
    import json

    recorder = _Recorder(b'{"kind":"Deployment","metadata":{"name":"d","resourceVersion":"7"}}')
    api = recorder.api()
    try:
        stored = await api.apply(DEPLOYMENT)
    finally:
        api.close()
        recorder.close()
    assert stored == {"kind": "Deployment", "metadata": {"name": "d", "resourceVersion": "7"}}
    ((method, path, content_type, body),) = recorder.requests
    assert method == "PATCH"
    assert path == "/apis/apps/v1/namespaces/ns/deployments/d?fieldManager=inferscale&force=true"
    assert content_type == "application/apply-patch+yaml"
    assert json.loads(body) == DEPLOYMENT


@pytest.mark.parametrize("answer", [b"[1, 2]", b"not json {"])
async def test_an_answer_that_is_not_an_object_is_a_clear_error(answer):
    recorder = _Recorder(answer)
    api = recorder.api()
    try:
        with pytest.raises(KubeApiError, match="BadResponse|not JSON|not an object"):
            await api.apply(DEPLOYMENT)
    finally:
        api.close()
        recorder.close()
