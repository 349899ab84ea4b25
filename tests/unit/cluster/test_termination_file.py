"""The launcher reads a terminationMessagePath that lies inside one of the container's volumes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inferscale.cluster.launcher import ContainerRunner


def _runner(tmp_path: Path, path: str | None) -> ContainerRunner:
    spec: dict[str, Any] = {"name": "preload"}
    if path is not None:
        spec["terminationMessagePath"] = path
    pod = SimpleNamespace(mounts={"preload": [(str(tmp_path), "/preload", False)]})
    return ContainerRunner(pod, spec)  # type: ignore[arg-type]


def test_a_message_written_inside_a_volume_is_read(tmp_path: Path):
    (tmp_path / "result").write_text('{"bytes": 7}\n')
    assert _runner(tmp_path, "/preload/result")._termination_file() == '{"bytes": 7}'


def test_a_large_message_is_cut_to_a_kubelets_limit(tmp_path: Path):
    (tmp_path / "result").write_text("x" * 10_000)
    assert len(_runner(tmp_path, "/preload/result")._termination_file()) == 2048


def test_nothing_written_outside_a_volume_or_missing_is_empty(tmp_path: Path):
    assert _runner(tmp_path, "/preload/result")._termination_file() == ""  # not written
    assert _runner(tmp_path, "/dev/termination-log")._termination_file() == ""
    assert _runner(tmp_path, "/preload")._termination_file() == ""  # the volume itself
    assert _runner(tmp_path, None)._termination_file() == ""
