"""``inferscale chart-schema``: generate the Helm chart's ``values.schema.json``.

The schema has two sources, so neither can drift from the thing it describes:

* ``values.yaml`` itself: every key must carry a comment, which becomes the key's description
  (a key without one is an error), and the key's type follows from its default unless
  :data:`CONSTRAINTS` says more (ranges, patterns, enums, free-form maps);
* the operator's own settings models (:mod:`inferscale.config`) for ``operator.settings``: each
  group's fields in camelCase, with their types, bounds and docstrings, minus the routing fields
  the chart derives from ``router.*`` itself (:data:`CHART_OWNED_ROUTING`).

Objects are closed (``additionalProperties: false``), so ``helm install`` refuses a misspelt key
and names it. ``--check`` reports drift instead of writing (CI and ``make verify``).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from inferscale.config import (
    AccessSettings,
    AutoscalerSettings,
    RoutingSettings,
)
from inferscale.reconcile.settings import ReconcileSettings

JsonDict = dict[str, Any]
Path_ = tuple[str, ...]

CHART_OWNED_ROUTING = frozenset(
    {
        "enabled",
        "namespace",
        "router_labels",
        "admin_port",
        "admin_token_secret",
        "admin_token_key",
        "configmap_name",
        "configmap_key",
    }
)
"""RoutingSettings fields the chart sets from ``router.*`` (names, labels, port, Secret)."""

SETTINGS_GROUPS: dict[str, tuple[type[BaseModel], frozenset[str]]] = {
    "reconcile": (ReconcileSettings, frozenset()),
    "routing": (RoutingSettings, CHART_OWNED_ROUTING),
    "autoscaler": (AutoscalerSettings, frozenset()),
    "access": (AccessSettings, frozenset({"credentials_secret"})),
}
"""``operator.settings`` groups: the model behind each and the fields users may not set."""

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_OPTIONAL_DNS_LABEL = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"
_OPTIONAL_DNS_SUBDOMAIN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"
_STRING_MAP: JsonDict = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECTS: JsonDict = {"type": "array", "items": {"type": "object"}}
_ENV: JsonDict = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}},
    },
}
_QUANTITIES: JsonDict = {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
_CLAIMS: JsonDict = {**_OBJECTS, "description": "Dynamic resource claims."}
_PORT: JsonDict = {"type": "integer", "minimum": 1, "maximum": 65535}
_DURATION: JsonDict = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}

CONSTRAINTS: dict[str, JsonDict] = {
    # By key name, wherever the key appears.
    "annotations": _STRING_MAP,
    "labels": _STRING_MAP,
    "podAnnotations": _STRING_MAP,
    "podLabels": _STRING_MAP,
    "nodeSelector": _STRING_MAP,
    "commonLabels": _STRING_MAP,
    "tolerations": _OBJECTS,
    "affinity": {"type": "object"},
    "extraEnv": _ENV,
    "resources": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "requests": {**_QUANTITIES, "description": "Resources reserved (cpu, memory)."},
            "limits": {**_QUANTITIES, "description": "Most the container may use."},
            "claims": _CLAIMS,
        },
    },
    "repository": {"type": "string", "minLength": 1},
    "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
    "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
    "replicas": {"type": "integer", "minimum": 0},
    "interval": _DURATION,
    "name": {"type": "string", "maxLength": 253, "pattern": _OPTIONAL_DNS_SUBDOMAIN},
    "priorityClassName": {"type": "string", "maxLength": 253},
    # By full path.
    "fullnameOverride": {"type": "string", "maxLength": 40, "pattern": _OPTIONAL_DNS_LABEL},
    "imagePullSecrets": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
    },
    "redis.mode": {"type": "string", "enum": ["auto", "none", "", "bundled", "external"]},
    "redis.existingSecret": {
        "type": "string",
        "maxLength": 253,
        "pattern": _OPTIONAL_DNS_SUBDOMAIN,
    },
    "redis.existingSecretKey": {"type": "string", "minLength": 1, "pattern": r"^[-._a-zA-Z0-9]+$"},
    "redis.budgetsDuringOutage": {"type": "string", "enum": ["local", "refuse"]},
    "redis.bundled.maxMemory": {"type": "string", "pattern": r"^[0-9]+(b|kb|mb|gb)?$"},
    "redis.bundled.persistence.size": {
        "type": "string",
        "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
    },
    # Security contexts: the listed fields are typed, others (supplementalGroups...) pass.
    "podSecurityContext": {"additionalProperties": True},
    "podSecurityContext.runAsUser": {"type": "integer", "minimum": 0},
    "podSecurityContext.runAsGroup": {"type": "integer", "minimum": 0},
    "podSecurityContext.fsGroup": {"type": "integer", "minimum": 0},
    "podSecurityContext.seccompProfile": {
        "properties": {
            "localhostProfile": {"type": "string", "description": "Profile file (Localhost)."}
        },
    },
    "podSecurityContext.seccompProfile.type": {
        "type": "string",
        "enum": ["RuntimeDefault", "Localhost", "Unconfined"],
    },
    "securityContext": {"additionalProperties": True},
    "securityContext.capabilities": {
        "properties": {
            "add": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Capabilities added (none are needed).",
            }
        },
    },
    "securityContext.capabilities.drop": {"type": "array", "items": {"type": "string"}},
    "tmpSizeLimit": {
        "type": "string",
        "pattern": r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti)?$",
    },
    "operator": {
        # Without the Lease nothing keeps two operators from writing at once.
        "if": {"properties": {"leaderElection": {"properties": {"enabled": {"const": False}}}}},
        "then": {"properties": {"replicas": {"maximum": 1}}},
    },
    "operator.watchNamespaces": {
        "type": "array",
        "uniqueItems": True,
        "items": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
    },
    "operator.terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
    "operator.healthPort": _PORT,
    "router.port": _PORT,
    "router.service.type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "router.service.port": _PORT,
    "router.service.nodePort": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
    "router.podDisruptionBudget.minAvailable": {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": r"^[0-9]+%$"},
        ]
    },
    "router.drainSeconds": {"type": "number", "minimum": 0, "maximum": 300},
    "router.shutdownGraceSeconds": {"type": "number", "minimum": 0, "maximum": 3600},
    "router.adminToken.existingSecret": {
        "type": "string",
        "maxLength": 253,
        "pattern": _OPTIONAL_DNS_SUBDOMAIN,
    },
    "router.adminToken.key": {"type": "string", "maxLength": 253, "pattern": r"^[-._a-zA-Z0-9]+$"},
    "router.extraArgs": {"type": "array", "items": {"type": "string"}},
    "dashboard.namespace": {"type": "string", "maxLength": 63, "pattern": _OPTIONAL_DNS_LABEL},
    "networkPolicy.routerFrom": _OBJECTS,
    "networkPolicy.metricsFrom": _OBJECTS,
}
"""What a key's default cannot say: by full dotted path first, else by the key's own name."""

_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):")


class ChartSchemaError(ValueError):
    """``values.yaml`` cannot be turned into a schema (a key without a comment or a type)."""


def values_comments(text: str) -> dict[Path_, str]:
    """Each key's path -> the comment lines directly above it, joined (block-style YAML)."""
    comments: dict[Path_, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            pending = []  # blank lines and list items end a comment block
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        stack.append((indent, key))
        if pending:
            comments[path] = " ".join(pending)
        pending = []
    return comments


def settings_schema(group: str) -> JsonDict:
    """The schema of ``operator.settings.<group>``, from the operator's settings model."""
    model, owned = SETTINGS_GROUPS[group]
    raw = model.model_json_schema()
    defs = raw.get("$defs", {})
    properties = {
        to_camel(name): _clean(_inline(prop, defs))
        for name, prop in raw["properties"].items()
        if name not in owned
    }
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _inline(node: Any, defs: JsonDict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _clean(node: Any) -> Any:
    """Drop titles and the models' defaults; spell enum-keyed maps as closed objects.

    A ``dict[Engine, str]`` arrives as ``propertyNames: {enum: [...]}``, whose failure helm
    reports without the key's path; listed properties get ``at '/path': additional properties
    'x' not allowed`` instead.
    """
    if isinstance(node, dict):
        names = (node.get("propertyNames") or {}).get("enum")
        if names and isinstance(node.get("additionalProperties"), dict):
            value = _clean(node["additionalProperties"])
            rest = {
                k: v for k, v in node.items() if k not in ("propertyNames", "additionalProperties")
            }
            return {
                **_clean(rest),
                "additionalProperties": False,
                "properties": {name: {**value, "description": f"For {name}."} for name in names},
            }
        return {k: _clean(v) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def build_values_schema(values: JsonDict, comments: dict[Path_, str]) -> JsonDict:
    """The whole ``values.schema.json`` for ``values`` (parsed) and their ``comments``.

    Raises:
        ChartSchemaError: a key has no comment, or no type can be told for it.
    """
    schema = _object_schema((), values, comments)
    schema["properties"]["global"] = {
        "type": "object",
        "description": "Helm's global values (unused by this chart).",
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the inferscale chart (generated by `inferscale chart-schema`)",
        **schema,
    }


def _object_schema(path: Path_, values: JsonDict, comments: dict[Path_, str]) -> JsonDict:
    properties = {}
    for key, default in values.items():
        properties[key] = _key_schema((*path, key), default, comments)
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _key_schema(path: Path_, default: Any, comments: dict[Path_, str]) -> JsonDict:
    dotted = ".".join(path)
    if path not in comments:
        raise ChartSchemaError(f"values.yaml: {dotted} has no comment above it")
    constraint = copy.deepcopy(CONSTRAINTS.get(dotted, CONSTRAINTS.get(path[-1], {})))
    if path[:2] == ("operator", "settings") and len(path) == 3:
        schema = settings_schema(path[2])
    elif "type" in constraint or "oneOf" in constraint:
        schema = constraint  # a whole schema: a free-form map, a range, a pattern...
    else:
        # Derived from the default, with the constraint's extra keywords and properties.
        if isinstance(default, dict) and default:
            schema = _object_schema(path, default, comments)
        else:
            schema = _scalar_schema(dotted, default)
        schema.setdefault("properties", {}).update(constraint.pop("properties", {}))
        if not schema["properties"]:
            del schema["properties"]
        schema.update(constraint)
    return {"description": comments[path], **schema}


def _scalar_schema(dotted: str, default: Any) -> JsonDict:
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, float):
        return {"type": "number"}
    if isinstance(default, str):
        return {"type": "string"}
    raise ChartSchemaError(
        f"values.yaml: {dotted} defaults to {default!r}; give its schema in CONSTRAINTS "
        "(inferscale/cli/chart.py)"
    )


def render_values_schema(chart: Path) -> str:
    """The text of ``values.schema.json`` for the chart folder ``chart``."""
    text = (chart / "values.yaml").read_text()
    schema = build_values_schema(yaml.safe_load(text) or {}, values_comments(text))
    return json.dumps(schema, indent=2) + "\n"


def register(subparsers: Any) -> None:
    """Add the ``chart-schema`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "chart-schema",
        help="generate the Helm chart's values.schema.json from values.yaml and the settings",
    )
    p.add_argument("chart", nargs="?", default="charts/inferscale", help="chart folder")
    p.add_argument("--check", action="store_true", help="report drift instead of writing")
    p.set_defaults(func=cmd_chart_schema)


def cmd_chart_schema(args: argparse.Namespace) -> int:
    """Write (or, with ``--check``, compare) ``values.schema.json``; 1 on drift or error."""
    chart = Path(args.chart)
    target = chart / "values.schema.json"
    try:
        text = render_values_schema(chart)
    except (OSError, yaml.YAMLError, ChartSchemaError) as error:
        print(f"inferscale chart-schema: {error}", file=sys.stderr)
        return 1
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is stale: run `make crds`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0
