"""Leader election: the pure decision table, and two candidates racing over FakeKubeApi."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from inferscale.kube.fake import FakeKubeApi
from inferscale.kube.lease import LeaderElector, lease_action

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def lease(holder, renewed=T0, duration=15):
    return {
        "metadata": {"resourceVersion": "1"},
        "spec": {
            "holderIdentity": holder,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "leaseDurationSeconds": duration,
        },
    }


@pytest.mark.parametrize(
    ("current", "now", "action"),
    [
        (None, T0, "create"),
        (lease("me"), T0, "renew"),
        (lease("other"), T0 + timedelta(seconds=5), "wait"),
        (lease("other"), T0 + timedelta(seconds=15), "takeover"),
        (lease(""), T0, "takeover"),
        (
            {"metadata": {}, "spec": {"holderIdentity": "other", "renewTime": "garbage"}},
            T0,
            "takeover",
        ),
    ],
)
def test_lease_action(current, now, action):
    assert lease_action(current, "me", now) == action


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


async def test_only_one_candidate_leads_and_the_other_takes_over_after_expiry():
    api, clock = FakeKubeApi(), Clock()
    a = LeaderElector(api, "ns", "inferscale-operator", "a", clock=clock)
    b = LeaderElector(api, "ns", "inferscale-operator", "b", clock=clock)
    assert await a.try_acquire() is True
    assert await b.try_acquire() is False
    clock.now += timedelta(seconds=5)
    assert await a.try_acquire() is True, "the leader renews"
    clock.now += timedelta(seconds=10)
    assert await b.try_acquire() is False, "renewed 10 s ago: still a's"
    clock.now += timedelta(seconds=6)
    assert await b.try_acquire() is True, "a stopped renewing: b takes over"
    assert await a.try_acquire() is False
    stored = api.objects[("coordination.k8s.io/v1", "Lease", "ns", "inferscale-operator")]
    assert stored["spec"]["holderIdentity"] == "b"
    assert stored["spec"]["leaseTransitions"] == 1


async def test_a_stale_read_loses_the_race():
    api, clock = FakeKubeApi(), Clock()
    a = LeaderElector(api, "ns", "l", "a", clock=clock)
    await a.try_acquire()
    clock.now += timedelta(seconds=20)
    stale = await api.get("coordination.k8s.io/v1", "Lease", "ns", "l")
    b = LeaderElector(api, "ns", "l", "b", clock=clock)
    c = LeaderElector(api, "ns", "l", "c", clock=clock)
    assert await b.try_acquire() is True
    # c decides from the stale copy (as if it read before b wrote): its conditional write fails.
    from inferscale.errors import Conflict

    with pytest.raises(Conflict):
        await api.apply(c._lease(stale, "takeover", clock.now), field_manager="inferscale-leader-c")


async def test_hold_stops_when_leadership_is_lost():
    api, clock = FakeKubeApi(), Clock()
    a = LeaderElector(api, "ns", "l", "a", renew_seconds=0.01, clock=clock)
    assert await a.try_acquire()
    key = ("coordination.k8s.io/v1", "Lease", "ns", "l")
    api.objects[key]["spec"]["holderIdentity"] = "intruder"
    api.objects[key]["spec"]["renewTime"] = clock.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stop = asyncio.Event()
    assert await asyncio.wait_for(a.hold(stop), timeout=5) is False
    assert stop.is_set()


async def test_acquire_returns_false_when_stopped():
    api, clock = FakeKubeApi(), Clock()
    await LeaderElector(api, "ns", "l", "a", clock=clock).try_acquire()
    stop = asyncio.Event()
    b = LeaderElector(api, "ns", "l", "b", renew_seconds=0.01, clock=clock)
    task = asyncio.create_task(b.acquire(stop))
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is False


async def test_release_hands_over_at_once():
    api, clock = FakeKubeApi(), Clock()
    a = LeaderElector(api, "ns", "l", "a", clock=clock)
    b = LeaderElector(api, "ns", "l", "b", clock=clock)
    assert await a.try_acquire()
    assert await b.try_acquire() is False
    await a.release()
    assert await b.try_acquire() is True, "no need to wait for the lease to expire"
    await a.release()  # not the holder any more: changes nothing
    stored = api.objects[("coordination.k8s.io/v1", "Lease", "ns", "l")]
    assert stored["spec"]["holderIdentity"] == "b"
