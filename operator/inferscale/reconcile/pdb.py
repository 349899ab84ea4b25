"""The PodDisruptionBudget of an InferenceModel's serving pods (pure: spec -> dict).

``maxUnavailable: 1`` rather than ``minAvailable``: node drains evict one replica at a time and
never block forever, even at one replica or at zero. ``unhealthyPodEvictionPolicy: AlwaysAllow``
lets a drain evict a replica that is still loading or crash-looping, which protects no traffic.
"""

from __future__ import annotations

from typing import Any

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.reconcile.labels import check_model_name, object_labels, selector_labels


def build_pdb(model_name: str, namespace: str, spec: InferenceModelSpec) -> dict[str, Any]:
    """A PodDisruptionBudget that lets voluntary disruptions take one replica at a time.

    Raises:
        SpecError: the model's name cannot name the children.
    """
    check_model_name(model_name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": model_name,
            "namespace": namespace,
            "labels": object_labels(model_name, spec.engine),
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(model_name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
