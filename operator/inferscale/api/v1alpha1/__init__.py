"""Version ``v1alpha1`` of the ``inferscale.io`` API: the four custom resources and their parts."""

from inferscale.api.v1alpha1.inference_client import (
    InferenceClient,
    InferenceClientSpec,
    InferenceClientStatus,
)
from inferscale.api.v1alpha1.inference_model import (
    InferenceModel,
    InferenceModelSpec,
    InferenceModelStatus,
)
from inferscale.api.v1alpha1.inference_provider import (
    InferenceProvider,
    InferenceProviderSpec,
    InferenceProviderStatus,
)
from inferscale.api.v1alpha1.inference_route import (
    InferenceRoute,
    InferenceRouteSpec,
    InferenceRouteStatus,
)

__all__ = [
    "InferenceClient",
    "InferenceClientSpec",
    "InferenceClientStatus",
    "InferenceModel",
    "InferenceModelSpec",
    "InferenceModelStatus",
    "InferenceProvider",
    "InferenceProviderSpec",
    "InferenceProviderStatus",
    "InferenceRoute",
    "InferenceRouteSpec",
    "InferenceRouteStatus",
]
