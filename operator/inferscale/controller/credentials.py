"""Gives the routers their credentials: provider API keys and the digests of client keys.

kopf glue around the pure :mod:`inferscale.reconcile.credentials`. Indices of the
InferenceClients and InferenceProviders (and of the Secrets they reference, by
(namespace, name)) plus the routing module's router pods are the sources; one
:class:`CredentialsPublisher` task compiles them and delivers the document as
:class:`~inferscale.controller.publishing.RouterPublisher` delivers every document: coalesced,
versioned, PUT to ``/admin/v1/credentials`` of every router pod with the admin token, and kept
in the Secret ``inferscale-router-credentials`` (key ``credentials.json``) that routers mount.
It also writes each InferenceClient's ``Ready`` condition.

Secrets: the operator watches Secrets, but a Secret event is handled only when an index says an
InferenceClient or InferenceProvider references it (a kopf ``when`` filter on the index, O(1) per
event), and only referenced Secrets' data is kept, so thousands of unrelated Secrets cost the
watch stream and nothing else. A rotated key reaches the routers one coalesced push after the
Secret's watch event. A Secret that a new reference names is read once with a GET.

Failure behaviour: a referenced Secret that does not exist makes its client not Ready (and its
provider key absent); a Secret read that fails for another reason (RBAC, the API server) keeps
the previous credentials and retries after ``retry_max_seconds``, so a hiccup never drops keys.
Log lines name Secrets and counts, never a key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import kopf

from inferscale.api.meta import CONDITION_READY, GROUP, VERSION
from inferscale.api.v1alpha1.inference_client import KIND as CLIENT_KIND
from inferscale.api.v1alpha1.inference_client import PLURAL as CLIENT_PLURAL
from inferscale.api.v1alpha1.inference_provider import PLURAL as PROVIDER_PLURAL
from inferscale.config import AccessSettings, OperatorSettings, RoutingSettings
from inferscale.controller.cache import index_objects, json_copy
from inferscale.controller.inference_model import Runtime, now_rfc3339
from inferscale.controller.publishing import (
    PublisherSlot,
    PublisherWiring,
    RouterPublisher,
    secret_text,
)
from inferscale.controller.routing import is_router
from inferscale.errors import KubeApiError, NotFound
from inferscale.kube.client import KubeApi
from inferscale.protocol.credentials import RouterCredentials, credentials_json
from inferscale.reconcile.credentials import (
    KeyState,
    ObjectKey,
    build_credentials_secret,
    client_status,
    compile_credentials,
    decode_secret,
    referenced_secrets,
    secret_refs,
)

log = logging.getLogger(__name__)

MEMO_KEY: Final = "credentials"
"""Where the shared :class:`CredentialsState` lives in kopf's operator-level memo."""

SOURCE_INDICES: Final = (
    "inference_clients",
    "inference_providers",
    "client_key_secrets",
    "provider_key_secrets",
    "router_pods",
)
"""The kopf indices the credentials are compiled from."""

SECRET_INDICES: Final = ("client_key_secrets", "provider_key_secrets")
"""The indices that say which Secrets are referenced (the Secret events' filter)."""


@dataclass(frozen=True)
class CredentialSources:
    """What one credentials document is compiled from, read from the indices at one moment."""

    providers: list[Mapping[str, Any]]
    clients: list[Mapping[str, Any]]
    routers: list[Mapping[str, Any]]


def read_sources(
    indices: Mapping[str, Mapping[Any, Iterable[Mapping[str, Any]]]],
) -> CredentialSources:
    """Flatten kopf's indices into lists, without awaiting between."""
    return CredentialSources(
        providers=index_objects(indices["inference_providers"]),
        clients=index_objects(indices["inference_clients"]),
        routers=index_objects(indices["router_pods"]),
    )


class CredentialsPublisher(RouterPublisher[CredentialSources, RouterCredentials]):
    """Compiles the credentials and delivers them to the routers and their Secret."""

    WHAT = "credentials"
    LOG_PREFIX = "credentials"
    ADMIN_PATH = "/admin/v1/credentials"
    STORE_KIND = "Secret"
    STORE_VERBS_HINT = (
        "the operator's Role in the routers' namespace must allow secrets create, and get, "
        "patch on the credentials Secret"
    )

    def __init__(
        self,
        api: KubeApi,
        settings: RoutingSettings,
        access: AccessSettings,
        namespace: str,
        read: Callable[[], CredentialSources],
        *,
        client: httpx.AsyncClient | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = now_rfc3339,
    ) -> None:
        """Wire the collaborators; ``now`` stamps condition transitions."""
        super().__init__(
            api,
            settings,
            namespace,
            read,
            store_name=access.credentials_secret,
            client=client,
            wall_ms=wall_ms,
            monotonic=monotonic,
        )
        self.access = access
        self.now = now
        self.secrets: dict[ObjectKey, dict[str, str] | None] = {}
        """Decoded data of the referenced Secrets (``None``: it does not exist)."""
        self.written: dict[ObjectKey, dict[str, Any]] = {}
        """The status last written per client, until its index shows it."""
        self.refetch_at = 0.0
        """When a compile that could not read a Secret is retried (0: none pending)."""
        self.limit = asyncio.Semaphore(access.status_concurrency)
        self.provider_states: dict[ObjectKey, KeyState] = {}
        """Whether each InferenceProvider's key reached the routers (its status reads it)."""

    # -- Secrets --------------------------------------------------------------------------

    def secret_changed(self, key: ObjectKey, secret: Mapping[str, Any] | None) -> None:
        """A referenced Secret was written (``None``: deleted); recompile when its data moved."""
        data = decode_secret(secret) if secret is not None else None
        if key in self.secrets and self.secrets[key] == data:
            return
        self.secrets[key] = data
        self.notify()

    async def _fetch(self, key: ObjectKey) -> bool:
        """Read one Secret into the cache; False when it could not be read (not NotFound)."""
        async with self.limit:
            try:
                secret = await self.api.get("v1", "Secret", key[0], key[1])
            except NotFound:
                self.secrets[key] = None
                return True
            except KubeApiError as error:
                self.log.warning(
                    "reading Secret %s/%s failed (%s): credentials keep their last version",
                    key[0],
                    key[1],
                    error,
                )
                return False
        self.secrets[key] = decode_secret(secret)
        return True

    # -- the document ---------------------------------------------------------------------

    async def build(self, sources: CredentialSources) -> tuple[RouterCredentials, str] | None:
        """Read the Secrets not cached yet, compile, write client statuses; new doc if changed."""
        wanted = referenced_secrets(sources.providers, sources.clients)
        for key in [k for k in self.secrets if k not in wanted]:
            del self.secrets[key]  # no longer referenced: its data is not kept
        missing = [k for k in sorted(wanted) if k not in self.secrets]
        read = await asyncio.gather(*(self._fetch(k) for k in missing))
        if not all(read):
            self.refetch_at = self.monotonic() + self.settings.retry_max_seconds
            return None
        self.refetch_at = 0.0
        # In a worker thread: validating and hashing thousands of clients must not stall
        # kopf's loop. The thread gets its own copy of the Secrets (events change the cache).
        compiled = await asyncio.to_thread(
            compile_credentials,
            sources.providers,
            sources.clients,
            dict(self.secrets),
            self.access.require_client_key,
        )
        self.report_problems(compiled.problems)
        self.provider_states = compiled.providers
        await self._write_statuses(sources.clients, compiled.clients)
        held = self.document
        document = RouterCredentials(
            version=held.version if held is not None else 0,
            provider_keys=compiled.provider_keys,  # type: ignore[arg-type]  # str -> SecretStr
            provider_key_sets=compiled.provider_key_sets,
            client_keys=compiled.client_keys,
            require_client_key=compiled.require_client_key,
        )
        if held is not None and document.same_content(held):
            return None
        document = document.model_copy(update={"version": self.next_version()})
        return document, credentials_json(document)

    def announce(self, document: RouterCredentials) -> None:
        """Log the new version with its counts (never a key)."""
        self.log.info(
            "credentials version %d: %d provider keys, %d client keys, client key %s",
            document.version,
            len(document.provider_keys)
            + sum(len(keys) for keys in document.provider_key_sets.values()),
            len(document.client_keys),
            "required" if document.require_client_key else "not required",
        )

    async def sync(self, recompile: bool = True) -> None:
        """As the base's, and recompile when a failed Secret read is due again."""
        if self.refetch_at and self.monotonic() >= self.refetch_at:
            recompile = True
        await super().sync(recompile)

    def wake_at(self) -> float:
        """As the base's, or earlier for a failed Secret read."""
        at = super().wake_at()
        return min(at, self.refetch_at) if self.refetch_at else at

    def store_object(self, text: str) -> dict[str, Any]:
        """The Secret that routers mount."""
        return build_credentials_secret(
            self.access.credentials_secret, self.namespace, self.access.credentials_key, text
        )

    def stored_text(self, obj: Mapping[str, Any]) -> str | None:
        """The credentials' JSON in the Secret."""
        return secret_text(obj, self.access.credentials_key)[0]

    # -- status and problems --------------------------------------------------------------

    async def _write_statuses(
        self, clients: list[Mapping[str, Any]], states: Mapping[ObjectKey, KeyState]
    ) -> None:
        now = self.now()
        writes = []
        live: set[ObjectKey] = set()
        for obj in clients:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            state = states.get(key)
            if state is None or meta.get("deletionTimestamp"):
                continue
            live.add(key)
            observed = obj.get("status") if isinstance(obj.get("status"), Mapping) else None
            # Our last write, until the watch shows it, so a burst does not write it twice;
            # the conditions others own (UsageReported) as the watch shows them, so that a
            # write of Ready never drops them.
            previous = _with_others(self.written.get(key), observed)
            patch = client_status(state, meta.get("generation"), previous, now)
            if patch is not None:
                writes.append(self._write_status(key, patch))
        for key in [k for k in self.written if k not in live]:
            del self.written[key]
        await asyncio.gather(*writes)

    async def _write_status(self, key: ObjectKey, status: dict[str, Any]) -> None:
        async with self.limit:
            try:
                await self.api.patch_status(
                    f"{GROUP}/{VERSION}", CLIENT_KIND, key[0], key[1], status
                )
            except NotFound:
                return  # deleted meanwhile
            except KubeApiError as error:
                self.log.warning(
                    "writing the status of InferenceClient %s/%s failed: %s", *key, error
                )
                return
        self.written[key] = status


def _with_others(
    written: Mapping[str, Any] | None, observed: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """Our last written status, with the conditions other writers own taken from ``observed``."""
    if written is None:
        return observed
    ours = [
        c
        for c in written.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") == CONDITION_READY
    ]
    theirs = [
        c
        for c in (observed or {}).get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") != CONDITION_READY
    ]
    return {**written, "conditions": [*ours, *theirs]}


# -- kopf glue ---------------------------------------------------------------------------


class CredentialsState(PublisherSlot[CredentialsPublisher]):
    """The credentials' publisher, shared through kopf's memo."""


def _enabled(settings: OperatorSettings) -> bool:
    return settings.routing.enabled and settings.access.enabled


def _publisher(runtime: Runtime, read: Callable[[], CredentialSources]) -> CredentialsPublisher:
    settings = runtime.settings
    return CredentialsPublisher(
        runtime.api, settings.routing, settings.access, settings.router_namespace, read
    )


WIRING: Final = PublisherWiring(
    memo_key=MEMO_KEY,
    slot_type=CredentialsState,
    source_indices=SOURCE_INDICES,
    read=read_sources,
    make=_publisher,
    enabled=_enabled,
    task_name="credentials publisher",
)
"""How the credentials' publisher is kept in kopf's memo and started."""


_META: Final = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation")


def _snapshot(body: kopf.Body, status: bool) -> dict[str, Any]:
    meta = body["metadata"]
    snapshot: dict[str, Any] = {
        "metadata": {k: meta.get(k) for k in _META},
        "spec": body.get("spec") or {},
    }
    if status:
        snapshot["status"] = body.get("status") or {}
    return json_copy(snapshot)


def _secret_keys(body: Mapping[str, Any]) -> dict[ObjectKey, None] | None:
    """(namespace, Secret name) of every Secret an object's spec names, as a kopf index entry."""
    found = {(ref.namespace, ref.name): None for ref in secret_refs(body)}
    return found or None


@kopf.index(GROUP, VERSION, CLIENT_PLURAL)
def inference_clients(body: kopf.Body, **_: Any) -> Any:
    """InferenceClients by (namespace, name), with their status (to write it only on change)."""
    meta = body["metadata"]
    return {(str(meta["namespace"]), str(meta["name"])): _snapshot(body, status=True)}


@kopf.index(GROUP, VERSION, PROVIDER_PLURAL)
def inference_providers(body: kopf.Body, **_: Any) -> Any:
    """InferenceProviders by (namespace, name)."""
    meta = body["metadata"]
    return {(str(meta["namespace"]), str(meta["name"])): _snapshot(body, status=False)}


@kopf.index(GROUP, VERSION, CLIENT_PLURAL)
def client_key_secrets(body: kopf.Body, **_: Any) -> Any:
    """The Secrets InferenceClients reference, by (namespace, name): the Secret filter."""
    return _secret_keys(body)


@kopf.index(GROUP, VERSION, PROVIDER_PLURAL)
def provider_key_secrets(body: kopf.Body, **_: Any) -> Any:
    """The Secrets InferenceProviders reference, by (namespace, name): the Secret filter."""
    return _secret_keys(body)


def is_key_secret(body: kopf.Body, memo: Any, **kwargs: Any) -> bool:
    """Kopf filter: a Secret some InferenceClient or InferenceProvider references."""
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime) or not _enabled(runtime.settings):
        return False
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    return any(
        key in kwargs.get(name, ()) for name in ("client_key_secrets", "provider_key_secrets")
    )


@kopf.on.startup()
async def credentials_startup(memo: Any, **_: Any) -> None:
    """Make the shared state; the publisher starts with the first event (indices complete)."""
    WIRING.install(memo)


@kopf.on.cleanup()
async def credentials_cleanup(memo: Any, **_: Any) -> None:
    """Stop the publisher; store credentials the Secret does not have yet."""
    await WIRING.stop(memo)


@kopf.on.event(GROUP, VERSION, CLIENT_PLURAL)
async def credentials_client_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A client appeared, changed its spec, started deleting or is gone."""
    WIRING.spec_changed(memo, kwargs, "client", type, body)


@kopf.on.event(GROUP, VERSION, PROVIDER_PLURAL)
async def credentials_provider_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A provider appeared, changed its spec, started deleting or is gone."""
    WIRING.spec_changed(memo, kwargs, "provider", type, body)


@kopf.on.event("", "v1", "secrets", when=is_key_secret)
async def credentials_secret_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A referenced Secret was created, changed or deleted: its keys may have rotated."""
    state = WIRING.slot(memo, kwargs)
    if state is None or state.publisher is None:
        return
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    state.publisher.secret_changed(key, None if type == "DELETED" else body)


@kopf.on.event("", "v1", "pods", when=is_router)
async def credentials_router_pod_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A router pod started, turned Ready, restarted, started deleting or is gone."""
    WIRING.router_pod_changed(memo, kwargs, type, body)
