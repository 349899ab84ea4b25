"""The launcher mounts a claim as a kubelet would: through the PersistentVolume it is bound to."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from inferscale.cluster.launcher import PodRunner, SetupError

CLAIM_PATH = "/api/v1/namespaces/ns/persistentvolumeclaims/weights"
VOLUME_PATH = "/api/v1/persistentvolumes/pv-1"


class FakeApi:
    """GETs answered from a dict of path -> object (missing: None, as a 404)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    async def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)


def claim(phase: str = "Bound", volume: str | None = "pv-1") -> dict[str, Any]:
    spec = {"volumeName": volume} if volume else {}
    return {"spec": spec, "status": {"phase": phase}}


async def claim_path(objects: dict[str, dict[str, Any]]) -> str:
    runner = SimpleNamespace(
        pod={"metadata": {"namespace": "ns"}},
        launcher=SimpleNamespace(api=FakeApi(objects)),
    )
    return await PodRunner._claim_path(runner, {"claimName": "weights"})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["hostPath", "local"])
async def test_a_bound_claim_mounts_its_volumes_directory(kind: str) -> None:
    volume = {"spec": {kind: {"path": "/srv/models"}}}
    assert await claim_path({CLAIM_PATH: claim(), VOLUME_PATH: volume}) == "/srv/models"


@pytest.mark.parametrize(
    ("objects", "words"),
    [
        ({}, 'persistentvolumeclaim "weights" not found'),
        ({CLAIM_PATH: claim(phase="Pending", volume=None)}, "is not bound to a volume yet"),
        ({CLAIM_PATH: claim()}, "is not bound to a volume yet"),
    ],
)
async def test_a_missing_or_unbound_claim_is_waited_for(
    objects: dict[str, dict[str, Any]], words: str
) -> None:
    with pytest.raises(SetupError) as error:
        await claim_path(objects)
    assert error.value.retry and error.value.reason == "ContainerCreating"
    assert words in error.value.message


@pytest.mark.parametrize(
    ("spec", "named"), [({"nfs": {"server": "x", "path": "/"}}, "nfs"), ({}, "(none)")]
)
async def test_a_volume_the_launcher_cannot_mount_is_a_config_error(
    spec: dict[str, Any], named: str
) -> None:
    with pytest.raises(SetupError) as error:
        await claim_path({CLAIM_PATH: claim(), VOLUME_PATH: {"spec": spec}})
    assert not error.value.retry and error.value.reason == "CreateContainerConfigError"
    assert f"type {named} is not supported" in error.value.message
