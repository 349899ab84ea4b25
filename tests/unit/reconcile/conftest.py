"""Shared helpers of the reconcile tests: golden files and offline schema validation.

Golden files live in ``tests/golden/``. After an intended change to a builder, regenerate them
with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/reconcile`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
KUBERNETES_VERSION = "1.36.0"
"""Schema version objects are validated against (kubernetes-validate's bundled schemas)."""


def assert_golden(name: str, objects: list[dict[str, Any]]) -> None:
    """``objects`` as YAML must equal ``tests/golden/NAME.yaml`` (``UPDATE_GOLDEN=1`` rewrites)."""
    text = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing; run with UPDATE_GOLDEN=1 to create it")
    assert text == path.read_text(), f"{path} differs; UPDATE_GOLDEN=1 regenerates it"


def assert_valid(obj: dict[str, Any]) -> None:
    """The object passes the Kubernetes OpenAPI schema, strictly (no unknown fields)."""
    # Round-trip through YAML so the validator sees what the API server would receive.
    data = yaml.safe_load(yaml.safe_dump(obj))
    kubernetes_validate.validate(data, KUBERNETES_VERSION, strict=True)
