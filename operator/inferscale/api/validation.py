"""Parse whole inferscale objects (as ``kubectl apply`` sends them) into the API models.

Errors come back as one line per problem, each naming the field path in the manifest's own
camelCase and the rule it broke, for example ``spec.resources.gpus: Input should be a valid
integer``: the same words a user sees from the API server's schema or CEL checks.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from inferscale.api.meta import API_VERSION
from inferscale.api.v1alpha1 import (
    InferenceClient,
    InferenceModel,
    InferenceProvider,
    InferenceRoute,
)
from inferscale.errors import SpecError

Resource = InferenceModel | InferenceRoute | InferenceProvider | InferenceClient

MODELS_BY_KIND: dict[str, type[BaseModel]] = {
    "InferenceModel": InferenceModel,
    "InferenceRoute": InferenceRoute,
    "InferenceProvider": InferenceProvider,
    "InferenceClient": InferenceClient,
}


def describe_errors(error: ValidationError) -> list[str]:
    """One ``path: message`` line per problem, with pydantic's ``Value error,`` prefix removed."""
    lines = []
    for problem in error.errors(include_url=False):
        path = ".".join(str(part) for part in problem["loc"]) or "(object)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{path}: {message}")
    return lines


def is_inferscale_object(doc: Any) -> bool:
    """Whether a parsed YAML document claims to be one of our objects."""
    return isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION


def parse_object(doc: Any) -> Resource:
    """Validate one inferscale object; raise :class:`SpecError` listing every problem."""
    if not isinstance(doc, dict):
        raise SpecError(f"expected a mapping (an object), got {type(doc).__name__}")
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError(f"apiVersion: expected {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    kind = doc.get("kind")
    model = MODELS_BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise SpecError(f"kind: expected one of {', '.join(MODELS_BY_KIND)}, got {kind!r}")
    try:
        parsed = model.model_validate(doc)
    except ValidationError as error:
        raise SpecError("; ".join(describe_errors(error))) from error
    assert isinstance(parsed, InferenceModel | InferenceRoute | InferenceProvider | InferenceClient)
    return parsed
