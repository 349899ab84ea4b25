"""reconcile_model against FakeKubeApi: children, owner references, status, events, faults."""

import copy

import pytest

from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import Runtime, reconcile_model
from inferscale.errors import DependencyNotReady, Forbidden, SpecError
from inferscale.kube.fake import FakeKubeApi

NOW = "2026-11-27T00:00:00Z"


def model_body(**spec):
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "llama", "namespace": "ns", "uid": "uid-llama", "generation": 1},
        "spec": {"model": "hf://org/llama", "engine": "sim", "resources": {"gpus": 0}, **spec},
    }


class Events(list):
    def __call__(self, type_, reason, message):
        self.append((type_, reason, message))


@pytest.fixture
def runtime():
    return Runtime(api=FakeKubeApi(), settings=OperatorSettings())


async def reconcile(runtime, body, events=None):
    stored = runtime.api.objects.get(("inferscale.io/v1alpha1", "InferenceModel", "ns", "llama"))
    if stored is None:
        stored = runtime.api.put(body)
    events = events if events is not None else Events()
    await reconcile_model(runtime, stored, post_event=events, now=lambda: NOW)
    return events


def model_status(runtime):
    return runtime.api.objects[("inferscale.io/v1alpha1", "InferenceModel", "ns", "llama")].get(
        "status"
    )


async def test_creates_children_with_owner_references_and_writes_status(runtime):
    events = await reconcile(runtime, model_body())
    kinds = sorted(k for (_, k, _, _) in runtime.api.objects if k != "InferenceModel")
    assert kinds == ["Deployment", "PodDisruptionBudget", "Service"]
    for (_, kind, _, _), obj in runtime.api.objects.items():
        if kind == "InferenceModel":
            continue
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "inferscale.io/v1alpha1",
            "kind": "InferenceModel",
            "name": "llama",
            "uid": "uid-llama",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    assert [e[1] for e in events] == ["Created", "Created", "Created"]
    status = model_status(runtime)
    assert status["desiredReplicas"] == 1
    assert status["servedName"] == "llama"
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}


async def test_second_run_changes_nothing_and_writes_no_status(runtime):
    await reconcile(runtime, model_body())
    runtime.api.calls.clear()
    events = await reconcile(runtime, model_body())
    assert events == []
    assert [c for c in runtime.api.calls if c[0] in ("apply", "delete", "patch_status")] == []


async def test_deleted_child_comes_back(runtime):
    await reconcile(runtime, model_body())
    del runtime.api.objects[("apps/v1", "Deployment", "ns", "llama")]
    events = await reconcile(runtime, model_body())
    assert [(t, r) for t, r, m in events if "Deployment" in m] == [("Normal", "Created")]
    assert ("apps/v1", "Deployment", "ns", "llama") in runtime.api.objects


async def test_hand_edited_child_is_restored(runtime):
    await reconcile(runtime, model_body())
    key = ("apps/v1", "Deployment", "ns", "llama")
    edited = copy.deepcopy(runtime.api.objects[key])
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    runtime.api.objects[key] = edited
    events = await reconcile(runtime, model_body())
    assert any(e[1] == "Updated" and "Deployment" in e[2] for e in events)
    image = runtime.api.objects[key]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != "evil:latest"


async def test_invalid_spec_is_reported_and_creates_nothing(runtime):
    body = model_body()
    body["spec"]["minReplicas"] = 5
    body["spec"]["maxReplicas"] = 1
    events = Events()
    with pytest.raises(SpecError, match="minReplicas"):
        await reconcile(runtime, body, events)
    assert [k for (_, k, _, _) in runtime.api.objects] == ["InferenceModel"]
    ready = next(c for c in model_status(runtime)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert events[0][:2] == ("Warning", "InvalidSpec")


async def test_missing_secret_is_reported_then_recovers(runtime):
    body = model_body(engine="vllm", hfTokenSecretRef={"name": "hf", "key": "token"})
    body["spec"]["resources"] = {"gpus": 1}
    with pytest.raises(DependencyNotReady, match='Secret "hf"'):
        await reconcile(runtime, body)
    ready = next(c for c in model_status(runtime)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MissingDependency")
    assert [k for (_, k, _, _) in runtime.api.objects] == ["InferenceModel"], "nothing half-way"
    runtime.api.put(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": "ns"}}
    )
    await reconcile(runtime, body)
    assert ("apps/v1", "Deployment", "ns", "llama") in runtime.api.objects
    ready = next(c for c in model_status(runtime)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] != "MissingDependency"


async def test_forbidden_surfaces_unchanged(runtime):
    runtime.api.fail_next("apply", Forbidden(403, "Forbidden", "cannot patch deployments"))
    with pytest.raises(Forbidden):
        await reconcile(runtime, model_body())


async def test_scale_through_spec_replicas_when_autoscaling_is_off(runtime):
    body = model_body(autoscaling={"enabled": False}, replicas=3)
    await reconcile(runtime, body)
    assert runtime.api.objects[("apps/v1", "Deployment", "ns", "llama")]["spec"]["replicas"] == 3
    assert model_status(runtime)["desiredReplicas"] == 3


async def test_unmanaged_labelled_object_is_kept(runtime):
    await reconcile(runtime, model_body())
    runtime.api.put(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "handmade",
                "namespace": "ns",
                "labels": {"inferscale.io/model": "llama"},
            },
        }
    )
    events = await reconcile(runtime, model_body())
    assert ("v1", "Service", "ns", "handmade") in runtime.api.objects
    assert events == [], "a kept object is logged, not announced on every run"


async def test_a_deleted_model_leaves_no_lock_behind(runtime):
    from inferscale.controller.inference_model import _run_reconcile

    runtime.lock("ns", "gone")
    await _run_reconcile(
        runtime, model_body() | {"metadata": {"name": "gone", "namespace": "ns"}}, Events()
    )
    assert ("ns", "gone") not in runtime.locks


def drift_runtime(runtime, *names):
    """The runtime with a models index holding ``names`` (as kopf would pass it)."""
    from inferscale.controller.cache import INDEX_NAMES, ChildCache

    indices = {name: {} for name in INDEX_NAMES}
    for name in names:
        indices["models"][("ns", name)] = [model_body() | {"metadata": {"name": name}}]
    runtime.cache = ChildCache(indices)
    return indices


async def test_the_drift_check_waits_an_interval_for_a_model_it_sees_first(runtime, monkeypatch):
    from inferscale.controller import inference_model

    queued = []
    monkeypatch.setattr(
        inference_model, "schedule_reconcile", lambda rt, ns, name, *a, **k: queued.append(name)
    )
    drift_runtime(runtime, "llama")
    interval = inference_model.DRIFT_INTERVAL_SECONDS
    assert inference_model.check_drift(runtime, 1000.0) == [], "its creation's runs cover it"
    assert inference_model.check_drift(runtime, 1000.0 + interval - 1) == []
    assert inference_model.check_drift(runtime, 1000.0 + interval) == [("ns", "llama")]
    assert queued == ["llama"]
    assert inference_model.check_drift(runtime, 1000.0 + interval + 10) == [], (
        "a failed run counts as an attempt: not retried on every tick"
    )


async def test_the_drift_check_skips_a_model_that_events_kept_current(runtime, monkeypatch):
    from inferscale.controller import inference_model

    queued = []
    monkeypatch.setattr(
        inference_model, "schedule_reconcile", lambda rt, ns, name, *a, **k: queued.append(name)
    )
    drift_runtime(runtime, "llama", "other")
    interval = inference_model.DRIFT_INTERVAL_SECONDS
    runtime.reconciled_at[("ns", "other")] = 500.0
    runtime.reconciled_at[("ns", "llama")] = 500.0 + interval  # a child event's run
    assert inference_model.check_drift(runtime, 500.0 + interval + 1) == [("ns", "other")]
    assert queued == ["other"]


async def test_the_drift_check_skips_a_model_with_a_run_under_way_or_queued(runtime, monkeypatch):
    from inferscale.controller import inference_model

    monkeypatch.setattr(inference_model, "schedule_reconcile", lambda *a, **k: None)
    drift_runtime(runtime, "llama", "queued")
    runtime.reconciled_at[("ns", "llama")] = 0.0
    runtime.reconciled_at[("ns", "queued")] = 0.0
    runtime.pending[("ns", "queued")] = object()
    async with runtime.lock("ns", "llama"):
        assert inference_model.check_drift(runtime, 10_000.0) == []


async def test_the_drift_check_forgets_a_model_that_is_gone(runtime, monkeypatch):
    from inferscale.controller import inference_model

    monkeypatch.setattr(inference_model, "schedule_reconcile", lambda *a, **k: None)
    indices = drift_runtime(runtime, "llama")
    inference_model.check_drift(runtime, 0.0)
    assert ("ns", "llama") in runtime.drift_checked_at
    del indices["models"][("ns", "llama")]
    inference_model.check_drift(runtime, 1.0)
    assert runtime.drift_checked_at == {}


async def test_a_drift_run_repairs_a_model_and_is_recorded(runtime, monkeypatch):
    import asyncio
    import time

    from inferscale.controller import inference_model

    monkeypatch.setattr(inference_model, "event_poster", lambda body: Events())
    stored = runtime.api.put(model_body())
    indices = drift_runtime(runtime)
    indices["models"][("ns", "llama")] = [stored]
    runtime.reconciled_at[("ns", "llama")] = time.monotonic() - 1000
    assert inference_model.check_drift(runtime, time.monotonic()) == [("ns", "llama")]
    await asyncio.wait_for(runtime.pending[("ns", "llama")], 5)
    kinds = sorted(k for (_, k, _, _) in runtime.api.objects)
    assert kinds == ["Deployment", "InferenceModel", "PodDisruptionBudget", "Service"]
    assert runtime.reconciled_at[("ns", "llama")] > time.monotonic() - 5, "the run is recorded"


async def test_the_drift_loop_starts_with_the_indices_and_stops_at_shutdown(runtime):
    from inferscale.controller import inference_model
    from inferscale.controller.cache import INDEX_NAMES

    inference_model.bind_cache(runtime, {})
    assert runtime.drift_task is None, "no indices, no loop"
    inference_model.bind_cache(runtime, {name: {} for name in INDEX_NAMES})
    task = runtime.drift_task
    assert task is not None and not task.done()
    inference_model.bind_cache(runtime, {name: {} for name in INDEX_NAMES})
    assert runtime.drift_task is task, "one loop"
    await inference_model.cancel_pending(runtime)
    assert task.cancelled() and runtime.drift_task is None


async def test_runs_of_different_models_share_a_bounded_number_of_slots(runtime, monkeypatch):
    import asyncio
    import logging

    from inferscale.controller import inference_model

    running = 0
    most = 0

    async def slow_reconcile(runtime, namespace, name, post_event):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1

    monkeypatch.setattr(inference_model, "_reconcile_locked", slow_reconcile)
    runtime.slots = asyncio.Semaphore(3)
    for i in range(12):
        inference_model.schedule_reconcile(runtime, "ns", f"m{i}", logging.getLogger(), delay=0)
    await asyncio.wait_for(asyncio.gather(*runtime.pending.values()), 5)
    assert most == 3


async def test_a_burst_of_child_events_queues_one_run_behind_the_running_one(runtime, monkeypatch):
    import asyncio
    import logging

    from inferscale.controller import inference_model

    runs: list[str] = []

    async def slow_reconcile(runtime, namespace, name, post_event):
        runs.append(name)
        await asyncio.sleep(0.3)

    monkeypatch.setattr(inference_model, "COALESCE_SECONDS", 0.01)
    monkeypatch.setattr(inference_model, "_reconcile_locked", slow_reconcile)
    logger = logging.getLogger("test")
    inference_model.schedule_reconcile(runtime, "ns", "llama", logger)
    await asyncio.sleep(0.1)  # the first run is under way
    for _ in range(20):  # child events while it runs
        inference_model.schedule_reconcile(runtime, "ns", "llama", logger)
        await asyncio.sleep(0.005)
    for _ in range(50):
        if not runtime.pending:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.35)
    assert runs == ["llama", "llama"], "one run, then one more for all the events during it"
    assert runtime.pending == {}


async def test_an_unexpected_error_in_a_queued_run_is_logged_not_lost(runtime, monkeypatch, caplog):
    import asyncio
    import logging

    from inferscale.controller import inference_model

    async def broken(runtime, namespace, name, post_event):
        raise KeyError("bug")

    monkeypatch.setattr(inference_model, "COALESCE_SECONDS", 0.01)
    monkeypatch.setattr(inference_model, "_reconcile_locked", broken)
    inference_model.schedule_reconcile(runtime, "ns", "llama", logging.getLogger("test"))
    task = runtime.pending[("ns", "llama")]
    await asyncio.wait_for(task, 2)
    assert "reconcile of ns/llama after a child event failed" in caplog.text
    assert runtime.pending == {}, "the next event can queue a run again"


async def test_the_drift_loop_outlives_a_failed_check(runtime, monkeypatch, caplog):
    import asyncio

    from inferscale.controller import inference_model

    calls = []

    def check(runtime, now):
        calls.append(now)
        if len(calls) == 1:
            raise KeyError("bug")
        return [("ns", "llama")]

    monkeypatch.setattr(inference_model, "check_drift", check)
    task = asyncio.get_running_loop().create_task(inference_model.drift_loop(runtime, tick=0.01))
    for _ in range(100):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert len(calls) >= 2
    assert "drift check failed" in caplog.text
