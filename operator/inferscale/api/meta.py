"""Shared API building blocks: the base model, cross-field rules, conditions and well-known keys.

A cross-field rule is declared once as a :class:`CelRule`: the API server evaluates its CEL
expression (it is emitted as ``x-kubernetes-validations`` in the CRD) and pydantic evaluates its
Python twin, so a bad manifest gets the same message from ``kubectl apply`` and from
``inferscale validate``. Tests assert that both sides agree on every example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "inferscale.io"
"""The API group of every inferscale custom resource."""

VERSION = "v1alpha1"
"""The only served and stored version."""

API_VERSION: Final = "inferscale.io/v1alpha1"
"""``apiVersion`` of every inferscale object."""

CATEGORY = "inferscale"
"""CRD category: ``kubectl get inferscale`` lists every kind."""

# Label and annotation keys on the objects the operator creates. Children never copy kopf's or
# kubectl's own annotations (see STYLE.md 9.2.2).
LABEL_MODEL = f"{GROUP}/model"
"""Label on every child of an InferenceModel: the model's name."""
LABEL_ENGINE = f"{GROUP}/engine"
"""Label on serving pods: the engine that runs in them."""
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
MANAGED_BY = "inferscale"

# Condition types (API conventions: a list keyed by ``type``).
CONDITION_READY = "Ready"
CONDITION_PROGRESSING = "Progressing"
CONDITION_DEGRADED = "Degraded"
CONDITION_CACHED = "Cached"
"""With ``spec.cache.preload``: whether the weights are in the cache and the replicas may start."""
LABEL_PRELOAD_OF = f"{GROUP}/preload-of"
"""Label on a model's preload Job and its pod: the model's name. Not the model label, which
would count the Job's pod as a replica."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An RFC 1123 label: the names of Kubernetes objects that others reference."""

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""An RFC 1123 subdomain: Secret, PVC and PriorityClass names."""


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule, enforced by the API server (CEL) and by pydantic (Python).

    ``check`` receives the validated model and must agree with ``rule`` on every input; the
    ``message`` names the field and the rule so a user knows what to change.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _add_cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "__cel_rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_schema() for r in rules]


class ApiModel(BaseModel):
    """Base of every spec and status model.

    camelCase on the wire, snake_case in Python; field docstrings become the CRD's descriptions
    (and so ``kubectl explain`` text); unknown fields are refused, as the API server's strict
    field validation refuses them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        strict=True,
        json_schema_extra=_add_cel_rules,
    )

    __cel_rules__: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        broken = [rule for rule in self.__cel_rules__ if not rule.check(self)]
        if broken:
            raise ValueError("; ".join(rule.message for rule in broken))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(ApiModel):
    """The state of one aspect of an object, as the Kubernetes API conventions define it."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Type of the condition, in CamelCase: Ready, Progressing or Degraded."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds: True, False or Unknown."""

    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    """A one-word CamelCase reason for the last transition, for tools and for ``kubectl get``."""

    message: str = Field(default="", max_length=32768)
    """A sentence for people: what happened and what to do about it."""

    last_transition_time: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    )
    """When the status last changed (RFC 3339)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` that the condition was computed from."""


ConditionStatus = Literal["True", "False", "Unknown"]
"""The status of a condition."""


def make_condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None,
    previous: Sequence[Condition],
) -> Condition:
    """A condition that keeps the previous ``lastTransitionTime`` if its status is unchanged."""
    before = next((c for c in previous if c.type == type_), None)
    since = before.last_transition_time if before and before.status == status else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's own namespace. Secrets are referenced, never inlined."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Secret."""

    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key inside the Secret whose value is used."""


class ObjectMeta(BaseModel):
    """The subset of ``metadata`` that inferscale reads; every other key is kept as it is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the object."""

    namespace: str | None = None
    """Namespace of the object."""

    generation: int | None = None
    """Generation of the spec, increased by the API server on each spec change."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""

    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the object."""


def nested(model: type[ApiModel]) -> Any:
    """A nested settings object that is always present, with every default filled in.

    In the CRD it becomes ``default: {}``, so the API server materialises the object and then its
    own defaults: ``kubectl get -o yaml`` shows the effective settings, and CEL rules can read
    nested fields without guarding each parent.
    """
    return Field(default_factory=model, json_schema_extra={"default": {}})


SpecT = TypeVar("SpecT", bound=ApiModel)
StatusT = TypeVar("StatusT", bound=ApiModel)


class Resource(ApiModel, Generic[SpecT, StatusT]):
    """A whole object as ``kubectl apply`` sends it; each kind adds its ``kind`` literal."""

    api_version: Literal["inferscale.io/v1alpha1"] = API_VERSION
    """API version."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: SpecT
    """Desired state."""

    status: StatusT | None = None
    """Observed state, written by the operator."""
