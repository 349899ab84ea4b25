"""Programs the routers: compile the routing table, push it to every router, keep it in a ConfigMap.

kopf glue around the pure :mod:`inferscale.reconcile.routing`. Two indices of its own (the
InferenceRoutes, and the router pods in the routers' namespace) join the ``models`` and
``model_pods`` indices of :mod:`inferscale.controller.cache` and the ``inference_providers``
index of :mod:`inferscale.controller.credentials`. Event handlers only
note *that* something routing reads has changed (a pod's IP, readiness or deletion, a model's,
route's or provider's spec, a router's readiness); one :class:`RoutingPublisher` task, started
by the first event
(kopf runs handlers only once every index is filled, so the first table is never built from a
half-listed cluster), compiles the table (in a worker thread) and delivers it as
:class:`~inferscale.controller.publishing.RouterPublisher` delivers every document: coalesced,
versioned ``max(last + 1, ms since epoch)``, PUT to ``/admin/v1/routing-table`` of every router
pod with the admin token, and kept in the ConfigMap that routers mount, so a router that starts
while the operator is down serves at once. The failure behaviour is the publisher's: nothing
raises into kopf, each router is retried on its own back-off, and every router gets the table
again each ``resync_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import kopf

from inferscale.api.meta import GROUP, VERSION
from inferscale.api.v1alpha1.inference_provider import PLURAL as PROVIDER_PLURAL
from inferscale.api.v1alpha1.inference_route import PLURAL as ROUTE_PLURAL
from inferscale.config import OperatorSettings, RoutingSettings
from inferscale.controller.cache import CHILD_LABELS, index_objects, json_copy
from inferscale.controller.inference_model import Runtime
from inferscale.controller.publishing import (
    PublisherSlot,
    PublisherWiring,
    RouterPublisher,
    object_key,
    spec_view,
)
from inferscale.kube.client import KubeApi
from inferscale.protocol.table import RoutingTable, table_json
from inferscale.reconcile.routing import (
    CompiledRoutes,
    ParseCache,
    adapters_view,
    build_table_configmap,
    compile_routes,
    is_router_pod,
    pod_view,
)

log = logging.getLogger(__name__)

MEMO_KEY: Final = "routing"
"""Where the shared :class:`RoutingState` lives in kopf's operator-level memo."""

SOURCE_INDICES: Final = (
    "models",
    "model_pods",
    "inference_routes",
    "inference_providers",
    "router_pods",
)
"""The kopf indices a table is compiled from (kopf passes them to handlers by these names)."""


@dataclass(frozen=True)
class Sources:
    """What one table is compiled from, as read from the indices at one moment."""

    models: list[Mapping[str, Any]]
    routes: list[Mapping[str, Any]]
    pods: list[Mapping[str, Any]]
    routers: list[Mapping[str, Any]]
    providers: list[Mapping[str, Any]] = field(default_factory=list)


def read_sources(indices: Mapping[str, Mapping[Any, Iterable[Mapping[str, Any]]]]) -> Sources:
    """Flatten kopf's indices (key -> store of objects) into lists, without awaiting between."""
    return Sources(
        models=index_objects(indices["models"]),
        routes=index_objects(indices["inference_routes"]),
        pods=index_objects(indices["model_pods"]),
        routers=index_objects(indices["router_pods"]),
        providers=index_objects(indices["inference_providers"]),
    )


class RoutingPublisher(RouterPublisher[Sources, RoutingTable]):
    """Compiles the routing table and delivers it to the routers and the ConfigMap."""

    WHAT = "routing table"
    LOG_PREFIX = "routing"
    ADMIN_PATH = "/admin/v1/routing-table"
    STORE_KIND = "ConfigMap"
    STORE_VERBS_HINT = "the operator's Role must allow configmaps get, create, patch"

    def __init__(
        self,
        api: KubeApi,
        settings: RoutingSettings,
        namespace: str,
        read: Callable[[], Sources],
        *,
        client: httpx.AsyncClient | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the collaborators; ``client`` defaults to one with the push timeout."""
        super().__init__(
            api,
            settings,
            namespace,
            read,
            store_name=settings.configmap_name,
            client=client,
            wall_ms=wall_ms,
            monotonic=monotonic,
        )
        self.compiled: CompiledRoutes | None = None
        """The last compile (route status reads its problems and backends)."""
        self.parse_cache: ParseCache = {}
        """Model specs already validated, by uid and generation (only the compiler uses it)."""

    async def admin_token(self) -> str | None:
        """The routers' admin token (cached; ``None`` while its Secret cannot be read)."""
        return await self._token()

    @property
    def table(self) -> RoutingTable | None:
        """The current table."""
        return self.document

    async def build(self, sources: Sources) -> tuple[RoutingTable, str] | None:
        """Compile (in a worker thread); a new table only when the content changed."""
        # In a worker thread: a thousand models take tens of milliseconds to compile, compare
        # and serialise, which kopf's event loop must not stall for. The lists were taken on
        # the loop, and kopf replaces index entries rather than changing them, so the thread
        # reads a consistent snapshot; this task waits for it, so nothing else touches self.
        compiled, built = await asyncio.to_thread(self._build, sources)
        self.report_problems(compiled.problems)
        return built

    def _build(self, sources: Sources) -> tuple[CompiledRoutes, tuple[RoutingTable, str] | None]:
        compiled = compile_routes(
            sources.models,
            sources.routes,
            sources.pods,
            providers=sources.providers,
            cache=self.parse_cache,
        )
        self.compiled = compiled
        if (
            self.table is not None
            and compiled.models == self.table.models
            and compiled.providers == self.table.providers
        ):
            return compiled, None
        table = RoutingTable(
            version=self.next_version(), models=compiled.models, providers=compiled.providers
        )
        return compiled, (table, table_json(table))

    def announce(self, document: RoutingTable) -> None:
        """Log the new version with its size."""
        log.info(
            "routing table version %d: %d models, %d ready endpoints",
            document.version,
            len(document.models),
            sum(e.ready for m in document.models.values() for e in m.endpoints),
        )

    def store_object(self, text: str) -> dict[str, Any]:
        """The ConfigMap that routers mount."""
        return build_table_configmap(
            self.settings.configmap_name, self.namespace, self.settings.configmap_key, text
        )

    def stored_text(self, obj: Mapping[str, Any]) -> str | None:
        """The table's JSON in the ConfigMap."""
        text = (obj.get("data") or {}).get(self.settings.configmap_key)
        return text if isinstance(text, str) else None


# -- kopf glue ---------------------------------------------------------------------------


class RoutingState(PublisherSlot[RoutingPublisher]):
    """The routing table's publisher, shared through kopf's memo."""


def _settings(memo: Any) -> OperatorSettings | None:
    runtime = memo.get("runtime")
    return runtime.settings if isinstance(runtime, Runtime) else None


def _publisher(runtime: Runtime, read: Callable[[], Sources]) -> RoutingPublisher:
    settings = runtime.settings
    return RoutingPublisher(runtime.api, settings.routing, settings.router_namespace, read)


WIRING: Final = PublisherWiring(
    memo_key=MEMO_KEY,
    slot_type=RoutingState,
    source_indices=SOURCE_INDICES,
    read=read_sources,
    make=_publisher,
    enabled=lambda settings: settings.routing.enabled,
    task_name="routing table publisher",
)
"""How the routing table's publisher is kept in kopf's memo and started."""


def is_router(body: kopf.Body, memo: Any, **_: Any) -> bool:
    """Kopf filter: a router pod (routers' namespace, router labels) while routing is on."""
    settings = _settings(memo)
    if settings is None or not settings.routing.enabled:
        return False
    return is_router_pod(body, settings.router_namespace, settings.routing.router_labels)


_ROUTE_META: Final = ("name", "namespace", "creationTimestamp", "deletionTimestamp", "generation")
_ROUTER_META: Final = ("name", "namespace", "uid", "labels", "deletionTimestamp")
_ROUTER_STATUS: Final = ("phase", "podIP", "podIPs", "conditions", "containerStatuses")


@kopf.index(GROUP, VERSION, ROUTE_PLURAL)
def inference_routes(body: kopf.Body, **_: Any) -> Any:
    """InferenceRoutes by (namespace, name): their specs shape the routes.

    Their status is kept too, for the status reporter, which writes it only when it changed.
    """
    meta = body["metadata"]
    snapshot = {
        "metadata": {k: meta.get(k) for k in _ROUTE_META},
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }
    return {(str(meta["namespace"]), str(meta["name"])): json_copy(snapshot)}


@kopf.index("", "v1", "pods", when=is_router)
def router_pods(body: kopf.Body, **_: Any) -> Any:
    """Router pods by (namespace, name), reduced to what a push needs."""
    meta = body["metadata"]
    status = body.get("status") or {}
    # A copy of the few fields a push reads: kopf's body is a view it replaces on the next event.
    snapshot = {
        "metadata": {k: meta.get(k) for k in _ROUTER_META},
        "status": {k: status.get(k) for k in _ROUTER_STATUS},
    }
    return {(str(meta["namespace"]), str(meta["name"])): json_copy(snapshot)}


@kopf.on.startup()
async def routing_startup(memo: Any, **_: Any) -> None:
    """Make the shared state; the publisher starts with the first event (indices complete)."""
    WIRING.install(memo)


@kopf.on.cleanup()
async def routing_cleanup(memo: Any, **_: Any) -> None:
    """Stop the publisher; store a table the ConfigMap does not have yet."""
    await WIRING.stop(memo)


@kopf.on.event(GROUP, VERSION, "inferencemodels")
async def routing_model_event(type: str | None, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A model appeared, changed its spec or its adapters' replicas, started deleting or is gone."""
    view = spec_view(type, body)
    if view is not None:
        view = (view, adapters_view(body))  # status.adapters: where each adapter is loaded
    WIRING.changed(memo, kwargs, object_key("model", body), view)


@kopf.on.event(GROUP, VERSION, ROUTE_PLURAL)
async def routing_route_event(type: str | None, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A route appeared, changed its spec, started deleting or is gone."""
    WIRING.spec_changed(memo, kwargs, "route", type, body)


@kopf.on.event(GROUP, VERSION, PROVIDER_PLURAL)
async def routing_provider_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A provider appeared, changed its spec (URL, models, prices), started deleting or is gone."""
    WIRING.spec_changed(memo, kwargs, "provider", type, body)


@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
async def routing_model_pod_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """An engine pod got an IP, turned (un)Ready, started deleting or is gone."""
    view = None if type == "DELETED" else (pod_view(body) or "not an engine pod")
    WIRING.changed(memo, kwargs, object_key("pod", body), view)


@kopf.on.event("", "v1", "pods", when=is_router)
async def routing_router_pod_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A router pod started, turned Ready, restarted, started deleting or is gone."""
    WIRING.router_pod_changed(memo, kwargs, type, body)
