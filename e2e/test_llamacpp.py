"""A real inference engine on the local cluster: llama.cpp's llama-server, on CPU.

tools/llamacpp/build.sh builds llama-server from the llama-cpp-python sdist and writes a tiny
random-weight GGUF (cached outside the repository; CI runs it first). The GGUF reaches the pods
as Kubernetes gives a model to a real cluster: a PersistentVolume (hostPath on this machine),
bound to a claim that the InferenceModel names as ``pvc://claim/model.gguf``. The launcher runs
the image's ``/app/llama-server`` as the built binary (the e2e image map).

One scenario goes through what the issue asks, with the official ``openai`` SDK through the
routers: ``kubectl apply``, Ready, chat, a stream with usage, a completion and the errors (an
unknown model, a prompt longer than the context: a 4xx, never a 5xx); then a load step that
the autoscaler answers from llama.cpp's own gauges (``llamacpp:requests_processing`` and
``llamacpp:requests_deferred`` in Prometheus, the reason in status), and the way back. A
second test gives the engine a file that is not a model: the InferenceModel stays not Ready
with a condition that names the cause.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from kubernetes.client.rest import ApiException

from e2e.conftest import REPO, Cluster, echo_pod, llamacpp_dir, wait_for
from e2e.operator_support import GROUP, VERSION, Models, kubectl
from e2e.router_support import (
    Routers,
    fast_autoscaler_env,
    routers_running,
    wait_routable,
    wait_routers,
)
from inferscale.cli.engine_check import all_lines

pytestmark = pytest.mark.e2e

OPERATOR_NAMESPACE = "e2e-inferscale-llamacpp"
TARGET = 2
"""Requests in flight per replica the model aims at; llama-server gets as many slots."""
CONTEXT = 256
"""maxModelLen: each slot's context in tokens."""
CLAIM = "gguf"


@pytest.fixture(scope="module")
def llamacpp(cluster: Cluster) -> Path:
    cluster.require_local()
    return llamacpp_dir(build=True)


@pytest.fixture(scope="module")
def routers(cluster: Cluster, llamacpp: Path) -> Iterator[Routers]:
    with routers_running(cluster, OPERATOR_NAMESPACE, fast_autoscaler_env(cluster)) as running:
        yield running


@pytest.fixture
def models(cluster: Cluster, namespace: str, routers: Routers) -> Models:
    return Models(cluster, namespace)


@contextlib.contextmanager
def host_claim(cluster: Cluster, namespace: str, directory: Path, claim: str) -> Iterator[None]:
    """A claim bound to a hostPath PersistentVolume of ``directory`` (read-only)."""
    volume = f"{namespace}-{claim}"
    access = ["ReadOnlyMany"]
    cluster.core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": access,
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    try:
        cluster.core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": access,
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_for(
            lambda: (
                cluster.core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase
                == "Bound"
            ),
            60,
            f"claim {claim} bound to {volume}",
        )
        yield
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_persistent_volume(volume)


def llamacpp_model(name: str, model: str, **spec: Any) -> dict[str, Any]:
    """An InferenceModel of llama.cpp on one CPU, ``TARGET`` slots of ``CONTEXT`` tokens."""
    body: dict[str, Any] = {
        "model": model,
        "servedName": f"{name}-served",
        "engine": "llamacpp",
        "resources": {"gpus": 0, "cpu": 1, "memory": "1Gi"},
        "optimization": {"maxModelLen": CONTEXT},
        "minReplicas": 1,
        "maxReplicas": 3,
        "autoscaling": {
            # No learned floor (balanced's default): the test scales back to one replica.
            "preset": "economy",
            "targetInFlightPerReplica": TARGET,
            "stableWindowSeconds": 10,
            "panicWindowSeconds": 4,
            "maxScaleUpStep": 2,
            "scaleDownDelaySeconds": 10,
        },
        "serving": {"terminationGracePeriodSeconds": 5, "startupTimeoutSeconds": 120},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": body,
    }


def kubectl_apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    out = kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
    assert "inferencemodel" in out, out


def _status(models: Models, name: str) -> dict[str, Any]:
    return (models.get(name) or {}).get("status") or {}


def engine_gauge(cluster: Cluster, metric: str, name: str) -> float | None:
    """The model's ``metric`` summed over its pods, as the cluster's Prometheus has it now."""
    response = httpx.get(
        f"{cluster.prometheus}/api/v1/query",
        params={"query": f'sum({metric}{{inferscale_io_model="{name}"}})'},
        timeout=5,
        trust_env=False,
    )
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@dataclass
class Step:
    """``workers`` threads that each send one chat request after another until stopped."""

    client: openai.OpenAI
    served: str
    workers: int
    done: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def loop(self, index: int) -> None:
        while not self.stop.is_set():
            try:
                answer = self.client.chat.completions.create(
                    model=self.served,
                    messages=[{"role": "user", "content": f"tell story {index}"}],
                    max_tokens=96,
                )
                assert answer.choices[0].finish_reason
            except (openai.OpenAIError, AssertionError) as error:
                with self.lock:
                    self.errors.append(f"{type(error).__name__}: {error}")
            else:
                with self.lock:
                    self.done += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[Step]:
        threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(60)


def check_openai_api(client: openai.OpenAI, served: str) -> None:
    """Chat, a stream with usage, a completion and the errors, with the official SDK."""
    chat = client.chat.completions.create(
        model=served, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert chat.choices[0].finish_reason == "length", chat
    assert chat.usage is not None and chat.usage.completion_tokens == 8
    assert chat.usage.prompt_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model=served,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "length" in finished, finished
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    done = client.completions.create(model=served, prompt="once upon a time", max_tokens=4)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 4

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    # Far more tokens than a slot's context: llama-server refuses it, and the router passes
    # the refusal on as the client's error, not as a server failure.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=served,
            messages=[{"role": "user", "content": "hello there " * CONTEXT}],
            max_tokens=4,
        )
    assert "context" in str(refused.value).lower(), refused.value


def on_loopback(args: tuple[str, ...]) -> list[str]:
    """``args`` with the listening address made 127.0.0.1 and any free port."""
    out = list(args)
    for flag, value in (("--host", "127.0.0.1"), ("--port", "0")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def test_every_generated_command_line_parses_with_the_real_llama_server(
    llamacpp: Path, tmp_path: Path
) -> None:
    # What engine-check does with vLLM's and SGLang's parsers, with the real binary: every
    # field case and golden Deployment's line must get past the argument parser to the model
    # load (which fails: no such file, and this build has no HTTPS for --hf-repo).
    lines = [line for line in all_lines(REPO) if line.engine == "llamacpp"]
    assert len(lines) >= 5, lines
    for line in lines:
        done = subprocess.run(
            [str(llamacpp / "llama-server"), *on_loopback(line.args)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            check=False,
        )
        output = done.stdout + done.stderr
        refused = "usage:" in output or "invalid argument" in output
        assert not refused, f"{line.source}: {' '.join(line.args)}\n{output[-800:]}"
        assert "exiting due to model loading error" in output, f"{line.source}: {output[-800:]}"


def test_a_claim_bound_to_a_host_path_volume_is_mounted_read_only(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.require_local()
    (tmp_path / "weights.bin").write_text("42")
    check = (
        "import pathlib, sys; f = pathlib.Path('/mnt/w/weights.bin'); "
        "ok = f.read_text() == '42'\n"
        "try:\n    (f.parent / 'new').write_text('x'); ok = False\n"
        "except OSError:\n    pass\n"
        "sys.exit(0 if ok else 1)"
    )
    pod = echo_pod("reader", restartPolicy="Never")
    container = pod["spec"]["containers"][0]
    container.update(command=["python", "-c", check], args=[])
    container.pop("readinessProbe")
    container["volumeMounts"] = [{"name": "w", "mountPath": "/mnt/w", "readOnly": True}]
    pod["spec"]["volumes"] = [{"name": "w", "persistentVolumeClaim": {"claimName": "w"}}]
    with host_claim(cluster, namespace, tmp_path, "w"):
        cluster.core.create_namespaced_pod(namespace, pod)
        phase = wait_for(
            lambda: (
                cluster.core.read_namespaced_pod("reader", namespace).status.phase
                in ("Succeeded", "Failed")
                and cluster.core.read_namespaced_pod("reader", namespace).status.phase
            ),
            60,
            "the reader pod to finish",
        )
    assert phase == "Succeeded"
    assert not (tmp_path / "new").exists()


def test_llamacpp_serves_through_the_router_and_scales_on_its_own_metrics(
    cluster: Cluster, namespace: str, routers: Routers, models: Models, llamacpp: Path
) -> None:
    name = "tiny"
    served = f"{name}-served"
    started = time.monotonic()
    with host_claim(cluster, namespace, llamacpp, CLAIM):
        kubectl_apply(cluster, namespace, llamacpp_model(name, f"pvc://{CLAIM}/model.gguf"))
        wait_routers(routers, lambda: models.is_ready(name), 120, f"{name} Ready")
        wait_routable(routers, models, name, served, 1)
        ready_in = time.monotonic() - started
        router_pod = routers.ready_pods()[0]
        with routers.client(router_pod) as client:
            check_openai_api(client, served)

            before = int(_status(models, name).get("desiredReplicas") or 0)
            assert before == 1
            step = Step(client.with_options(timeout=120), served, workers=TARGET * 4)
            with step.running():
                step_at = time.monotonic()
                deferred = wait_routers(
                    routers,
                    lambda: (engine_gauge(cluster, "llamacpp:requests_deferred", name) or 0) > 0,
                    30,
                    "llama-server to defer requests beyond its slots (in Prometheus)",
                )
                assert deferred
                decided_at = wait_routers(
                    routers,
                    lambda: (
                        int(_status(models, name).get("desiredReplicas") or 0) > before
                        and time.monotonic()
                    ),
                    60,
                    f"a scale-up above {before} replica",
                )
                status = _status(models, name)
                reason = status.get("lastScaleReason") or ""
                wait_routers(
                    routers, lambda: len(models.ready_pods(name)) >= 2, 120, "a second replica"
                )
                time.sleep(3)  # traffic over the grown set
                peak = len(models.ready_pods(name))
            print(
                f"\nllama.cpp: Ready and routable {ready_in:.1f} s after kubectl apply; load "
                f"step -> scale-up decision {decided_at - step_at:.1f} s ({reason}); peak {peak}"
            )
            # The engines' gauges are read (ScalingActive), and they drove the decision.
            active = models.condition(name, "ScalingActive") or {}
            assert active.get("status") == "True", active
            assert "in flight" in reason and f"target {TARGET} per replica" in reason, reason
            assert (status.get("signals") or {}).get("inFlight", 0) > TARGET, status

            idle_at = time.monotonic()
            wait_routers(
                routers,
                lambda: int(_status(models, name).get("desiredReplicas") or 0) == 1,
                90,
                "the scale back to one replica",
            )
            print(f"load stopped -> back to 1 replica: {time.monotonic() - idle_at:.0f} s")
            assert step.errors == [], step.errors[:5]
            assert step.done > 0
            reasons = models.event_reasons(name)
            assert {"ScaledUp", "ScaledDown"} <= reasons, reasons
            models.delete(name)


def test_a_file_that_is_not_a_model_leaves_it_not_ready_with_the_cause(
    cluster: Cluster, namespace: str, routers: Routers, models: Models, tmp_path: Path
) -> None:
    name = "broken"
    (tmp_path / "broken.gguf").write_bytes(b"this is not a GGUF file\n" * 64)
    with host_claim(cluster, namespace, tmp_path, "broken-weights"):
        kubectl_apply(cluster, namespace, llamacpp_model(name, "pvc://broken-weights/broken.gguf"))

        def crash_looping() -> dict[str, Any] | None:
            # Between restarts a pod is "loading the model" again; the crash loop is the verdict.
            ready = models.condition(name, "Ready") or {}
            return ready if ready.get("reason") == "CrashLoopBackOff" else None

        ready = wait_routers(routers, crash_looping, 90, f"{name} not Ready, crash-looping")
        print(f"\nReady={ready['status']} {ready['reason']}: {ready['message']}")
        assert ready["status"] == "False", ready
        # The cause, quoted from llama-server's own last words, not just "exit code 1".
        assert "model" in ready["message"] and "load" in ready["message"], ready
        assert not models.ready_pods(name)
        models.delete(name)
