"""Adapters on running replicas: sources, the load/unload plan, the status (pure)."""

from __future__ import annotations

import pytest

from inferscale.api.v1alpha1.inference_model import Adapter
from inferscale.reconcile.adapters import (
    S3_REFUSED,
    AdapterAction,
    ObservedReplica,
    ResolvedAdapter,
    adapter_claims,
    adapter_statuses,
    adapter_volumes,
    adapters_condition,
    parse_loaded,
    plan_adapters,
    resolve_adapter,
)
from inferscale.reconcile.deployment import build_deployment, dependencies
from inferscale.reconcile.settings import ReconcileSettings
from tests.factories import make_model


def adapter(name: str, source: str) -> Adapter:
    return Adapter(name=name, source=source)


@pytest.mark.parametrize(
    ("source", "path", "claim", "error"),
    [
        ("hf://org/sql-lora", "org/sql-lora", None, None),
        ("pvc://loras/chat/v2", "/mnt/adapters/loras/chat/v2", "loras", None),
        ("pvc://loras", "/mnt/adapters/loras", "loras", None),
        ("s3://bucket/chat", None, None, S3_REFUSED),
        ("hf:///", None, None, "source 'hf:///' names nothing"),
    ],
)
def test_resolve_adapter_sources(source, path, claim, error):
    assert resolve_adapter(adapter("a", source)) == ResolvedAdapter("a", path, claim, error)


def test_pvc_claims_are_mounted_read_only_once_each():
    adapters = [
        adapter("a", "pvc://loras/a"),
        adapter("b", "pvc://loras/b"),
        adapter("c", "pvc://other/c"),
        adapter("d", "hf://o/d"),
    ]
    assert adapter_claims(adapters) == ["loras", "other"]
    volumes, mounts = adapter_volumes(adapters)
    assert [v["persistentVolumeClaim"] for v in volumes] == [
        {"claimName": "loras", "readOnly": True},
        {"claimName": "other", "readOnly": True},
    ]
    assert [(m["mountPath"], m["readOnly"]) for m in mounts] == [
        ("/mnt/adapters/loras", True),
        ("/mnt/adapters/other", True),
    ]


@pytest.mark.parametrize("engine", ["vllm", "sim"])
def test_the_pod_mounts_adapter_claims_and_checks_they_exist(engine):
    spec = make_model(engine, adapters=[{"name": "chat", "source": "pvc://loras/chat"}])
    pod = build_deployment("m", "d", spec, ReconcileSettings())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "adapter-source-0", "mountPath": "/mnt/adapters/loras", "readOnly": True} in (
        container["volumeMounts"]
    )
    assert any(
        v.get("persistentVolumeClaim", {}).get("claimName") == "loras" for v in pod["volumes"]
    )
    assert ("PersistentVolumeClaim", "loras", "adapters") in [
        (d.kind, d.name, d.field) for d in dependencies(spec)
    ]


LISTING = {
    "object": "list",
    "data": [
        {"id": "base", "root": "base", "parent": None},
        {"id": "sql", "root": "org/sql", "parent": "base"},
        {"id": "chat", "parent": "base"},
    ],
}


def test_parse_loaded_reads_adapters_by_parent():
    assert parse_loaded(LISTING) == {"sql": "org/sql", "chat": ""}


@pytest.mark.parametrize(
    "listing",
    [None, [], {"data": "x"}, {"data": [1]}, {"data": [{"id": 3}]}, {"object": "list"}],
)
def test_parse_loaded_refuses_what_is_not_a_model_list(listing):
    with pytest.raises(ValueError):
        parse_loaded(listing)


SQL = ResolvedAdapter("sql", "org/sql")
CHAT = ResolvedAdapter("chat", "/mnt/adapters/loras/chat", claim="loras")
S3 = ResolvedAdapter("s3", None, error=S3_REFUSED)


def test_plan_loads_missing_and_unloads_removed_unloads_first():
    replicas = [ObservedReplica("p1", {"old": "x"}), ObservedReplica("p2", {"sql": "org/sql"})]
    assert plan_adapters([SQL, CHAT], replicas, slots=4) == [
        AdapterAction("p1", "unload", "old"),
        AdapterAction("p1", "load", "sql", "org/sql"),
        AdapterAction("p1", "load", "chat", "/mnt/adapters/loras/chat"),
        AdapterAction("p2", "load", "chat", "/mnt/adapters/loras/chat"),
    ]


def test_plan_is_idempotent_once_applied():
    replicas = [ObservedReplica("p1", {"sql": "org/sql", "chat": "/mnt/adapters/loras/chat"})]
    assert plan_adapters([SQL, CHAT], replicas, slots=4) == []


def test_plan_reloads_an_adapter_whose_path_changed_and_trusts_an_empty_root():
    replicas = [ObservedReplica("p1", {"sql": "org/old-sql", "chat": ""})]
    assert plan_adapters([SQL, CHAT], replicas, slots=4) == [
        AdapterAction("p1", "unload", "sql"),
        AdapterAction("p1", "load", "sql", "org/sql"),
    ]


def test_plan_loads_at_most_slots_per_replica_per_pass():
    many = [ResolvedAdapter(f"a{i}", f"o/a{i}") for i in range(6)]
    actions = plan_adapters(many, [ObservedReplica("p1", {})], slots=2)
    assert [a.name for a in actions] == ["a0", "a1"]
    done = {a.name: a.path for a in actions if a.path}
    assert [a.name for a in plan_adapters(many, [ObservedReplica("p1", done)], 2)] == ["a2", "a3"]


def test_plan_skips_unreadable_replicas_and_unloads_refused_sources():
    replicas = [ObservedReplica("p1", None, "timed out"), ObservedReplica("p2", {"s3": "s3://b"})]
    assert plan_adapters([S3], replicas, slots=4) == [AdapterAction("p2", "unload", "s3")]


def test_statuses_count_replicas_and_carry_errors():
    replicas = [
        ObservedReplica("p1", {"sql": "org/sql"}),
        ObservedReplica("p2", {"sql": "org/sql"}),
    ]
    sql, chat, s3 = adapter_statuses(
        [SQL, CHAT, S3], replicas, {"chat": "p1: 400 lora rank 64 is greater than max 16"}
    )
    assert (sql.phase, sql.loaded_replicas, sql.ready_replicas, sql.loaded_on) == (
        "Loaded",
        2,
        2,
        ["p1", "p2"],
    )
    assert sql.message is None
    assert chat.phase == "Failed"
    assert "rank 64" in (chat.message or "")
    assert (s3.phase, s3.message) == ("Failed", S3_REFUSED)
    status, reason, message = adapters_condition([sql, chat, s3])
    assert (status, reason) == ("False", "AdapterFailed")
    assert message.startswith("adapter chat: p1: 400") and message.endswith("(and 1 more)")


def test_statuses_pending_without_replicas_loading_on_some():
    (pending,) = adapter_statuses([SQL], [], {})
    assert (pending.phase, pending.loaded_replicas, pending.ready_replicas) == ("Pending", 0, 0)
    replicas = [ObservedReplica("p1", {"sql": "org/sql"}), ObservedReplica("p2", None, "refused")]
    (loading,) = adapter_statuses([SQL], replicas, {})
    assert loading.phase == "Loading"
    assert loading.message == "replica p2 could not be read: refused"
    assert adapters_condition([loading])[:2] == ("False", "AdaptersLoading")


def test_condition_true_when_all_loaded():
    (loaded,) = adapter_statuses([SQL], [ObservedReplica("p1", {"sql": "org/sql"})], {})
    assert adapters_condition([loaded]) == (
        "True",
        "AdaptersLoaded",
        "1 adapter(s) loaded on every ready replica",
    )


def test_long_messages_are_clipped_to_the_status_limit():
    (s,) = adapter_statuses([SQL], [ObservedReplica("p1", {})], {"sql": "x" * 5000})
    assert s.message is not None and len(s.message) == 1024
