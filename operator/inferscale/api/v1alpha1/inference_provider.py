"""InferenceProvider: a hosted model provider that routes can spill over or fail over to.

The API key is always a Secret reference; the router reads it from the Secret and never logs it.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator

from inferscale.api.meta import ApiModel, CelRule, Condition, Resource, SecretKeyRef
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN

KIND: Final = "InferenceProvider"
PLURAL = "inferenceproviders"

ProviderType = Literal["openai", "anthropic", "openai-compatible"]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
"""Base URL used when ``baseURL`` is empty; ``openai-compatible`` providers must name theirs."""


class ProviderModel(ApiModel):
    """One model offered through the provider: its name here, its name there, and its price."""

    name: str = Field(pattern=SERVED_NAME_PATTERN)
    """The name routes use for this model."""

    provider_model: str | None = Field(default=None, min_length=1, max_length=256)
    """The provider's own model name; defaults to ``name``."""

    input_price_per_million_tokens: float = Field(default=0, ge=0, le=1_000_000)
    """Price of one million prompt tokens, in the currency of the spend caps (USD by default)."""

    output_price_per_million_tokens: float = Field(default=0, ge=0, le=1_000_000)
    """Price of one million generated tokens."""


class InferenceProviderSpec(ApiModel):
    """How to reach a hosted provider and what its models cost."""

    __cel_rules__ = (
        CelRule(
            rule="self.type != 'openai-compatible' || has(self.baseURL)",
            message="baseURL is required for type openai-compatible",
            check=lambda s: s.type != "openai-compatible" or s.base_url is not None,
            field_path=".baseURL",
        ),
    )

    type: ProviderType
    """The API the provider speaks: openai, anthropic (Messages API), or openai-compatible
    (Together, Fireworks, a remote vLLM, ...)."""

    base_url: str | None = Field(
        default=None, alias="baseURL", max_length=2048, pattern=r"^https?://[^\s]+$"
    )
    """Base URL of the API; defaults to the official endpoint for openai and anthropic."""

    api_key_secret_ref: SecretKeyRef
    """Secret key that holds the API key. Keys are never written in a spec."""

    models: list[ProviderModel] = Field(
        min_length=1,
        max_length=256,
        # A map-list keyed by name: the API server itself refuses two entries with one name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The models routes may use from this provider, with their prices (names are unique)."""

    @field_validator("models")
    @classmethod
    def _unique_model_names(cls, models: list[ProviderModel]) -> list[ProviderModel]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models must have unique names (repeated: {', '.join(duplicates)})")
        return models

    timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """Longest wait for a whole response from the provider."""

    anthropic_version: str = Field(default="2023-06-01", max_length=32)
    """Value of the ``anthropic-version`` header (type anthropic only)."""


class InferenceProviderStatus(ApiModel):
    """The observed state of a provider, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""

    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready (the key Secret exists and holds the key) and Degraded (recent failures)."""


class InferenceProvider(Resource[InferenceProviderSpec, InferenceProviderStatus]):
    """A whole InferenceProvider object, as ``kubectl apply`` sends it."""

    kind: Literal["InferenceProvider"] = KIND
    """Kind."""
