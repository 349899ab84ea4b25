"""spec.cache.preload: the API's rules, the preload Job, the Cached condition and held replicas."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inferscale.api.meta import CONDITION_CACHED, LABEL_MODEL, LABEL_PRELOAD_OF
from inferscale.api.v1alpha1.inference_model import CacheStatus, InferenceModelSpec
from inferscale.errors import SpecError
from inferscale.reconcile.deployment import build_deployment, dependencies
from inferscale.reconcile.preload import (
    RESULT_PATH,
    SIM_PRELOAD_FLAG,
    build_cache_claims,
    build_preload_job,
    cache_view,
    reported_bytes,
    serving_replicas,
)
from inferscale.reconcile.settings import ReconcileSettings
from inferscale.reconcile.status import compute_status
from tests.factories import make_model, model_spec_dict
from tests.unit.reconcile.conftest import assert_valid

SETTINGS = ReconcileSettings()
HOST = {"hostPath": "/var/lib/inferscale/weights", "preload": True}


def _job(spec: InferenceModelSpec, name: str = "m") -> dict[str, Any]:
    job = build_preload_job(name, "ns", spec, name, SETTINGS)
    assert job is not None
    return job


# --- the API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache", "engine", "model", "message"),
    [
        ({"preload": True}, "vllm", "hf://org/m", "needs a shared volume"),
        ({"pvcName": "c", "hostPath": "/w"}, "vllm", "hf://org/m", "exclusive"),
        ({**HOST}, "vllm", "s3://bucket/m", "downloads hf:// models"),
        ({**HOST}, "vllm", "pvc://claim/m", "downloads hf:// models"),
        ({"hostPath": "relative/dir"}, "vllm", "hf://org/m", "pattern"),
        ({"hostPath": "/"}, "vllm", "hf://org/m", "pattern"),
        ({"hostPath": "/w/"}, "vllm", "hf://org/m", "pattern"),
        ({"size": "40Gi", "pvcName": "c"}, "vllm", "hf://org/m", "claim of its own"),
        ({"size": "40Gi", "hostPath": "/w"}, "vllm", "hf://org/m", "claim of its own"),
        ({"storageClassName": "fast"}, "vllm", "hf://org/m", "needs cache.size"),
        ({"size": "lots"}, "vllm", "hf://org/m", "pattern"),
        ({"size": "1Gi", "accessMode": "ReadOnlyMany"}, "vllm", "hf://org/m", "ReadWriteMany"),
    ],
)
def test_bad_cache_specs_are_refused(cache, engine, model, message):
    with pytest.raises(ValidationError, match=message):
        InferenceModelSpec.model_validate(model_spec_dict(engine, model=model, cache=cache))


@pytest.mark.parametrize(
    "cache",
    [
        {**HOST},
        {"pvcName": "weights", "preload": True},
        {"size": "40Gi", "storageClassName": "fast", "preload": True},
        {"hostPath": "/w"},
        {},
    ],
)
def test_good_cache_specs_are_accepted(cache):
    spec = make_model("vllm", cache=cache)
    assert spec.cache.preload == cache.get("preload", False)


def test_the_sim_preloads_any_source():
    assert make_model("sim", model="s3://b/m", cache=HOST).cache.preload


# --- the Job ----------------------------------------------------------------------------------


def test_no_preload_no_job():
    assert build_preload_job("m", "ns", make_model("vllm"), "m", SETTINGS) is None


def test_vllm_preload_downloads_the_hub_id_into_hf_home_on_the_cache():
    spec = make_model(
        "vllm",
        model="hf://meta-llama/Llama-3.1-8B-Instruct",
        hfTokenSecretRef={"name": "hf", "key": "token"},
        cache={"pvcName": "weights", "preload": True},
    )
    job = _job(spec)
    assert_valid(job)
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert container["command"][-2:] == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "models--meta-llama--Llama-3.1-8B-Instruct",
    ]
    assert job["spec"]["activeDeadlineSeconds"] == spec.serving.startup_timeout_seconds
    assert "hf download" in container["command"][2]
    assert RESULT_PATH in container["command"][2]
    assert container["terminationMessagePath"] == RESULT_PATH
    names = {e["name"] for e in container["env"]}
    assert names == {"HF_HOME", "HF_TOKEN"}
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim == {"claimName": "weights"}
    assert pod["spec"]["restartPolicy"] == "Never"
    # Its pod must never count as a replica of the model.
    assert LABEL_MODEL not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][LABEL_PRELOAD_OF] == "m"
    assert job["metadata"]["labels"][LABEL_MODEL] == "m"


def test_sim_preload_runs_the_engine_args_with_preload():
    spec = make_model("sim", cache=HOST, args=["--preset", "llama-3.1-8b-h100"])
    job = _job(spec)
    assert_valid(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["inferscale", "sim"]
    args = container["args"]
    assert args[-3:] == [SIM_PRELOAD_FLAG, "--preload-report", RESULT_PATH]
    assert args[args.index("--weights-cache") + 1] == "/models"
    assert "--preset" in args
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["hostPath"] == {"path": HOST["hostPath"], "type": "DirectoryOrCreate"}


def test_a_changed_model_is_a_new_job_and_an_unchanged_one_the_same():
    a = _job(make_model("sim", cache=HOST))["metadata"]["name"]
    b = _job(make_model("sim", cache=HOST))["metadata"]["name"]
    c = _job(make_model("sim", cache=HOST, args=["--preset", "llama-3.1-8b-l4"]))
    assert a == b != c["metadata"]["name"]
    assert a.startswith("m-preload-")


def test_a_long_model_name_still_makes_a_label_sized_job_name():
    name = "m" + "x" * 62
    assert len(_job(make_model("sim", cache=HOST), name)["metadata"]["name"]) <= 63


@pytest.mark.parametrize("engine", ["tgi", "trtllm", "llamacpp"])
def test_engines_without_a_downloader_are_refused(engine):
    spec = make_model(engine, cache={"pvcName": "w", "preload": True})
    with pytest.raises(SpecError, match="cannot download weights ahead"):
        build_preload_job("m", "ns", spec, "m", SETTINGS)


# --- the claim the operator creates ------------------------------------------------------------


def test_a_size_makes_the_operator_create_the_claim_that_job_and_replicas_mount():
    spec = make_model("vllm", cache={"size": "40Gi", "storageClassName": "fast", "preload": True})
    (claim,) = build_cache_claims("m", "ns", spec)
    assert_valid(claim)
    assert claim["metadata"]["name"] == "m-weights"
    assert claim["metadata"]["labels"][LABEL_MODEL] == "m"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "40Gi"}},
        "storageClassName": "fast",
    }
    job_volume = _job(spec)["spec"]["template"]["spec"]["volumes"][0]
    dep = build_deployment("m", "ns", spec, SETTINGS)
    dep_volume = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-cache"
    )
    assert (
        job_volume["persistentVolumeClaim"]
        == dep_volume["persistentVolumeClaim"]
        == {"claimName": "m-weights"}
    )
    # The operator's own claim is no dependency to wait for.
    assert dependencies(spec) == []


def test_no_size_no_claim():
    assert build_cache_claims("m", "ns", make_model("vllm", cache={"pvcName": "w"})) == []


# --- replicas mount the cache read-only --------------------------------------------------------


def _engine(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def test_replicas_mount_the_preloaded_cache_read_only():
    spec = make_model("vllm", cache={"pvcName": "weights", "preload": True})
    dep = build_deployment("m", "ns", spec, SETTINGS)
    assert_valid(dep)
    mount = next(m for m in _engine(dep)["volumeMounts"] if m["name"] == "model-cache")
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in _engine(dep)["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"


def test_the_job_is_scheduled_like_the_replicas():
    scheduling = {
        "nodeSelector": {"nvidia.com/gpu.product": "H100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "inference",
    }
    spec = make_model("vllm", model="hf://org/m", cache=HOST, scheduling=scheduling)
    job_pod = _job(spec)["spec"]["template"]["spec"]
    replica_pod = build_deployment("m", "ns", spec, SETTINGS)["spec"]["template"]["spec"]
    for field in scheduling:
        assert job_pod[field] == replica_pod[field], field
    assert job_pod["priorityClassName"] == "inference"


def test_the_sim_mounts_the_cache_only_with_preload():
    plain = build_deployment("m", "ns", make_model("sim"), SETTINGS)
    assert "volumeMounts" not in _engine(plain) or all(
        m["name"] != "model-cache" for m in _engine(plain)["volumeMounts"]
    )
    spec = make_model("sim", cache={"pvcName": "weights", "preload": True})
    dep = build_deployment("m", "ns", spec, SETTINGS)
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in _engine(dep)[
        "volumeMounts"
    ]
    assert "--weights-cache" in _engine(dep)["args"]
    assert [d.name for d in dependencies(spec)] == ["weights"]


# --- the Cached condition ------------------------------------------------------------------------


def _job_status(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "m-preload-1"}, "status": status}


def _pod(message: str | None, exit_code: int = 0, created: str = "2026-01-01T00:00:00Z") -> Any:
    terminated: dict[str, Any] = {"exitCode": exit_code}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"labels": {"job-name": "m-preload-1"}, "creationTimestamp": created},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


COMPLETE = {
    "conditions": [{"type": "Complete", "status": "True"}],
    "startTime": "2026-01-01T00:00:00Z",
    "completionTime": "2026-01-01T00:00:32Z",
}


def test_a_completed_job_fills_the_cache_with_its_bytes_and_time():
    view = cache_view(_job_status(**COMPLETE), [_pod('{"bytes": 16060000000}')])
    assert view.filled and view.reason == "Preloaded"
    assert view.cache == CacheStatus(
        job="m-preload-1", bytes=16_060_000_000, seconds=32.0, completed_at="2026-01-01T00:00:32Z"
    )
    assert "16060000000 bytes in 32 s" in view.message
    assert serving_replicas(3, view) == 3


def test_bytes_outlive_the_jobs_pods():
    before = CacheStatus(job="m-preload-1", bytes=5)
    assert cache_view(_job_status(**COMPLETE), [], before).cache.bytes == 5  # type: ignore[union-attr]
    other = CacheStatus(job="m-preload-0", bytes=5)
    assert cache_view(_job_status(**COMPLETE), [], other).cache.bytes is None  # type: ignore[union-attr]


@pytest.mark.parametrize("message", ["not json", '{"bytes": -1}', '{"bytes": true}', "[1]", None])
def test_a_garbled_report_is_no_bytes_never_a_crash(message):
    assert reported_bytes(message) is None
    view = cache_view(_job_status(**COMPLETE), [_pod(message)])
    assert view.filled and view.cache is not None and view.cache.bytes is None


def test_a_running_job_holds_the_replicas_at_zero():
    view = cache_view(_job_status(active=1, failed=1), [_pod("boom", 1)])
    assert not view.filled and not view.failed and view.reason == "Preloading"
    assert "1 failed pods so far" in view.message
    assert serving_replicas(3, view) == 0
    assert serving_replicas(3, None) == 3
    assert cache_view(None, []).reason == "Preloading"


def test_a_failed_job_says_why_from_its_last_pod():
    failed = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
        "failed": 3,
    }
    pods = [
        _pod("old error", 1, "2026-01-01T00:00:00Z"),
        _pod("Traceback\nPermissionError: [Errno 13] /models", 1, "2026-01-01T00:01:00Z"),
    ]
    view = cache_view(_job_status(**failed), pods)
    assert view.failed and serving_replicas(2, view) == 0
    assert "BackoffLimitExceeded" in view.message
    assert "PermissionError: [Errno 13] /models" in view.message


def _status(view: Any) -> Any:
    return compute_status(
        model_name="m",
        spec=make_model("sim", cache=HOST),
        generation=1,
        desired_replicas=0,
        deployment={"metadata": {"generation": 1}, "status": {"observedGeneration": 1}},
        pods=[],
        now="2026-01-01T00:01:00Z",
        cache=view,
    )


def test_status_while_preloading_is_progressing_not_degraded():
    st = _status(cache_view(_job_status(active=1), []))
    by_type = {c.type: c for c in st.conditions}
    assert by_type[CONDITION_CACHED].status == "False"
    assert by_type["Ready"].reason == "Preloading"
    assert by_type["Progressing"].status == "True"
    assert by_type["Degraded"].status == "False"


def test_status_after_a_failed_preload_is_degraded_with_the_reason():
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
    st = _status(cache_view(_job_status(**failed), []))
    by_type = {c.type: c for c in st.conditions}
    assert by_type["Degraded"].status == "True"
    assert by_type["Degraded"].reason == "PreloadFailed"
    assert "DeadlineExceeded" in by_type[CONDITION_CACHED].message


def test_status_once_cached_reports_bytes_and_time():
    st = _status(cache_view(_job_status(**COMPLETE), [_pod('{"bytes": 7}')]))
    assert st.cache is not None and st.cache.bytes == 7 and st.cache.seconds == 32.0
    cached = next(c for c in st.conditions if c.type == CONDITION_CACHED)
    assert cached.status == "True"
    assert st.to_wire()["cache"]["bytes"] == 7


def test_turning_preload_off_drops_the_cached_condition():
    before = _status(cache_view(_job_status(**COMPLETE), []))
    after = compute_status(
        model_name="m",
        spec=make_model("sim"),
        generation=2,
        desired_replicas=0,
        deployment=None,
        pods=[],
        now="2026-01-01T00:02:00Z",
        previous=before,
    )
    assert all(c.type != CONDITION_CACHED for c in after.conditions)
    assert after.cache is None
