"""The Service in front of an InferenceModel's serving pods (pure: spec -> dict).

The router picks pods itself from a watch (DESIGN.md section 5: EndpointSlices cannot hold the
local cluster's loopback pod IPs), so the Service is for people, in-cluster clients and
Prometheus: a stable ``http://NAME.NAMESPACE`` name on port 80.
"""

from __future__ import annotations

from typing import Any, Final

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.reconcile.deployment import PORT_NAME
from inferscale.reconcile.labels import check_model_name, object_labels, selector_labels

SERVICE_PORT: Final = 80


def build_service(model_name: str, namespace: str, spec: InferenceModelSpec) -> dict[str, Any]:
    """A ClusterIP Service on port 80 that forwards to the engine's named ``http`` port.

    Raises:
        SpecError: the model's name is not a valid Service name.
    """
    check_model_name(model_name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": model_name,
            "namespace": namespace,
            "labels": object_labels(model_name, spec.engine),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model_name),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": SERVICE_PORT,
                    # The port's name, not its number: each engine listens on its own port.
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
