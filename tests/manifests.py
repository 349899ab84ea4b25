"""Load the manifests tests share: ``examples/`` (valid) and ``tests/manifests/invalid`` (refused).

Each invalid manifest starts with comment lines ``# expect: TEXT``: every TEXT must appear in
the error, from pydantic here and from the real API server in ``e2e/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
INVALID = REPO / "tests" / "manifests" / "invalid"


@dataclass(frozen=True)
class InvalidManifest:
    name: str
    doc: dict[str, Any]
    expect: tuple[str, ...]
    text: str


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every object in examples/."""
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def invalid_manifests() -> list[InvalidManifest]:
    """Every manifest that must be refused, with the texts its error must contain."""
    out = []
    for path in sorted(INVALID.glob("*.yaml")):
        text = path.read_text()
        expect = tuple(
            line.removeprefix("# expect:").strip()
            for line in text.splitlines()
            if line.startswith("# expect:")
        )
        out.append(InvalidManifest(path.stem, yaml.safe_load(text), expect, text))
    return out
