"""The images of images/ run under the chart's security settings (podman, no registry).

Each image is started the way the chart's pods start: its user, a read-only root filesystem with a
writable /tmp, every capability dropped, no privilege escalation, seccomp RuntimeDefault. The sim
serves /v1/models and /metrics, the router proxies to the sim and answers its health checks, the
operator reconciles a model on the local cluster. Broken variants of an image (root user, a write
to the root filesystem, a missing dependency) are built in the tests and must fail the same checks,
so a check that could not fail would show here.

Skipped, with the reason, where podman or the images are absent: `make images` builds them, and
`bash tools/images/ci.sh` installs podman and builds them in CI.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.conftest import Cluster, wait_for
from e2e.images_support import (
    IMAGES,
    Security,
    assert_non_root_user,
    chart_security,
    container,
    derived_image,
    free_port,
    image_ref,
    logs,
    missing_images,
    podman,
    wait_http,
)
from e2e.operator_support import Models, apply_crds, example_sim_model, own_namespace

MODEL = "tiny"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
SIM_ARGS = ["--model", MODEL, "--port", "8000", "--preset", "zero"]

_why_not = missing_images()
# Skipped, saying why, where the images were never built; in CI (which builds them first with
# tools/images/ci.sh) a missing image fails every test instead.
pytestmark = pytest.mark.skipif(
    _why_not is not None and not os.environ.get("CI"), reason=_why_not or ""
)


@pytest.fixture(autouse=True, scope="module")
def _images_built() -> None:
    if _why_not is not None:
        pytest.fail(f"CI runs tools/images/ci.sh first, yet: {_why_not}")


@pytest.fixture(scope="module")
def security() -> Security:
    return chart_security()


def serve_sim(image: str, security: Security) -> None:
    """Start ``image`` as the sim; it must serve /v1/models and vLLM-named /metrics."""
    port = free_port()
    with container(
        image, SIM_ARGS, security=security, options=[f"--publish=127.0.0.1:{port}:8000"]
    ) as name:
        wait_http(name, f"http://127.0.0.1:{port}/health")
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        chat = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=10)
        assert chat.status_code == 200, chat.text
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "vllm:num_requests_running" in metrics
        assert "vllm:generation_tokens_total" in metrics


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_declares_a_numeric_non_root_user(name: str) -> None:
    # The chart sets runAsUser too; this is what runAsNonRoot alone needs from an image.
    assert_non_root_user(image_ref(name))


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_holds_no_compiler_and_no_pip(name: str, security: Security) -> None:
    probe = (
        "import shutil, importlib.util; "
        "print([c for c in ('cc', 'gcc', 'c++', 'g++', 'clang', 'tcc') if shutil.which(c)], "
        "importlib.util.find_spec('pip') is not None)"
    )
    done = podman(
        "run", "--rm", "--network=none", *security.podman_flags(), "--entrypoint=python3",
        image_ref(name), "-c", probe,
    )  # fmt: skip
    assert done.stdout.strip() == "[] False"


def test_the_chart_security_settings_are_in_force(security: Security) -> None:
    probe = (
        "import json, pathlib\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "writes = {}\n"
        "for path in ('/opt/inferscale/x', '/x', '/tmp/x'):\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('x'); writes[path] = 'ok'\n"
        "    except OSError as e:\n"
        "        writes[path] = e.strerror\n"
        "print(json.dumps({k: status[k].strip() for k in ('Uid', 'Gid', 'CapEff', 'CapBnd',"
        " 'NoNewPrivs', 'Seccomp')} | {'writes': writes}))\n"
    )
    done = podman(
        "run", "--rm", "--network=none", *security.podman_flags(), "--entrypoint=python3",
        image_ref("sim"), "-c", probe,
    )  # fmt: skip
    seen = json.loads(done.stdout)
    assert seen["Uid"].split()[0] == str(security.user)
    assert seen["Gid"].split()[0] == str(security.group)
    assert int(seen["CapEff"], 16) == 0 and int(seen["CapBnd"], 16) == 0
    assert seen["NoNewPrivs"] == "1"
    assert seen["Seccomp"] == "2"  # a filter: the runtime's default profile
    assert seen["writes"] == {
        "/opt/inferscale/x": "Read-only file system",
        "/x": "Read-only file system",
        "/tmp/x": "ok",
    }


def test_the_router_image_reads_its_embedding_table(security: Security) -> None:
    """The table the semantic cache and model selection use is in the image, readable by its
    non-root user, and the model package it was distilled from is not (docs/embedding.md)."""
    probe = (
        "import importlib.util\n"
        "from inferscale.embedding.store import load_static_encoder\n"
        "encoder = load_static_encoder(build_if_missing=False)\n"
        "a, b, c = encoder.encode(['How is the weather?', \"What's the weather like?\", "
        "'Bake the bread for forty minutes.'])\n"
        "print(encoder.dim, float(a @ b) > 0.6 > float(a @ c), "
        "importlib.util.find_spec('all_minilm_l6_v2') is None)\n"
    )
    done = podman(
        "run", "--rm", "--network=none", *security.podman_flags(), "--entrypoint=python3",
        image_ref("router"), "-c", probe,
    )  # fmt: skip
    assert done.stdout.strip() == "256 True True", done.stderr


def test_the_sim_image_serves_models_and_metrics(security: Security) -> None:
    serve_sim(image_ref("sim"), security)


def test_the_router_image_proxies_to_the_sim_image(security: Security, tmp_path: Path) -> None:
    table = tmp_path / "routing-table.json"
    endpoint = {"pod": "sim-0", "address": "127.0.0.1:8000", "ready": True, "engine": "sim"}
    table.write_text(json.dumps({"version": 1, "models": {MODEL: {"endpoints": [endpoint]}}}))
    token = tmp_path / "token"
    token.write_text("s3cret")
    for f in (table, token):
        f.chmod(0o644)  # mounted files keep their mode; the container's user must read them
    port = free_port()
    # The router shares the sim's network namespace, as two containers of one pod would.
    with container(
        image_ref("sim"), SIM_ARGS, security=security,
        options=[f"--publish=127.0.0.1:{port}:8080"],
    ) as sim, container(
        image_ref("router"),
        ["--port", "8080", "--table-file", "/etc/inferscale/routing/routing-table.json",
         "--admin-token-file", "/var/run/secrets/inferscale/admin/token"],
        security=security,
        options=[
            f"--network=container:{sim}",
            f"--volume={table}:/etc/inferscale/routing/routing-table.json:ro",
            f"--volume={token}:/var/run/secrets/inferscale/admin/token:ro",
        ],
    ) as router:  # fmt: skip
        wait_http(router, f"http://127.0.0.1:{port}/healthz")
        wait_http(router, f"http://127.0.0.1:{port}/readyz")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=10)
        assert answer.status_code == 200, f"{answer.text}\n{logs(router)}\n{logs(sim)}"
        assert answer.json()["model"] == MODEL
        held = httpx.get(
            f"http://127.0.0.1:{port}/admin/v1/held",
            headers={"Authorization": "Bearer s3cret"},
            timeout=5,
        )
        assert held.status_code == 200 and held.json()["models"][MODEL]["readyEndpoints"] == 1


# --- the checks above fail on broken images ------------------------------------------------


@pytest.fixture
def broken_sim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with derived_image(image_ref("sim"), request.param, tmp_path) as tag:
        yield tag


@pytest.mark.parametrize("broken_sim", [["USER 0"], ["USER root"]], indirect=True)
def test_an_image_that_runs_as_root_is_refused(broken_sim: str) -> None:
    with pytest.raises(AssertionError, match="runs as user"):
        assert_non_root_user(broken_sim)


#: A start-up that writes a state file into a folder of the image that its user owns.
WRITES_ROOT_FILESYSTEM = [
    "USER 0",
    "RUN mkdir /var/lib/sim && chown 1000:1000 /var/lib/sim",
    "USER 1000",
    'ENTRYPOINT ["sh", "-c", "echo 1 > /var/lib/sim/started && exec inferscale sim \\"$@\\"",'
    ' "sim"]',
]
#: A dependency left out of the image.
LACKS_A_DEPENDENCY = [
    "USER 0",
    "RUN rm -r /opt/inferscale/lib/python3.11/site-packages/aiohttp",
    "USER 1000",
]


@pytest.mark.parametrize(
    "broken_sim",
    [WRITES_ROOT_FILESYSTEM, LACKS_A_DEPENDENCY],
    ids=["writes-root-filesystem", "lacks-a-dependency"],
    indirect=True,
)
def test_a_sim_image_that_cannot_start_under_the_chart_fails_the_check(
    broken_sim: str, security: Security
) -> None:
    with pytest.raises(AssertionError, match="stopped"):
        serve_sim(broken_sim, security)


@pytest.mark.parametrize("broken_sim", [WRITES_ROOT_FILESYSTEM], indirect=True)
def test_the_writing_image_fails_only_for_the_read_only_root(
    broken_sim: str, security: Security
) -> None:
    # The control of the test above: on a writable root filesystem the same image serves, so
    # what fails there is the write, not the variant's entry point.
    serve_sim(broken_sim, dataclasses.replace(security, read_only_root=False))


# --- the operator image on the local cluster ----------------------------------------------


def test_the_operator_image_reconciles_a_model(
    cluster: Cluster, security: Security, tmp_path: Path
) -> None:
    cluster.require_local()
    apply_crds(cluster)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
    kubeconfig.chmod(0o644)
    health = free_port()
    with own_namespace(cluster, "e2e-operator-image") as namespace, container(
        image_ref("operator"),
        ["--kubeconfig=/etc/inferscale/kubeconfig", f"--namespace={namespace}",
         "--no-leader-election", f"--liveness=http://127.0.0.1:{health}/healthz"],
        security=security,
        # The API server listens on the cluster's bridge, which the host network reaches.
        options=[
            "--network=host",
            f"--volume={kubeconfig}:/etc/inferscale/kubeconfig:ro",
            "--env=INFERSCALE_ROUTING__ENABLED=false",
        ],
    ) as operator:  # fmt: skip
        wait_http(operator, f"http://127.0.0.1:{health}/healthz", timeout=90)
        models = Models(cluster, namespace)
        body = example_sim_model()
        body["spec"]["replicas"] = 1
        name = body["metadata"]["name"]
        models.create(body)
        try:
            wait_for(lambda: models.is_ready(name), 120, f"Ready=True on {name}")
        except BaseException:
            print(logs(operator))
            raise
        model = models.get(name)
        assert model is not None and model["status"]["readyReplicas"] == 1
