"""Names, labels and selectors shared by every child of an InferenceModel (pure).

Selectors hold only the model's name and the component: a Deployment's selector is immutable,
so nothing that a spec edit can change (the engine, a version) may appear in it.
"""

from __future__ import annotations

import re
from typing import Final

from inferscale.api.meta import (
    LABEL_COMPONENT,
    LABEL_ENGINE,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_NAME,
    MANAGED_BY,
)
from inferscale.errors import SpecError

COMPONENT_ENGINE: Final = "engine"
"""``app.kubernetes.io/component`` of serving pods and of the objects around them."""

APP_NAME: Final = "inferscale"

_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_model_name(name: str) -> None:
    """The children are named after the model, so its name must be a valid Service name.

    Raises:
        SpecError: longer than 63 characters (also a label value's limit) or not starting with
            a letter (a Service name is an RFC 1035 label).
    """
    if len(name) > 63 or not _DNS_1035_LABEL.match(name):
        raise SpecError(
            f"metadata.name {name!r} cannot name a Service: use at most 63 lower-case letters, "
            "digits and '-', starting with a letter"
        )


def selector_labels(model_name: str) -> dict[str, str]:
    """The labels that select a model's serving pods (Deployment, Service, PDB)."""
    return {LABEL_MODEL: model_name, LABEL_COMPONENT: COMPONENT_ENGINE}


def selector_string(model_name: str) -> str:
    """The selector as ``status.selector`` holds it for the scale subresource (HPA, KEDA)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model_name).items()))


def object_labels(model_name: str, engine: str) -> dict[str, str]:
    """Labels of every child object and pod: the selector plus engine, name and manager."""
    return {
        **selector_labels(model_name),
        LABEL_ENGINE: engine,
        LABEL_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
