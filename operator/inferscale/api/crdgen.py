"""Generate the CustomResourceDefinitions from the pydantic models: the one source of truth.

Pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3.0
schema. The translation, rule by rule:

- ``$ref``/``$defs`` are inlined; a description beside a ``$ref`` (the field's docstring) wins
  over the referenced class's docstring.
- ``anyOf: [T, null]`` becomes ``T`` with ``nullable: true``.
- ``anyOf: [integer, string]`` (a Quantity) becomes ``x-kubernetes-int-or-string: true``, with
  the string's pattern beside it.
- ``title`` and ``additionalProperties: false`` are dropped (pruning handles unknown fields, and
  strict field validation in kubectl reports them); ``default: null`` is dropped.
- draft 2020-12's numeric ``exclusiveMinimum``/``exclusiveMaximum`` become OpenAPI's booleans.
- ``x-kubernetes-validations`` (CEL) come from :class:`~inferscale.api.meta.CelRule`.
- Lists of conditions become map-lists keyed by ``type``.
- RST ``double backticks`` in docstrings become single ones, and wrapped lines are joined, so
  ``kubectl explain`` reads well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from inferscale.api.meta import API_VERSION, CATEGORY, GROUP, VERSION
from inferscale.api.v1alpha1 import (
    inference_client,
    inference_model,
    inference_provider,
    inference_route,
)

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> JsonDict:
        """The ``additionalPrinterColumns`` entry."""
        out: JsonDict = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


def _condition(type_: str, field_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{field_}'


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class CrdInfo:
    """Everything about one kind that is not in its spec and status models."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...]
    scale: bool = False
    extra_subresources: JsonDict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``metadata.name`` of the CRD."""
        return f"{self.plural}.{GROUP}"


CRDS: tuple[CrdInfo, ...] = (
    CrdInfo(
        kind=inference_model.KIND,
        plural=inference_model.PLURAL,
        short_names=("im",),
        description=(
            "InferenceModel is one self-hosted model, served by autoscaled replicas of an "
            "inference engine (vLLM, SGLang, TGI, TensorRT-LLM or inferscale's GPU-free sim) and "
            "routable through the inferscale router under its served name."
        ),
        spec=inference_model.InferenceModelSpec,
        status=inference_model.InferenceModelStatus,
        scale=True,
        columns=(
            PrinterColumn("Served", ".status.servedName", description="Name clients send"),
            PrinterColumn("Engine", ".spec.engine"),
            PrinterColumn("GPUs", ".spec.resources.gpus", "integer", "GPUs per replica"),
            PrinterColumn("Ready", ".status.readyReplicas", "integer"),
            PrinterColumn("Desired", ".status.desiredReplicas", "integer"),
            PrinterColumn("Min", ".spec.minReplicas", "integer", priority=1),
            PrinterColumn("Max", ".spec.maxReplicas", "integer", priority=1),
            PrinterColumn("Status", _condition("Ready", "reason")),
            PrinterColumn("Source", ".spec.model", priority=1),
            PrinterColumn(
                "Floor",
                ".status.learnedFloor",
                "integer",
                "Replicas a learned floor keeps standing (ScalingLimited says why)",
                priority=1,
            ),
            PrinterColumn("Limited", _condition("ScalingLimited", "reason"), priority=1),
            PrinterColumn("Last-Scale", ".status.lastScaleReason", priority=1),
            AGE,
        ),
    ),
    CrdInfo(
        kind=inference_route.KIND,
        plural=inference_route.PLURAL,
        short_names=("ir",),
        description=(
            "InferenceRoute maps the model name that clients send to self-hosted InferenceModels "
            "and hosted provider models, with roles (primary, spillover, fallback, mirror), a "
            "picking strategy, retries, timeouts, a cold-start hold queue and spend caps."
        ),
        spec=inference_route.InferenceRouteSpec,
        status=inference_route.InferenceRouteStatus,
        columns=(
            PrinterColumn("Model", ".spec.modelName"),
            PrinterColumn("Strategy", ".spec.strategy"),
            PrinterColumn("Backends", ".status.readyBackends", "integer", "Ready backends"),
            PrinterColumn("Spilling", ".status.spilling", "boolean"),
            PrinterColumn("Spend-Today", ".status.spend.today", "number", priority=1),
            PrinterColumn("Status", _condition("Ready", "reason")),
            AGE,
        ),
    ),
    CrdInfo(
        kind=inference_provider.KIND,
        plural=inference_provider.PLURAL,
        short_names=("ip",),
        description=(
            "InferenceProvider is a hosted model provider (OpenAI, Anthropic or any "
            "OpenAI-compatible API) that InferenceRoutes can spill over or fail over to; its API "
            "key is read from a Secret."
        ),
        spec=inference_provider.InferenceProviderSpec,
        status=inference_provider.InferenceProviderStatus,
        columns=(
            PrinterColumn("Type", ".spec.type"),
            PrinterColumn("Base-URL", ".spec.baseURL"),
            PrinterColumn("Status", _condition("Ready", "reason")),
            AGE,
        ),
    ),
    CrdInfo(
        kind=inference_client.KIND,
        plural=inference_client.PLURAL,
        short_names=("ic",),
        description=(
            "InferenceClient is one client of the inferscale router: its API key (a Secret "
            "reference, never the key itself), the models it may use, its request and token "
            "rates and its token budgets."
        ),
        spec=inference_client.InferenceClientSpec,
        status=inference_client.InferenceClientStatus,
        columns=(
            PrinterColumn("Secret", ".spec.apiKeySecretRef.name"),
            PrinterColumn("RPM", ".spec.limits.requestsPerMinute", "integer"),
            PrinterColumn("TPM", ".spec.limits.tokensPerMinute", "integer"),
            PrinterColumn("Tokens-Day", ".spec.budgets.tokensPerDay", "integer", priority=1),
            PrinterColumn("Tokens-Month", ".spec.budgets.tokensPerMonth", "integer", priority=1),
            PrinterColumn("Models", ".spec.allowedModels", priority=1),
            PrinterColumn("Team", ".spec.team.name"),
            PrinterColumn(
                "Budget-Used",
                ".status.usage.budgetUsedPercent",
                "integer",
                "Most used budget of the client or its team, in percent",
            ),
            PrinterColumn("Tokens-Today", ".status.usage.client.tokensToday", "integer"),
            PrinterColumn("USD-Month", ".status.usage.client.usdThisMonth", "number"),
            PrinterColumn(
                "Team-USD-Month", ".status.usage.team.usdThisMonth", "number", priority=1
            ),
            PrinterColumn("Status", _condition("Ready", "reason")),
            AGE,
        ),
    ),
)


_BACKTICKS = re.compile(r"``([^`]+)``")


def clean_description(text: str) -> str:
    """Docstring to ``kubectl explain`` text: single backticks, paragraphs on one line each."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return _BACKTICKS.sub(r"`\1`", "\n\n".join(p for p in paragraphs if p))


def _resolve(node: Any, defs: JsonDict) -> Any:
    """Inline every ``$ref`` of ``node`` (recursively) with the matching entry of ``defs``."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: JsonDict) -> JsonDict:
    """Rewrite one resolved JSON Schema node (and its children) into structural OpenAPI v3."""
    node = dict(node)
    for key in ("title", "$defs"):
        node.pop(key, None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "default" in node and node["default"] is None:
        del node["default"]

    if "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) < len(options):
            node["nullable"] = True
        types = sorted(o.get("type", "") for o in non_null)
        if len(non_null) == 1:
            node = {**non_null[0], **node}
        elif types == ["integer", "string"]:
            string = next(o for o in non_null if o["type"] == "string")
            node = _structural(node)
            node["x-kubernetes-int-or-string"] = True
            # Exactly this anyOf is what a structural schema allows; the string's own checks
            # move up beside it, where they apply to string values only (as for Quantity).
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            node.update(_value_checks(string))
            return node
        else:
            raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
        return _structural(node)

    for bound in ("Minimum", "Maximum"):
        exclusive = node.pop(f"exclusive{bound}", None)
        if exclusive is not None:
            node[bound.lower()] = exclusive
            node[f"exclusive{bound}"] = True

    if "description" in node:
        node["description"] = clean_description(node["description"])
    if "properties" in node:
        node["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
        node.setdefault("type", "object")
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    if "items" in node:
        node["items"] = _structural(node["items"])
        item_props = node["items"].get("properties", {})
        if {"type", "status", "reason", "lastTransitionTime"} <= item_props.keys():
            node["x-kubernetes-list-type"] = "map"
            node["x-kubernetes-list-map-keys"] = ["type"]
    return node


def _value_checks(node: JsonDict) -> JsonDict:
    """The value validations of a schema node (allowed inside a structural ``anyOf``)."""
    return {k: v for k, v in node.items() if k in ("pattern", "maxLength", "minLength")}


def model_schema(model: type[BaseModel]) -> JsonDict:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def build_crd(info: CrdInfo) -> JsonDict:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    spec_schema = model_schema(info.spec)
    spec_schema["description"] = clean_description(info.spec.__doc__ or "")
    status_schema = model_schema(info.status)
    status_schema["description"] = clean_description(info.status.__doc__ or "")
    subresources: JsonDict = {"status": {}}
    if info.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.name,
            "labels": {
                "app.kubernetes.io/name": "inferscale",
                "app.kubernetes.io/part-of": "inferscale",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": info.description,
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "description": f"APIVersion of the object: {API_VERSION}.",
                                    "type": "string",
                                },
                                "kind": {
                                    "description": f"Kind of the object: {info.kind}.",
                                    "type": "string",
                                },
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                    "subresources": subresources,
                    "additionalPrinterColumns": [c.to_crd() for c in info.columns],
                }
            ],
        },
    }


def build_all() -> list[JsonDict]:
    """Every CRD of the project, in a stable order."""
    return [build_crd(info) for info in CRDS]
