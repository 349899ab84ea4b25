"""The credentials document: hosted providers' API keys and the digests of clients' keys.

:class:`RouterCredentials` is the wire schema (camelCase JSON) that the operator compiles from
InferenceProviders, InferenceClients and their Secrets, writes to the Secret
``inferscale-router-credentials`` (key ``credentials.json``) and pushes to every router's
``PUT /admin/v1/credentials``, as it does with the routing table. It is versioned the same way
(:func:`inferscale.protocol.versions.stored_version`): a router refuses a version older than
the one it holds.

A provider with one key (``apiKeySecretRef``) is one entry of ``providerKeys``, as ever; one
with several (``apiKeys``) is an entry of ``providerKeySets`` instead: each key with its id
(``<Secret name>/<key>``, what metrics name) and the rates the provider grants it. Only such
providers use the newer field, so a document without them reads the same in an older router.

Client keys travel only as SHA-256 digests (:func:`key_digest`): a usable key cannot be
recovered from the document. Provider keys must be sent as they are (the provider wants them),
so they are :class:`~pydantic.SecretStr`: never in a ``repr``, a log line or a default dump;
:func:`credentials_json` is the one place that writes them out. The router's index of the
digests is ``inferscale.router.credentials``.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, SecretStr, field_validator

from inferscale.api.meta import ApiModel, nested
from inferscale.api.v1alpha1.inference_client import ClientBudgets, ClientLimits, ServedName
from inferscale.api.v1alpha1.inference_provider import MAX_PROVIDER_KEYS
from inferscale.errors import InferscaleError

DIGEST_PATTERN: Final = r"^[0-9a-f]{64}$"
"""A SHA-256 digest in lower-case hex."""

OWNER_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
"""``<namespace>/<name>`` of the object a key belongs to."""

_OWNER: Final = re.compile(OWNER_PATTERN)

MIN_KEY_LENGTH: Final = 16
"""Shortest client key accepted: anything shorter is guessable by brute force over HTTP."""


class StaleCredentialsError(InferscaleError):
    """Pushed credentials are older than (or conflict with) the ones the router holds."""


def key_digest(key: str) -> str:
    """The SHA-256 of a key's UTF-8 bytes, in lower-case hex (what a ClientKey carries)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ClientKey(ApiModel):
    """One accepted client key: its digest and what its client may do."""

    digest: str = Field(pattern=DIGEST_PATTERN)
    """SHA-256 of the key (lower-case hex); the key itself is never sent."""

    client: str = Field(pattern=OWNER_PATTERN, max_length=317)
    """The InferenceClient the key belongs to, ``<namespace>/<name>``. Limits and budgets are
    per client: several keys of one client (a rotation) share them."""

    allowed_models: list[ServedName] = Field(default_factory=list, max_length=256)
    """Served model names this key may use; empty allows every model."""

    limits: ClientLimits = nested(ClientLimits)
    """Request and token rates."""

    budgets: ClientBudgets = nested(ClientBudgets)
    """Token budgets per day and month (UTC)."""


KEY_ID_PATTERN: Final = r"^[-._a-zA-Z0-9]+(/[-._a-zA-Z0-9]+)?$"
"""``<Secret name>/<key>`` (or :data:`SINGLE_KEY_ID`): how a provider key is named where the
key must not appear."""

SINGLE_KEY_ID: Final = "default"
"""The id of a provider's only key (``providerKeys``: the one-key form)."""


class ProviderKeyEntry(ApiModel):
    """One API key of a provider with several, and the rates the provider grants it."""

    # A validation error must never quote the key.
    model_config = ConfigDict(hide_input_in_errors=True)

    id: str = Field(pattern=KEY_ID_PATTERN, max_length=507)
    """``<Secret name>/<key>``: the key's name in metrics, logs and reports."""

    key: SecretStr
    """The API key."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    """Requests per minute this key may carry (None: no limit of its own)."""

    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Tokens per minute this key may carry (None: no limit of its own)."""


class RouterCredentials(ApiModel):
    """Everything secret a router needs, as the operator pushes it."""

    # A validation error must never quote the document: it holds provider keys.
    model_config = ConfigDict(hide_input_in_errors=True)

    version: int = Field(ge=0)
    """Monotonic version; a router refuses credentials older than the ones it holds."""

    provider_keys: dict[str, SecretStr] = Field(default_factory=dict, max_length=10_000)
    """``<namespace>/<InferenceProvider name>`` → that provider's API key (one-key form)."""

    provider_key_sets: dict[
        str, Annotated[list[ProviderKeyEntry], Field(max_length=MAX_PROVIDER_KEYS)]
    ] = Field(default_factory=dict, max_length=10_000)
    """``<namespace>/<InferenceProvider name>`` → its keys, for providers with ``apiKeys``."""

    client_keys: list[ClientKey] = Field(default_factory=list, max_length=100_000)
    """Every accepted client key (by digest)."""

    require_client_key: bool = False
    """Refuse requests without a known client key (401). The operator sets it while any
    InferenceClient exists (``docs/access.md``); a router's own setting can force it on."""

    @field_validator("provider_keys", "provider_key_sets", mode="before")
    @classmethod
    def _provider_ids(cls, keys: Any) -> Any:
        # Dict keys get no pattern from the field declaration.
        if isinstance(keys, dict):
            bad = [k for k in keys if not isinstance(k, str) or not _OWNER.fullmatch(k)]
            if bad:
                raise ValueError(f"provider ids must be <namespace>/<name>: {bad[:5]}")
        return keys

    def same_content(self, other: RouterCredentials) -> bool:
        """Whether both carry the same keys and settings (versions aside), secrets included."""
        return (
            self.require_client_key == other.require_client_key
            and self.client_keys == other.client_keys
            and _revealed(self.provider_keys) == _revealed(other.provider_keys)
            and _revealed_sets(self.provider_key_sets) == _revealed_sets(other.provider_key_sets)
        )

    def provider_entries(self, provider_id: str) -> list[ProviderKeyEntry]:
        """Every key of a provider (the one-key form as a list of one; empty: none held)."""
        found = self.provider_key_sets.get(provider_id)
        if found is not None:
            return found
        single = self.provider_keys.get(provider_id)
        return [] if single is None else [ProviderKeyEntry(id=SINGLE_KEY_ID, key=single)]

    def provider_ids(self) -> list[str]:
        """Every provider some key is held for, sorted."""
        return sorted(set(self.provider_keys) | set(self.provider_key_sets))


def _revealed(keys: dict[str, SecretStr]) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in keys.items()}


def _revealed_sets(sets: dict[str, list[ProviderKeyEntry]]) -> dict[str, list[dict[str, Any]]]:
    return {
        provider: [
            {
                **entry.model_dump(by_alias=True, exclude_none=True),
                "key": entry.key.get_secret_value(),
            }
            for entry in entries
        ]
        for provider, entries in sets.items()
    }


def credentials_json(credentials: RouterCredentials) -> str:
    """The document as pushed and stored, provider keys in clear: the only place they are."""
    doc = credentials.model_dump(by_alias=True, mode="json", exclude_defaults=True)
    doc["version"] = credentials.version
    if credentials.provider_keys:
        doc["providerKeys"] = _revealed(credentials.provider_keys)
    if credentials.provider_key_sets:
        doc["providerKeySets"] = _revealed_sets(credentials.provider_key_sets)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def summary(credentials: RouterCredentials) -> dict[str, object]:
    """What a router may tell its admin API about the credentials it holds: no key, no digest.

    Providers with several keys are listed with their keys' ids (``providerKeyIds``).
    """
    out: dict[str, object] = {
        "version": credentials.version,
        "requireClientKey": credentials.require_client_key,
        "providers": credentials.provider_ids(),
        "clients": sorted({k.client for k in credentials.client_keys}),
        "clientKeys": len(credentials.client_keys),
    }
    if credentials.provider_key_sets:
        out["providerKeyIds"] = {
            provider: [entry.id for entry in entries]
            for provider, entries in sorted(credentials.provider_key_sets.items())
        }
    return out
