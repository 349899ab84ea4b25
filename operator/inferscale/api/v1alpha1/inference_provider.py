"""InferenceProvider: a hosted model provider that routes can spill over or fail over to.

API keys are always Secret references; the router reads them from the Secrets and never logs
them. A provider has one key (``apiKeySecretRef``) or several (``apiKeys``, each with its own
optional request and token rates): the router spreads requests over them and takes a key that
the provider refuses (401/403) or rate-limits (429) out of use on its own.

Provider types and what each needs besides its keys: ``openai``, ``anthropic``, ``gemini`` and
``cohere`` (official endpoints by default); ``openai-compatible`` (a ``baseURL`` or a named
``preset``); ``azure-openai`` (``baseURL`` of the resource, ``azure``: api-version and auth);
``vertex-ai`` (``vertex``: project and location; the key is an OAuth access token);
``bedrock`` (``bedrock``: region; the key is an AWS access key pair).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator

from inferscale.api.meta import ApiModel, CelRule, Condition, Resource, SecretKeyRef
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN

KIND: Final = "InferenceProvider"
PLURAL = "inferenceproviders"

ProviderType = Literal[
    "openai",
    "anthropic",
    "openai-compatible",
    "azure-openai",
    "gemini",
    "vertex-ai",
    "cohere",
    "bedrock",
]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "cohere": "https://api.cohere.com",
}
"""Base URL used when ``baseURL`` is empty (vertex-ai and bedrock derive theirs from their
location or region; openai-compatible takes its preset's; azure-openai must name its resource)."""

Preset = Literal[
    "together", "fireworks", "huggingface", "groq", "deepinfra", "openrouter", "mistral"
]

PRESET_BASE_URLS: Final[dict[str, str]] = {
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "huggingface": "https://router.huggingface.co/v1",
    "groq": "https://api.groq.com/openai/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "openrouter": "https://openrouter.ai/api/v1",
    "mistral": "https://api.mistral.ai/v1",
}
"""OpenAI-compatible hosts by preset name: their documented base URLs."""

GCP_LOCATION_PATTERN: Final = r"^[a-z]+(-[a-z0-9]+)+$|^global$"
AWS_REGION_PATTERN: Final = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"


class AzureSettings(ApiModel):
    """How to call an Azure OpenAI resource (type azure-openai)."""

    api_version: str = Field(
        default="2024-10-21", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"
    )
    """The ``api-version`` query parameter."""

    auth: Literal["api-key", "entra"] = "api-key"
    """``api-key``: the key goes in the ``api-key`` header; ``entra``: the Secret holds a
    Microsoft Entra ID access token, sent as ``Authorization: Bearer`` (refresh it in the
    Secret before it expires: the router does not mint tokens)."""


class VertexSettings(ApiModel):
    """Where a Vertex AI model runs (type vertex-ai)."""

    project: str = Field(min_length=6, max_length=30, pattern=r"^[a-z][-a-z0-9]*[a-z0-9]$")
    """Google Cloud project id."""

    location: str = Field(default="us-central1", max_length=32, pattern=GCP_LOCATION_PATTERN)
    """Region (``us-central1``) or ``global``."""


class BedrockSettings(ApiModel):
    """Where AWS Bedrock runs (type bedrock)."""

    region: str = Field(pattern=AWS_REGION_PATTERN, max_length=32)
    """AWS region (``us-east-1``): the endpoint and the SigV4 signing region."""


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


MAX_PROVIDER_KEYS: Final = 64
"""Keys one provider may list."""


class ProviderKey(ApiModel):
    """One API key of a provider, and the rates the provider grants that key."""

    secret_ref: SecretKeyRef
    """Secret key that holds the API key. Its id in metrics and status is
    ``<Secret name>/<key>``, never the key itself."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=100_000_000)
    """Requests per minute the router sends with this key (unset: no limit of its own)."""

    tokens_per_minute: int | None = Field(default=None, ge=1, le=10_000_000_000)
    """Tokens (prompt + completion, estimated until the answer says) per minute the router
    sends with this key (unset: no limit of its own)."""

    @property
    def key_id(self) -> str:
        """How metrics and status name this key."""
        return f"{self.secret_ref.name}/{self.secret_ref.key}"


class InferenceProviderSpec(ApiModel):
    """How to reach a hosted provider and what its models cost."""

    __cel_rules__ = (
        CelRule(
            rule="self.type != 'openai-compatible' || has(self.baseURL) || has(self.preset)",
            message="baseURL or preset is required for type openai-compatible",
            check=lambda s: (
                s.type != "openai-compatible" or s.base_url is not None or s.preset is not None
            ),
            field_path=".baseURL",
        ),
        CelRule(
            rule="!has(self.preset) || self.type == 'openai-compatible'",
            message="preset is only allowed with type openai-compatible",
            check=lambda s: s.preset is None or s.type == "openai-compatible",
            field_path=".preset",
        ),
        CelRule(
            rule="self.type != 'azure-openai' || has(self.baseURL)",
            message="baseURL (https://<resource>.openai.azure.com) is required for azure-openai",
            check=lambda s: s.type != "azure-openai" or s.base_url is not None,
            field_path=".baseURL",
        ),
        CelRule(
            rule="self.type != 'vertex-ai' || has(self.vertex)",
            message="vertex (project, location) is required for type vertex-ai",
            check=lambda s: s.type != "vertex-ai" or s.vertex is not None,
            field_path=".vertex",
        ),
        CelRule(
            rule="self.type != 'bedrock' || has(self.bedrock)",
            message="bedrock (region) is required for type bedrock",
            check=lambda s: s.type != "bedrock" or s.bedrock is not None,
            field_path=".bedrock",
        ),
        CelRule(
            rule="has(self.apiKeySecretRef) != has(self.apiKeys)",
            message="exactly one of apiKeySecretRef or apiKeys is required",
            check=lambda s: (s.api_key_secret_ref is None) != (s.api_keys is None),
        ),
        CelRule(
            rule=(
                "!has(self.apiKeys) || self.apiKeys.all(a, self.apiKeys.exists_one(b, "
                "b.secretRef.name == a.secretRef.name && b.secretRef.key == a.secretRef.key))"
            ),
            message="apiKeys must name distinct Secret keys",
            check=lambda s: len({k.key_id for k in s.api_keys or ()}) == len(s.api_keys or ()),
            field_path=".apiKeys",
        ),
    )

    type: ProviderType
    """The API the provider speaks: openai, anthropic (Messages API), openai-compatible
    (Together, Fireworks, a remote vLLM, ...), azure-openai, gemini (Gemini API), vertex-ai
    (Gemini on Vertex AI), cohere (v2 chat) or bedrock (AWS Bedrock's Converse API)."""

    base_url: str | None = Field(
        default=None, alias="baseURL", max_length=2048, pattern=r"^https?://[^\s]+$"
    )
    """Base URL of the API; defaults to the official endpoint for openai, anthropic, gemini
    and cohere, to the preset's for openai-compatible, and to the location's or region's for
    vertex-ai and bedrock."""

    preset: Preset | None = None
    """An OpenAI-compatible host by name (type openai-compatible): together, fireworks,
    huggingface, groq, deepinfra, openrouter or mistral; ``baseURL`` overrides it."""

    azure: AzureSettings | None = None
    """Azure OpenAI settings (type azure-openai). Each model's ``providerModel`` is its
    deployment name."""

    vertex: VertexSettings | None = None
    """Vertex AI project and location (type vertex-ai; required)."""

    bedrock: BedrockSettings | None = None
    """AWS Bedrock region (type bedrock; required). Its key's Secret holds
    ``<access key id>:<secret access key>`` (optionally ``:<session token>``); each model's
    ``providerModel`` is its model id or inference profile (``anthropic.claude-...``)."""

    api_key_secret_ref: SecretKeyRef | None = None
    """Secret key that holds the API key (one key). Keys are never written in a spec."""

    api_keys: list[ProviderKey] | None = Field(
        default=None, min_length=1, max_length=MAX_PROVIDER_KEYS
    )
    """Several API keys (instead of ``apiKeySecretRef``), each with its own optional rates: the
    router spreads requests over them, and one the provider refuses or rate-limits is taken out
    of use alone (401/403: until its Secret changes; 429: for ``Retry-After`` or a backoff)."""

    def resolved_base_url(self) -> str:
        """``baseURL``, else the preset's, the location's or region's, or the official one."""
        if self.base_url is not None:
            url = self.base_url
        elif self.preset is not None:
            url = PRESET_BASE_URLS[self.preset]
        elif self.vertex is not None and self.type == "vertex-ai":
            location = self.vertex.location
            host = "aiplatform" if location == "global" else f"{location}-aiplatform"
            url = f"https://{host}.googleapis.com"
        elif self.bedrock is not None and self.type == "bedrock":
            url = f"https://bedrock-runtime.{self.bedrock.region}.amazonaws.com"
        else:
            url = DEFAULT_BASE_URLS[self.type]
        return url.rstrip("/")

    def key_refs(self) -> list[ProviderKey]:
        """Every key of the provider, the one-key form as a list of one."""
        if self.api_keys is not None:
            return list(self.api_keys)
        if self.api_key_secret_ref is not None:
            return [ProviderKey(secret_ref=self.api_key_secret_ref)]
        return []

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
