"""Engine pods' user and root filesystem: spec.security, then the operator's settings, then the
engine's own default.

Vendor images (vLLM, SGLang, TGI, TensorRT-LLM, llama.cpp) run as root and write caches under
``/root`` by default; asked to run as another user or on a read-only root, their writable paths
become volumes (``/tmp``, a ``HOME`` for ``~/.cache``), and the model cache becomes writable by
the engine's group. The sim runs as UID 1000 on a read-only root unless told otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inferscale.reconcile.deployment import HOME_MOUNT, build_deployment, build_preload
from inferscale.reconcile.settings import ReconcileSettings
from tests.factories import make_model


def _pod(engine: str, settings: ReconcileSettings | None = None, **spec: Any) -> dict[str, Any]:
    model = make_model(engine, **spec)
    deployment = build_deployment("m", "ns", model, settings or ReconcileSettings())
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _mounts(pod: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm", "llamacpp"])
def test_vendor_engines_keep_the_images_user_and_a_writable_root_by_default(engine: str) -> None:
    pod = _pod(engine)
    assert "securityContext" not in pod
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}
    assert HOME_MOUNT not in _mounts(pod) and "HOME" not in _env(pod)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm", "llamacpp"])
def test_a_vendor_engine_as_another_user_gets_a_home_and_a_writable_cache(engine: str) -> None:
    pod = _pod(engine, security={"runAsUser": 2000})
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 2000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = pod["containers"][0]["securityContext"]
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert "readOnlyRootFilesystem" not in container
    assert _mounts(pod)[HOME_MOUNT] == "home"
    assert _env(pod)["HOME"] == HOME_MOUNT


def test_a_read_only_vendor_root_writes_to_tmp_home_and_the_model_cache() -> None:
    pod = _pod("vllm", security={"readOnlyRootFilesystem": True})
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert "securityContext" not in pod  # still the image's user
    mounts = _mounts(pod)
    assert {"/tmp", HOME_MOUNT, "/dev/shm"} <= set(mounts)
    assert "model-cache" in mounts.values()
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {}  # unbounded: torch's inductor cache lives there


def test_the_operators_settings_apply_where_the_spec_is_silent() -> None:
    settings = ReconcileSettings(engine_run_as_user=3000, engine_read_only_root_filesystem=True)
    pod = _pod("sglang", settings)
    assert pod["securityContext"]["runAsUser"] == 3000
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    mine = _pod("sglang", settings, security={"runAsUser": 4000, "readOnlyRootFilesystem": False})
    assert mine["securityContext"]["runAsUser"] == 4000
    assert "readOnlyRootFilesystem" not in mine["containers"][0]["securityContext"]
    assert "/tmp" not in _mounts(mine)


def test_the_sim_stays_non_root_and_read_only_unless_told() -> None:
    pod = _pod("sim")
    assert pod["securityContext"]["runAsUser"] == 1000
    assert "fsGroup" not in pod["securityContext"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert HOME_MOUNT not in _mounts(pod)
    writable = _pod("sim", security={"readOnlyRootFilesystem": False, "runAsUser": 1234})
    assert writable["securityContext"]["runAsUser"] == 1234
    assert "readOnlyRootFilesystem" not in writable["containers"][0]["securityContext"]
    assert "/tmp" not in _mounts(writable)


@pytest.mark.parametrize("user", [0, -1, "root", 2**31])
def test_root_or_nonsense_as_the_engines_user_is_refused(user: Any) -> None:
    with pytest.raises(ValidationError, match="runAsUser|run_as_user"):
        make_model("vllm", security={"runAsUser": user})


def test_the_preload_job_runs_as_the_engines_user_on_a_writable_root() -> None:
    spec = make_model(
        "vllm",
        security={"runAsUser": 2000, "readOnlyRootFilesystem": True},
        cache={"hostPath": "/var/lib/inferscale/weights", "preload": True},
    )
    job = build_preload("m", "ns", spec, ReconcileSettings())
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["fsGroup"] == 2000
    assert "readOnlyRootFilesystem" not in pod["containers"][0]["securityContext"]
