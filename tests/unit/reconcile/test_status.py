"""Observed Deployment and pods -> status and conditions, as a table of situations."""

from __future__ import annotations

import pytest

from inferscale.api.v1alpha1.inference_model import InferenceModelStatus, ObservedSignals
from inferscale.reconcile.status import (
    Problem,
    compute_status,
    diagnose_pod,
    status_changed,
    status_patch,
    termination_cause,
    time_to_ready,
)
from tests.factories import make_deployment_status, make_model, make_pod

NOW = "2025-01-01T00:10:00Z"
LATER = "2025-01-01T00:20:00Z"
GPU_SPEC = make_model(resources={"gpus": 2})
SCHED_MSG = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."


def status(desired=1, deployment=None, pods=(), problem=None, previous=None, now=NOW, spec=None):
    return compute_status(
        model_name="m",
        spec=spec or GPU_SPEC,
        generation=4,
        desired_replicas=desired,
        deployment=deployment,
        pods=list(pods),
        now=now,
        previous=previous,
        problem=problem,
    )


def conds(st: InferenceModelStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions}


def message(st: InferenceModelStatus, type_: str) -> str:
    return next(c.message for c in st.conditions if c.type == type_)


DEP = make_deployment_status

CASES = [
    # (name, kwargs, Ready, Progressing, Degraded)
    (
        "invalid spec",
        {"problem": Problem("InvalidSpec", "engine tgi cannot serve this spec: ...")},
        ("False", "InvalidSpec"),
        ("False", "InvalidSpec"),
        ("True", "InvalidSpec"),
    ),
    (
        "missing secret",
        {"problem": Problem("SecretNotFound", "Secret hf-token does not exist")},
        ("False", "SecretNotFound"),
        ("False", "SecretNotFound"),
        ("True", "SecretNotFound"),
    ),
    (
        "no deployment yet",
        {},
        ("False", "Creating"),
        ("True", "Creating"),
        ("False", "AsExpected"),
    ),
    (
        "scaled to zero",
        {"desired": 0, "deployment": DEP(replicas=0)},
        ("True", "ScaledToZero"),
        ("False", "ScaledToZero"),
        ("False", "AsExpected"),
    ),
    (
        "scaling down to zero",
        {"desired": 0, "deployment": DEP(replicas=1, ready=1, updated=1)},
        ("True", "ScalingDown"),
        ("True", "ScalingDown"),
        ("False", "AsExpected"),
    ),
    (
        "all ready",
        {"desired": 2, "deployment": DEP(replicas=2, ready=2), "pods": [make_pod(ready=True)]},
        ("True", "AllReplicasReady"),
        ("False", "RolloutComplete"),
        ("False", "AsExpected"),
    ),
    (
        "scaling up, new pod loading",
        {
            "desired": 3,
            "deployment": DEP(replicas=2, ready=1, updated=2),
            "pods": [make_pod("a", ready=True), make_pod("b", running=True)],
        },
        ("True", "PartiallyReady"),
        ("True", "ScalingUp"),
        ("False", "AsExpected"),
    ),
    (
        "first replica loading",
        {"deployment": DEP(replicas=1, ready=0), "pods": [make_pod(running=True)]},
        ("False", "Loading"),
        ("True", "Loading"),
        ("False", "AsExpected"),
    ),
    (
        "first replica starting",
        {"deployment": DEP(replicas=1, ready=0), "pods": [make_pod()]},
        ("False", "Starting"),
        ("True", "Starting"),
        ("False", "AsExpected"),
    ),
    (
        "unschedulable",
        {"deployment": DEP(replicas=1, ready=0), "pods": [make_pod(unschedulable=SCHED_MSG)]},
        ("False", "Unschedulable"),
        ("True", "Unschedulable"),
        ("True", "Unschedulable"),
    ),
    (
        "crash loop",
        {
            "deployment": DEP(replicas=1, ready=0),
            "pods": [
                make_pod(
                    running=False,
                    waiting=("CrashLoopBackOff", "back-off 5m0s restarting failed container"),
                    last_terminated="OOMKilled",
                )
            ],
        },
        ("False", "CrashLoopBackOff"),
        ("True", "CrashLoopBackOff"),
        ("True", "CrashLoopBackOff"),
    ),
    (
        "image cannot be pulled",
        {
            "deployment": DEP(replicas=1, ready=0),
            "pods": [make_pod(waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))],
        },
        ("False", "ImagePullBackOff"),
        ("True", "ImagePullBackOff"),
        ("True", "ImagePullBackOff"),
    ),
    (
        "secret key missing at container creation",
        {
            "deployment": DEP(replicas=1, ready=0),
            "pods": [
                make_pod(waiting=("CreateContainerConfigError", 'secret "hf-token" not found')),
                make_pod("b", unschedulable=SCHED_MSG),
            ],
        },
        ("False", "CreateContainerConfigError"),
        ("True", "CreateContainerConfigError"),
        ("True", "CreateContainerConfigError"),
    ),
    (
        "rolling update with a surge pod that cannot be scheduled",
        {
            "desired": 2,
            "deployment": DEP(replicas=3, ready=2, updated=1, generation=5, observed_generation=5),
            "pods": [
                make_pod("a", ready=True),
                make_pod("b", ready=True),
                make_pod("c", unschedulable=SCHED_MSG),
            ],
        },
        ("True", "AllReplicasReady"),
        ("True", "RollingUpdate"),
        ("True", "Unschedulable"),
    ),
    (
        "deployment not yet observed by its controller",
        {"deployment": DEP(replicas=1, ready=1, generation=6, observed_generation=5)},
        ("True", "AllReplicasReady"),
        ("True", "WaitingForReady"),
        ("False", "AsExpected"),
    ),
    (
        "rollout missed its deadline",
        {
            "deployment": DEP(
                replicas=1,
                ready=0,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "m-1" has timed out progressing.',
                    }
                ],
            ),
            "pods": [make_pod(running=True)],
        },
        ("False", "Loading"),
        ("False", "ProgressDeadlineExceeded"),
        ("True", "ProgressDeadlineExceeded"),
    ),
    (
        "replica failure (quota)",
        {
            "deployment": DEP(
                replicas=0,
                ready=0,
                updated=0,
                conditions=[
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": "exceeded quota: gpu",
                    }
                ],
            ),
        },
        ("False", "NoReplicasReady"),
        ("True", "ScalingUp"),
        ("True", "ReplicaFailure"),
    ),
    (
        "terminating pods are ignored",
        {
            "deployment": DEP(replicas=1, ready=1),
            "pods": [make_pod("a", ready=True), make_pod("old", deleting=True)],
        },
        ("True", "AllReplicasReady"),
        ("False", "RolloutComplete"),
        ("False", "AsExpected"),
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "ready", "progressing", "degraded"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_conditions(kwargs, ready, progressing, degraded):
    st = status(**kwargs)
    assert conds(st) == {"Ready": ready, "Progressing": progressing, "Degraded": degraded}
    assert all(c.observed_generation == 4 for c in st.conditions)
    assert all(c.last_transition_time == NOW for c in st.conditions)
    # Every condition must survive the API's own validation of reason and message.
    InferenceModelStatus.model_validate(st.to_wire())


def test_unschedulable_message_says_what_is_missing():
    st = status(deployment=DEP(replicas=1), pods=[make_pod(unschedulable=SCHED_MSG)])
    assert message(st, "Ready") == (
        "0/1 replicas ready: each replica needs 2 nvidia.com/gpu; scheduler: " + SCHED_MSG
    )


def test_unschedulable_counts_pending_replicas():
    pods = [make_pod(str(i), unschedulable=SCHED_MSG) for i in range(3)]
    st = status(desired=3, deployment=DEP(replicas=3), pods=pods)
    assert message(st, "Degraded").startswith("3 replicas pending: each replica needs 2")


def test_gpu_free_model_does_not_talk_about_gpus():
    spec = make_model("sim", resources={"gpus": 0})
    st = status(spec=spec, deployment=DEP(replicas=1), pods=[make_pod(unschedulable="0/1 nodes")])
    assert message(st, "Degraded") == "scheduler: 0/1 nodes"


def test_crash_loop_message_names_the_last_exit():
    pod = make_pod(waiting=("CrashLoopBackOff", "back-off"), last_terminated="OOMKilled")
    issue = diagnose_pod(pod, GPU_SPEC)
    assert issue is not None and issue.failing
    assert issue.message == "pod m-abc-1: CrashLoopBackOff: last exit: OOMKilled; back-off"


LLAMA_LOG_TAIL = """\
llama_model_load: error loading model: tensor 'token_embd.weight' data is not within the file bounds
llama_model_load_from_file_impl: failed to load model
srv    load_model: failed to load model, '/mnt/model-source/m.gguf'
srv   operator(): operator(): cleaning up before exit...
main: exiting due to model loading error
"""


def test_crash_loop_message_quotes_the_cause_from_the_log_tail():
    pod = make_pod(waiting=("CrashLoopBackOff", "back-off"), last_terminated="Error")
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] = LLAMA_LOG_TAIL
    issue = diagnose_pod(pod, GPU_SPEC)
    assert issue is not None
    assert issue.message == (
        "pod m-abc-1: CrashLoopBackOff: last exit: Error (llama_model_load: error loading model: "
        "tensor 'token_embd.weight' data is not within the file bounds ... main: exiting due to "
        "model loading error); back-off"
    )


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("", ""),
        ("\n  \n", ""),
        ("starting\nlistening on 8080\nbye", "bye"),
        ("warming up\nCannot allocate memory\ndone", "Cannot allocate memory"),
        ("Traceback\n  File x\nValueError: bad\n", "ValueError: bad"),
        ("a failed\nb\nc error\nd", "a failed ... c error"),
        ("x" * 400, "x" * 297 + "..."),
    ],
)
def test_termination_cause(message, cause):
    assert termination_cause(message) == cause


def test_ready_pod_has_no_issue():
    assert diagnose_pod(make_pod(ready=True), GPU_SPEC) is None


def test_failed_pod():
    pod = make_pod(phase="Failed")
    pod["status"]["message"] = "Pod was rejected: node out of GPUs"
    pod["status"].pop("containerStatuses")
    issue = diagnose_pod(pod, GPU_SPEC)
    assert issue is not None and issue.reason == "PodFailed" and "rejected" in issue.message


def test_status_fields():
    prev = InferenceModelStatus(
        last_scale_time="2025-01-01T00:00:00Z",
        last_scale_reason="scaled 1 -> 2",
        signals=ObservedSignals(in_flight=3.0),
        learned_floor=3,
    )
    st = compute_status(
        model_name="m",
        spec=make_model(servedName="llama"),
        generation=4,
        desired_replicas=2,
        deployment=DEP(replicas=2, ready=1),
        pods=[],
        now=NOW,
        previous=prev,
    )
    assert (st.replicas, st.ready_replicas, st.desired_replicas) == (2, 1, 2)
    assert st.observed_generation == 4
    assert st.selector == "app.kubernetes.io/component=engine,inferscale.io/model=m"
    assert st.served_name == "llama"
    assert (st.last_scale_time, st.last_scale_reason) == (prev.last_scale_time, "scaled 1 -> 2")
    assert st.signals == prev.signals
    assert st.learned_floor == 3  # the autoscaler's, kept


def test_transition_time_kept_while_status_unchanged():
    first = status(deployment=DEP(replicas=1), pods=[make_pod(running=True)])
    # Same statuses, other reasons and messages later: times stay.
    second = status(deployment=DEP(replicas=1), pods=[make_pod()], previous=first, now=LATER)
    assert [c.last_transition_time for c in second.conditions] == [NOW] * 3
    # Ready flips: only Ready and Progressing move.
    third = status(
        deployment=DEP(replicas=1, ready=1),
        pods=[make_pod(ready=True)],
        previous=second,
        now=LATER,
    )
    times = {c.type: c.last_transition_time for c in third.conditions}
    assert times == {"Ready": LATER, "Progressing": LATER, "Degraded": NOW}


def test_status_patch_only_when_changed():
    st = status(deployment=DEP(replicas=1, ready=1), pods=[make_pod(ready=True)])
    stored = {**st.to_wire(), "someoneElses": {"x": 1}}
    again = status(
        deployment=DEP(replicas=1, ready=1), pods=[make_pod(ready=True)], previous=st, now=LATER
    )
    assert status_patch(stored, again) is None
    assert not status_changed(stored, again)
    assert status_changed(None, again)
    scaled = status(desired=2, deployment=DEP(replicas=2, ready=1), pods=[], previous=st, now=LATER)
    patch = status_patch(stored, scaled)
    assert patch is not None and patch["desiredReplicas"] == 2
    assert "someoneElses" not in patch


def test_status_patch_removes_dropped_keys():
    st = status(deployment=DEP(replicas=1, ready=1))
    stored = {**st.to_wire(), "timeToReadySeconds": 5.0}
    patch = status_patch(stored, st)
    assert patch is not None and patch["timeToReadySeconds"] is None


def test_integral_float_from_the_api_server_counts_as_equal():
    st = status(
        deployment=DEP(replicas=1, ready=1),
        pods=[make_pod(ready=True, ready_at="2025-01-01T00:01:00Z")],
    )
    stored = st.to_wire()
    stored["timeToReadySeconds"] = 60  # the API server returns 60.0 as 60
    assert not status_changed(stored, st)


def test_time_to_ready_of_the_last_ready_replica():
    pods = [
        make_pod("a", ready=True, created="2025-01-01T00:00:00Z", ready_at="2025-01-01T00:02:00Z"),
        make_pod("b", ready=True, created="2025-01-01T00:05:00Z", ready_at="2025-01-01T00:05:45Z"),
        make_pod("c", running=True),
    ]
    assert time_to_ready(pods) == 45.0
    assert time_to_ready([make_pod()]) is None
    prev = InferenceModelStatus(time_to_ready_seconds=12.5)
    assert status(deployment=DEP(), pods=[], previous=prev).time_to_ready_seconds == 12.5
