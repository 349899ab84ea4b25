"""reconcile_model with spec.cache.preload: the Job first, replicas after it, status from it."""

import pytest

from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import Runtime
from inferscale.errors import SpecError
from inferscale.kube.fake import FakeKubeApi
from tests.component.operator.test_reconcile import model_body, model_status, reconcile

CACHE = {"hostPath": "/var/lib/weights", "preload": True}


@pytest.fixture
def runtime():
    return Runtime(api=FakeKubeApi(), settings=OperatorSettings())


def _only(runtime, kind):
    (obj,) = [o for (_, k, _, _), o in runtime.api.objects.items() if k == kind]
    return obj


def _finish(runtime, job, *, ok: bool, message: str):
    job["status"] = {
        "startTime": "2026-11-27T00:00:00Z",
        **(
            {
                "conditions": [{"type": "Complete", "status": "True"}],
                "completionTime": "2026-11-27T00:00:03Z",
            }
            if ok
            else {
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ],
                "failed": 3,
            }
        ),
    }
    runtime.api.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": job["metadata"]["name"] + "-x",
                "namespace": "ns",
                "labels": {
                    "inferscale.io/preload-of": "llama",
                    "job-name": job["metadata"]["name"],
                },
            },
            "status": {
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 0 if ok else 1, "message": message}}}
                ]
            },
        }
    )


async def test_replicas_wait_for_the_preload_then_start(runtime):
    events = await reconcile(runtime, model_body(cache=CACHE, minReplicas=2, maxReplicas=2))
    assert sorted(e[2].split(" ")[1] for e in events) == [
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Service",
    ]
    assert _only(runtime, "Deployment")["spec"]["replicas"] == 0
    status = model_status(runtime)
    cached = next(c for c in status["conditions"] if c["type"] == "Cached")
    assert (cached["status"], cached["reason"]) == ("False", "Preloading")

    _finish(runtime, _only(runtime, "Job"), ok=True, message='{"bytes": 16060000000}')
    await reconcile(runtime, model_body())
    assert _only(runtime, "Deployment")["spec"]["replicas"] == 2
    status = model_status(runtime)
    assert status["cache"]["bytes"] == 16_060_000_000
    assert status["cache"]["seconds"] == 3.0
    cached = next(c for c in status["conditions"] if c["type"] == "Cached")
    assert (cached["status"], cached["reason"]) == ("True", "Preloaded")

    # Once the bytes are in the status, the Job's pods are not listed again.
    runtime.api.calls.clear()
    await reconcile(runtime, model_body())
    assert not [c for c in runtime.api.calls if c[3].startswith("inferscale.io/preload-of")]


async def test_a_failed_preload_keeps_replicas_at_zero_and_says_why(runtime):
    await reconcile(runtime, model_body(cache=CACHE))
    _finish(
        runtime,
        _only(runtime, "Job"),
        ok=False,
        message="inferscale sim: cannot fill the weight cache: [Errno 17] File exists",
    )
    await reconcile(runtime, model_body())
    assert _only(runtime, "Deployment")["spec"]["replicas"] == 0
    conditions = {c["type"]: c for c in model_status(runtime)["conditions"]}
    assert conditions["Degraded"]["reason"] == "PreloadFailed"
    assert "File exists" in conditions["Cached"]["message"]
    assert "BackoffLimitExceeded" in conditions["Ready"]["message"]


async def test_an_engine_that_cannot_preload_is_an_invalid_spec(runtime):
    body = model_body(engine="tgi", cache={"pvcName": "w", "preload": True})
    runtime.api.put(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "w", "namespace": "ns"},
        }
    )
    with pytest.raises(SpecError, match="cannot download weights ahead"):
        await reconcile(runtime, body)
    ready = next(c for c in model_status(runtime)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"


async def test_a_cache_size_creates_the_claim_as_a_child(runtime):
    cache = {"size": "40Gi", "storageClassName": "fast", "preload": True}
    await reconcile(runtime, model_body(cache=cache))
    claim = _only(runtime, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "llama-weights"
    assert claim["metadata"]["ownerReferences"][0]["name"] == "llama"
    volume = _only(runtime, "Job")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == "llama-weights"
    # Turning the size off deletes the operator's claim (the model no longer wants it).
    body = model_body(cache={"hostPath": "/w", "preload": True})
    stored = runtime.api.objects[("inferscale.io/v1alpha1", "InferenceModel", "ns", "llama")]
    stored["spec"] = body["spec"]
    await reconcile(runtime, body)
    assert not [k for (_, k, _, _) in runtime.api.objects if k == "PersistentVolumeClaim"]
