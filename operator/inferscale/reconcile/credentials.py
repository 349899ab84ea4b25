"""InferenceProviders, InferenceClients and their Secrets -> the routers' credentials (pure).

:func:`compile_credentials` turns plain dicts (the objects as the API server returns them, and
the decoded data of the Secrets they reference) into the content of a
:class:`~inferscale.protocol.credentials.RouterCredentials`: provider id -> API key, and one
:class:`~inferscale.protocol.credentials.ClientKey` per usable client key (its SHA-256, never the
key). The rules that are not obvious:

- A provider with several keys (``spec.apiKeys``) sends every key its Secrets hold, each with
  its id and rates; it is Ready while one key is usable, and its message names the keys that are
  not (their Secret or key missing or empty).

- A client Secret key may hold several keys, one per line (a rotation that overlaps); blank lines
  are skipped and keys shorter than ``MIN_KEY_LENGTH`` are refused (and reported), so a
  placeholder such as ``changeme`` never opens the router.
- Two clients with the same key: the oldest client (``creationTimestamp``, then namespace/name)
  keeps it, the other is told so in its status; a key never maps to two sets of limits.
- ``require_client_key``: ``always``, ``never``, or ``auto`` (the default), which requires a key
  while any InferenceClient exists, usable or not: a client whose Secret is missing closes the
  router to anonymous callers rather than leaving it open.
- Keys are stripped of surrounding whitespace (``echo`` and editors add newlines).

Bad data never raises: an object that cannot be used gets a state saying why (its status
condition) and a sentence in :attr:`CompiledCredentials.problems`. No sentence ever contains a
key. No I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import ValidationError

from inferscale.api.meta import CONDITION_READY, Condition, make_condition
from inferscale.api.v1alpha1.inference_client import InferenceClientSpec, InferenceClientStatus
from inferscale.api.v1alpha1.inference_provider import ProviderKey
from inferscale.api.validation import describe_errors
from inferscale.protocol.credentials import (
    MIN_KEY_LENGTH,
    ClientKey,
    ProviderKeyEntry,
    key_digest,
)

JsonDict = dict[str, Any]
ObjectKey = tuple[str, str]
"""(namespace, name)."""

RequireClientKey = Literal["auto", "always", "never"]
"""When routers require a client key: while any InferenceClient exists, always, or never."""

SecretData = Mapping[ObjectKey, Mapping[str, str] | None]
"""Decoded data of the referenced Secrets by (namespace, name); ``None``: it does not exist."""

REASON_READY: Final = "KeyAccepted"
REASON_NO_SECRET: Final = "SecretNotFound"
REASON_NO_KEY: Final = "KeyNotFound"
REASON_BAD_KEY: Final = "KeyInvalid"
REASON_DUPLICATE: Final = "KeyInUse"
REASON_DISABLED: Final = "Disabled"
REASON_INVALID_SPEC: Final = "InvalidSpec"


@dataclass(frozen=True)
class KeyState:
    """Whether one object's key reached the credentials, and why not."""

    ready: bool
    reason: str
    message: str
    keys: int = 0
    """Usable keys sent to the routers."""


@dataclass(frozen=True)
class CompiledCredentials:
    """The credentials' content without a version, and each object's state."""

    provider_keys: dict[str, str]
    """``<namespace>/<name>`` -> API key (providers with one key)."""
    client_keys: list[ClientKey]
    """Usable client keys, by client then digest."""
    require_client_key: bool
    clients: dict[ObjectKey, KeyState] = field(default_factory=dict)
    providers: dict[ObjectKey, KeyState] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    """One sentence per object that could not be used (never a key)."""
    provider_key_sets: dict[str, list[ProviderKeyEntry]] = field(default_factory=dict)
    """``<namespace>/<name>`` -> its keys (providers with ``apiKeys``)."""


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret, as an InferenceClient or InferenceProvider names it."""

    namespace: str
    name: str
    key: str


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ident(obj: Mapping[str, Any]) -> ObjectKey:
    meta = _mapping(obj.get("metadata"))
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = _mapping(obj.get("metadata"))
    created = meta.get("creationTimestamp")
    namespace, name = _ident(obj)
    return (created if isinstance(created, str) and created else "~", namespace, name)


def secret_ref(obj: Mapping[str, Any]) -> SecretRef | None:
    """The ``spec.apiKeySecretRef`` of a client or provider, or ``None`` when unusable."""
    namespace, _ = _ident(obj)
    ref = _mapping(_mapping(obj.get("spec")).get("apiKeySecretRef"))
    name, key = ref.get("name"), ref.get("key")
    if not namespace or not isinstance(name, str) or not name or not isinstance(key, str):
        return None
    return SecretRef(namespace, name, key)


def provider_key_refs(obj: Mapping[str, Any]) -> list[tuple[SecretRef, ProviderKey]] | None:
    """A provider's ``spec.apiKeys`` as refs with their rates; ``None``: it has no such list.

    Entries that do not parse are left out (the API server refuses them; a stored object from
    an older schema must not break the compile).
    """
    namespace, _ = _ident(obj)
    listed = _mapping(obj.get("spec")).get("apiKeys")
    if not isinstance(listed, list) or not namespace:
        return None
    out = []
    for entry in listed:
        try:
            key = ProviderKey.model_validate(entry)
        except ValidationError:
            continue
        out.append((SecretRef(namespace, key.secret_ref.name, key.secret_ref.key), key))
    return out


def secret_refs(obj: Mapping[str, Any]) -> list[SecretRef]:
    """Every Secret key an object references: ``apiKeySecretRef`` and ``apiKeys`` (providers)."""
    single = secret_ref(obj)
    listed = provider_key_refs(obj) or []
    return ([single] if single is not None else []) + [ref for ref, _ in listed]


def referenced_secrets(*objects: Iterable[Mapping[str, Any]]) -> set[ObjectKey]:
    """Every Secret (namespace, name) the objects reference."""
    return {
        (ref.namespace, ref.name) for group in objects for obj in group for ref in secret_refs(obj)
    }


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` decoded to text; values that are not base64 UTF-8 are left out."""
    out: dict[str, str] = {}
    for key, raw in _mapping(secret.get("data")).items():
        if not isinstance(raw, str):
            continue
        try:
            out[str(key)] = base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


def _lookup(ref: SecretRef, secrets: SecretData) -> tuple[str | None, KeyState | None]:
    """(the value, None) or (None, the state that says why there is none)."""
    where = f"Secret {ref.namespace}/{ref.name}"
    data = secrets.get((ref.namespace, ref.name))
    if data is None:
        return None, KeyState(False, REASON_NO_SECRET, f"{where} does not exist")
    value = data.get(ref.key)
    if value is None:
        return None, KeyState(
            False, REASON_NO_KEY, f"{where} has no key {ref.key!r} (or it is not UTF-8 text)"
        )
    return value, None


def _key_value(ref: SecretRef, secrets: SecretData) -> tuple[str | None, KeyState | None]:
    """A provider key's stripped value, or the state that says why there is none."""
    value, problem = _lookup(ref, secrets)
    if problem is not None:
        return None, problem
    key = (value or "").strip()
    if not key:
        where = f"Secret {ref.namespace}/{ref.name} key {ref.key!r}"
        return None, KeyState(False, REASON_BAD_KEY, f"{where} is empty")
    return key, None


def _key_set(
    listed: list[tuple[SecretRef, ProviderKey]], secrets: SecretData
) -> tuple[list[ProviderKeyEntry], KeyState]:
    """The usable keys of a provider with ``apiKeys``, and its state."""
    entries: list[ProviderKeyEntry] = []
    missing: list[str] = []
    last: KeyState | None = None
    for ref, spec in listed:
        value, problem = _key_value(ref, secrets)
        if problem is not None:
            missing.append(spec.key_id)
            last = problem
            continue
        entries.append(
            ProviderKeyEntry(
                id=spec.key_id,
                key=value,  # type: ignore[arg-type]  # str -> SecretStr
                requests_per_minute=spec.requests_per_minute,
                tokens_per_minute=spec.tokens_per_minute,
            )
        )
    if not entries:
        if last is None:
            return [], KeyState(False, REASON_INVALID_SPEC, "spec.apiKeys has no usable entry")
        return [], KeyState(False, last.reason, f"no key is usable; last: {last.message}")
    message = f"{len(entries)} API key(s) reached the routers"
    if missing:
        message += f"; not usable: {', '.join(missing)} (Secret or key missing or empty)"
    return entries, KeyState(True, REASON_READY, message, len(entries))


def _providers(
    providers: Iterable[Mapping[str, Any]], secrets: SecretData
) -> tuple[dict[str, str], dict[str, list[ProviderKeyEntry]], dict[ObjectKey, KeyState]]:
    keys: dict[str, str] = {}
    sets: dict[str, list[ProviderKeyEntry]] = {}
    states: dict[ObjectKey, KeyState] = {}
    for obj in providers:
        ident = _ident(obj)
        listed = provider_key_refs(obj)
        if listed is not None:
            entries, states[ident] = _key_set(listed, secrets)
            if entries:
                sets[f"{ident[0]}/{ident[1]}"] = entries
            continue
        ref = secret_ref(obj)
        if ref is None:
            states[ident] = KeyState(
                False, REASON_INVALID_SPEC, "spec.apiKeySecretRef or spec.apiKeys is missing"
            )
            continue
        key, problem = _key_value(ref, secrets)
        if problem is not None:
            states[ident] = problem
            continue
        assert key is not None
        keys[f"{ident[0]}/{ident[1]}"] = key
        states[ident] = KeyState(True, REASON_READY, "the API key reached the routers", 1)
    return keys, sets, states


def _client_keys(value: str) -> tuple[list[str], int]:
    """(usable keys, refused lines) of a Secret value holding one key per line."""
    lines = [line.strip() for line in value.splitlines()]
    usable = [line for line in lines if len(line) >= MIN_KEY_LENGTH]
    refused = sum(1 for line in lines if line and len(line) < MIN_KEY_LENGTH)
    return list(dict.fromkeys(usable)), refused


def _clients(
    clients: Iterable[Mapping[str, Any]], secrets: SecretData
) -> tuple[list[ClientKey], dict[ObjectKey, KeyState]]:
    out: list[ClientKey] = []
    states: dict[ObjectKey, KeyState] = {}
    owner: dict[str, str] = {}
    for obj in sorted(clients, key=_age_key):
        ident = _ident(obj)
        name = f"{ident[0]}/{ident[1]}"
        try:
            spec = InferenceClientSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:
            detail = "; ".join(describe_errors(error)[:3])
            states[ident] = KeyState(False, REASON_INVALID_SPEC, f"invalid spec: {detail}")
            continue
        if spec.disabled:
            states[ident] = KeyState(False, REASON_DISABLED, "spec.disabled: keys are refused")
            continue
        ref = SecretRef(ident[0], spec.api_key_secret_ref.name, spec.api_key_secret_ref.key)
        value, problem = _lookup(ref, secrets)
        if problem is not None:
            states[ident] = problem
            continue
        assert value is not None
        keys, refused = _client_keys(value)
        taken = [k for k in keys if owner.get(key_digest(k), name) != name]
        notes = []
        if refused:
            notes.append(f"{refused} line(s) shorter than {MIN_KEY_LENGTH} characters ignored")
        if taken:
            others = sorted({owner[key_digest(k)] for k in taken})
            notes.append(f"{len(taken)} key(s) already belong to {', '.join(others)}")
        mine = [k for k in keys if k not in taken]
        if not mine:
            where = f"Secret {ref.namespace}/{ref.name} key {ref.key!r}"
            reason = REASON_DUPLICATE if taken else REASON_BAD_KEY
            why = "; ".join(notes) if notes else "it is empty"
            states[ident] = KeyState(False, reason, f"{where} holds no usable key: {why}")
            continue
        for key in mine:
            digest = key_digest(key)
            owner[digest] = name
            out.append(
                ClientKey(
                    digest=digest,
                    client=name,
                    allowed_models=list(spec.allowed_models),
                    limits=spec.limits,
                    budgets=spec.budgets,
                )
            )
        message = f"{len(mine)} key(s) accepted by the routers"
        states[ident] = KeyState(True, REASON_READY, "; ".join([message, *notes]), keys=len(mine))
    out.sort(key=lambda k: (k.client, k.digest))
    return out, states


def compile_credentials(
    providers: Iterable[Mapping[str, Any]],
    clients: Iterable[Mapping[str, Any]],
    secrets: SecretData,
    require: RequireClientKey = "auto",
) -> CompiledCredentials:
    """The credentials' content (see the module docstring for the rules)."""
    providers, clients = list(providers), list(clients)
    provider_keys, provider_key_sets, provider_states = _providers(providers, secrets)
    client_keys, client_states = _clients(clients, secrets)
    required = require == "always" or (require == "auto" and bool(clients))
    problems = [
        f"InferenceProvider {ns}/{name}: {state.message}"
        for (ns, name), state in provider_states.items()
        if not state.ready
    ] + [
        f"InferenceClient {ns}/{name}: {state.message}"
        for (ns, name), state in client_states.items()
        if not state.ready and state.reason != REASON_DISABLED
    ]
    return CompiledCredentials(
        provider_keys=dict(sorted(provider_keys.items())),
        provider_key_sets=dict(sorted(provider_key_sets.items())),
        client_keys=client_keys,
        require_client_key=required,
        clients=client_states,
        providers=provider_states,
        problems=tuple(sorted(problems)),
    )


def client_status(
    state: KeyState, generation: int | None, previous: Mapping[str, Any] | None, now: str
) -> JsonDict | None:
    """The status an InferenceClient should have; ``None`` when it already has it."""
    try:
        before = InferenceClientStatus.model_validate(previous or {})
    except ValidationError:
        before = InferenceClientStatus()
    ready = make_condition(
        CONDITION_READY,
        "True" if state.ready else "False",
        state.reason,
        state.message,
        now=now,
        generation=generation,
        previous=before.conditions,
    )
    others: list[Condition] = [c for c in before.conditions if c.type != CONDITION_READY]
    status = InferenceClientStatus(
        observed_generation=generation, keys=state.keys, conditions=[ready, *others]
    )
    want = status.to_wire()
    have = {k: v for k, v in (previous or {}).items() if k in want}
    return None if want == have else want


def build_credentials_secret(name: str, namespace: str, key: str, text: str) -> JsonDict:
    """The Secret that keeps the credentials for routers that start (they mount it).

    No ``managed-by`` label, as on the routing table's ConfigMap: the Helm chart creates this
    Secret empty (so that an uninstall removes it, keys included) and Helm marks it
    ``managed-by: Helm``; the operator applies the data and the two labels the chart sets to
    the same values, so neither write conflicts with the other.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "inferscale",
                "app.kubernetes.io/component": "router-credentials",
            },
        },
        "data": {key: base64.b64encode(text.encode()).decode()},
    }
