"""Where a model's accelerator-hour price comes from: its own spec, else the operator's settings.

The cost-aware mode (:mod:`inferscale.autoscaler.spillprice`) needs the price of one
accelerator for an hour. A platform team sets it once, in the operator's settings
(``autoscaler.acceleratorHourPrices`` and ``autoscaler.defaultAcceleratorHourPrice``), instead
of in every InferenceModel; a model's ``spec.autoscaling.acceleratorHourPrice`` wins over them.

The settings' keys are of two kinds, and the most specific that applies prices the model:

1. ``label=value``: a node label the model's ``scheduling.nodeSelector`` asks for, for example
   ``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3`` or
   ``cloud.google.com/gke-accelerator=nvidia-l4`` (the accelerator type). Where several of the
   model's node labels are priced, the lowest price is taken: a lower replica price keeps more
   replicas standing, the safe side for latency.
2. ``resource``: the extended resource its GPUs are requested under (``resources.
   gpuResourceName``), for example ``nvidia.com/gpu`` or ``amd.com/gpu``.
3. else ``defaultAcceleratorHourPrice``.

A replica without GPUs (``resources.gpus: 0``) is priced only by its spec or a ``label=value``
key (its node pool): a GPU price, by resource name or by default, does not describe it.

Pure: no I/O, no settings loader (:mod:`inferscale.config` validates the keys with
:func:`price_key_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec

SPEC_SOURCE: Final = "spec.autoscaling.acceleratorHourPrice"
SETTING_BY_KEY: Final = "autoscaler.acceleratorHourPrices"
SETTING_DEFAULT: Final = "autoscaler.defaultAcceleratorHourPrice"

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUALIFIED_NAME: Final = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
"""A Kubernetes qualified name: a label key, or an extended resource name."""
LABEL_VALUE: Final = re.compile(rf"^({_NAME})?$")
PRICE_KEY_PATTERN: Final = rf"^({_PREFIX}/)?{_NAME}(=({_NAME})?)?$"
"""A key of ``acceleratorHourPrices``, for the chart's schema (the operator checks the same
with :func:`price_key_problem`, which says what is wrong)."""


@dataclass(frozen=True, slots=True)
class PriceBook:
    """The operator-wide accelerator-hour prices (empty: every model prices itself)."""

    by_key: Mapping[str, float] = field(default_factory=dict)
    """``label=value`` or a resource name -> price of one accelerator for an hour."""
    default: float | None = None
    """The price of an accelerator no key names (None: none)."""


@dataclass(frozen=True, slots=True)
class AcceleratorPrice:
    """One accelerator's hour price for a model, and where it came from (for the condition)."""

    price: float | None
    """None: nothing prices this model."""
    source: str
    """``spec.autoscaling.acceleratorHourPrice``, ``operator setting ...[key]``, or why none."""


def price_key_problem(key: str) -> str | None:
    """Why ``key`` cannot name what prices a model (None: it can)."""
    name, eq, value = key.partition("=")
    if len(name) > 316 or not QUALIFIED_NAME.match(name):
        return (
            f"{key!r} is neither a GPU resource name (nvidia.com/gpu) nor a node label "
            "key=value (nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3)"
        )
    if eq and not LABEL_VALUE.match(value):
        return f"{key!r}: {value!r} is not a label value"
    return None


def accelerator_hour_price(spec: InferenceModelSpec, book: PriceBook) -> AcceleratorPrice:
    """The price of one of ``spec``'s accelerators for an hour, by the precedence above."""
    own = spec.autoscaling.accelerator_hour_price
    if own is not None:
        return AcceleratorPrice(own, SPEC_SOURCE)
    selected = sorted(
        (book.by_key[k], k)
        for k in (f"{label}={value}" for label, value in spec.scheduling.node_selector.items())
        if k in book.by_key
    )
    if selected:
        price, key = selected[0]
        return AcceleratorPrice(price, f"operator setting {SETTING_BY_KEY}[{key}]")
    if spec.resources.gpus == 0:
        return AcceleratorPrice(
            None,
            f"{SPEC_SOURCE} is not set, and a replica without GPUs is priced by the operator "
            f"only through a nodeSelector label=value key of {SETTING_BY_KEY}",
        )
    resource = spec.resources.gpu_resource_name
    if resource in book.by_key:
        price = book.by_key[resource]
        return AcceleratorPrice(price, f"operator setting {SETTING_BY_KEY}[{resource}]")
    if book.default is not None:
        return AcceleratorPrice(book.default, f"operator setting {SETTING_DEFAULT}")
    return AcceleratorPrice(
        None,
        f"{SPEC_SOURCE} is not set, and no operator setting prices it ({SETTING_BY_KEY} has "
        f"no {resource} or nodeSelector label=value key, {SETTING_DEFAULT} is unset)",
    )
