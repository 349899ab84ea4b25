"""Every "refused" cell of docs/engines.md's support matrix reaches the user as a condition.

The matrix and the refusals come from one table (``cli/engine_check.field_cases`` over
``reconcile/engines.ENGINES``, the engines at their pinned versions). For each cell that says
"refused", the operator must report ``Ready=False`` (reason ``InvalidSpec``) with the engine's
own words and a Warning Event, and create no Deployment: a field the pinned engine lacks never
becomes a pod that crash-loops on an unknown flag.
"""

from __future__ import annotations

from typing import Any

import pytest

from inferscale.cli.engine_check import BASE_SPEC, Case, _merge, build, field_cases
from inferscale.config import OperatorSettings
from inferscale.controller.inference_model import Runtime, reconcile_model
from inferscale.errors import SpecError
from inferscale.kube.fake import FakeKubeApi
from inferscale.reconcile.engines import ENGINES, UnsupportedSpec

KEY = ("inferscale.io/v1alpha1", "InferenceModel", "ns", "model")
NOW = "2026-12-05T00:00:00Z"


def _refused() -> list[tuple[str, Case, list[str]]]:
    out = []
    for case in field_cases():
        for engine in ENGINES:
            built = build(engine, case)
            if isinstance(built, UnsupportedSpec):
                out.append((engine, case, list(built.problems)))
    return out


REFUSED = _refused()


def test_the_matrix_has_refused_cells_to_check() -> None:
    # A guard on the parametrisation below: an empty table would make it pass vacuously.
    # (vLLM at its pinned version takes every field; the sim takes them all by design.)
    assert {engine for engine, _, _ in REFUSED} == {"sglang", "tgi", "trtllm", "llamacpp"}


class _Events(list[tuple[str, str, str]]):
    def __call__(self, type_: str, reason: str, message: str) -> None:
        self.append((type_, reason, message))


@pytest.mark.parametrize(
    ("engine", "case", "problems"),
    REFUSED,
    ids=[f"{engine}:{case.label}" for engine, case, _ in REFUSED],
)
async def test_a_refused_cell_is_a_condition_and_no_pod(
    engine: str, case: Case, problems: list[str]
) -> None:
    api = FakeKubeApi()
    runtime = Runtime(api=api, settings=OperatorSettings())
    spec: dict[str, Any] = _merge(BASE_SPEC | {"engine": engine}, case.overrides)
    stored = api.put(
        {
            "apiVersion": "inferscale.io/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "model", "namespace": "ns", "uid": "uid-model", "generation": 1},
            "spec": spec,
        }
    )
    events = _Events()
    with pytest.raises(SpecError):
        await reconcile_model(runtime, stored, post_event=events, now=lambda: NOW)
    assert [kind for (_, kind, _, _) in api.objects] == ["InferenceModel"]
    ready = next(c for c in api.objects[KEY]["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    for problem in problems:
        assert problem in ready["message"]
    assert events and events[0][:2] == ("Warning", "InvalidSpec")
