"""ChildCache: the index view of a model's children, and writes the watch has not shown yet."""

from inferscale.controller.cache import INDEX_NAMES, ChildCache


def obj(kind, name, rv, model="m", ns="ns"):
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": {"inferscale.io/model": model},
        },
    }


def cache_with(**stores):
    indices = {n: {} for n in INDEX_NAMES}
    for index, objects in stores.items():
        for o in objects:
            indices[index].setdefault(
                (o["metadata"]["namespace"], o["metadata"]["labels"]["inferscale.io/model"]), []
            ).append(o)
    return ChildCache(indices), indices


def test_children_and_pods_come_from_the_indices():
    cache, _ = cache_with(
        model_deployments=[obj("Deployment", "m", 5)], model_pods=[obj("Pod", "p", 6)]
    )
    assert [c["kind"] for c in cache.children("ns", "m")] == ["Deployment"]
    assert [p["metadata"]["name"] for p in cache.pods("ns", "m")] == ["p"]
    assert cache.children("other", "m") == []


def test_an_applied_object_counts_until_the_watch_shows_it():
    cache, indices = cache_with()
    cache.applied(obj("Service", "m", 10))
    assert [c["kind"] for c in cache.children("ns", "m")] == ["Service"], "not re-created"
    indices["model_services"][("ns", "m")] = [obj("Service", "m", 10)]
    assert len(cache.children("ns", "m")) == 1
    assert cache.recent == {}, "the watch caught up"


def test_an_update_wins_over_the_older_watched_copy():
    cache, indices = cache_with(model_deployments=[obj("Deployment", "m", 5)])
    updated = obj("Deployment", "m", 9)
    updated["spec"] = {"replicas": 3}
    cache.applied(updated)
    (seen,) = cache.children("ns", "m")
    assert seen["spec"] == {"replicas": 3}
    indices["model_deployments"][("ns", "m")] = [obj("Deployment", "m", 12)]
    (seen,) = cache.children("ns", "m")
    assert seen["metadata"]["resourceVersion"] == "12", "a newer watched copy (a hand edit) wins"


def test_deleted_objects_are_forgotten_and_other_models_are_not_mixed_in():
    cache, _ = cache_with()
    cache.applied(obj("Service", "m", 3))
    cache.applied(obj("Service", "other", 4, model="other"))
    cache.deleted("Service", "ns", "m")
    assert cache.children("ns", "m") == []
    assert len(cache.children("ns", "other")) == 1


def test_returned_objects_are_copies():
    cache, indices = cache_with(model_deployments=[obj("Deployment", "m", 5)])
    cache.children("ns", "m")[0]["metadata"]["name"] = "changed"
    assert indices["model_deployments"][("ns", "m")][0]["metadata"]["name"] == "m"


def test_model_reads_prefer_our_newer_status_write_and_see_deletion():
    model = obj("InferenceModel", "m", 5)
    model["metadata"]["labels"] = {}
    indices = {n: {} for n in INDEX_NAMES}
    indices["models"][("ns", "m")] = [model]
    cache = ChildCache(indices)
    written = obj("InferenceModel", "m", 8)
    written["status"] = {"desiredReplicas": 2}
    written["metadata"]["managedFields"] = [{"manager": "x"}]
    cache.applied(written)
    current = cache.model("ns", "m")
    assert current["status"] == {"desiredReplicas": 2}
    assert "managedFields" not in current["metadata"]
    indices["models"][("ns", "m")] = []
    assert cache.model("ns", "m") is None


def test_a_models_own_status_write_is_not_one_of_its_children():
    cache, _ = cache_with()
    model = obj("InferenceModel", "m", 8)
    model["metadata"]["labels"] = {}
    cache.applied(model)
    cache.applied(obj("Service", "m", 9))
    assert [c["kind"] for c in cache.children("ns", "m")] == ["Service"]


def test_a_gone_model_leaves_no_remembered_writes():
    cache, _ = cache_with()
    cache.applied(obj("Service", "m", 9))
    cache.applied(obj("Service", "other", 9, model="other"))
    cache.forget_model("ns", "m")
    assert list(cache.recent) == [("ns", "other")]


def test_pod_snapshots_keep_identity_and_status_but_not_the_spec():
    from inferscale.controller.cache import _pod_snapshot

    pod = obj("Pod", "p", 7)
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    pod["metadata"]["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    pod["spec"] = {"nodeName": "gpu-0", "containers": [{"name": "engine", "image": "x"}]}
    pod["status"] = {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
    snapshot = _pod_snapshot(pod)
    assert snapshot["spec"] == {"nodeName": "gpu-0"}
    assert snapshot["status"] == pod["status"] and snapshot["status"] is not pod["status"]
    assert snapshot["metadata"]["deletionTimestamp"] == "2026-11-27T00:00:00Z"
    assert snapshot["metadata"]["labels"] == {"inferscale.io/model": "m"}
    assert "managedFields" not in snapshot["metadata"]


def test_pod_counts_reads_ready_and_starting_without_deleting_ones() -> None:
    from inferscale.controller.cache import ChildCache

    def pod(name: str, ready: bool, deleting: bool = False) -> dict:
        meta = {"name": name, "namespace": "ns"}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        status = "True" if ready else "False"
        return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": status}]}}

    pods = [pod("a", True), pod("b", False), pod("c", True, deleting=True), {"metadata": {}}]
    cache = ChildCache({"model_pods": {("ns", "m"): pods}})
    assert cache.pod_counts("ns", "m") == (1, 2)
    assert cache.pod_counts("ns", "other") == (0, 0)


async def test_child_indices_keep_frozen_snapshots_without_managed_fields():
    import kopf

    from inferscale.controller.cache import model_deployments, model_pdbs, model_services

    body = obj("Deployment", "m", 5)
    body["metadata"]["managedFields"] = [{"manager": "inferscale"}]
    body["spec"] = {"replicas": 2}
    labels = body["metadata"]["labels"]
    for index in (model_deployments, model_services, model_pdbs):
        ((key, frozen),) = (await index(body=kopf.Body(body), labels=labels)).items()
        assert key == ("ns", "m")
        assert isinstance(frozen, bytes)
    assert "managedFields" in body["metadata"], "the watched body is left alone"
    cache, indices = cache_with()
    indices["model_deployments"][("ns", "m")] = [frozen]
    (seen,) = cache.children("ns", "m")
    assert seen["spec"] == {"replicas": 2}
    assert "managedFields" not in seen["metadata"]
    seen["spec"]["replicas"] = 9
    assert cache.children("ns", "m")[0]["spec"] == {"replicas": 2}, "each read is a copy"


def test_writes_are_remembered_frozen_and_read_back_whole():
    cache, _ = cache_with()
    written = obj("Deployment", "m", 9)
    written["metadata"]["managedFields"] = [{"manager": "inferscale"}]
    written["spec"] = {"replicas": 3}
    cache.applied(written)
    (kept,) = cache.recent[("ns", "m")].values()
    assert isinstance(kept, bytes)
    (seen,) = cache.children("ns", "m")
    assert seen["spec"] == {"replicas": 3}
    assert "managedFields" not in seen["metadata"]


def test_model_keys_lists_the_models_in_the_index():
    model = obj("InferenceModel", "m", 5)
    indices = {n: {} for n in INDEX_NAMES}
    indices["models"][("ns", "m")] = [model]
    indices["models"][("ns", "emptied")] = []
    assert ChildCache(indices).model_keys() == {("ns", "m")}


async def test_model_and_pod_indices_keep_parsed_snapshots():
    import kopf

    from inferscale.controller.cache import model_pods, models

    body = obj("InferenceModel", "m", 5)
    body["metadata"]["managedFields"] = [{"manager": "inferscale"}]
    (snapshot,) = (await models(body=kopf.Body(body))).values()
    assert snapshot["metadata"]["name"] == "m" and "managedFields" not in snapshot["metadata"]
    pod = obj("Pod", "p", 6)
    ((key, snapshot),) = (
        await model_pods(body=kopf.Body(pod), labels=pod["metadata"]["labels"])
    ).items()
    assert key == ("ns", "m") and snapshot["metadata"]["name"] == "p"


def test_a_frozen_snapshot_holds_no_spare_buffer():
    import tracemalloc

    from inferscale.controller.cache import freeze

    body = obj("Deployment", "m", 5)
    body["spec"] = {"template": {"spec": {"containers": [{"args": ["--x"] * 300}]}}}
    tracemalloc.start()
    try:
        kept = [freeze(body) for _ in range(20)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 20 * (len(kept[0]) + 256), "orjson's spare buffer is not kept"
