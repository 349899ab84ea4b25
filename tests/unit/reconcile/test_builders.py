"""Deployment, Service and PDB builders: golden YAML per engine, schema validation, and rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inferscale.api.meta import LABEL_ENGINE, LABEL_MANAGED_BY, LABEL_MODEL
from inferscale.api.v1alpha1.inference_model import ENGINES as API_ENGINES
from inferscale.api.v1alpha1.inference_model import InferenceModel
from inferscale.config import OperatorSettings
from inferscale.errors import SpecError
from inferscale.reconcile.deployment import (
    Dependency,
    build_deployment,
    dependencies,
    desired_replicas,
    served_name,
)
from inferscale.reconcile.engines import ENGINES, HF_HOME, UnsupportedSpec
from inferscale.reconcile.labels import check_model_name, selector_labels, selector_string
from inferscale.reconcile.pdb import build_pdb
from inferscale.reconcile.service import SERVICE_PORT, build_service
from inferscale.reconcile.settings import ReconcileSettings
from tests.factories import make_model
from tests.manifests import example_docs
from tests.unit.reconcile.conftest import assert_golden, assert_valid

ALL = list(API_ENGINES)
SETTINGS = ReconcileSettings()

# A realistic spec per engine, each within what that engine can do; golden files pin the output.
RICH: dict[str, dict[str, Any]] = {
    "vllm": {
        "resources": {"gpus": 2, "cpu": 16, "memory": "96Gi"},
        "optimization": {
            "quantization": "fp8",
            "prefixCaching": True,
            "maxModelLen": 32768,
            "kvCacheDtype": "fp8",
            "gpuMemoryUtilization": 0.92,
            "speculativeDecoding": {"method": "ngram", "numSpeculativeTokens": 4},
        },
        "hfTokenSecretRef": {"name": "hf", "key": "token"},
        "cache": {"pvcName": "weights-cache"},
    },
    "sglang": {
        "resources": {"gpus": 4},
        "optimization": {
            "tensorParallelSize": 2,
            "maxModelLen": 16384,
            "kvCacheDtype": "fp8_e4m3",
            "speculativeDecoding": {
                "method": "eagle3",
                "draftModel": "hf://lmsys/sglang-EAGLE3-LLaMA3.1-Instruct-8B",
            },
        },
        "cache": {"sizeLimit": "200Gi"},
    },
    "tgi": {
        "resources": {"gpus": 2, "gpuResourceName": "amd.com/gpu"},
        "optimization": {"quantization": "awq", "prefixCaching": False, "maxModelLen": 8192},
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
    },
    "trtllm": {
        "model": "pvc://weights/llama-3.1-8b-fp8",
        "optimization": {
            "prefixCaching": True,
            "kvCacheDtype": "fp8",
            "speculativeDecoding": {
                "method": "eagle3",
                "draftModel": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
                "numSpeculativeTokens": 3,
            },
        },
        "scheduling": {"priorityClassName": "inference-high"},
    },
    "llamacpp": {
        "model": "pvc://gguf/qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "resources": {"gpus": 0, "cpu": 4, "memory": "8Gi"},
        "optimization": {"maxModelLen": 4096, "prefixCaching": True},
        "autoscaling": {"targetInFlightPerReplica": 4},
        "maxReplicas": 8,
    },
    "sim": {
        "resources": {"gpus": 0, "cpu": "250m", "memory": "256Mi"},
        "optimization": {"maxModelLen": 8192},
        "serving": {"terminationGracePeriodSeconds": 30},
        "minReplicas": 0,
        "replicas": 2,
        "autoscaling": {"enabled": False},
    },
}


def children(name: str, ns: str, spec, settings: ReconcileSettings = SETTINGS) -> list[dict]:
    return [
        build_deployment(name, ns, spec, settings),
        build_service(name, ns, spec),
        build_pdb(name, ns, spec),
    ]


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def pod_spec(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


@pytest.mark.parametrize("engine", ALL)
def test_golden_per_engine(engine):
    objs = children(f"llama-{engine}", "models", make_model(engine, **RICH[engine]))
    assert_golden(f"engine-{engine}", objs)


@pytest.mark.parametrize("engine", ALL)
def test_golden_minimal_per_engine(engine):
    assert_golden(f"minimal-{engine}", children("m", "default", make_model(engine)))


EXAMPLES = [(name, doc) for name, doc in example_docs() if doc.get("kind") == "InferenceModel"]


@pytest.mark.parametrize(("file", "doc"), EXAMPLES, ids=[f for f, _ in EXAMPLES])
def test_golden_examples(file, doc):
    model = InferenceModel.model_validate(doc)
    objs = children(model.metadata.name, "default", model.spec)
    for obj in objs:
        assert_valid(obj)
    assert_golden(f"example-{file.removesuffix('.yaml')}", objs)


@pytest.mark.parametrize("engine", ALL)
@pytest.mark.parametrize("variant", ["minimal", "rich"])
def test_children_pass_the_kubernetes_schema(engine, variant):
    spec = make_model(engine, **(RICH[engine] if variant == "rich" else {}))
    for obj in children("m", "default", spec):
        assert_valid(obj)


def test_schema_validation_catches_a_broken_object():
    dep = build_deployment("m", "default", make_model(), SETTINGS)
    pod_spec(dep)["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(Exception, match="containerPort"):
        assert_valid(dep)


# --- labels, names and selectors -------------------------------------------------------------


@pytest.mark.parametrize("engine", ALL)
def test_labels_and_selectors(engine):
    dep, svc, pdb = children("m", "ns", make_model(engine))
    sel = selector_labels("m")
    assert dep["spec"]["selector"]["matchLabels"] == sel
    assert svc["spec"]["selector"] == sel
    assert pdb["spec"]["selector"]["matchLabels"] == sel
    assert LABEL_ENGINE not in sel, "the selector must survive an engine change"
    for obj in (dep, svc, pdb):
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_MODEL] == "m" and labels[LABEL_ENGINE] == engine
        assert labels[LABEL_MANAGED_BY] == "inferscale"
        assert "ownerReferences" not in obj["metadata"]
        assert obj["metadata"]["namespace"] == "ns"
    template = dep["spec"]["template"]["metadata"]["labels"]
    assert template == dep["metadata"]["labels"]
    assert template is not dep["metadata"]["labels"]


def test_selector_string_for_the_scale_subresource():
    assert selector_string("m") == "app.kubernetes.io/component=engine,inferscale.io/model=m"


@pytest.mark.parametrize("name", ["a" * 64, "1model", "my.model", "Model"])
def test_names_that_cannot_name_a_service_are_spec_errors(name):
    with pytest.raises(SpecError, match="cannot name a Service"):
        check_model_name(name)
    for build in (build_service, build_pdb):
        with pytest.raises(SpecError):
            build(name, "ns", make_model())
    with pytest.raises(SpecError):
        build_deployment(name, "ns", make_model(), SETTINGS)


def test_unsupported_spec_raises_from_the_builder():
    with pytest.raises(UnsupportedSpec):
        build_deployment("m", "ns", make_model("tgi", model="s3://b/m"), SETTINGS)


# --- container -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ALL)
def test_probes_ports_and_metrics_use_the_engines_own_paths(engine):
    profile = ENGINES[engine]
    dep = build_deployment("m", "ns", make_model(engine), SETTINGS)
    c = container(dep)
    assert c["ports"] == [{"name": "http", "containerPort": profile.port, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": profile.health_path, "port": "http"}
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(profile.port),
        "prometheus.io/path": profile.metrics_path,
    }


@pytest.mark.parametrize(("timeout", "threshold"), [(1800, 1800), (10, 10), (95, 95), (1200, 1200)])
def test_startup_probe_allows_the_startup_timeout(timeout, threshold):
    spec = make_model(serving={"startupTimeoutSeconds": timeout})
    probe = container(build_deployment("m", "ns", spec, SETTINGS))["startupProbe"]
    assert probe["failureThreshold"] == threshold
    assert probe["periodSeconds"] * probe["failureThreshold"] >= timeout
    # A loaded replica is found within a second: a cold start's held requests wait no longer.
    assert probe["periodSeconds"] == 1


def test_progress_deadline_outlasts_the_startup_probe():
    spec = make_model(serving={"startupTimeoutSeconds": 1200})
    dep = build_deployment("m", "ns", spec, SETTINGS)
    assert (
        dep["spec"]["progressDeadlineSeconds"] == 1200 + SETTINGS.progress_deadline_margin_seconds
    )


@pytest.mark.parametrize(("grace", "pre_stop"), [(120, 5), (0, 5), (30, 0)])
def test_grace_period_includes_the_pre_stop_pause(grace, pre_stop):
    spec = make_model(serving={"terminationGracePeriodSeconds": grace})
    dep = build_deployment("m", "ns", spec, ReconcileSettings(pre_stop_seconds=pre_stop))
    assert pod_spec(dep)["terminationGracePeriodSeconds"] == grace + pre_stop
    lifecycle = container(dep).get("lifecycle")
    if pre_stop:
        assert lifecycle == {"preStop": {"sleep": {"seconds": pre_stop}}}
    else:
        assert lifecycle is None


RESOURCES = [
    ({"gpus": 1}, {"nvidia.com/gpu": "1"}),
    ({"gpus": 8, "gpuResourceName": "amd.com/gpu"}, {"amd.com/gpu": "8"}),
    ({"gpus": 0}, {}),
    ({"gpus": 0, "cpu": "500m", "memory": 512}, {"cpu": "500m", "memory": "512"}),
    (
        {"gpus": 2, "cpu": 8, "memory": "64Gi"},
        {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
    ),
]


@pytest.mark.parametrize(("resources", "expected"), RESOURCES)
def test_requests_equal_limits(resources, expected):
    c = container(build_deployment("m", "ns", make_model(resources=resources), SETTINGS))
    assert c["resources"] == ({"requests": expected, "limits": expected} if expected else {})


@pytest.mark.parametrize("engine", ALL)
def test_shm_only_for_engines_that_need_it(engine):
    dep = build_deployment("m", "ns", make_model(engine), SETTINGS)
    names = [v["name"] for v in pod_spec(dep).get("volumes", [])]
    assert ("dshm" in names) == ENGINES[engine].needs_shm
    if ENGINES[engine].needs_shm:
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container(dep)["volumeMounts"]


def test_shm_size_limit_from_settings():
    dep = build_deployment("m", "ns", make_model(), ReconcileSettings(shm_size_limit="16Gi"))
    shm = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


CACHE = [
    ({}, {"name": "model-cache", "emptyDir": {}}),
    ({"sizeLimit": "100Gi"}, {"name": "model-cache", "emptyDir": {"sizeLimit": "100Gi"}}),
    ({"pvcName": "w"}, {"name": "model-cache", "persistentVolumeClaim": {"claimName": "w"}}),
]


@pytest.mark.parametrize(("cache", "volume"), CACHE)
@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm"])
def test_model_cache_volume(engine, cache, volume):
    dep = build_deployment("m", "ns", make_model(engine, cache=cache), SETTINGS)
    assert volume in pod_spec(dep)["volumes"]
    assert {"name": "model-cache", "mountPath": "/models"} in container(dep)["volumeMounts"]
    assert {"name": "HF_HOME", "value": HF_HOME} in container(dep)["env"]


def test_sim_gets_no_cache_token_or_shm():
    spec = make_model("sim", hfTokenSecretRef={"name": "hf", "key": "t"}, cache={"pvcName": "w"})
    dep = build_deployment("m", "ns", spec, SETTINGS)
    # Only its writable /tmp: no model cache, no /dev/shm.
    assert [v["name"] for v in pod_spec(dep)["volumes"]] == ["tmp"]
    assert "env" not in container(dep)
    assert dependencies(spec) == []


def test_pvc_model_source_is_mounted_read_only():
    dep = build_deployment("m", "ns", make_model(model="pvc://weights/llama"), SETTINGS)
    assert {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
    } in pod_spec(dep)["volumes"]
    assert {
        "name": "model-source",
        "mountPath": "/mnt/model-source",
        "readOnly": True,
    } in container(dep)["volumeMounts"]


def test_hf_token_comes_from_the_secret():
    spec = make_model(hfTokenSecretRef={"name": "hf-token", "key": "token"})
    env = container(build_deployment("m", "ns", spec, SETTINGS))["env"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    } in env
    assert all("value" not in e for e in env if e["name"] == "HF_TOKEN")


def test_user_env_replaces_derived_env_by_name_without_duplicates():
    spec = make_model(
        "tgi",
        optimization={"prefixCaching": True},
        env=[
            {"name": "HF_HOME", "value": "/elsewhere"},
            {"name": "PREFIX_CACHING", "value": "0"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    )
    env = container(build_deployment("m", "ns", spec, SETTINGS))["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), "server-side apply refuses duplicate env names"
    assert {"name": "HF_HOME", "value": "/elsewhere"} in env
    assert {"name": "PREFIX_CACHING", "value": "0"} in env
    assert {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


IMAGES = [
    ({}, {}, None),
    ({}, {"vllm": "mirror/vllm:1"}, "mirror/vllm:1"),
    ({"image": "mine/vllm:2"}, {"vllm": "mirror/vllm:1"}, "mine/vllm:2"),
]


@pytest.mark.parametrize(("overrides", "images", "expected"), IMAGES)
def test_image_precedence(overrides, images, expected):
    dep = build_deployment("m", "ns", make_model(**overrides), ReconcileSettings(images=images))
    assert container(dep)["image"] == (expected or ENGINES["vllm"].default_image)


@pytest.mark.parametrize("engine", ALL)
def test_security_context(engine):
    dep = build_deployment("m", "ns", make_model(engine), SETTINGS)
    c = container(dep)
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    if ENGINES[engine].non_root:
        assert pod_spec(dep)["securityContext"]["runAsNonRoot"] is True
        assert pod_spec(dep)["securityContext"]["runAsUser"] == SETTINGS.run_as_user
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    else:
        assert "securityContext" not in pod_spec(dep)
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(dep).get("volumes", [])}
    if ENGINES[engine].read_only_root:
        # Read-only like the chart's pods, with the one writable path an emptyDir.
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "64Mi"}
    else:
        assert "readOnlyRootFilesystem" not in c["securityContext"]
        assert "/tmp" not in mounts


def test_pods_get_no_service_links_or_api_token():
    spec = pod_spec(build_deployment("m", "ns", make_model(), SETTINGS))
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False


def test_scheduling():
    spec = make_model(
        scheduling={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "priorityClassName": "high",
        }
    )
    ps = pod_spec(build_deployment("m", "ns", spec, SETTINGS))
    assert ps["nodeSelector"] == {"gpu": "h100"}
    assert ps["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert ps["priorityClassName"] == "high"


def test_rollout_strategy_from_settings():
    settings = ReconcileSettings(max_surge="25%", max_unavailable=1)
    dep = build_deployment("m", "ns", make_model(), settings)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 1}


def test_rollout_bounds_from_the_environment_are_numbers_unless_percentages(monkeypatch):
    # Environment variables are text; Kubernetes refuses the string "1" as an int-or-string.
    monkeypatch.setenv("INFERSCALE_RECONCILE__MAX_SURGE", "2")
    monkeypatch.setenv("INFERSCALE_RECONCILE__MAX_UNAVAILABLE", "25%")
    settings = OperatorSettings().reconcile
    dep = build_deployment("m", "ns", make_model(), settings)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 2, "maxUnavailable": "25%"}


# --- replicas --------------------------------------------------------------------------------

REPLICAS = [
    # (spec overrides, current from the autoscaler, expected)
    ({}, None, 1),
    ({"minReplicas": 0}, None, 0),
    ({"replicas": 3}, None, 3),
    ({"replicas": 3, "autoscaling": {"enabled": False}}, 7, 3),
    ({"autoscaling": {"enabled": False}}, 2, 1),
    ({}, 3, 3),
    ({"maxReplicas": 4}, 9, 4),
    ({"minReplicas": 2}, 0, 2),
]


@pytest.mark.parametrize(("overrides", "current", "expected"), REPLICAS)
def test_desired_replicas(overrides, current, expected):
    assert desired_replicas(make_model(**overrides), current) == expected


def test_replicas_argument_wins():
    assert build_deployment("m", "ns", make_model(), SETTINGS, replicas=5)["spec"]["replicas"] == 5
    assert build_deployment("m", "ns", make_model(replicas=2), SETTINGS)["spec"]["replicas"] == 2


def test_served_name_defaults_to_the_object_name():
    assert served_name("m", make_model()) == "m"
    assert served_name("m", make_model(servedName="llama")) == "llama"


# --- service and PDB -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ALL)
def test_service_targets_the_named_port(engine):
    port = build_service("m", "ns", make_model(engine))["spec"]["ports"][0]
    assert port["port"] == SERVICE_PORT and port["targetPort"] == "http"


def test_pdb_never_blocks_drains():
    spec = build_pdb("m", "ns", make_model(minReplicas=0))["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# --- dependencies and purity -----------------------------------------------------------------


def test_dependencies_name_every_secret_and_claim():
    spec = make_model(
        model="pvc://weights/llama",
        hfTokenSecretRef={"name": "hf", "key": "t"},
        cache={"pvcName": "cache"},
    )
    assert dependencies(spec) == [
        Dependency("Secret", "hf", "hfTokenSecretRef"),
        Dependency("PersistentVolumeClaim", "cache", "cache.pvcName"),
        Dependency("PersistentVolumeClaim", "weights", "model"),
    ]
    assert dependencies(make_model()) == []


@pytest.mark.parametrize("engine", ALL)
def test_builders_are_pure(engine):
    spec = make_model(engine, **RICH[engine])
    before = copy.deepcopy(spec)
    first = children("m", "ns", spec)
    assert children("m", "ns", spec) == first
    assert spec == before


def test_operator_settings_read_env_with_nested_delimiter(monkeypatch):
    monkeypatch.setenv("INFERSCALE_RECONCILE__PRE_STOP_SECONDS", "9")
    monkeypatch.setenv("INFERSCALE_RECONCILE__IMAGES", '{"sim": "local/sim:dev"}')
    settings = OperatorSettings()
    assert settings.reconcile.pre_stop_seconds == 9
    assert settings.reconcile.images == {"sim": "local/sim:dev"}
