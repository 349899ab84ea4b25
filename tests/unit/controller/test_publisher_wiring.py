"""PublisherWiring: the kopf glue every router document shares, with a publisher stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import Runtime
from inferscale.controller.publishing import PublisherSlot, PublisherWiring, router_pod_view
from inferscale.kube.fake import FakeKubeApi

INDICES = ("things", "router_pods")


class FakePublisher:
    """Counts wake-ups, runs until cancelled, records that it stored its last document."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read
        self.notified = 0
        self.closed = False
        self.running = asyncio.Event()

    def notify(self) -> None:
        self.notified += 1

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


class Slot(PublisherSlot[Any]):
    """The memo's slot for the fake document."""


def wiring(enabled: bool = True) -> PublisherWiring[Any, Any]:
    return PublisherWiring(
        memo_key="fake",
        slot_type=Slot,
        source_indices=INDICES,
        read=lambda indices: sorted(indices["things"]),
        make=lambda runtime, read: FakePublisher(read),
        enabled=lambda settings: enabled,
        task_name="fake publisher",
    )


def memo() -> dict[str, Any]:
    return {"runtime": Runtime(api=FakeKubeApi(), settings=OperatorSettings())}


def indices(**things: Any) -> dict[str, Mapping[str, Any]]:
    return {"things": things, "router_pods": {}}


def obj(name: str, generation: int = 1, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "generation": generation, **meta}}


async def test_install_keeps_a_slot_that_is_there() -> None:
    w, m = wiring(), memo()
    w.install(m)
    slot = m["fake"]
    w.install(m)
    assert m["fake"] is slot and slot.publisher is None


async def test_the_publisher_starts_on_the_first_event_that_has_every_index() -> None:
    w, m = wiring(), memo()
    w.install(m)
    assert w.slot(m, {"things": {}}) is None  # an index is missing: kopf is still listing
    slot = w.slot(m, indices(a=1))
    assert slot is not None and isinstance(slot.publisher, FakePublisher)
    assert slot.publisher.read() == ["a"]
    await asyncio.wait_for(slot.publisher.running.wait(), 1)
    assert w.slot(m, indices()) is slot  # started once
    await w.stop(m)
    assert slot.task is not None and slot.task.cancelled()
    assert slot.publisher.closed


async def test_nothing_starts_when_off_without_a_runtime_or_without_a_slot() -> None:
    off, m = wiring(enabled=False), memo()
    off.install(m)
    assert off.slot(m, indices()) is None and m["fake"].publisher is None
    assert wiring().slot({"fake": Slot()}, indices()) is None  # no runtime
    assert wiring().slot(memo(), indices()) is None  # no startup handler ran
    await wiring().stop({})  # and stopping what never started is fine


async def test_only_a_new_view_wakes_the_publisher() -> None:
    w, m = wiring(), memo()
    w.install(m)
    w.spec_changed(m, indices(), "thing", None, obj("a"))
    slot = w.slot(m, indices())
    assert slot is not None
    assert slot.publisher.notified == 1
    w.spec_changed(m, indices(), "thing", "MODIFIED", obj("a"))  # a status change: same view
    assert slot.publisher.notified == 1
    w.spec_changed(m, indices(), "thing", "MODIFIED", obj("a", generation=2))
    w.spec_changed(m, indices(), "thing", "MODIFIED", obj("a", 2, deletionTimestamp="now"))
    w.spec_changed(m, indices(), "thing", "DELETED", obj("a", 2))
    w.spec_changed(m, indices(), "thing", "DELETED", obj("a", 2))  # gone already: no news
    assert slot.publisher.notified == 4
    await w.stop(m)


def router_pod(ip: str | None, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u1"},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_a_router_pods_view_changes_with_readiness_and_goes_with_it() -> None:
    ready, not_ready = router_pod("10.0.0.1", True), router_pod("10.0.0.1", False)
    assert router_pod_view("ADDED", ready) != router_pod_view("MODIFIED", not_ready)
    assert router_pod_view("MODIFIED", router_pod(None, False)) == "not a push target"
    assert router_pod_view("DELETED", ready) is None
