"""Route and provider status, and spend shared between routers: one loop every few seconds.

kopf glue around the pure :mod:`inferscale.reconcile.route_status`. The first InferenceRoute or
InferenceProvider event (kopf has filled every index by then) starts one
:class:`StatusReporter` task; every ``routing.status_interval_seconds`` it:

1. reads ``GET /admin/v1/spend`` from every Ready router (the admin token of the routing
   publisher) and keeps each router process's last report (:class:`SpendBook`);
2. sends every router what the others spent (``PUT /admin/v1/spend``), so a spend cap holds
   across router replicas within one interval;
3. reads every Ready router's budget counters and writes each InferenceClient's usage against
   its budgets (:mod:`inferscale.controller.client_usage`);
4. computes each InferenceRoute's status (ready backends, spilling, spend, conditions) from the
   last compiled routing table, the providers' key states of the credentials compile and the
   reports, and each InferenceProvider's (its key, and the routers' failures with it), and
   patches the ones that changed.

Failure behaviour: nothing raises into kopf or ends the task. A router that does not answer is
left out of the round (its last report still counts until its window ends); an invalid report
is ignored; a failed status write is logged (never a key: statuses and messages hold none) and
tried again next round. Keys are seen only as SHA-256 digests kept in memory, to tell when one
was rotated. Before the routing table's first compile there is nothing to report and a round
does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import kopf
from pydantic import ValidationError

from inferscale.api.meta import GROUP, VERSION
from inferscale.api.v1alpha1.inference_client import PLURAL as CLIENT_PLURAL
from inferscale.api.v1alpha1.inference_provider import KIND as PROVIDER_KIND
from inferscale.api.v1alpha1.inference_provider import PLURAL as PROVIDER_PLURAL
from inferscale.api.v1alpha1.inference_route import KIND as ROUTE_KIND
from inferscale.api.v1alpha1.inference_route import PLURAL as ROUTE_PLURAL
from inferscale.config import RoutingSettings
from inferscale.controller import credentials as credentials_controller
from inferscale.controller import routing as routing_controller
from inferscale.controller.cache import index_objects
from inferscale.controller.client_usage import ClientUsageReporter
from inferscale.controller.inference_model import Runtime, now_rfc3339
from inferscale.controller.publishing import stop_task
from inferscale.errors import KubeApiError, NotFound
from inferscale.kube.client import KubeApi
from inferscale.protocol.spend import SpendReport
from inferscale.reconcile.route_status import (
    RouteInputs,
    SpendBook,
    provider_status,
    route_status,
)
from inferscale.reconcile.routing import RouterTarget, router_targets

log = logging.getLogger(__name__)

MEMO_KEY: Final = "route_status"
"""Where the shared :class:`StatusState` lives in kopf's memo."""

SOURCE_INDICES: Final = ("inference_routes", "inference_providers")
"""The kopf indices the reporter reads the objects from."""

CLIENT_INDEX: Final = "inference_clients"
"""The InferenceClients' index (the credentials controller's), for their usage."""

WRITE_CONCURRENCY: Final = 8
"""Most status writes in flight at once."""

ObjectKey = tuple[str, str]
Reader = Callable[[], list[Mapping[str, Any]]]


@dataclass
class StatusReporter:
    """Gathers the routers' spend, shares it back, and writes route and provider status."""

    api: KubeApi
    settings: RoutingSettings
    memo: Any
    """kopf's memo: the routing and credentials publishers are read from it each round."""
    read_routes: Reader
    read_providers: Reader
    wall: Callable[[], float] = time.time
    now_text: Callable[[], str] = now_rfc3339
    book: SpendBook = field(default_factory=SpendBook)
    written_routes: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    """The status last written per route, until its index shows it."""
    written_providers: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    """The status last written per provider (its index keeps no status)."""
    key_digests: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each provider's key as last seen (memory only): a change is a rotation."""
    key_changed_at: dict[str, str] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    """Problems already logged, so a lasting one is said once."""
    usage: ClientUsageReporter | None = None
    """Writes the InferenceClients' usage against their budgets (``None``: access is off)."""

    async def run(self) -> None:
        """Report until cancelled."""
        while True:
            try:
                await self.round()
            except Exception:
                # This task alone keeps statuses and shared spend current: a bug met by one
                # round is logged with its traceback and the next round tries again.
                log.exception("route status round failed")
            await asyncio.sleep(self.settings.status_interval_seconds)

    async def round(self) -> None:
        """One exchange with the routers and one pass over the statuses."""
        routing = self.memo.get(routing_controller.MEMO_KEY)
        publisher = getattr(routing, "publisher", None)
        if not isinstance(publisher, routing_controller.RoutingPublisher):
            return
        compiled = publisher.compiled
        if compiled is None:
            return
        now = self.wall()
        await self._exchange(publisher, now)
        await self._client_usage(publisher)
        keys = self._key_states()
        inputs = RouteInputs(
            models=compiled.models,
            served=compiled.served,
            providers={
                provider_id: frozenset(provider.models)
                for provider_id, provider in self._all_providers(publisher).items()
            },
            problems=compiled.problems,
            keys=keys,
            book=self.book,
            now=now,
            now_text=self.now_text(),
            spilling_window=self.settings.spilling_window_seconds,
            health_window=self.settings.provider_health_window_seconds,
        )
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)
        writes = [
            self._write(limit, ROUTE_KIND, key, patch, self.written_routes)
            for key, patch in self._route_patches(inputs)
        ]
        writes += [
            self._write(limit, PROVIDER_KIND, key, patch, self.written_providers)
            for key, patch in self._provider_patches(now, inputs.now_text)
        ]
        await asyncio.gather(*writes)

    # -- spend ----------------------------------------------------------------------------

    async def _exchange(self, publisher: routing_controller.RoutingPublisher, now: float) -> None:
        """GET every Ready router's report, then PUT each what the others spent."""
        targets = [t for t in router_targets(publisher.read().routers) if t.ready]
        if not targets:
            return
        token = await publisher.admin_token()
        if token is None:
            self._say("no admin token for the routers: spend is not shared between them")
            return
        headers = {"Authorization": f"Bearer {token}"}
        timeout = self.settings.push_timeout_seconds
        client = publisher.client

        async def read(target: RouterTarget) -> SpendReport | None:
            url = f"http://{target.ip}:{self.settings.admin_port}/admin/v1/spend"
            try:
                response = await client.get(url, headers=headers, timeout=timeout)
            except httpx.HTTPError as error:
                log.debug("router %s: spend not read: %s", target.name, type(error).__name__)
                return None
            if response.status_code != 200:
                self._say(
                    f"router {target.namespace}/{target.name} answered "
                    f"{response.status_code} to GET /admin/v1/spend"
                )
                return None
            try:
                return SpendReport.model_validate_json(response.content)
            except ValidationError:
                self._say(f"router {target.namespace}/{target.name} sent an invalid spend report")
                return None

        reports = await asyncio.gather(*(read(t) for t in targets))
        self.book.update([r for r in reports if r is not None], now)

        async def share(target: RouterTarget, report: SpendReport) -> None:
            url = f"http://{target.ip}:{self.settings.admin_port}/admin/v1/spend"
            body = self.book.elsewhere(report.process, now).model_dump_json(by_alias=True)
            with contextlib.suppress(httpx.HTTPError):
                await client.put(
                    url,
                    content=body.encode(),
                    headers={**headers, "Content-Type": "application/json"},
                    timeout=timeout,
                )

        await asyncio.gather(
            *(share(t, r) for t, r in zip(targets, reports, strict=True) if r is not None)
        )

    async def _client_usage(self, publisher: routing_controller.RoutingPublisher) -> None:
        """The clients' budget use, from every Ready router (none without the admin token)."""
        if self.usage is None:
            return
        targets = [t for t in router_targets(publisher.read().routers) if t.ready]
        token = await publisher.admin_token() if targets else None
        headers = {"Authorization": f"Bearer {token}"}
        await self.usage.round(publisher.client, targets if token else [], headers, self.now_text())

    # -- statuses -------------------------------------------------------------------------

    def _all_providers(self, publisher: routing_controller.RoutingPublisher) -> dict[str, Any]:
        table = publisher.table
        return dict(table.providers) if table is not None else {}

    def _key_states(self) -> dict[str, Any]:
        """Provider id -> KeyState from the credentials compile (empty before its first)."""
        state = self.memo.get(credentials_controller.MEMO_KEY)
        publisher = getattr(state, "publisher", None)
        if not isinstance(publisher, credentials_controller.CredentialsPublisher):
            return {}
        document = publisher.document
        if document is not None:
            now = self.now_text()
            for provider_id, secret in document.provider_keys.items():
                digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest()
                before = self.key_digests.get(provider_id)
                if before is not None and before != digest:
                    self.key_changed_at[provider_id] = now
                self.key_digests[provider_id] = digest
        return {f"{ns}/{name}": s for (ns, name), s in publisher.provider_states.items()}

    def _route_patches(self, inputs: RouteInputs) -> Iterable[tuple[ObjectKey, dict[str, Any]]]:
        seen: set[ObjectKey] = set()
        for route in self.read_routes():
            meta = route.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            written = self.written_routes.get(key)
            current = dict(route)
            if written is not None:
                # The index may not show our last write yet: compare with what we wrote.
                current["status"] = {**(route.get("status") or {}), **written}
            patch = route_status(current, inputs)
            if patch is not None:
                yield key, patch
        for key in [k for k in self.written_routes if k not in seen]:
            del self.written_routes[key]

    def _provider_patches(
        self, now: float, now_text: str
    ) -> Iterable[tuple[ObjectKey, dict[str, Any]]]:
        states = self._key_states()
        seen: set[ObjectKey] = set()
        for provider in self.read_providers():
            meta = provider.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            ident = f"{key[0]}/{key[1]}"
            patch = provider_status(
                provider,
                states.get(ident),
                self.key_changed_at.get(ident),
                self.book.provider(ident),
                previous=self.written_providers.get(key),
                now=now,
                now_text=now_text,
                health_window=self.settings.provider_health_window_seconds,
            )
            if patch is not None:
                yield key, patch
        for key in [k for k in self.written_providers if k not in seen]:
            del self.written_providers[key]

    async def _write(
        self,
        limit: asyncio.Semaphore,
        kind: str,
        key: ObjectKey,
        status: dict[str, Any],
        written: dict[ObjectKey, dict[str, Any]],
    ) -> None:
        async with limit:
            try:
                await self.api.patch_status(f"{GROUP}/{VERSION}", kind, key[0], key[1], status)
            except NotFound:
                return  # deleted meanwhile
            except KubeApiError as error:
                log.warning("writing the status of %s %s/%s failed: %s", kind, *key, error)
                return
        written[key] = status

    def _say(self, problem: str) -> None:
        if problem not in self.errors:
            self.errors.add(problem)
            log.warning("route status: %s", problem)


# -- kopf glue ---------------------------------------------------------------------------


@dataclass
class StatusState:
    """Shared through kopf's memo: the reporter and its task."""

    reporter: StatusReporter | None = None
    task: asyncio.Task[None] | None = None


def _start(memo: Any, indices: Mapping[str, Any]) -> None:
    """Start the reporter on the first event that has the indices (routing enabled only)."""
    state = memo.get(MEMO_KEY)
    runtime = memo.get("runtime")
    if not isinstance(state, StatusState) or not isinstance(runtime, Runtime):
        return
    if state.reporter is not None or not runtime.settings.routing.enabled:
        return
    if not all(name in indices for name in SOURCE_INDICES):
        return
    sources = {name: indices[name] for name in SOURCE_INDICES}

    def values(name: str) -> Callable[[], list[Mapping[str, Any]]]:
        return lambda: index_objects(sources[name])

    state.reporter = StatusReporter(
        runtime.api,
        runtime.settings.routing,
        memo,
        values("inference_routes"),
        values("inference_providers"),
    )
    if runtime.settings.access.enabled and CLIENT_INDEX in indices:
        clients = indices[CLIENT_INDEX]
        state.reporter.usage = ClientUsageReporter(
            runtime.api, runtime.settings.routing, lambda: index_objects(clients)
        )
    state.task = asyncio.get_running_loop().create_task(
        state.reporter.run(), name="route status reporter"
    )


@kopf.on.startup()
async def route_status_startup(memo: Any, **_: Any) -> None:
    """Make the shared state; the reporter starts with the first route or provider event."""
    if not isinstance(memo.get(MEMO_KEY), StatusState):
        memo[MEMO_KEY] = StatusState()


@kopf.on.cleanup()
async def route_status_cleanup(memo: Any, **_: Any) -> None:
    """Stop the reporter."""
    state = memo.get(MEMO_KEY)
    if isinstance(state, StatusState):
        await stop_task(state.task)


@kopf.on.event(GROUP, VERSION, ROUTE_PLURAL)
async def route_status_route_event(memo: Any, **kwargs: Any) -> None:
    """A route exists: make sure the reporter runs."""
    _start(memo, kwargs)


@kopf.on.event(GROUP, VERSION, PROVIDER_PLURAL)
async def route_status_provider_event(memo: Any, **kwargs: Any) -> None:
    """A provider exists: make sure the reporter runs."""
    _start(memo, kwargs)


@kopf.on.event(GROUP, VERSION, CLIENT_PLURAL)
async def route_status_client_event(memo: Any, **kwargs: Any) -> None:
    """A client exists: make sure the reporter runs (it writes the clients' usage)."""
    _start(memo, kwargs)
