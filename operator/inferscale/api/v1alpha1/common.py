"""Parts shared by several resources: environment variables, tolerations and quantities."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from inferscale.api.meta import ApiModel, CelRule, SecretKeyRef

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
"""The API server's own pattern for resource quantities such as ``500m``, ``4`` or ``32Gi``."""

Quantity = int | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
"""A Kubernetes resource quantity, written as a number or a string (``4``, ``"500m"``, ``32Gi``)."""


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the object's own namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the ConfigMap."""

    key: str = Field(min_length=1, max_length=253)
    """Key inside the ConfigMap whose value is used."""


class FieldRef(ApiModel):
    """A field of the pod itself (the downward API), for example ``metadata.name``."""

    field_path: str = Field(min_length=1, max_length=256)
    """Path of the field, as in a pod's ``env[].valueFrom.fieldRef.fieldPath``."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from when it is not written inline."""

    __cel_rules__ = (
        CelRule(
            rule="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
            ".filter(x, x).size() == 1",
            message="valueFrom must name exactly one of secretKeyRef, configMapKeyRef or fieldRef",
            check=lambda s: (
                sum(x is not None for x in (s.secret_key_ref, s.config_map_key_ref, s.field_ref))
                == 1
            ),
        ),
    )

    secret_key_ref: SecretKeyRef | None = None
    """Take the value from a key of a Secret: the way to pass credentials."""

    config_map_key_ref: ConfigMapKeyRef | None = None
    """Take the value from a key of a ConfigMap."""

    field_ref: FieldRef | None = None
    """Take the value from a field of the pod."""


class EnvVar(ApiModel):
    """An environment variable for the engine's container."""

    __cel_rules__ = (
        CelRule(
            rule="!(has(self.value) && has(self.valueFrom))",
            message="env: set either value or valueFrom, not both",
            check=lambda s: not (s.value is not None and s.value_from is not None),
        ),
    )

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Name of the variable."""

    value: str | None = Field(default=None, max_length=32768)
    """Literal value. Never put credentials here: use ``valueFrom.secretKeyRef``."""

    value_from: EnvVarSource | None = None
    """Take the value from a Secret, a ConfigMap or the pod's own fields."""


class Toleration(ApiModel):
    """A pod toleration, so replicas may land on tainted (for example GPU-only) nodes."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal needs ``value`` to match."""

    value: str | None = Field(default=None, max_length=63)
    """Taint value to match when the operator is Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches every effect."""

    toleration_seconds: int | None = Field(default=None, ge=0)
    """How long a NoExecute taint is tolerated before the pod is evicted."""
