"""``inferscale top``: rows from status, routes and router metrics; the table; clear errors."""

import socket
from datetime import UTC, datetime

import pytest
import yaml
from aiohttp import web

from inferscale.cli.main import main
from inferscale.cli.top import Top, build_rows, render_table
from inferscale.errors import Forbidden, KubeApiError, NotFound
from inferscale.kube.fake import FakeKubeApi
from inferscale.loadtest.observe import ClusterUnavailable, read_models
from inferscale.loadtest.routermetrics import router_snapshot
from inferscale.router.metrics import RouterMetrics
from inferscale.serving import serve_app
from tests.factories import make_model_status
from tests.servers import ServerThread

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
GV = "inferscale.io/v1alpha1"


def im(name, namespace="prod", **status):
    return {
        "apiVersion": GV,
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": "hf://x/y", "engine": "sim"},
        "status": status,
    }


def route(name, backends, spilling, namespace="prod"):
    return {
        "apiVersion": GV,
        "kind": "InferenceRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backends": backends},
        "status": {"spilling": spilling},
    }


def cluster_with_models():
    api = FakeKubeApi()
    api.put(
        im(
            "llama",
            desiredReplicas=4,
            readyReplicas=2,
            servedName="llama-3",
            lastScaleTime="2025-01-01T11:58:00Z",
            lastScaleReason="scaled 2 -> 4: 70 in flight, target 16 per replica",
            signals={"inFlight": 70, "held": 0},
            conditions=[
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "lastTransitionTime": "2025-01-01T11:00:00Z",
                }
            ],
        )
    )
    api.put(im("cold", desiredReplicas=1, readyReplicas=0, signals={"held": 3}))
    api.put(im("other", namespace="dev"))
    api.put(route("r", [{"inferenceModel": "llama"}, {"provider": {"name": "p"}}], True))
    api.put(route("quiet", [{"inferenceModel": "cold"}], False))
    return api


async def test_a_frame_from_status_and_routes():
    top = Top(cluster_with_models(), "prod", [], None)
    lines = await top.frame(NOW, 400)
    assert "2 InferenceModels" in lines[0] and "from status" in lines[0]
    header = lines[2].split()
    assert header[:4] == ["NAMESPACE", "NAME", "STATE", "READY"]
    llama = next(ln for ln in lines if " llama " in ln).split()
    assert llama[:8] == ["prod", "llama", "Ready", "2", "4", "70", "0", "-"]
    assert "yes" in llama and "2m" in llama and "scaled 2 -> 4:" in " ".join(llama)
    cold = next(ln for ln in lines if " cold " in ln).split()
    assert cold[2:7] == ["-", "0", "1", "-", "3"]
    assert not any(" other " in ln for ln in lines)  # other namespace


async def test_all_namespaces_by_default():
    lines = await Top(cluster_with_models(), None, [], None).frame(NOW, 400)
    assert any(ln.startswith("dev ") for ln in lines)


def test_router_metrics_replace_the_status_signals():
    metrics = RouterMetrics()
    for value in (0.02, 0.03, 0.04, 0.9):
        metrics.ttft.observe(("llama-3",), value)
    text = metrics.render([("llama-3", "pod-a", 5)], [("llama-3", 1)], 1)
    text += 'inferscale_router_spillover_total{model="llama-3"} 10\n'
    older = router_snapshot([text.replace("} 10\n", "} 4\n")], at=0.0)
    snap = router_snapshot([text], at=3.0)
    models = [make_model_status("llama", served_name="llama-3"), make_model_status("idle")]
    llama, idle = build_rows(models, set(), snap, older)
    assert (llama.in_flight, llama.held, llama.spill) == (5.0, 1.0, "2.0/s")
    assert llama.ttft_p50 is None  # no stream started between the snapshots
    llama_since_start = build_rows(models, set(), snap, None)[0]
    assert 0.025 <= llama_since_start.ttft_p50 <= 0.05 and llama_since_start.ttft_p95 > 0.25
    assert (idle.in_flight, idle.held, idle.ttft_p50, idle.spill) == (0.0, 0.0, None, "-")
    lines = render_table([llama_since_start, idle], NOW, 400, routers=True, note="router x: down")
    assert "from routers" in lines[0] and lines[1] == "  ! router x: down"
    assert "ms/" in next(ln for ln in lines if "llama" in ln)


def test_table_is_cut_to_the_width_and_says_when_empty():
    row = build_rows([make_model_status(reason="x" * 300)], set(), None, None)
    assert all(len(ln) <= 80 for ln in render_table(row, NOW, 80, routers=False))
    assert render_table([], NOW, 80, routers=False)[-1] == "(no InferenceModels)"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (NotFound(404, "NotFound", "the server could not find"), "CRD is not installed"),
        (Forbidden(403, "Forbidden", "cannot list"), "not allowed to list InferenceModels"),
        (KubeApiError(0, "Unreachable", "refused"), "cannot reach the Kubernetes API server"),
        (KubeApiError(500, "InternalError", "boom"), "answered 500 InternalError: boom"),
    ],
)
async def test_cluster_errors_are_sentences(error, message):
    api = FakeKubeApi()
    api.fail_next("list", error)
    with pytest.raises(ClusterUnavailable, match=message):
        await read_models(api, None)


async def test_a_missing_route_crd_only_empties_the_spill_column():
    api = cluster_with_models()
    top = Top(api, "prod", [], None)
    api.fail_next("list", NotFound(404, "NotFound", "x"))  # the models' list fails first...
    with pytest.raises(ClusterUnavailable):
        await top.frame(NOW, 200)
    real_list = api.list

    async def no_routes(api_version, kind, namespace, label_selector=None):
        if kind == "InferenceRoute":
            raise NotFound(404, "NotFound", "no such resource")
        return await real_list(api_version, kind, namespace, label_selector)

    api.list = no_routes
    lines = await top.frame(NOW, 400)
    assert "yes" not in next(ln for ln in lines if " llama " in ln).split()


def _kubeconfig(tmp_path, server):
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return str(path)


def test_top_exits_2_when_the_cluster_is_unreachable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    assert main(["top", "--once", "--kubeconfig", config]) == 2
    assert "cannot reach the Kubernetes API server" in capsys.readouterr().err


def test_top_exits_2_without_credentials(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["top", "--once", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "no usable cluster credentials" in capsys.readouterr().err


def test_top_refuses_bad_interval(capsys):
    assert main(["top", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err


class ClosableFake(FakeKubeApi):
    closed = False

    def close(self):
        self.closed = True


class RouterServer(ServerThread):
    """A router stand-in: serves the router's own metrics text on /metrics."""

    name = "router-metrics"

    def __init__(self, text):
        self.text = text
        super().__init__()

    async def start_server(self):
        async def metrics(_request):
            return web.Response(text=self.text)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return await serve_app(app, "127.0.0.1", 0)


def test_watch_refreshes_count_times_and_reads_the_routers(monkeypatch, capsys):
    api = ClosableFake()
    for obj in cluster_with_models().objects.values():
        api.put(obj)
    monkeypatch.setattr("inferscale.loadtest.observe.connect_cluster", lambda _kubeconfig: api)
    metrics = RouterMetrics()
    metrics.ttft.observe(("llama-3",), 0.03)
    text = metrics.render([("llama-3", "pod-a", 7)], [], 1)
    with RouterServer(text) as router:
        code = main(
            ["top", "-n", "prod", "--count", "2", "--interval", "0.01",
             "--router", router.base_url, "--router", "http://127.0.0.1:9"]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and api.closed
    assert out.count("inferscale top ") == 2
    assert "from routers" in out and "router not read: http://127.0.0.1:9:" in out
    llama = next(ln for ln in out.splitlines() if " llama " in ln).split()
    assert llama[5] == "7"  # in flight from the router, not the status's 70


def test_the_first_read_failing_exits_2_and_later_failures_are_shown(monkeypatch, capsys):
    api = ClosableFake()
    api.fail_next("list", NotFound(404, "NotFound", "no such kind"))
    monkeypatch.setattr("inferscale.loadtest.observe.connect_cluster", lambda _kubeconfig: api)
    assert main(["top", "--once"]) == 2
    assert "CRD is not installed" in capsys.readouterr().err

    api.put(im("m"))
    real_list = api.list
    calls = []

    async def flaky(api_version, kind, namespace, label_selector=None):
        if kind == "InferenceModel":
            calls.append(1)
            if len(calls) == 2:
                raise KubeApiError(0, "Unreachable", "connection refused")
        return await real_list(api_version, kind, namespace, label_selector)

    api.list = flaky
    assert main(["top", "--count", "3", "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count("inferscale top ") == 3
    assert "! cannot reach the Kubernetes API server: connection refused" in out
